//! Fuzzes `sentinel_proxy::resp::Scanner` with arbitrary bytes.
//!
//! Input layout: two bytes choosing a split point, then the RESP bytes. For
//! both directions the scanner is driven the way `proxy::session` drives it
//! (offer everything from the resume point, reveal more bytes, offer again)
//! and must:
//!
//! * never panic, never report `Frame(n)`/`NeedMore(n)` past the slice given,
//!   never report `Frame(0)`;
//! * report the same frame ends, frame summaries and error whether the
//!   input arrives whole, split in two at the chosen point, or byte by byte
//!   (with default limits: inputs are far below the 64 KiB line limit, the
//!   only split-dependent check);
//! * with tight limits too, never panic or overrun (results not compared);
//! * agree with redis-protocol 6 on the length of the first frame whenever
//!   redis-protocol decodes a complete valid frame (replies: RESP2 decoder,
//!   RESP3 complete decoder and RESP3 streaming decoder; requests: RESP2
//!   decoder when the frame is a non-empty array of bulk strings), except
//!   where the scanner is legitimately stricter — see [`legit_stricter`].

#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::decode::decode_range as resp2_decode_range;
use redis_protocol::resp2::types::RangeFrame as Resp2Frame;
use redis_protocol::resp3::decode::complete::decode_range as resp3_decode_range;
use redis_protocol::resp3::decode::streaming::decode_range as resp3_stream_decode_range;
use redis_protocol::resp3::types::{DecodedRangeFrame, FrameKind, RangeAttributes, RangeFrame};
use sentinel_proxy::resp::{Direction, Limits, Progress, ProtocolError, Scanner};

#[path = "../../tests/support/scan_driver.rs"]
mod scan_driver;
use scan_driver::scan_chunked;

/// What the reference decoders say about the frame at the start of a buffer,
/// reduced to what matters for comparing with the scanner.
#[derive(Default, Debug)]
struct Facts {
    /// `[start, end)` of every blob payload (bulk, blob error, verbatim incl.
    /// its `fmt:` prefix, streamed chunk), to tell payload bytes from lines.
    payloads: Vec<(usize, usize)>,
    /// The frame holds something the scanner rejects by design: a streamed
    /// chunk `;..` or end marker `.` outside a streamed value, or an inline
    /// `HELLO` (redis-protocol accepts those anywhere).
    stray_stream_or_hello: bool,
    /// A map or set was decoded: redis-protocol keeps them in a HashMap/
    /// HashSet, so duplicate members (and their payloads) can be missing.
    lossy: bool,
}

impl Facts {
    fn shift(&mut self, off: usize, other: Facts) {
        self.payloads
            .extend(other.payloads.into_iter().map(|(s, e)| (s + off, e + off)));
        self.stray_stream_or_hello |= other.stray_stream_or_hello;
        self.lossy |= other.lossy;
    }

    fn resp2(&mut self, frame: &Resp2Frame) {
        match frame {
            Resp2Frame::BulkString(r) => self.payloads.push(*r),
            Resp2Frame::Array(items) => items.iter().for_each(|f| self.resp2(f)),
            _ => {}
        }
    }

    fn attributes(&mut self, attributes: &Option<RangeAttributes>) {
        if let Some(attributes) = attributes {
            self.lossy = true;
            for (k, v) in attributes {
                self.resp3(k);
                self.resp3(v);
            }
        }
    }

    fn resp3(&mut self, frame: &RangeFrame) {
        match frame {
            RangeFrame::BlobString { data, attributes }
            | RangeFrame::BlobError { data, attributes } => {
                self.payloads.push(*data);
                self.attributes(attributes);
            }
            RangeFrame::VerbatimString {
                data, attributes, ..
            } => {
                self.payloads.push((data.0 - 4, data.1));
                self.attributes(attributes);
            }
            RangeFrame::Array { data, attributes } | RangeFrame::Push { data, attributes } => {
                data.iter().for_each(|f| self.resp3(f));
                self.attributes(attributes);
            }
            RangeFrame::Map { data, attributes } => {
                self.lossy = true;
                for (k, v) in data {
                    self.resp3(k);
                    self.resp3(v);
                }
                self.attributes(attributes);
            }
            RangeFrame::Set { data, attributes } => {
                self.lossy = true;
                data.iter().for_each(|f| self.resp3(f));
                self.attributes(attributes);
            }
            RangeFrame::ChunkedString(_) | RangeFrame::Hello { .. } => {
                self.stray_stream_or_hello = true
            }
            RangeFrame::SimpleString { attributes, .. }
            | RangeFrame::SimpleError { attributes, .. }
            | RangeFrame::Boolean { attributes, .. }
            | RangeFrame::Number { attributes, .. }
            | RangeFrame::Double { attributes, .. }
            | RangeFrame::BigNumber { attributes, .. } => self.attributes(attributes),
            RangeFrame::Null => {}
        }
    }
}

