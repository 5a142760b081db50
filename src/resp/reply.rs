//! Replies the proxy writes itself (errors, mostly), built with redis-protocol.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::{encode::extend_encode, types::BytesFrame};

/// An error reply `-<message>\r\n`. Newlines in the message are replaced so
/// the reply stays one line, as RESP requires.
pub fn error(message: &str) -> Bytes {
    let line: String = message
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut out = BytesMut::with_capacity(line.len() + 3);
    match extend_encode(&mut out, &BytesFrame::Error(line.into()), false) {
        Ok(_) => out.freeze(),
        // Encoding an error string cannot fail; keep a valid reply regardless.
        Err(_) => Bytes::from_static(b"-ERR internal error\r\n"),
    }
}

/// `-ERR Protocol error: <what>`, Redis's reply to a malformed request.
pub fn protocol_error(what: &impl std::fmt::Display) -> Bytes {
    error(&format!("ERR Protocol error: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_line() {
        assert_eq!(&error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
        assert_eq!(
            &protocol_error(&"invalid bulk length")[..],
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
    }
}
