//! One client connection and its own upstream connection (1:1).
//!
//! A single task owns both sockets and moves bytes in both directions without
//! ever blocking one direction on the other: reads and writes are all
//! non-blocking and the loop waits on whichever socket can make progress.
//! Bytes are forwarded unchanged (`split_to().freeze()`, no copy); the
//! scanners only find frame boundaries so that [`SessionState`] knows what is
//! in flight and which state-changing commands succeeded.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::state::SessionState;
use super::upstream;
use crate::resp::request::{encode_command, inline_args};
use crate::resp::{Direction, Limits, Progress, ProtocolError, Scanner, reply};
use crate::route::{Recheck, RouteReceiver};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;
/// Stop reading one side while this much is still waiting to go to the other.
const HIGH_WATER: usize = 4 * 1024 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOV: usize = 64;
/// An unfinished request may not grow past this, like Redis's `client-query-buffer-limit`.
const QUERY_BUFFER_LIMIT: usize = 1 << 30;
/// Least time between attempts to reach an unreachable master.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a closing connection keeps reading what the client still sends,
/// so the kernel does not reset the connection before our last reply is read.
const LINGER: Duration = Duration::from_secs(1);

/// What every session of one service shares.
#[derive(Debug)]
pub struct ServiceContext {
    pub name: String,
    pub route: RouteReceiver,
    pub limits: Limits,
    pub connect_timeout: Duration,
    pub keepalive: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// How long requests wait for a verified master before failing.
    pub hold_timeout: Duration,
    /// Asks the control plane to re-check the service's instances.
    pub recheck: Recheck,
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    UpstreamClosed,
    ProtocolError,
    IdleTimeout,
    Shutdown,
    /// The service's master moved (failover): the client reconnects to it.
    RouteChanged,
}

/// An I/O failure, by the side it happened on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client: {0}")]
    Client(io::Error),
    #[error("upstream: {0}")]
    Upstream(io::Error),
    #[error("upstream sent bad RESP: {0}")]
    UpstreamProtocol(ProtocolError),
}

/// Serves one client until it leaves, the upstream goes, or shutdown.
pub async fn run(client: TcpStream, service: Arc<ServiceContext>, shutdown: CancellationToken) {
    let peer = client.peer_addr().ok();
    let mut session = Session::new(client, service);
    let result = session.serve(shutdown).await;
    match &result {
        Ok(end) => tracing::debug!(?peer, ?end, service = %session.service.name, "session ended"),
        Err(e) => {
            tracing::debug!(?peer, error = %e, service = %session.service.name, "session failed")
        }
    }
    if matches!(result, Ok(End::ProtocolError | End::UpstreamClosed)) {
        linger(&session.client).await;
    }
}

/// Tells a client over the limit so, then closes, like Redis does.
pub async fn reject(client: TcpStream, message: &'static [u8]) {
    let mut out = OutQueue::default();
    out.push(Bytes::from_static(message));
    let deadline = Instant::now() + LINGER;
    while !out.is_empty() && Instant::now() < deadline {
        if tokio::time::timeout_at(deadline, client.writable())
            .await
            .is_err()
            || out.flush(&client).is_err()
        {
            return;
        }
    }
    linger(&client).await;
}