/// Length of the streamed RESP3 value (`$?`, `*?`, `~?`, `%?`, possibly after
/// an attribute) at the start of `buf`, driving redis-protocol's streaming
/// decoder piece by piece, and the facts about all pieces.
fn streamed(buf: &[u8]) -> Option<(usize, Facts)> {
    // true: a streamed string (only `;` chunks), false: a streamed aggregate.
    let mut open: Vec<bool> = Vec::new();
    let mut facts = Facts::default();
    let mut off = 0;
    loop {
        let rest = buf.get(off..)?;
        let first = *rest.first()?;
        let (frame, amt) = resp3_stream_decode_range(rest).ok()??;
        let in_string = open.last() == Some(&true);
        let mut piece = Facts::default();
        match frame {
            DecodedRangeFrame::Streaming(s) => {
                // redis-protocol's RESP3 decoder also reads a `-1` length as
                // "streamed"; the scanner (like Redis) reads it as a null.
                if in_string || amt < 3 || rest.get(amt - 3) != Some(&b'?') {
                    return None;
                }
                piece.attributes(&s.attributes);
                open.push(s.kind == FrameKind::BlobString);
            }
            DecodedRangeFrame::Complete(f) => {
                let end_marker = matches!(f, RangeFrame::ChunkedString((0, 0)));
                if in_string != (first == b';') {
                    return None;
                }
                match &f {
                    RangeFrame::ChunkedString(r) if !end_marker => piece.payloads.push(*r),
                    RangeFrame::ChunkedString(_) => {}
                    other => piece.resp3(other),
                }
                if end_marker || first == b'.' {
                    open.pop()?;
                }
            }
        }
        facts.shift(off, piece);
        off += amt;
        if open.is_empty() {
            return Some((off, facts));
        }
    }
}

fn in_payload(facts: &Facts, i: usize) -> bool {
    facts.payloads.iter().any(|&(s, e)| s <= i && i < e)
}

/// Whether the scanner may reject, with `error`, the frame `frame` that
/// redis-protocol decodes as complete. redis-protocol is more lenient than
/// Redis (and than the scanner) in these ways:
///
/// * it ends lines at the first `\r\n`, so a bare `\n` inside a line is
///   content to it; the scanner ends lines at `\n` and wants `\r` before it
///   (`MissingCrlf`);
/// * it skips the two bytes after a blob payload without checking that they
///   are `\r\n` (`MissingCrlf`);
/// * it parses lengths with Rust's `parse`, which accepts a leading `+` and
///   any number of leading zeros; the scanner, like Redis's `string2ll`,
///   takes an optional `-`, at most 18 digits and no leading zero (`>01`,
///   `*03`, `$-0` are errors), and knows the null lengths only as exactly
///   `-1`, so it rejects `*-001` and `$-01`, which redis-protocol reads as
///   nulls (found by this fuzzer; Redis only ever sends `-1`) (`BadLength`,
///   `InvalidBulkLength`, `InvalidMultibulkLength`);
/// * its RESP3 decoder accepts streamed chunks (`;`), end markers (`.`) and
///   inline `HELLO` anywhere, even outside a streamed value (`BadType`,
///   `UnexpectedEnd`).
///
/// Limits (`TooDeep`, `InvalidBulkLength` past `max_bulk_len`, long lines)
/// cannot trigger: the comparison uses default limits and inputs are small.
fn legit_stricter(error: &ProtocolError, frame: &[u8], facts: &Facts) -> bool {
    let outside = |i: &usize| !in_payload(facts, *i);
    match error {
        ProtocolError::MissingCrlf => {
            let bare_lf = (0..frame.len())
                .filter(outside)
                .any(|i| frame[i] == b'\n' && (i == 0 || frame[i - 1] != b'\r'));
            let bad_terminator = facts
                .payloads
                .iter()
                .any(|&(_, e)| frame.get(e..e + 2) != Some(b"\r\n"));
            bare_lf || bad_terminator || facts.lossy
        }
        ProtocolError::BadLength(_)
        | ProtocolError::InvalidBulkLength
        | ProtocolError::InvalidMultibulkLength => {
            let odd_sign = (0..frame.len().saturating_sub(1)).filter(outside).any(|i| {
                let digits = frame.get(i + 1..).unwrap_or(&[]);
                let digits = digits.strip_prefix(b"-").unwrap_or(digits);
                let leading_zero = digits.first() == Some(&b'0')
                    && digits.get(1).is_some_and(|d| d.is_ascii_digit());
                b"$*%~>|!=;".contains(&frame[i])
                    && (frame[i + 1] == b'+'
                        || frame.get(i + 1..i + 3) == Some(b"-0")
                        || leading_zero)
            });
            let mut run = 0;
            let mut long_number = false;
            for i in 0..frame.len() {
                run = if outside(&i) && frame[i].is_ascii_digit() {
                    run + 1
                } else {
                    0
                };
                long_number |= run > 18;
            }
            odd_sign || long_number || facts.lossy
        }
        ProtocolError::BadType(_) | ProtocolError::UnexpectedEnd => {
            facts.stray_stream_or_hello || facts.lossy
        }
        _ => false,
    }
}

