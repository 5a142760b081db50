//! Reading the arguments of a complete request, and inline commands.
//!
//! Requests have already been checked by the scanner, so the walk here is a
//! flat, linear pass that only runs for the few commands whose arguments the
//! session must remember (SELECT, AUTH, HELLO, SUBSCRIBE, ...).

use bytes::{BufMut, BytesMut};

use super::scan::ProtocolError;

/// Iterates over the arguments of a complete `*N` request frame.
pub struct Args<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Args<'a> {
    /// `frame` must be one complete request as reported by the scanner.
    pub fn new(frame: &'a [u8]) -> Self {
        let (left, rest) = match split_line(frame) {
            Some((header, rest)) => (parse_len(header.get(1..).unwrap_or(&[])), rest),
            None => (0, &[][..]),
        };
        Args { rest, left }
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let (header, rest) = split_line(self.rest)?;
        let len = parse_len(header.get(1..)?);
        let arg = rest.get(..len)?;
        self.rest = rest.get(len + 2..)?;
        self.left -= 1;
        Some(arg)
    }
}

/// Splits off one `\r\n`-terminated line.
fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = memchr::memchr(b'\n', buf)?;
    let line = buf.get(..nl)?;
    Some((line.strip_suffix(b"\r").unwrap_or(line), buf.get(nl + 1..)?))
}

fn parse_len(digits: &[u8]) -> usize {
    digits
        .iter()
        .take_while(|d| d.is_ascii_digit())
        .fold(0usize, |n, d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        })
}

/// The arguments of an inline request frame (one line, with its line end).
pub fn inline_args(frame: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let line = frame.strip_suffix(b"\n").unwrap_or(frame);
    split_inline(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Splits an inline command line into arguments the way Redis's
/// `sdssplitargs` does: whitespace separates; a quote opens a quoted part
/// anywhere in a word and its closing quote ends the word; double quotes
/// allow `\n`, `\xHH` and friends, single quotes allow `\'`. (No NUL
/// reaches it: the scanner, like Redis, ends no line after one.)
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_c_space) {
            i += 1;
        }
        if at(i).is_none() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut quote = None;
        loop {
            match (quote, at(i)) {
                (Some(_), None) => return Err(ProtocolError::UnbalancedQuotes),
                (Some(q), Some(c)) if c == q => {
                    // A closing quote must be followed by a space or the end.
                    if at(i + 1).is_some_and(|c| !is_c_space(c)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                (Some(b'"'), Some(b'\\')) => {
                    if let (Some(b'x'), Some(byte)) = (at(i + 1), hex_pair(at(i + 2), at(i + 3))) {
                        arg.push(byte);
                        i += 4;
                    } else if let Some(escaped) = at(i + 1) {
                        arg.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    } else {
                        arg.push(b'\\');
                        i += 1;
                    }
                }
                (Some(b'\''), Some(b'\\')) if at(i + 1) == Some(b'\'') => {
                    arg.push(b'\'');
                    i += 2;
                }
                (None, None | Some(b' ' | b'\n' | b'\r' | b'\t')) => break,
                (None, Some(q @ (b'"' | b'\''))) => {
                    quote = Some(q);
                    i += 1;
                }
                (_, Some(c)) => {
                    arg.push(c);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

/// C's `isspace`: what separates words (Rust's `is_ascii_whitespace`
/// leaves out the vertical tab).
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_pair(hi: Option<u8>, lo: Option<u8>) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(hi?)? * 16 + digit(lo?)?) as u8)
}

/// Encodes arguments as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> BytesMut {
    let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.put_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_walks_a_request() {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
        let args: Vec<&[u8]> = Args::new(frame).collect();
        assert_eq!(args, vec![&b"SET"[..], b"k", b""]);
    }

    #[test]
    fn inline_splits_like_redis() {
        assert_eq!(
            split_inline(b"  set k  v ").unwrap(),
            vec![b"set".to_vec(), b"k".to_vec(), b"v".to_vec()]
        );
        assert_eq!(
            split_inline(br#"set "a b\n\x41" 'it\'s'"#).unwrap(),
            vec![b"set".to_vec(), b"a b\nA".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(
            split_inline(b"set \"abc").unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
        assert_eq!(
            split_inline(b"set \"a\"b").unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
        assert!(split_inline(b"   ").unwrap().is_empty());
    }

    /// Cases where Redis 7.0 (sdssplitargs) was seen to differ from the
    /// first version of this splitter.
    #[test]
    fn inline_quotes_inside_a_word_open_a_quoted_part_like_redis() {
        assert_eq!(
            split_inline(b"ECHO a\"b").unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
        let cases: [(&[u8], &[&[u8]]); 4] = [
            (b"ECHO a\"b c\"", &[b"ECHO", b"ab c"]),
            (b"ECHO x'y z'", &[b"ECHO", b"xy z"]),
            // Inside a word only space, tab, CR and LF separate; between
            // words, C's isspace (vertical tab and form feed too).
            (b"ECHO a\x0bb", &[b"ECHO", b"a\x0bb"]),
            (b"\x0bECHO\x0c x", &[b"ECHO\x0c", b"x"]),
        ];
        for (line, want) in cases {
            assert_eq!(split_inline(line).unwrap(), want, "{line:?}");
        }
    }

    #[test]
    fn encode_round_trips_through_args() {
        let out = encode_command(&[&b"GET"[..], b"key"]);
        assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
        assert_eq!(Args::new(&out).count(), 2);
    }
}