/// Half-closes and drains what the client still sends, for at most [`LINGER`],
/// so our last reply is not destroyed by a reset.
async fn linger(client: &TcpStream) {
    if socket2::SockRef::from(client)
        .shutdown(std::net::Shutdown::Write)
        .is_err()
    {
        return;
    }
    let deadline = Instant::now() + LINGER;
    // On the heap: a stack array here would live in every session's task
    // (this future is part of `run`) and cost 4 KiB per idle connection.
    let mut scratch = vec![0u8; 4096];
    while let Ok(Ok(())) = tokio::time::timeout_at(deadline, client.readable()).await {
        match client.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The upstream side of a session.
enum Upstream {
    Connected(TcpStream),
    /// The master could not be reached; requests get this error reply.
    Unreachable {
        reply: Bytes,
        since: Instant,
    },
}

struct Session {
    service: Arc<ServiceContext>,
    client: TcpStream,
    upstream: Upstream,
    master: SocketAddr,
    from_client: BytesMut,
    /// Bytes of `from_client` already scanned (all of one unfinished request).
    client_scanned: usize,
    client_scan: Scanner,
    from_upstream: BytesMut,
    upstream_scan: Scanner,
    to_upstream: OutQueue,
    to_client: OutQueue,
    state: SessionState,
    client_eof: bool,
    upstream_half_closed: bool,
    upstream_gone: bool,
    /// A protocol error reply to send once earlier requests are answered.
    fatal: Option<Bytes>,
    closing: bool,
    draining: bool,
    /// The route moved away from `master`.
    route_moved: bool,
    last_activity: Instant,
}

impl Session {
    fn new(client: TcpStream, service: Arc<ServiceContext>) -> Self {
        let limits = service.limits;
        let master = service.route.borrow().master;
        Session {
            client,
            upstream: Upstream::Unreachable {
                reply: Bytes::new(),
                since: Instant::now(),
            },
            master,
            from_client: BytesMut::new(),
            client_scanned: 0,
            client_scan: Scanner::new(Direction::Request, limits),
            from_upstream: BytesMut::new(),
            upstream_scan: Scanner::new(Direction::Reply, limits),
            to_upstream: OutQueue::default(),
            to_client: OutQueue::default(),
            state: SessionState::default(),
            client_eof: false,
            upstream_half_closed: false,
            upstream_gone: false,
            fatal: None,
            closing: false,
            draining: false,
            route_moved: false,
            last_activity: Instant::now(),
            service,
        }
    }

    async fn serve(&mut self, shutdown: CancellationToken) -> Result<End, SessionError> {
        let _ = upstream::tune(&self.client, self.service.keepalive);
        self.connect_upstream().await;
        // Polled once so the token knows to wake this task; after that the
        // loop only reads the flag (polling the future takes a lock).
        let mut stop = pin!(shutdown.clone().cancelled_owned());
        poll_fn(|cx| {
            let _ = stop.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        // Same idea for the route: the waiting future stays registered, and
        // a cheap version check says when it is worth polling.
        let mut route_wait = RouteWatch::new(self.service.route.clone());
        let idle = self.service.idle_timeout;
        let mut idle_timer = pin!(sleep_until(
            Instant::now() + idle.unwrap_or(Duration::from_secs(3600))
        ));
        loop {
            self.after_io()?;
            if let Some(end) = self.finished() {
                return Ok(end);
            }
            let wants = self.wants(idle.is_some());
            let ready = poll_fn(|cx| {
                self.poll_ready(cx, wants, &shutdown, idle_timer.as_mut(), &mut route_wait)
            })
            .await?;
            if ready.client_read {
                self.on_client_readable().await?;
            }
            if ready.upstream_read {
                self.on_upstream_readable()?;
            }
            if ready.stop {
                self.draining = true;
            }
            if let Some(route) = ready.route {
                let master = route.borrow().master;
                route_wait = RouteWatch::new(route);
                self.on_route(master);
            }
            if let (true, Some(idle)) = (ready.idle, idle) {
                if self.idle_exempt() {
                    idle_timer.as_mut().reset(Instant::now() + idle);
                } else if self.last_activity.elapsed() >= idle {
                    return Ok(End::IdleTimeout);
                } else {
                    idle_timer.as_mut().reset(self.last_activity + idle);
                }
            }
        }
    }

    /// The control plane moved the master. A session connected to the old
    /// one ends at its next quiet moment (nothing in flight, no open MULTI),
    /// so no more writes reach a master that is being demoted and the
    /// client reconnects to the new one; one that could not reach the old
    /// master tries the new one at its next request.
    fn on_route(&mut self, master: SocketAddr) {
        if master == self.master {
            return;
        }
        match &mut self.upstream {
            Upstream::Connected(_) => self.route_moved = true,
            Upstream::Unreachable { since, .. } => {
                *since = Instant::now()
                    .checked_sub(RECONNECT_INTERVAL)
                    .unwrap_or(*since);
            }
        }
    }

    /// Which events the session can act on now (backpressure included).
    fn wants(&self, idle: bool) -> Wants {
        let connected = matches!(self.upstream, Upstream::Connected(_));
        Wants {
            client_read: !self.client_eof
                && self.fatal.is_none()
                && !self.closing
                && self.to_upstream.bytes < HIGH_WATER
                && self.to_client.bytes < HIGH_WATER,
            upstream_read: connected && !self.upstream_gone && self.to_client.bytes < HIGH_WATER,
            upstream_write: connected && !self.upstream_gone && !self.to_upstream.is_empty(),
            client_write: !self.to_client.is_empty(),
            stop: !self.draining,
            idle,
        }
    }

    /// Waits until at least one wanted event is ready and reports all that
    /// are. Polling readiness directly (instead of a `select!` over fresh
    /// readiness futures every loop) registers no waiter list entries and
    /// handles both directions in one wake-up: the hot path's CPU per request.
    fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        wants: Wants,
        shutdown: &CancellationToken,
        idle: Pin<&mut Sleep>,
        route: &mut RouteWatch,
    ) -> Poll<Result<Ready, SessionError>> {
        use SessionError::{Client, Upstream as Up};
        let upstream = match &self.upstream {
            Upstream::Connected(stream) => Some(stream),
            Upstream::Unreachable { .. } => None,
        };
        let poll = |cx: &mut Context<'_>| -> Result<(Ready, bool), SessionError> {
            let client_read =
                wants.client_read && is_ready(self.client.poll_read_ready(cx)).map_err(Client)?;
            let client_write =
                wants.client_write && is_ready(self.client.poll_write_ready(cx)).map_err(Client)?;
            let (mut upstream_read, mut upstream_write) = (false, false);
            if let Some(upstream) = upstream {
                upstream_read =
                    wants.upstream_read && is_ready(upstream.poll_read_ready(cx)).map_err(Up)?;
                upstream_write =
                    wants.upstream_write && is_ready(upstream.poll_write_ready(cx)).map_err(Up)?;
            }
            let ready = Ready {
                client_read,
                upstream_read,
                stop: wants.stop && shutdown.is_cancelled(),
                idle: wants.idle && idle.poll(cx).is_ready(),
                route: route.poll_changed(cx),
            };
            let any = client_write
                || upstream_write
                || ready.client_read
                || ready.upstream_read
                || ready.stop
                || ready.idle
                || ready.route.is_some();
            Ok((ready, any))
        };
        match poll(cx) {
            Ok((ready, true)) => Poll::Ready(Ok(ready)),
            Ok((_, false)) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Connects to the routed master; on failure, remembers the error reply
    /// that requests will get until a later attempt succeeds.
    async fn connect_upstream(&mut self) {
        self.master = self.service.route.borrow().master;
        let service = &self.service;
        match upstream::connect(self.master, service.connect_timeout, service.keepalive).await {
            Ok(stream) => self.upstream = Upstream::Connected(stream),
            Err(e) => {
                tracing::warn!(service = %service.name, master = %self.master, error = %e, "master unreachable");
                let message = format!(
                    "ERR sentinel-proxy: service '{}': master {} is unreachable: {e}",
                    service.name, self.master
                );
                self.upstream = Upstream::Unreachable {
                    reply: reply::error(&message),
                    since: Instant::now(),
                };
            }
        }
    }

    async fn on_client_readable(&mut self) -> Result<(), SessionError> {
        match read_some(&self.client, &mut self.from_client) {
            Ok(0) => {
                self.client_eof = true;
                // An unfinished request can never complete now.
                self.from_client = BytesMut::new();
                self.client_scanned = 0;
                Ok(())
            }
            Ok(_) => {
                if self.service.idle_timeout.is_some() {
                    self.last_activity = Instant::now();
                }
                if let Upstream::Unreachable { since, .. } = self.upstream
                    && since.elapsed() >= RECONNECT_INTERVAL
                {
                    self.connect_upstream().await;
                }
                self.process_requests();
                self.flush_upstream();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(SessionError::Client(e)),
        }
    }

    /// Finds the complete requests in `from_client`, records them, and
    /// queues them for upstream (or answers them when there is none).
    fn process_requests(&mut self) {
        let mut complete = 0;
        loop {
            let rest = self.from_client.get(self.client_scanned..).unwrap_or(&[]);
            match self.client_scan.scan(rest) {
                Ok(Progress::Frame(n)) => {
                    let end = self.client_scanned + n;
                    let info = *self.client_scan.info();
                    self.client_scanned = end;
                    if info.kind == b'*' && info.len > 0 {
                        if let Upstream::Unreachable { reply, .. } = &self.upstream {
                            self.to_client.push(reply.clone());
                            self.from_client.advance(end);
                            self.client_scanned = 0;
                            continue;
                        }
                        let frame = self.from_client.get(complete..end).unwrap_or(&[]);
                        self.state.on_request(frame, &info);
                        complete = end;
                        continue;
                    }
                    // Inline commands are rewritten as RESP; empty ones dropped.
                    self.forward_requests(complete);
                    let frame = self.from_client.split_to(end - complete);
                    self.client_scanned = 0;
                    complete = 0;
                    if info.kind == b'i' {
                        self.inline_request(&frame);
                    }
                }
                Ok(Progress::NeedMore(n)) => {
                    self.client_scanned += n;
                    if self.from_client.len() - complete > QUERY_BUFFER_LIMIT {
                        self.forward_requests(complete);
                        self.fail(&"too big request");
                        return;
                    }
                    break;
                }
                Err(e) => {
                    self.forward_requests(complete);
                    self.fail(&e);
                    return;
                }
            }
        }
        self.forward_requests(complete);
        if self.from_client.is_empty() && self.from_client.capacity() > 0 {
            // Idle connections keep no buffer (see the idle-memory benchmark).
            self.from_client = BytesMut::new();
        }
    }

    /// Moves the first `complete` bytes of `from_client` (whole requests) to upstream.
    fn forward_requests(&mut self, complete: usize) {
        if complete > 0 {
            self.to_upstream
                .push(self.from_client.split_to(complete).freeze());
            self.client_scanned -= complete;
        }
    }

    fn inline_request(&mut self, frame: &[u8]) {
        match inline_args(frame) {
            Ok(args) if args.is_empty() => {}
            Ok(args) => {
                let encoded = encode_command(&args);
                let mut scan = Scanner::new(Direction::Request, self.service.limits);
                match scan.scan(&encoded) {
                    Ok(_) => match &self.upstream {
                        Upstream::Unreachable { reply, .. } => self.to_client.push(reply.clone()),
                        Upstream::Connected(_) => {
                            self.state.on_request(&encoded, scan.info());
                            self.to_upstream.push(encoded.freeze());
                        }
                    },
                    // An argument over the bulk limit, for example.
                    Err(e) => self.fail(&e),
                }
            }
            Err(e) => self.fail(&e),
        }
    }

    /// A malformed request: stop reading, answer what came before, then
    /// send the protocol error and close this connection only.
    fn fail(&mut self, what: &dyn std::fmt::Display) {
        tracing::info!(service = %self.service.name, error = %what, "client protocol error");
        self.fatal = Some(reply::protocol_error(&what));
        self.from_client = BytesMut::new();
        self.client_scanned = 0;
    }

    fn on_upstream_readable(&mut self) -> Result<(), SessionError> {
        let Upstream::Connected(stream) = &self.upstream else {
            return Ok(());
        };
        match read_some(stream, &mut self.from_upstream) {
            Ok(0) => {
                self.upstream_gone = true;
                Ok(())
            }
            Ok(_) => {
                self.process_replies()?;
                self.flush_client()
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                tracing::debug!(service = %self.service.name, error = %e, "upstream read failed");
                self.upstream_gone = true;
                Ok(())
            }
        }
    }

    /// Counts the replies in `from_upstream` and queues every scanned byte
    /// (payloads stream through even before their frame is complete).
    fn process_replies(&mut self) -> Result<(), SessionError> {
        let mut done = 0;
        loop {
            let rest = self.from_upstream.get(done..).unwrap_or(&[]);
            match self.upstream_scan.scan(rest) {
                Ok(Progress::Frame(n)) => {
                    done += n;
                    self.state.on_reply(self.upstream_scan.info());
                }
                Ok(Progress::NeedMore(n)) => {
                    done += n;
                    break;
                }
                Err(e) => return Err(SessionError::UpstreamProtocol(e)),
            }
        }
        if done > 0 {
            self.to_client
                .push(self.from_upstream.split_to(done).freeze());
        }
        if self.from_upstream.is_empty() && self.from_upstream.capacity() > 0 {
            self.from_upstream = BytesMut::new();
        }
        Ok(())
    }

    /// A failed write means the upstream is gone: what it already answered
    /// still goes to the client, then the session ends.
    fn flush_upstream(&mut self) {
        if let Upstream::Connected(stream) = &self.upstream
            && !self.upstream_gone
            && let Err(e) = self.to_upstream.flush(stream)
        {
            tracing::debug!(service = %self.service.name, error = %e, "upstream write failed");
            self.upstream_gone = true;
            self.to_upstream = OutQueue::default();
        }
    }

    fn flush_client(&mut self) -> Result<(), SessionError> {
        let before = self.to_client.bytes;
        self.to_client
            .flush(&self.client)
            .map_err(SessionError::Client)?;
        if self.service.idle_timeout.is_some() && self.to_client.bytes < before {
            // A client downloading a large reply is active too.
            self.last_activity = Instant::now();
        }
        Ok(())
    }

    /// Pushes queued bytes out and moves the session between phases.
    fn after_io(&mut self) -> Result<(), SessionError> {
        self.flush_upstream();
        if self.state.in_flight() == 0
            && self.to_upstream.is_empty()
            && let Some(error) = self.fatal.take()
        {
            self.to_client.push(error);
            self.closing = true;
        }
        if self.client_eof && self.to_upstream.is_empty() && !self.upstream_half_closed {
            // Let Redis answer what was sent, then close, as it does itself.
            if let Upstream::Connected(stream) = &self.upstream {
                let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
            }
            self.upstream_half_closed = true;
        }
        self.flush_client()
    }

    fn finished(&self) -> Option<End> {
        if !self.to_client.is_empty() {
            return None;
        }
        let connected = matches!(self.upstream, Upstream::Connected(_));
        if self.closing {
            Some(End::ProtocolError)
        } else if self.client_eof && (!connected || self.upstream_gone) {
            Some(End::ClientClosed)
        } else if self.upstream_gone {
            Some(End::UpstreamClosed)
        } else if self.draining && self.is_quiet() {
            Some(End::Shutdown)
        } else if self.route_moved && self.is_quiet() {
            Some(End::RouteChanged)
        } else {
            None
        }
    }

    /// Nothing in flight, nothing half-read, no transaction open: closing
    /// now loses nothing the client is waiting for.
    fn is_quiet(&self) -> bool {
        self.state.in_flight() == 0
            && self.to_upstream.is_empty()
            && self.client_scan.is_idle()
            && self.from_client.is_empty()
            && !self.state.in_multi
    }

    /// Like Redis's `timeout`: subscribers, MONITOR clients and clients
    /// waiting for a command (blocking or slow) are never idle.
    fn idle_exempt(&self) -> bool {
        self.state.in_flight() > 0 || self.state.subscribed() || self.state.monitor
    }
}

/// Whether a readiness poll says "go" (an error is reported as such).
fn is_ready(poll: Poll<io::Result<()>>) -> io::Result<bool> {
    match poll {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// One non-blocking read into `buf`, growing it first if needed.
///
/// A read that did not fill the buffer drained the socket, so readiness is
/// cleared right away (as tokio's own `poll_read` does): otherwise the next
/// loop would spend a `recvfrom` per request just to learn `EAGAIN`.
fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK.max(buf.len() / 2));
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
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
        other => other,
    }
}

/// The events a session waits for in one loop.
#[derive(Clone, Copy)]
struct Wants {
    client_read: bool,
    upstream_read: bool,
    upstream_write: bool,
    client_write: bool,
    stop: bool,
    idle: bool,
}

/// The events that are ready (writes need no flag: every loop flushes).
#[derive(Default)]
struct Ready {
    client_read: bool,
    upstream_read: bool,
    stop: bool,
    idle: bool,
    /// The route changed (the receiver comes back to wait for the next change).
    route: Option<RouteReceiver>,
}

/// Waits for the service's route to change; yields the receiver back.
struct RouteWatch {
    wait: Pin<Box<dyn Future<Output = RouteReceiver> + Send>>,
    /// Reads the route's version without a lock (the waiting future takes
    /// one each time it is polled).
    probe: RouteReceiver,
    armed: bool,
}

impl RouteWatch {
    fn new(route: RouteReceiver) -> RouteWatch {
        let probe = route.clone();
        let wait = Box::pin(async move {
            let mut route = route;
            if route.changed().await.is_err() {
                // No control plane (an observer): the route never changes.
                std::future::pending::<()>().await;
            }
            route
        });
        RouteWatch {
            wait,
            probe,
            armed: false,
        }
    }

    /// The receiver once the route changed. The future is polled once to
    /// register this task's waker, and again only when the version moved.
    fn poll_changed(&mut self, cx: &mut Context<'_>) -> Option<RouteReceiver> {
        if self.armed && !self.probe.has_changed().unwrap_or(false) {
            return None;
        }
        match self.wait.as_mut().poll(cx) {
            Poll::Ready(receiver) => Some(receiver),
            Poll::Pending => {
                self.armed = true;
                None
            }
        }
    }
}

/// Bytes waiting to be written to one socket, in order.
#[derive(Default)]
struct OutQueue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl OutQueue {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Writes as much as the socket takes now, in as few syscalls as possible.
    fn flush(&mut self, stream: &TcpStream) -> io::Result<()> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            // One buffer (the usual case) goes out with send(2), which costs
            // the kernel less than writev(2).
            let result = match self.chunks.front() {
                Some(only) if count == 1 => stream.try_write(only),
                _ => stream.try_write_vectored(slices.get(..count).unwrap_or(&[])),
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn consume(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() <= written {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}
