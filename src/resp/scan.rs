//! A resumable RESP scanner: finds frame boundaries without parsing values.
//!
//! The scanner never looks at a byte twice: payloads are skipped by count, a
//! partial header line is searched for its end only from where the last search
//! stopped, and nesting is an explicit stack (no recursion), so hostile input
//! cannot blow the stack or make scanning quadratic. It copies nothing except a
//! few bytes of each frame's "head" (the command name, an error code, the kind
//! of a push message) that the session needs to classify the frame.
//!
//! Requests are checked the way Redis checks them (a flat array of bulk strings
//! or an inline line); replies may be any RESP2 or RESP3 value, streamed ones too.

use std::fmt;

use memchr::memchr;

/// How many leading bytes of a frame's head are captured.
pub const HEAD_CAP: usize = 16;

/// Which way the bytes flow; requests are held to Redis's request grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
}

/// Size and shape limits; a frame past one is a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string, like Redis's `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// Deepest nesting of aggregates (replies only; requests are flat).
    pub max_depth: usize,
    /// Longest inline command or request header line, like Redis's 64 KiB
    /// `PROTO_INLINE_MAX_SIZE` (reply lines are capped by `max_bulk_len`).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_depth: 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Why bytes are not RESP. The text follows Redis's own protocol errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("too big inline request")]
    TooBigInline,
    #[error("too big mbulk count string")]
    TooBigCountLine,
    #[error("too big bulk count string")]
    TooBigBulkCountLine,
    #[error("invalid frame type byte 0x{0:02x}")]
    BadType(u8),
    #[error("invalid length in '{}' header", char::from(*.0))]
    BadLength(u8),
    #[error("missing CRLF after a bulk payload")]
    MissingCrlf,
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("unexpected end marker outside a streamed aggregate")]
    UnexpectedEnd,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// What one call to [`Scanner::scan`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A whole top-level frame ends this many bytes into the slice.
    Frame(usize),
    /// This many bytes were consumed (all of them part of an unfinished
    /// frame); the rest is a partial line that must be offered again,
    /// followed by more input.
    NeedMore(usize),
}

/// A short summary of the last complete frame. Two are equal when their
/// kind, length and head are (the head buffer past the head is scratch).
#[derive(Clone, Copy)]
pub struct FrameInfo {
    /// The type byte of the frame (after any RESP3 attribute); for an inline
    /// request, `b'i'`.
    pub kind: u8,
    /// Number of top-level elements (requests: argument count).
    pub len: usize,
    head: [u8; HEAD_CAP],
    head_len: u8,
}

impl FrameInfo {
    /// The first bytes of the frame's head: the first element of an
    /// aggregate, or the text of a simple string, error or inline line.
    pub fn head(&self) -> &[u8] {
        self.head.get(..usize::from(self.head_len)).unwrap_or(&[])
    }

    /// An error reply (`-` or RESP3 `!`).
    pub fn is_error(&self) -> bool {
        self.kind == b'-' || self.kind == b'!'
    }
}

impl PartialEq for FrameInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.len, self.head()) == (other.kind, other.len, other.head())
    }
}

impl Eq for FrameInfo {}

impl fmt::Debug for FrameInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameInfo")
            .field("kind", &char::from(self.kind))
            .field("len", &self.len)
            .field("head", &String::from_utf8_lossy(self.head()))
            .finish()
    }
}

/// One open aggregate.
#[derive(Clone, Copy, Debug)]
struct Level {
    /// Elements still to come; unused for streamed levels.
    left: u64,
    kind: LevelKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LevelKind {
    Counted,
    /// A RESP3 attribute: completing it does not complete a value.
    Attribute,
    /// A RESP3 `*?`-style aggregate, ended by `.`.
    StreamedAggregate,
    /// A RESP3 `$?` string, made of `;len` chunks and ended by `;0`.
    StreamedString,
}

impl Level {
    fn new(left: u64, kind: LevelKind) -> Self {
        Level { left, kind }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a header line (type byte and the rest of the line).
    Header,
    /// Inside a bulk payload: bytes left, then the CRLF.
    Payload { left: usize, crlf: u8 },
    /// Inside a RESP3 streamed string: expecting a `;len` chunk header.
    StreamedString,
}

/// Resumable scanner for one direction of one connection.
#[derive(Debug)]
pub struct Scanner {
    dir: Direction,
    limits: Limits,
    state: State,
    stack: Vec<Level>,
    /// Bytes of the current partial line already searched for `\n`.
    line_checked: usize,
    /// Whether the payload being skipped is the head to capture.
    capturing: bool,
    /// True once the head of the current frame has been settled.
    head_done: bool,
    info: FrameInfo,
    at_frame_start: bool,
}

impl Scanner {
    pub fn new(dir: Direction, limits: Limits) -> Self {
        Scanner {
            dir,
            limits,
            state: State::Header,
            stack: Vec::new(),
            line_checked: 0,
            capturing: false,
            head_done: false,
            info: FrameInfo {
                kind: 0,
                len: 0,
                head: [0; HEAD_CAP],
                head_len: 0,
            },
            at_frame_start: true,
        }
    }

