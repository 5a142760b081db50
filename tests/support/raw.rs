//! Raw RESP bytes for byte-exact assertions: frame boundaries (RESP2 and
//! RESP3, nulls included), small reply builders, and [`Conn`], a client that
//! reports a close or a silence as a value so a test can say what it
//! expected instead of failing inside a read.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{PATIENCE, encode};

/// Bytes as escaped ASCII, for messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The end of the complete RESP2/RESP3 value starting at `at`, or `None`
/// while it is incomplete. (The harness decoder rejects RESP2 nulls such as
/// `$-1` and `*-1`, so raw frames are delimited here.)
pub fn value_end(buf: &[u8], at: usize) -> Option<usize> {
    let eol = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let kind = *buf.get(at)?;
    let body = std::str::from_utf8(&buf[at + 1..eol]).expect("ASCII header");
    let next = eol + 2;
    let count = || -> usize {
        body.parse()
            .unwrap_or_else(|_| panic!("bad length in {}", show(&buf[at..next])))
    };
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => Some(next),
        b'$' | b'!' | b'=' if body == "-1" => Some(next),
        b'$' | b'!' | b'=' => {
            let end = next + count() + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' if body == "-1" => Some(next),
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = if matches!(kind, b'%' | b'|') {
                2 * count()
            } else {
                count()
            };
            let mut end = next;
            for _ in 0..n {
                end = value_end(buf, end)?;
            }
            // An attribute annotates the value that follows it.
            if kind == b'|' {
                value_end(buf, end)
            } else {
                Some(end)
            }
        }
        other => panic!(
            "unexpected RESP type byte {:?} in {}",
            other as char,
            show(buf)
        ),
    }
}

/// A bulk string frame.
pub fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

/// An integer frame.
pub fn int(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

/// An aggregate of `kind` (`b'*'` array, `b'>'` push) holding `items`.
pub fn aggregate(kind: u8, items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(format!("{}\r\n", items.len()).as_bytes());
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

/// An array of bulk strings, as Redis writes most multi-value replies.
pub fn bulk_array(items: &[&str]) -> Vec<u8> {
    aggregate(b'*', &items.iter().map(|s| bulk(s)).collect::<Vec<_>>())
}

/// Whether a frame is an error reply (RESP2 `-`, RESP3 `!`).
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// The text of a RESP2 bulk string frame, `None` for any other frame.
pub fn bulk_text(frame: &[u8]) -> Option<String> {
    let rest = frame.strip_prefix(b"$")?;
    let eol = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
    let body = rest.get(eol + 2..eol + 2 + len)?;
    Some(String::from_utf8_lossy(body).into_owned())
}

/// What a connection produced.
#[derive(Debug)]
pub enum Got {
    /// One complete frame, raw.
    Frame(Vec<u8>),
    /// The peer closed the connection (EOF or reset); the bytes of an
    /// unfinished frame that came before.
    Closed(Vec<u8>),
    /// No complete frame within the time given; what came so far.
    Silent(Vec<u8>),
}

/// A blocking client connection that speaks raw RESP, labelled for messages.
pub struct Conn {
    pub label: String,
    stream: TcpStream,
    buf: Vec<u8>,
    /// How the peer closed, once it has.
    closed: Option<String>,
    /// The first failed write, reported with the close it led to.
    send_error: Option<String>,
}

impl Conn {
    pub fn connect(addr: SocketAddr, label: &str) -> Conn {
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|e| panic!("{label}: connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            label: label.to_owned(),
            stream,
            buf: Vec::new(),
            closed: None,
            send_error: None,
        }
    }

    /// Sends one command as a RESP array of bulk strings. A failed write is
    /// remembered, not raised: the read that follows reports the close.
    pub fn send(&mut self, args: &[&str]) {
        self.send_raw(&encode(args));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            self.send_error.get_or_insert_with(|| e.to_string());
        }
    }

    /// The next complete frame, or why there is none within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buf.is_empty()
                && let Some(end) = value_end(&self.buf, 0)
            {
                return Got::Frame(self.buf.drain(..end).collect());
            }
            if self.closed.is_some() {
                return Got::Closed(self.buf.clone());
            }
            if !self.fill(deadline) {
                return Got::Silent(self.buf.clone());
            }
        }
    }

    /// The next frame; panics, saying what was awaited, on a close or after
    /// `timeout` without one.
    pub fn reply(&mut self, what: &str, timeout: Duration) -> Vec<u8> {
        match self.next(timeout) {
            Got::Frame(frame) => frame,
            Got::Closed(partial) => panic!(
                "{}: expected a reply to {what}, but the proxy closed the connection ({}){}",
                self.label,
                self.how_closed(),
                partial_note(&partial)
            ),
            Got::Silent(partial) => panic!(
                "{}: no reply to {what} within {timeout:?}{}",
                self.label,
                partial_note(&partial)
            ),
        }
    }

    /// Sends `args` and returns the raw reply (within [`PATIENCE`]).
    pub fn cmd(&mut self, args: &[&str]) -> Vec<u8> {
        self.send(args);
        self.reply(&format!("{args:?}"), PATIENCE)
    }

    /// Sends `args` and asserts the exact reply bytes.
    pub fn expect(&mut self, args: &[&str], want: &[u8]) {
        let got = self.cmd(args);
        assert!(
            got == want,
            "{}: reply to {args:?}: expected {}, got {}",
            self.label,
            show(want),
            show(&got)
        );
    }

    /// Waits for the peer to close the connection; `Ok` with every byte that
    /// came before the close, or `Err` saying what came instead.
    pub fn closed_within(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() {
            if !self.fill(deadline) {
                return Err(format!(
                    "the connection was still open after {timeout:?}; received meanwhile: {:?}",
                    show(&self.buf)
                ));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// How the peer closed (for messages).
    pub fn how_closed(&self) -> String {
        let how = self.closed.as_deref().unwrap_or("still open");
        match &self.send_error {
            Some(e) => format!("{how}; a write had failed: {e}"),
            None => how.to_owned(),
        }
    }

    /// Reads what is there before `deadline`; false if nothing came and the
    /// connection is still open (the deadline passed).
    fn fill(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = Some("EOF".into());
                    return true;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.closed = Some(format!("read failed: {e}"));
                    return true;
                }
            }
        }
    }
}

fn partial_note(partial: &[u8]) -> String {
    if partial.is_empty() {
        String::new()
    } else {
        // A large value would flood the report: its start says enough.
        let start = &partial[..partial.len().min(200)];
        format!(
            "; {} unfinished bytes received, starting: {}",
            partial.len(),
            show(start)
        )
    }
}
