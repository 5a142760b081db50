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

/// One non-blocking read into `buf`, growing it first if needed;
/// `frame_left` is what the frame being read still needs (0: not known).
///
/// A read that did not fill the buffer drained the socket, so readiness is
/// cleared right away (as tokio's own `poll_read` does): otherwise the next
/// loop would spend a `recvfrom` per request just to learn `EAGAIN`.
pub(super) fn read_some(
    stream: &TcpStream,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    frame_left: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < size.read / 4 {
        match growth(buf.len(), size.read, frame_left) {
            Growth::Exact(more) => {
                let mut block = BytesMut::with_capacity(buf.len() + more);
                block.extend_from_slice(buf);
                *buf = block;
            }
            Growth::Reserve(more) => buf.reserve(more),
        }
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

/// Room to add to a read buffer whose room ran short.
#[derive(Debug, PartialEq)]
enum Growth {
    /// `BytesMut::reserve`: it may reclaim the block in place, or move to
    /// one of twice the size.
    Reserve(usize),
    /// A new block with exactly this much more room.
    Exact(usize),
}

/// Held bytes past which a frame that will fit in seventeen times them
/// gets its whole size at once.
const EXACT_MIN: usize = 64 * 1024;

/// How a buffer holding `held` bytes grows, reads being `read` bytes, when
/// the frame in it still needs `frame_left` (0: not known). Growing by
/// half of what is held keeps a large frame's copies linear. A large frame
/// that needs at most sixteen times what it already sent gets exactly
/// that, in one block: a 512 MiB value is then copied little and takes
/// about its own size (doubling alone peaked at three times it), while a
/// length header alone, sent to make the proxy allocate, gets nothing ahead.
fn growth(held: usize, read: usize, frame_left: usize) -> Growth {
    let usual = read.max(held / 2);
    if held >= EXACT_MIN && frame_left > usual && frame_left / 16 <= held {
        Growth::Exact(frame_left)
    } else {
        Growth::Reserve(usual)
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

    /// What growing a read buffer costs while one request of `value` bytes
    /// arrives in reads that fill the room: (peak bytes allocated at once,
    /// bytes copied). `Reserve` is modelled as `Vec::reserve` (at least
    /// double), a move costing a copy of what is held.
    fn grow_through(value: usize) -> (usize, usize) {
        let header = 20;
        let total = header + value + 2;
        let (mut held, mut capacity, mut size) = (0, 0, ReadSize::default());
        let (mut peak, mut copied) = (0, 0);
        while held < total {
            if capacity - held < size.read / 4 {
                // The scanner has read the length header once it is held.
                let frame_left = if held >= header { total - held } else { 0 };
                let new = match growth(held, size.read, frame_left) {
                    Growth::Exact(more) => held + more,
                    Growth::Reserve(more) => (2 * capacity).max(held + more),
                };
                peak = peak.max(capacity + new);
                copied += held;
                capacity = new;
            }
            let read = (capacity - held).min(total - held);
            if read == capacity - held {
                size.read = (size.read * 2).min(READ_MAX);
            }
            held += read;
        }
        (peak, copied)
    }

    #[test]
    fn a_large_value_is_given_its_size_once_it_is_well_under_way() {
        for value in [64 << 20, 512 << 20, 300_000_000] {
            let (peak, copied) = grow_through(value);
            assert!(
                peak <= value + value / 8,
                "{value}-byte value: peak {peak} bytes allocated at once"
            );
            assert!(
                copied <= value / 4,
                "{value}-byte value: {copied} bytes copied"
            );
        }
    }

    #[test]
    fn a_length_header_alone_allocates_nothing_ahead() {
        assert_eq!(growth(20, READ_MIN, 512 << 20), Growth::Reserve(READ_MIN));
        assert_eq!(
            growth(EXACT_MIN, READ_MAX, 512 << 20),
            Growth::Reserve(READ_MAX.max(EXACT_MIN / 2))
        );
        // A small remainder grows as usual: reads stay full size.
        assert_eq!(growth(1 << 20, READ_MAX, 100), Growth::Reserve(1 << 19));
    }
}
