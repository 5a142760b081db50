//! The scanner's fast path: a common frame lying whole at the start of a
//! buffer, read in one pass with no state to save.
//!
//! It knows requests (`*N` and N bulk strings) and replies that are a leaf
//! (simple line, bulk, null) or a flat aggregate of leaves. Anything else —
//! an incomplete frame, odd syntax, a value near a limit, nesting, RESP3
//! attributes or streams — is `None`, and the caller scans the same bytes
//! with the slow path, which alone reports errors. So for every frame this
//! accepts, the slow path would find the same end, kind, length and head.

use super::{Direction, Limits, find_lf};

/// A complete frame, summarised as the slow path would.
pub(super) struct Whole<'a> {
    pub end: usize,
    pub kind: u8,
    pub len: usize,
    /// The frame's head value, uncapped.
    pub head: &'a [u8],
}

pub(super) fn frame<'a>(buf: &'a [u8], dir: Direction, limits: &Limits) -> Option<Whole<'a>> {
    let mut cursor = Cursor { buf, pos: 0 };
    match dir {
        Direction::Request => cursor.request(limits.max_bulk_len),
        Direction::Reply => cursor.reply(limits),
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Consumes `bytes` if they come next.
    fn eat(&mut self, bytes: &[u8]) -> bool {
        let found = self
            .buf
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(bytes));
        if found {
            self.pos += bytes.len();
        }
        found
    }

    /// `*N` (N > 0) and N bulk strings; the head is the first of them.
    fn request(&mut self, max_bulk_len: usize) -> Option<Whole<'a>> {
        if self.next()? != b'*' {
            return None;
        }
        let n = self.length().filter(|&n| n > 0)?;
        let mut head = None;
        for _ in 0..n {
            if self.next()? != b'$' {
                return None;
            }
            let payload = self.blob(max_bulk_len)?;
            head.get_or_insert(payload);
        }
        Some(Whole {
            end: self.pos,
            kind: b'*',
            len: n,
            head: head.unwrap_or_default(),
        })
    }

    /// A leaf or a flat aggregate of leaves (`*`, `~`, `>`, `%`); the head
    /// is the first leaf that is not a null.
    fn reply(&mut self, limits: &Limits) -> Option<Whole<'a>> {
        let kind = *self.buf.first()?;
        let (len, head) = match kind {
            b'*' | b'~' | b'>' | b'%' => {
                self.pos += 1;
                if self.eat(b"-1\r\n") {
                    (0, None)
                } else {
                    let n = self.length()?;
                    let n = if kind == b'%' { n * 2 } else { n };
                    // The aggregate's level would be one too deep.
                    if n > 0 && limits.max_depth == 0 {
                        return None;
                    }
                    let mut head = None;
                    for _ in 0..n {
                        if let Some(leaf) = self.leaf(limits.max_bulk_len)? {
                            head.get_or_insert(leaf);
                        }
                    }
                    (n, head)
                }
            }
            _ => (0, self.leaf(limits.max_bulk_len)?),
        };
        Some(Whole {
            end: self.pos,
            kind,
            len,
            head: head.unwrap_or_default(),
        })
    }

    /// A value that is not an aggregate: `Some(None)` for a null, which is
    /// no head, `Some(Some(text))` for anything else.
    fn leaf(&mut self, max_bulk_len: usize) -> Option<Option<&'a [u8]>> {
        match self.next()? {
            b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => self.line().map(Some),
            b'$' | b'!' | b'=' if self.eat(b"-1\r\n") => Some(None),
            b'$' | b'!' | b'=' => self.blob(max_bulk_len).map(Some),
            _ => None,
        }
    }

    /// The rest of a line that ends in CRLF, without it.
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let lf = find_lf(rest)?;
        let text = rest.get(..lf)?.strip_suffix(b"\r")?;
        self.pos += lf + 1;
        Some(text)
    }

    /// A bulk's length line and payload (its type byte already read).
    fn blob(&mut self, max_bulk_len: usize) -> Option<&'a [u8]> {
        let len = self.length().filter(|&len| len <= max_bulk_len)?;
        let end = self.pos.checked_add(len)?;
        let payload = self.buf.get(self.pos..end)?;
        self.pos = end;
        self.eat(b"\r\n").then_some(payload)
    }

    /// A length and its CRLF: 1 to 9 digits (so no overflow and nothing
    /// near Redis's limits), no sign, no leading zero.
    fn length(&mut self) -> Option<usize> {
        let rest = self.buf.get(self.pos..)?;
        let digits = rest.iter().take(10).position(|b| !b.is_ascii_digit())?;
        let text = rest.get(..digits)?;
        if digits == 0 || (digits > 1 && text.first() == Some(&b'0')) {
            return None;
        }
        self.pos += digits;
        if !self.eat(b"\r\n") {
            return None;
        }
        Some(text.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
    }
}