    /// The summary of the frame most recently reported by [`Progress::Frame`].
    pub fn info(&self) -> &FrameInfo {
        &self.info
    }

    /// True when no frame is partly scanned.
    pub fn is_idle(&self) -> bool {
        self.at_frame_start && self.line_checked == 0
    }

    /// Bytes the bulk payload being scanned still needs, its CRLF included
    /// (0 outside a payload): what a read buffer must make room for.
    pub fn payload_left(&self) -> usize {
        match self.state {
            State::Payload { left, crlf } => left + usize::from(crlf),
            _ => 0,
        }
    }

    /// Scans `buf`, which must start where the previous call said to resume.
    /// Stops at the end of the first complete top-level frame.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Progress, ProtocolError> {
        // The session asks once more after the last frame of every read.
        if buf.is_empty() {
            return Ok(Progress::NeedMore(0));
        }
        // Most frames arrive whole and simple; when no frame is half-scanned
        // (so the state is a header and the stack empty), try reading one in
        // a single pass before scanning line by line. Only the summary needs
        // setting: the slow path resets the rest when it starts a frame.
        if self.is_idle()
            && let Some((end, info)) = fast::frame(buf, self.dir, &self.limits)
        {
            self.info = info;
            return Ok(Progress::Frame(end));
        }
        self.scan_lines(buf)
    }

    /// A whole request at the start of `buf` when no frame is half-scanned:
    /// its length and command name. The scanner's state does not change, so
    /// the caller accounts for the frame as `scan` would have. `None` says
    /// nothing about the bytes: [`Scanner::scan`] them.
    #[inline(always)]
    pub fn whole_request<'a>(&self, buf: &'a [u8]) -> Option<(usize, &'a [u8])> {
        if !self.is_idle() {
            return None;
        }
        fast::request_name(buf, self.limits.max_bulk_len)
    }

    /// A whole reply at the start of `buf` that is one leaf (not an
    /// aggregate), when no frame is half-scanned: its length and type byte.
    /// Like [`Scanner::whole_request`], `None` means "scan it".
    #[inline(always)]
    pub fn whole_leaf(&self, buf: &[u8]) -> Option<(usize, u8)> {
        if !self.is_idle() {
            return None;
        }
        fast::leaf_reply(buf, self.limits.max_bulk_len)
    }

