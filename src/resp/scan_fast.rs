//! The scanner's fast path: a common frame lying whole at the start of a
//! buffer, read in one pass with no state to save.
//!
//! It knows requests (`*N` and N bulk strings) and replies that are a leaf
//! (simple line, bulk, null) or a flat aggregate of leaves. Anything else —
//! an incomplete frame, odd syntax, a value near a limit, nesting, RESP3
//! attributes or streams — is `None`, and the caller scans the same bytes
//! with the slow path, which alone reports errors. So for every frame this
//! accepts, the slow path would find the same end, kind, length and head.
//!
//! The same steps serve the session's one-step readers
//! ([`request_name`], [`leaf_reply`]), which skip the summary: the
//! session needs only the command name, or the reply's type byte.
//!
//! Each step takes the bytes left and returns what follows what it read;
//! slice patterns keep the bounds checks to one length test per step.

use super::{Direction, FrameInfo, HEAD_CAP, Limits, find_lf};

/// A complete frame at the start of `buf`: its length and summary.
pub(super) fn frame(buf: &[u8], dir: Direction, limits: &Limits) -> Option<(usize, FrameInfo)> {
    let (info, rest) = match dir {
        Direction::Request => request(buf, limits.max_bulk_len)?,
        Direction::Reply => reply(buf, limits)?,
    };
    Some((buf.len() - rest.len(), info))
}

/// A frame's head value: the bytes from its start to the end of the buffer,
/// and how many of them it spans.
#[derive(Clone, Copy)]
struct Head<'a> {
    from: &'a [u8],
    len: usize,
}

impl Head<'_> {
    #[inline(always)]
    fn summary(self, kind: u8, len: usize) -> FrameInfo {
        let head_len = self.len.min(HEAD_CAP);
        // A fixed 16-byte copy is cheaper than one of head_len bytes; what
        // lies past head_len is not part of the summary.
        let head = match self.from.first_chunk::<HEAD_CAP>() {
            Some(window) => *window,
            None => short_head(self.from, head_len),
        };
        FrameInfo {
            kind,
            len,
            head,
            head_len: head_len as u8,
        }
    }
}

/// A head near the end of the buffer. Out of line so that the compiler
/// does not merge the fixed copy above into this variable-length one.
#[cold]
#[inline(never)]
fn short_head(from: &[u8], head_len: usize) -> [u8; HEAD_CAP] {
    let mut head = [0; HEAD_CAP];
    if let (Some(dst), Some(src)) = (head.get_mut(..head_len), from.get(..head_len)) {
        dst.copy_from_slice(src);
    }
    head
}

/// A complete request at the start of `buf`: its length and its first
/// argument (the command name).
#[inline(always)]
pub(super) fn request_name(buf: &[u8], max_bulk_len: usize) -> Option<(usize, &[u8])> {
    let (_, head, rest) = request_parts(buf, max_bulk_len)?;
    let name = head.from.get(..head.len)?;
    Some((buf.len() - rest.len(), name))
}

/// A complete reply at the start of `buf` that is a single leaf: its
/// length and type byte.
#[inline(always)]
pub(super) fn leaf_reply(buf: &[u8], max_bulk_len: usize) -> Option<(usize, u8)> {
    let (&kind, rest) = buf.split_first()?;
    // `leaf` takes no aggregate.
    let (_, rest) = leaf(kind, rest, max_bulk_len)?;
    Some((buf.len() - rest.len(), kind))
}

/// `*N` (N > 0) and N bulk strings; the head is the first of them.
#[inline(always)]
fn request(buf: &[u8], max_bulk_len: usize) -> Option<(FrameInfo, &[u8])> {
    let (n, head, rest) = request_parts(buf, max_bulk_len)?;
    Some((head.summary(b'*', n), rest))
}

/// A request's argument count, first argument and the bytes after it.
#[inline(always)]
fn request_parts(buf: &[u8], max_bulk_len: usize) -> Option<(usize, Head<'_>, &[u8])> {
    let [b'*', rest @ ..] = buf else { return None };
    let (n, rest) = length(rest).filter(|&(n, _)| n > 0)?;
    let [b'$', rest @ ..] = rest else { return None };
    let (head, mut rest) = bulk(rest, max_bulk_len)?;
    for _ in 1..n {
        let [b'$', tail @ ..] = rest else { return None };
        (_, rest) = bulk(tail, max_bulk_len)?;
    }
    Some((n, head, rest))
}

