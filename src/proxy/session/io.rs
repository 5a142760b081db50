//! Non-blocking socket I/O for sessions: readiness, reads, and the queues
//! of bytes waiting to be written or answered.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The smallest and largest read asked of the kernel.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 16 * 1024;
/// The largest empty read buffer kept for the next reads.
const KEEP_MAX: usize = 4 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOV: usize = 64;

/// Whether a readiness poll says "go" (an error is reported as such).
pub(super) fn is_ready(poll: Poll<io::Result<()>>) -> io::Result<bool> {
    match poll {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// How many bytes one read asks for, per connection and direction, and how
/// large the memory block the read buffer is in. Most requests and replies
/// are tens of bytes: a small buffer is cheap to allocate, stays in cache
/// and may be kept while idle (see [`shrink_when_empty`]); a read that
/// fills it doubles the size.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadSize {
    read: usize,
    /// An empty buffer's room may be the tail of a larger block that it
    /// keeps alive whole (the rest went out as frozen `Bytes`).
    block: usize,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize {
            read: READ_MIN,
            block: 0,
        }
    }
}

/// One non-blocking read into `buf`, growing it first if needed.
///
/// A read that did not fill the buffer drained the socket, so readiness is
/// cleared right away (as tokio's own `poll_read` does): otherwise the next
/// loop would spend a `recvfrom` per request just to learn `EAGAIN`.
pub(super) fn read_some(
    stream: &TcpStream,
    buf: &mut BytesMut,
    size: &mut ReadSize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < size.read / 4 {
        // Growing by half of what is held keeps a large frame's copies linear.
        buf.reserve(size.read.max(buf.len() / 2));
        // Room that ran short is replaced by a new block (or the old one
        // reclaimed whole): what the buffer spans now is all of it.
        size.block = buf.capacity();
    }
    let room = buf.capacity() - buf.len();
    let mut read = 0;
    let result = stream.try_io(Interest::READABLE, || {
        read = stream.try_read_buf(buf)?;
        if read > 0 && read < room {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(read)
    });
    if read == room {
        size.read = (size.read * 2).min(READ_MAX);
    }
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
        other => other,
    }
}

/// Drops an empty read buffer whose block is larger than `KEEP_MAX`: an
/// idle connection keeps at most that per direction (see the idle-memory
/// benchmark). A smaller one is kept: the next reads fill its remaining
/// room with no allocation. Measured with 50 clients: keeping none cost a
/// malloc and a free per read at one request per wake-up.
pub(super) fn shrink_when_empty(buf: &mut BytesMut, size: &ReadSize) {
    if buf.is_empty() && size.block > KEEP_MAX {
        *buf = BytesMut::new();
    }
}

/// Byte chunks in order, with their total size.
#[derive(Default)]
pub(super) struct Chunks {
    chunks: VecDeque<Bytes>,
    pub bytes: usize,
}

impl Chunks {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.chunks.iter()
    }

    /// Drops the first `n` bytes.
    pub fn consume(&mut self, mut n: usize) {
        n = n.min(self.bytes);
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Removes the first `n` bytes and returns them (in pieces, no copy).
    pub fn take_front(&mut self, mut n: usize) -> Chunks {
        let mut taken = Chunks::default();
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let piece = if front.len() <= n {
                self.chunks.pop_front().unwrap_or_default()
            } else {
                front.split_to(n)
            };
            n -= piece.len();
            self.bytes -= piece.len();
            taken.push(piece);
        }
        taken
    }

    /// The chunks, in order.
    pub fn into_chunks(self) -> VecDeque<Bytes> {
        self.chunks
    }

    /// Appends all of `other`.
    pub fn append(&mut self, other: Chunks) {
        self.bytes += other.bytes;
        self.chunks.extend(other.chunks);
    }

    /// The bytes in one piece (copied only when they are in several).
    pub fn contiguous(&self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.front().cloned().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(self.bytes);
                for chunk in &self.chunks {
                    all.extend_from_slice(chunk);
                }
                all.freeze()
            }
        }
    }
}

/// Bytes waiting to be written to one socket, in order.
#[derive(Default)]
pub(super) struct OutQueue {
    pub queue: Chunks,
}

impl OutQueue {
    pub fn push(&mut self, chunk: Bytes) {
        self.queue.push(chunk);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.queue.bytes
    }

    /// Writes as much as the socket takes now, in as few syscalls as possible.
    pub fn flush(&mut self, stream: &TcpStream) -> io::Result<()> {
        while let Some(first) = self.queue.chunks.front() {
            // One buffer (the usual case) goes out with send(2), which costs
            // the kernel less than writev(2).
            let result = if self.queue.chunks.len() == 1 {
                stream.try_write(first)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let mut count = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.queue.iter()) {
                    *slot = IoSlice::new(chunk);
                    count += 1;
                }
                stream.try_write_vectored(slices.get(..count).unwrap_or(&[]))
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.queue.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let mut c = Chunks::default();
        for p in parts {
            c.push(Bytes::from_static(p));
        }
        c
    }

    #[test]
    fn take_front_splits_across_chunks_without_losing_bytes() {
        let mut c = chunks(&[b"abc", b"defg", b"h"]);
        let front = c.take_front(5);
        assert_eq!(&front.contiguous()[..], b"abcde");
        assert_eq!(front.bytes, 5);
        assert_eq!(&c.contiguous()[..], b"fgh");
        assert_eq!(c.bytes, 3);
        c.consume(2);
        assert_eq!(&c.contiguous()[..], b"h");
        let mut rest = c.take_front(10);
        assert!(c.is_empty());
        rest.append(chunks(&[b"ij"]));
        assert_eq!(&rest.contiguous()[..], b"hij");
    }
}