/// The scanner's verdict on the first frame of `data` (given whole).
fn first_frame(dir: Direction, data: &[u8]) -> Result<Progress, ProtocolError> {
    Scanner::new(dir, Limits::default()).scan(data)
}

fn compare(dir: Direction, data: &[u8], len: usize, facts: &Facts, decoder: &str) {
    match first_frame(dir, data) {
        Ok(Progress::Frame(n)) => assert_eq!(
            n, len,
            "{dir}: scanner and {decoder} disagree on the frame length"
        ),
        Ok(Progress::NeedMore(n)) => {
            panic!("{dir}: scanner wants more (consumed {n}) but {decoder} decodes {len} bytes")
        }
        Err(e) => assert!(
            legit_stricter(&e, &data[..len], facts),
            "{dir}: scanner rejects ({e}) the {len}-byte frame {decoder} decodes: {facts:?}"
        ),
    }
}

fn check_against_redis_protocol(data: &[u8]) {
    // redis-protocol recurses once per nesting level with no limit (see
    // docs/rust-crates.md); nesting is bounded by the number of lines.
    if data.iter().filter(|&&b| b == b'\n').count() > 256 {
        return;
    }
    if let Ok(Some((frame, len))) = resp2_decode_range(data) {
        let mut facts = Facts::default();
        facts.resp2(&frame);
        compare(Direction::Reply, data, len, &facts, "resp2::decode_range");
        // Requests are held to Redis's grammar: a non-empty array of bulk strings.
        if let Resp2Frame::Array(items) = &frame
            && !items.is_empty()
            && items.iter().all(|f| matches!(f, Resp2Frame::BulkString(_)))
        {
            compare(Direction::Request, data, len, &facts, "resp2::decode_range");
        }
    }
    if let Ok(Some((frame, len))) = resp3_decode_range(data) {
        let mut facts = Facts::default();
        facts.resp3(&frame);
        compare(
            Direction::Reply,
            data,
            len,
            &facts,
            "resp3 complete::decode_range",
        );
    }
    if let Some((len, facts)) = streamed(data) {
        compare(
            Direction::Reply,
            data,
            len,
            &facts,
            "resp3 streaming::decode_range",
        );
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((split, data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)) % (data.len() + 1);
    let tight = Limits {
        max_bulk_len: 64,
        max_depth: 4,
        max_inline_len: 16,
    };
    for dir in [Direction::Reply, Direction::Request] {
        let whole = scan_chunked(dir, Limits::default(), data, &[]);
        let halves = scan_chunked(dir, Limits::default(), data, &[split]);
        assert_eq!(halves, whole, "{dir}: split at {split} changes the result");
        let bytewise = scan_chunked(
            dir,
            Limits::default(),
            data,
            &(1..data.len()).collect::<Vec<_>>(),
        );
        assert_eq!(
            bytewise, whole,
            "{dir}: byte-by-byte feeding changes the result"
        );
        let _ = scan_chunked(dir, tight, data, &[split]);
    }
    if data.len() < 60_000 {
        check_against_redis_protocol(data);
    }
});
