//! Whole frames for the control plane: our scanner finds each frame's end
//! (with a small depth limit), and only then does redis-protocol decode it,
//! so a hostile peer can neither recurse the decoder off the stack nor make
//! it re-parse a growing buffer.

use std::io;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::request::Args;
use super::scan::{Direction, Limits, Progress, Scanner};

/// Nesting allowed in control-plane replies (Sentinel's deepest is 2).
const CONTROL_DEPTH: usize = 8;
/// Longest string on a control-plane connection (INFO is a few KiB): an
/// unauthenticated peer cannot make us buffer Redis's 512 MB.
const CONTROL_BULK: usize = 1 << 20;

/// Reads complete frames from one connection.
pub struct FrameReader {
    buf: BytesMut,
    scanner: Scanner,
    scanned: usize,
}

impl FrameReader {
    pub fn new(direction: Direction) -> Self {
        let limits = Limits {
            max_depth: CONTROL_DEPTH,
            max_bulk_len: CONTROL_BULK,
            ..Limits::default()
        };
        FrameReader {
            buf: BytesMut::new(),
            scanner: Scanner::new(direction, limits),
            scanned: 0,
        }
    }

    /// The next complete frame's raw bytes, or `None` at end of stream.
    pub async fn next_raw<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Option<Bytes>> {
        loop {
            let rest = self.buf.get(self.scanned..).unwrap_or(&[]);
            match self.scanner.scan(rest) {
                Ok(Progress::Frame(n)) => {
                    let frame = self.buf.split_to(self.scanned + n).freeze();
                    self.scanned = 0;
                    return Ok(Some(frame));
                }
                Ok(Progress::NeedMore(n)) => self.scanned += n,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            self.buf.reserve(4096);
            if reader.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next reply, decoded.
    pub async fn next_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Option<BytesFrame>> {
        let Some(raw) = self.next_raw(reader).await? else {
            return Ok(None);
        };
        let mut raw = BytesMut::from(raw);
        match decode_bytes_mut(&mut raw) {
            Ok(Some((frame, _, _))) => Ok(Some(frame)),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "incomplete frame",
            )),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                e.details().to_owned(),
            )),
        }
    }

    /// The next request's arguments (inline requests are split as Redis does).
    pub async fn next_request<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Option<Result<Vec<Bytes>, super::ProtocolError>>> {
        let Some(raw) = self.next_raw(reader).await? else {
            return Ok(None);
        };
        if raw.first() == Some(&b'*') {
            let args = Args::new(&raw).map(|a| raw.slice_ref(a)).collect();
            return Ok(Some(Ok(args)));
        }
        Ok(Some(
            super::request::inline_args(&raw)
                .map(|args| args.into_iter().map(Bytes::from).collect()),
        ))
    }
}

/// The text of a simple string, error or bulk string reply.
pub fn frame_text(frame: &BytesFrame) -> Option<String> {
    match frame {
        BytesFrame::SimpleString(b) | BytesFrame::BulkString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        BytesFrame::Error(s) => Some(s.to_string()),
        _ => None,
    }
}