/// A leaf or a flat aggregate of leaves (`*`, `~`, `>`, `%`); the head
/// is the first leaf that is not a null.
#[inline(always)]
fn reply<'a>(buf: &'a [u8], limits: &Limits) -> Option<(FrameInfo, &'a [u8])> {
    let (&kind, rest) = buf.split_first()?;
    let (len, head, rest) = match kind {
        b'*' | b'~' | b'>' | b'%' => match rest {
            [b'-', b'1', b'\r', b'\n', rest @ ..] => (0, None, rest),
            _ => {
                let (n, mut rest) = length(rest)?;
                let n = if kind == b'%' { n * 2 } else { n };
                // The aggregate's level would be one too deep.
                if n > 0 && limits.max_depth == 0 {
                    return None;
                }
                let mut head = None;
                for _ in 0..n {
                    let (&kind, tail) = rest.split_first()?;
                    let (leaf, tail) = leaf(kind, tail, limits.max_bulk_len)?;
                    head = head.or(leaf);
                    rest = tail;
                }
                (n, head, rest)
            }
        },
        _ => {
            let (head, rest) = leaf(kind, rest, limits.max_bulk_len)?;
            (0, head, rest)
        }
    };
    let head = head.unwrap_or(Head { from: &[], len: 0 });
    Some((head.summary(kind, len), rest))
}

/// A value that is not an aggregate, its type byte already read: no head
/// for a null, the text for anything else.
#[inline(always)]
fn leaf(kind: u8, s: &[u8], max_bulk_len: usize) -> Option<(Option<Head<'_>>, &[u8])> {
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => {
            // The rest of a line that ends in CRLF, without it.
            let lf = find_lf(s)?;
            let (line, rest) = s.split_at_checked(lf)?;
            let [.., b'\r'] = line else { return None };
            let head = Head {
                from: s,
                len: lf - 1,
            };
            Some((Some(head), rest.get(1..)?))
        }
        b'$' | b'!' | b'=' => match s {
            [b'-', b'1', b'\r', b'\n', rest @ ..] => Some((None, rest)),
            _ => {
                let (head, rest) = bulk(s, max_bulk_len)?;
                Some((Some(head), rest))
            }
        },
        _ => None,
    }
}

/// A bulk's length line, payload and CRLF (its type byte already read).
#[inline(always)]
fn bulk(s: &[u8], max_bulk_len: usize) -> Option<(Head<'_>, &[u8])> {
    let (len, from) = length(s)?;
    if len > max_bulk_len {
        return None;
    }
    let [b'\r', b'\n', rest @ ..] = from.get(len..)? else {
        return None;
    };
    Some((Head { from, len }, rest))
}

/// A length and its CRLF: 1 to 9 digits (so no overflow and nothing near
/// Redis's limits), no sign, no leading zero.
#[inline(always)]
fn length(s: &[u8]) -> Option<(usize, &[u8])> {
    // Most lengths have a digit or two: read those from one 4-byte word.
    // Fewer than 4 bytes are left only when the line ends the buffer (an
    // empty aggregate last in a read, `*0\r\n`): `long_length` reads that.
    if let Some((word, _)) = s.split_first_chunk::<4>() {
        let word = u32::from_le_bytes(*word);
        let first = (word & 0xff).wrapping_sub(u32::from(b'0'));
        if first < 10 {
            if word & 0x00ff_ff00 == 0x000a_0d00 {
                return Some((first as usize, s.get(3..)?));
            }
            let second = ((word >> 8) & 0xff).wrapping_sub(u32::from(b'0'));
            if first != 0 && second < 10 && word >> 16 == 0x0a0d {
                return Some(((first * 10 + second) as usize, s.get(4..)?));
            }
        }
    }
    long_length(s)
}

/// [`length`] past two digits or at the end of the buffer: rare, so kept out of line (inlining this
/// loop at every call site makes the common frames slower).
#[inline(never)]
fn long_length(s: &[u8]) -> Option<(usize, &[u8])> {
    let (mut n, mut rest, mut digits) = match s {
        [b'0', b'\r', b'\n', rest @ ..] => return Some((0, rest)),
        [d @ b'1'..=b'9', tail @ ..] => (digit(*d), tail, 1),
        _ => return None,
    };
    loop {
        match rest {
            [b'\r', b'\n', rest @ ..] => return Some((n, rest)),
            [d @ b'0'..=b'9', tail @ ..] if digits < 9 => {
                n = n * 10 + digit(*d);
                digits += 1;
                rest = tail;
            }
            _ => return None,
        }
    }
}

fn digit(d: u8) -> usize {
    usize::from(d - b'0')
}