    /// The general, resumable scan: a line or a payload piece at a time.
    /// Kept out of [`Scanner::scan`] so the fast path stays small.
    #[inline(never)]
    fn scan_lines(&mut self, buf: &[u8]) -> Result<Progress, ProtocolError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Payload { left, crlf } => {
                    let avail = buf.len().saturating_sub(pos);
                    let take = left.min(avail);
                    if self.capturing {
                        let chunk = buf.get(pos..pos + take).unwrap_or(&[]);
                        self.capture(chunk);
                    }
                    pos += take;
                    let left = left - take;
                    let mut crlf = crlf;
                    if left == 0 {
                        while crlf > 0 {
                            let Some(&b) = buf.get(pos) else { break };
                            let want = if crlf == 2 { b'\r' } else { b'\n' };
                            if b != want {
                                return Err(ProtocolError::MissingCrlf);
                            }
                            pos += 1;
                            crlf -= 1;
                        }
                    }
                    if left > 0 || crlf > 0 {
                        self.state = State::Payload { left, crlf };
                        return Ok(Progress::NeedMore(pos));
                    }
                    self.capturing = false;
                    if self.stack.last().map(|l| l.kind) == Some(LevelKind::StreamedString) {
                        self.state = State::StreamedString;
                    } else {
                        self.state = State::Header;
                        if self.element_done() {
                            return Ok(Progress::Frame(pos));
                        }
                    }
                }
                State::Header | State::StreamedString => {
                    let rest = buf.get(pos..).unwrap_or(&[]);
                    let Some(line_len) = self.find_line(rest)? else {
                        return Ok(Progress::NeedMore(pos));
                    };
                    let line = rest.get(..line_len).unwrap_or(&[]);
                    pos += line_len + 1;
                    if self.handle_line(line)? {
                        return Ok(Progress::Frame(pos));
                    }
                }
            }
        }
    }

    /// Finds the `\n` ending the line at the start of `rest`, resuming the
    /// search where the last call stopped. Returns the index of the `\n`.
    fn find_line(&mut self, rest: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let from = self.line_checked.min(rest.len());
        let inline =
            self.dir == Direction::Request && self.at_frame_start && rest.first() != Some(&b'*');
        let found = find_lf(rest.get(from..).unwrap_or(&[])).filter(|&i| {
            // Redis finds an inline line's end with strchr: a NUL before
            // the `\n` hides it, and all that follows, so the line goes on
            // until it is too big (a RESP line takes any byte).
            !inline || memchr(0, rest.get(..from + i).unwrap_or(&[])).is_none()
        });
        match found {
            Some(i) => {
                self.line_checked = 0;
                Ok(Some(from + i))
            }
            None => {
                self.line_checked = rest.len();
                // Request lines are capped like Redis's inline buffer; reply
                // lines (a MONITOR line can hold a whole value) like a bulk.
                let cap = match self.dir {
                    Direction::Request => self.limits.max_inline_len,
                    Direction::Reply => self.limits.max_bulk_len,
                };
                if rest.len() > cap {
                    return Err(if inline {
                        ProtocolError::TooBigInline
                    } else if self.dir == Direction::Request && self.stack.is_empty() {
                        ProtocolError::TooBigCountLine
                    } else if self.dir == Direction::Request {
                        ProtocolError::TooBigBulkCountLine
                    } else {
                        ProtocolError::BadLength(rest.first().copied().unwrap_or(0))
                    });
                }
                Ok(None)
            }
        }
    }

    /// Handles one complete line (without its `\n`). Returns true when it
    /// completes the top-level frame.
    fn handle_line(&mut self, line: &[u8]) -> Result<bool, ProtocolError> {
        if self.at_frame_start {
            self.start_frame();
            if self.dir == Direction::Request && line.first() != Some(&b'*') {
                // An inline command (telnet, nc): the whole line is the request.
                let text = line.strip_suffix(b"\r").unwrap_or(line);
                self.info.kind = b'i';
                self.capture(text);
                self.head_done = true;
                self.at_frame_start = true;
                return Ok(true);
            }
        }
        if self.dir == Direction::Request && !self.stack.is_empty() && line.first() != Some(&b'$') {
            // What Redis checks first inside a multibulk (an empty line
            // included: it reports the CR or LF it found).
            return Err(ProtocolError::ExpectedBulk(
                line.first().copied().unwrap_or(b'\n'),
            ));
        }
        let line = line.strip_suffix(b"\r").ok_or(ProtocolError::MissingCrlf)?;
        let (&kind, body) = line.split_first().ok_or(ProtocolError::BadType(b'\n'))?;

        if self.state == State::StreamedString {
            // `;len` chunks of a streamed string, `;0` ends it.
            if kind != b';' {
                return Err(ProtocolError::BadType(kind));
            }
            let len = self.parse_bulk_len(kind, body)?;
            if len == 0 {
                self.stack.pop();
                self.state = State::Header;
                return Ok(self.element_done());
            }
            self.state = State::Payload { left: len, crlf: 2 };
            return Ok(false);
        }

        if self.dir == Direction::Request {
            return self.handle_request_line(kind, body);
        }
        if self.stack.is_empty() && kind != b'|' && self.info.kind == 0 {
            self.info.kind = kind;
        }
        match kind {
            b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => {
                if self.wants_head() {
                    self.capture(body);
                    self.head_done = true;
                }
                Ok(self.element_done())
            }
            b'$' | b'!' | b'=' => {
                if body == b"?" {
                    self.push(Level::new(0, LevelKind::StreamedString))?;
                    self.state = State::StreamedString;
                    return Ok(false);
                }
                if body == b"-1" {
                    return Ok(self.element_done());
                }
                let len = self.parse_bulk_len(kind, body)?;
                self.capturing = self.wants_head();
                self.head_done |= self.capturing;
                self.state = State::Payload { left: len, crlf: 2 };
                Ok(false)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if body == b"?" {
                    self.push(Level::new(0, LevelKind::StreamedAggregate))?;
                    return Ok(false);
                }
                if body == b"-1" {
                    return Ok(self.element_done());
                }
                let n = parse_int(body)
                    .filter(|n| *n >= 0)
                    .ok_or(ProtocolError::BadLength(kind))? as u64;
                let n = if kind == b'%' || kind == b'|' {
                    n * 2
                } else {
                    n
                };
                if self.stack.is_empty() && kind != b'|' {
                    self.info.len = n as usize;
                }
                let level_kind = if kind == b'|' {
                    LevelKind::Attribute
                } else {
                    LevelKind::Counted
                };
                if n == 0 {
                    // An empty attribute still annotates the value after it.
                    return Ok(level_kind == LevelKind::Counted && self.element_done());
                }
                self.push(Level::new(n, level_kind))?;
                Ok(false)
            }
            b'.' => match self.stack.last() {
                Some(level) if level.kind == LevelKind::StreamedAggregate => {
                    self.stack.pop();
                    Ok(self.element_done())
                }
                _ => Err(ProtocolError::UnexpectedEnd),
            },
            other => Err(ProtocolError::BadType(other)),
        }
    }

    fn handle_request_line(&mut self, kind: u8, body: &[u8]) -> Result<bool, ProtocolError> {
        if self.stack.is_empty() {
            // The `*N` header of a new request.
            let n = parse_int(body)
                .filter(|n| *n <= i64::from(i32::MAX))
                .ok_or(ProtocolError::InvalidMultibulkLength)?;
            self.info.kind = b'*';
            if n <= 0 {
                // Redis ignores empty multibulks; the session drops them.
                self.info.len = 0;
                self.at_frame_start = true;
                return Ok(true);
            }
            self.info.len = n as usize;
            self.stack.push(Level::new(n as u64, LevelKind::Counted));
            return Ok(false);
        }
        if kind != b'$' {
            return Err(ProtocolError::ExpectedBulk(kind));
        }
        let len = parse_int(body)
            .filter(|n| *n >= 0 && (*n as u64) <= self.limits.max_bulk_len as u64)
            .ok_or(ProtocolError::InvalidBulkLength)? as usize;
        self.capturing = !self.head_done;
        self.head_done = true;
        self.state = State::Payload { left: len, crlf: 2 };
        Ok(false)
    }

    fn parse_bulk_len(&self, kind: u8, body: &[u8]) -> Result<usize, ProtocolError> {
        let n = parse_int(body)
            .filter(|n| *n >= 0)
            .ok_or(ProtocolError::BadLength(kind))?;
        if n as u64 > self.limits.max_bulk_len as u64 {
            return Err(ProtocolError::InvalidBulkLength);
        }
        Ok(n as usize)
    }

    fn start_frame(&mut self) {
        self.at_frame_start = false;
        self.head_done = false;
        self.capturing = false;
        self.info.kind = 0;
        self.info.len = 0;
        self.info.head_len = 0;
    }

    /// The next leaf is the frame's head unless one was taken already or
    /// the leaf sits inside an attribute.
    fn wants_head(&self) -> bool {
        !self.head_done && self.stack.iter().all(|l| l.kind != LevelKind::Attribute)
    }

    fn push(&mut self, level: Level) -> Result<(), ProtocolError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(ProtocolError::TooDeep(self.limits.max_depth));
        }
        self.stack.push(level);
        Ok(())
    }

    fn capture(&mut self, bytes: &[u8]) {
        let at = usize::from(self.info.head_len);
        let room = HEAD_CAP.saturating_sub(at);
        let take = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (self.info.head.get_mut(at..at + take), bytes.get(..take)) {
            dst.copy_from_slice(src);
            self.info.head_len += take as u8;
        }
    }

    /// One value finished: count it against the open aggregates. Returns true
    /// when that completes the top-level frame.
    fn element_done(&mut self) -> bool {
        while let Some(level) = self.stack.last_mut() {
            if level.kind == LevelKind::StreamedAggregate {
                return false;
            }
            level.left = level.left.saturating_sub(1);
            if level.left > 0 {
                return false;
            }
            let attribute = level.kind == LevelKind::Attribute;
            self.stack.pop();
            if attribute {
                // An attribute annotates the value that follows it.
                return false;
            }
        }
        self.at_frame_start = true;
        true
    }
}

/// Index of the first `\n`. Most lines are a few bytes: look at those one
/// by one before paying for a call to memchr.
fn find_lf(hay: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    // Splitting once is cheaper than `take(SHORT)`'s count in the loop.
    let (short, long) = hay.split_at_checked(SHORT).unwrap_or((hay, &[]));
    match short.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i),
        None => memchr(b'\n', long).map(|i| i + SHORT),
    }
}

/// Parses a RESP integer (optional `-`, then digits), rejecting anything else.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    // Like Redis's string2ll: no leading zeros, no "-0".
    if digits.first() == Some(&b'0') && (digits.len() > 1 || neg) {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        })
    }
}

#[path = "scan_fast.rs"]
mod fast;

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
