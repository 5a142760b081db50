//! One client connection and its own upstream connection (1:1).
//!
//! A single task owns both sockets and moves bytes in both directions without
//! ever blocking one direction on the other: reads and writes are all
//! non-blocking and the loop waits on whichever socket can make progress.
//! Bytes are forwarded unchanged (`split_to().freeze()`, no copy); the
//! scanners only find frame boundaries so that [`SessionState`] knows what is
//! in flight and which state-changing commands succeeded.
//!
//! When the master changes or dies, the session moves to the new one without
//! the client noticing, as far as the facts allow: see [`failover`].

mod failover;
mod io;

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use self::failover::{Hold, Loss};
use self::io::{Chunks, OutQueue, ReadSize, is_ready, read_some, shrink_when_empty};
use super::command_table::SharedTable;
use super::state::{Recorded, ReplyRole, SessionState};
use super::upstream;
use crate::resp::request::{encode_command, inline_args};
use crate::resp::{Direction, Limits, Progress, ProtocolError, Scanner, reply};
use crate::route::{Recheck, RouteReceiver};

/// Stop reading one side while this much is still waiting to go to the
/// other; also the most a session holds while no master is verified.
const HIGH_WATER: usize = 4 * 1024 * 1024;
/// Blocking requests up to this size are kept for a re-send as a copy of their own.
const KEEP_COPY_MAX: usize = 4096;
/// An unfinished request may not grow past this, like Redis's `client-query-buffer-limit`.
const QUERY_BUFFER_LIMIT: usize = 1 << 30;
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
    /// Which commands are safe to re-send, from the master's `COMMAND`.
    pub commands: Arc<SharedTable>,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    /// The upstream went away with a request whose outcome is unknown in
    /// flight (or after QUIT): the client sees what it would from Redis.
    UpstreamClosed,
    ProtocolError,
    IdleTimeout,
    Shutdown,
    /// The connection's state cannot be carried to a new master.
    Unmovable,
}

/// An I/O failure, by the side it happened on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("upstream: {0}")]
    Upstream(std::io::Error),
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
    if matches!(
        result,
        Ok(End::ProtocolError | End::UpstreamClosed | End::Unmovable)
    ) {
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
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The upstream side of a session.
enum Upstream {
    /// Client requests go straight to it once it is `verified`: its `ROLE`
    /// check (sent before them) said master.
    Connected { stream: TcpStream, verified: bool },
    /// No usable master; see [`Hold`].
    Down,
}

struct Session {
    service: Arc<ServiceContext>,
    client: TcpStream,
    upstream: Upstream,
    /// The master `upstream` is (or was last) connected to.
    master: SocketAddr,
    from_client: BytesMut,
    client_read: ReadSize,
    /// Bytes of `from_client` already scanned (all of one unfinished request).
    client_scanned: usize,
    client_scan: Scanner,
    from_upstream: BytesMut,
    upstream_read: ReadSize,
    /// Bytes of `from_upstream` scanned but kept back: the start of a reply
    /// that is the proxy's own, or an error that may be re-sent.
    upstream_scanned: usize,
    /// Part of an unfinished reply already went to the client.
    streaming: bool,
    upstream_scan: Scanner,
    to_upstream: OutQueue,
    /// Requests given to the current upstream and not yet answered, kept
    /// to be re-sent if it is lost (`to_upstream` is their unwritten tail).
    unanswered: Chunks,
    /// Client requests waiting for a verified master, in order.
    held: Chunks,
    /// How many of the state's pending requests are in `held`.
    held_requests: usize,
    hold: Hold,
    to_client: OutQueue,
    state: SessionState,
    client_eof: bool,
    upstream_half_closed: bool,
    /// A protocol error reply to send once earlier requests are answered.
    fatal: Option<Bytes>,
    closing: bool,
    draining: bool,
    /// Ends the session once the client has everything queued for it.
    end: Option<End>,
    /// Since when the route has pointed away from `master`: move at the
    /// next quiet moment, or give the old master up `hold_timeout` later.
    route_moved: Option<Instant>,
    last_activity: Instant,
}

impl Session {
    fn new(client: TcpStream, service: Arc<ServiceContext>) -> Self {
        let limits = service.limits;
        let master = service.route.borrow().master;
        Session {
            client,
            upstream: Upstream::Down,
            master,
            from_client: BytesMut::new(),
            client_read: ReadSize::default(),
            client_scanned: 0,
            client_scan: Scanner::new(Direction::Request, limits),
            from_upstream: BytesMut::new(),
            upstream_read: ReadSize::default(),
            upstream_scanned: 0,
            streaming: false,
            upstream_scan: Scanner::new(Direction::Reply, limits),
            to_upstream: OutQueue::default(),
            unanswered: Chunks::default(),
            held: Chunks::default(),
            held_requests: 0,
            hold: Hold::new(Instant::now(), service.hold_timeout),
            to_client: OutQueue::default(),
            state: SessionState::default(),
            client_eof: false,
            upstream_half_closed: false,
            fatal: None,
            closing: false,
            draining: false,
            end: None,
            route_moved: None,
            last_activity: Instant::now(),
            service,
        }
    }

    async fn serve(&mut self, shutdown: CancellationToken) -> Result<End, SessionError> {
        let _ = upstream::tune(&self.client, self.service.keepalive);
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
        let mut hold_timer = pin!(sleep_until(Instant::now()));
        let mut armed = Armed::default();
        loop {
            self.after_io()?;
            if let Some(end) = self.finished() {
                return Ok(end);
            }
            if self.hold.attempt_due(&self.upstream) {
                // A new upstream socket has no waker registered yet.
                armed = Armed::default();
                self.attempt().await;
                continue;
            }
            if let Some(deadline) = self.hold.rearm(self.move_deadline()) {
                hold_timer.as_mut().reset(deadline);
            }
            let wants = self.wants(idle.is_some());
            let ready = poll_fn(|cx| {
                let timers = Timers {
                    idle: idle_timer.as_mut(),
                    hold: hold_timer.as_mut(),
                };
                self.poll_ready(cx, wants, &shutdown, timers, &mut route_wait, &mut armed)
            })
            .await?;
            // Upstream first: if the master is gone, requests read in the
            // same wake-up are held instead of written into a dead socket
            // (where they would count as "may have run").
            if ready.upstream_read {
                self.on_upstream_readable()?;
            }
            if ready.client_read {
                self.on_client_readable()?;
            }
            if ready.stop {
                self.draining = true;
            }
            if ready.hold {
                self.on_hold_timer();
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

    /// Which events the session can act on now (backpressure included).
    fn wants(&self, idle: bool) -> Wants {
        let connected = matches!(self.upstream, Upstream::Connected { .. });
        Wants {
            client_read: !self.client_eof
                && !self.hold.is_silenced()
                && self.fatal.is_none()
                && !self.closing
                && self.end.is_none()
                && self.to_upstream.bytes() < HIGH_WATER
                && self.held.bytes < HIGH_WATER
                && !self.client_backlogged(),
            upstream_read: connected && !self.client_backlogged(),
            upstream_write: connected && !self.to_upstream.is_empty(),
            client_write: !self.to_client.is_empty(),
            stop: !self.draining,
            idle,
            hold: self.hold.timer_armed(),
        }
    }

    /// The client is this far behind on its replies: the upstream is not
    /// read (nor the client) until it catches up.
    fn client_backlogged(&self) -> bool {
        self.to_client.bytes() >= HIGH_WATER
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
        mut timers: Timers<'_>,
        route: &mut RouteWatch,
        armed: &mut Armed,
    ) -> Poll<Result<Ready, SessionError>> {
        use SessionError::{Client, Upstream as Up};
        let upstream = match &self.upstream {
            Upstream::Connected { stream, .. } => Some(stream),
            Upstream::Down => None,
        };
        let mut poll = |cx: &mut Context<'_>| -> Result<(Ready, bool), SessionError> {
            let client_read = wants.client_read
                && !armed.client_read
                && is_ready(self.client.poll_read_ready(cx)).map_err(Client)?;
            armed.client_read |= wants.client_read && !client_read;
            let client_write =
                wants.client_write && is_ready(self.client.poll_write_ready(cx)).map_err(Client)?;
            let (mut upstream_read, mut upstream_write) = (false, false);
            if let Some(upstream) = upstream {
                upstream_read = wants.upstream_read
                    && !armed.upstream_read
                    && is_ready(upstream.poll_read_ready(cx)).map_err(Up)?;
                armed.upstream_read |= wants.upstream_read && !upstream_read;
                upstream_write =
                    wants.upstream_write && is_ready(upstream.poll_write_ready(cx)).map_err(Up)?;
            }
            let mut ready = Ready {
                client_read,
                upstream_read,
                stop: false,
                idle: wants.idle && timers.idle.as_mut().poll(cx).is_ready(),
                hold: wants.hold && timers.hold.as_mut().poll(cx).is_ready(),
                route: route.poll_changed(cx),
            };
            let any = client_write
                || upstream_write
                || ready.client_read
                || ready.upstream_read
                || ready.idle
                || ready.hold
                || ready.route.is_some();
            // The token's flag sits behind a lock: it is read only when the
            // task would otherwise sleep, which every busy wake-up ends with.
            let stop = !any && wants.stop && shutdown.is_cancelled();
            ready.stop = stop;
            Ok((ready, any || stop))
        };
        match poll(cx) {
            Ok((ready, true)) => Poll::Ready(Ok(ready)),
            Ok((_, false)) => {
                *armed = Armed::default();
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn on_client_readable(&mut self) -> Result<(), SessionError> {
        let frame_left = self.client_scan.payload_left();
        match read_some(
            &self.client,
            &mut self.from_client,
            &mut self.client_read,
            frame_left,
        ) {
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
                self.process_requests();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(SessionError::Client(e)),
        }
    }

    /// Finds the complete requests in `from_client`, records them, and
    /// queues them for upstream (or answers them when there is none).
    // Always inlined: with two callers it would be a call on every read.
    #[inline(always)]
    fn process_requests(&mut self) {
        // Bytes at the front of `from_client` that are whole requests.
        let mut complete = 0;
        // How many of them wait for replies.
        let mut waiting = 0;
        let sending = self.sending();
        // A request that turns replies off met no verified master.
        let mut silenced = false;
        loop {
            let rest = self.from_client.get(self.client_scanned..).unwrap_or(&[]);
            let info;
            // Nearly every request is whole and common: read in one step,
            // with no frame summary; anything else is scanned.
            // The frame starts at `complete`: a request scanned in pieces
            // began before `rest`, a whole one at its start.
            let (n, name, frame) = match self.client_scan.whole_request(rest) {
                Some((n, name)) => (n, name, rest.get(..n).unwrap_or(&[])),
                None => match self.client_scan.scan(rest) {
                    Ok(Progress::Frame(n)) => {
                        info = *self.client_scan.info();
                        if info.kind != b'*' || info.len == 0 {
                            // Inline commands are rewritten as RESP; empty
                            // ones dropped.
                            let end = self.client_scanned + n;
                            if info.kind == b'i'
                                && !sending
                                && inline_silences(
                                    self.from_client.get(complete..end).unwrap_or(&[]),
                                )
                            {
                                // As below, for a whole request.
                                self.client_scanned = complete;
                                silenced = true;
                                break;
                            }
                            self.submit(complete, waiting);
                            let frame = self.from_client.split_to(end - complete);
                            self.client_scanned = 0;
                            (complete, waiting) = (0, 0);
                            if info.kind == b'i' {
                                self.inline_request(&frame);
                            }
                            continue;
                        }
                        let end = self.client_scanned + n;
                        let frame = self.from_client.get(complete..end).unwrap_or(&[]);
                        (n, info.head(), frame)
                    }
                    Ok(Progress::NeedMore(n)) => {
                        self.client_scanned += n;
                        if self.from_client.len() - complete > QUERY_BUFFER_LIMIT {
                            self.submit(complete, waiting);
                            self.fail(&"too big request");
                            return;
                        }
                        break;
                    }
                    Err(e) => {
                        self.submit(complete, waiting);
                        self.fail(&e);
                        return;
                    }
                },
            };
            if !sending && SessionState::silences_replies(frame, name) {
                // Held like the others, it could not be answered with an
                // error in time: it waits, unread, for a verified master
                // (its scan is redone then: the scanner is at a frame start).
                self.client_scanned = complete;
                silenced = true;
                break;
            }
            let end = self.client_scanned + n;
            self.client_scanned = end;
            let recorded = self.state.on_request(frame, name);
            if recorded == Recorded::Waits {
                waiting += 1;
                complete = end;
                continue;
            }
            // Rare (replies off, a doomed EXEC): on its own.
            self.submit(complete, waiting);
            let frame = self.from_client.split_to(end - complete).freeze();
            self.client_scanned = 0;
            (complete, waiting) = (0, 0);
            self.send_recorded(frame, recorded);
            if self.end.is_some() {
                return;
            }
        }
        self.submit(complete, waiting);
        if silenced {
            // After the held requests before it arrived: they expire first.
            self.hold.silenced(Instant::now());
        }
        shrink_when_empty(&mut self.from_client, &self.client_read);
    }

    /// Sends the first `complete` bytes of `from_client`: whole requests,
    /// `waiting` of which wait for replies.
    fn submit(&mut self, complete: usize, waiting: usize) {
        if complete > 0 {
            let requests = self.from_client.split_to(complete).freeze();
            self.client_scanned -= complete;
            self.send(requests, waiting);
        }
    }

    /// Whether requests go straight to the upstream (not held).
    fn sending(&self) -> bool {
        matches!(self.upstream, Upstream::Connected { verified: true, .. })
            && self.route_moved.is_none()
    }

    /// Sends recorded client requests to the master, or holds them while
    /// none is verified or the session is about to move.
    fn send(&mut self, requests: Bytes, waiting: usize) {
        if self.sending() {
            self.give_upstream(requests);
        } else {
            self.held.push(requests);
            self.held_requests += waiting;
            self.hold.arrived(Instant::now(), waiting);
        }
    }

    /// Queues bytes for the upstream and keeps them until answered, to be
    /// re-sent on failover. A blocking request (BLPOP) may wait long: a
    /// small one is kept as a copy, so that it does not keep the whole
    /// 16 KiB read buffer alive.
    fn give_upstream(&mut self, bytes: Bytes) {
        let kept = if self.state.blocking_in_flight() && bytes.len() <= KEEP_COPY_MAX {
            Bytes::copy_from_slice(&bytes)
        } else {
            bytes.clone()
        };
        self.unanswered.push(kept);
        self.to_upstream.push(bytes);
    }

    /// Drops the kept bytes of the requests answered since the last call.
    fn release_answered(&mut self) {
        let released = self.state.take_released();
        self.unanswered.consume(released);
    }

    /// Sends one request recorded as something else than a plain request.
    fn send_recorded(&mut self, request: Bytes, recorded: Recorded) {
        match recorded {
            Recorded::Waits => self.send(request, 1),
            Recorded::SendInstead { bytes, waits: true } => self.send(Bytes::from_static(bytes), 1),
            Recorded::SendInstead { bytes, .. } => self.send_unanswered(Bytes::from_static(bytes)),
            Recorded::NoReply => self.send_unanswered(request),
        }
    }

    /// A request that gets no reply (`CLIENT REPLY OFF|SKIP`): written but
    /// not kept, since nothing would tell whether it ran. With no verified
    /// master to write it to, the connection cannot be kept honestly (such
    /// a connection is closed at a switch anyway).
    fn send_unanswered(&mut self, request: Bytes) {
        if self.sending() {
            self.to_upstream.push(request);
        } else {
            tracing::debug!(service = %self.service.name, "closing a connection with replies off while no master is verified");
            self.end = Some(End::Unmovable);
        }
    }

    fn inline_request(&mut self, frame: &[u8]) {
        match inline_args(frame) {
            Ok(args) if args.is_empty() => {}
            Ok(args) => {
                let encoded = encode_command(&args);
                let mut scan = Scanner::new(Direction::Request, self.service.limits);
                match scan.scan(&encoded) {
                    Ok(_) => {
                        let recorded = self.state.on_request(&encoded, scan.info().head());
                        self.send_recorded(encoded.freeze(), recorded);
                    }
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
        let Upstream::Connected { stream, .. } = &self.upstream else {
            return Ok(());
        };
        // Replies stream through as they come: nothing to make room for.
        match read_some(stream, &mut self.from_upstream, &mut self.upstream_read, 0) {
            Ok(0) => {
                self.lose_upstream(Loss::Closed);
                Ok(())
            }
            Ok(_) => {
                if let Some(moved) = &mut self.route_moved {
                    // Not silent: the move deadline counts from here.
                    *moved = Instant::now();
                }
                self.process_replies()
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                tracing::debug!(service = %self.service.name, error = %e, "upstream read failed");
                self.lose_upstream(Loss::Closed);
                Ok(())
            }
        }
    }

    /// Matches the replies in `from_upstream` with their requests and
    /// queues for the client every byte that is the client's (payloads
    /// stream through even before their frame is complete). The proxy's
    /// own replies are cut out, and a refusal that means "not the master"
    /// sends the session to find the new one.
    fn process_replies(&mut self) -> Result<(), SessionError> {
        // Start of the frame being scanned, and the scan position.
        let mut start = 0;
        let mut pos = self.upstream_scanned;
        loop {
            // Nearly every reply: whole, one leaf, answering a plain request.
            let plain_end = self.plain_replies(pos);
            if plain_end > pos {
                (start, pos) = (plain_end, plain_end);
                self.hold.answered();
            }
            let rest = self.from_upstream.get(pos..).unwrap_or(&[]);
            if rest.is_empty() {
                break;
            }
            match self.upstream_scan.scan(rest) {
                Ok(Progress::Frame(n)) => {
                    pos += n;
                    self.streaming = false;
                    let info = *self.upstream_scan.info();
                    if let Some(refusal) = self.refusal(&info, start..pos) {
                        self.forward_upstream(start);
                        self.lose_upstream(Loss::Refused(refusal));
                        return Ok(());
                    }
                    match self.state.on_reply(&info) {
                        ReplyRole::Answer => self.hold.answered(),
                        ReplyRole::OutOfBand => {}
                        ReplyRole::Replay => {
                            self.cut_upstream(start, pos, None);
                            if info.is_error() {
                                tracing::warn!(service = %self.service.name, master = %self.master, "restoring the connection's state on the new master failed");
                                self.end = Some(End::Unmovable);
                                return Ok(());
                            }
                            (start, pos) = (0, 0);
                            continue;
                        }
                        ReplyRole::RoleCheck => {
                            // The text of a refusal, for the error replies.
                            let error = info.is_error().then(|| {
                                let reply = self.from_upstream.get(start..pos).unwrap_or(&[]);
                                String::from_utf8_lossy(reply).trim().to_owned()
                            });
                            self.cut_upstream(start, pos, None);
                            (start, pos) = (0, 0);
                            if !self.on_role(&info, error) {
                                return Ok(());
                            }
                            continue;
                        }
                        ReplyRole::Replace(reply) => {
                            self.cut_upstream(start, pos, Some(reply));
                            (start, pos) = (0, 0);
                            continue;
                        }
                    }
                    start = pos;
                }
                Ok(Progress::NeedMore(n)) => {
                    pos += n;
                    break;
                }
                Err(e) => return Err(SessionError::UpstreamProtocol(e)),
            }
        }
        self.release_answered();
        // A partial frame streams through only if it is surely the client's
        // (and not an error, which may be a refusal to re-send); one that
        // began streaming goes on.
        let streams = (self.streaming && start == 0)
            || (self.state.next_reply_is_clients()
                && !matches!(self.from_upstream.get(start), Some(b'-' | b'!')));
        self.streaming = streams && pos > start;
        let forward = if streams { pos } else { start };
        self.forward_upstream(forward);
        self.upstream_scanned = pos - forward;
        shrink_when_empty(&mut self.from_upstream, &self.upstream_read);
        Ok(())
    }

    /// Records the replies from `pos` on that are whole leaves answering
    /// plain requests, up to the first that is not; returns where it is.
    fn plain_replies(&mut self, mut pos: usize) -> usize {
        while let Some((n, kind)) = self
            .upstream_scan
            .whole_leaf(self.from_upstream.get(pos..).unwrap_or(&[]))
            && self.state.answer_plain(kind)
        {
            pos += n;
        }
        pos
    }

    /// Queues the first `n` bytes of `from_upstream` for the client.
    fn forward_upstream(&mut self, n: usize) {
        if n > 0 {
            self.to_client.push(self.from_upstream.split_to(n).freeze());
        }
    }

    /// Forwards the bytes before `start`, drops the frame `start..end` (the
    /// proxy's own reply) and queues `instead` in its place.
    fn cut_upstream(&mut self, start: usize, end: usize, instead: Option<Bytes>) {
        self.forward_upstream(start);
        self.from_upstream.advance_to(end - start);
        self.upstream_scanned = 0;
        if let Some(reply) = instead {
            self.to_client.push(reply);
        }
        self.release_answered();
    }

    /// A failed write means the upstream is gone.
    fn flush_upstream(&mut self) {
        if let Upstream::Connected { stream, .. } = &self.upstream
            && let Err(e) = self.to_upstream.flush(stream)
        {
            tracing::debug!(service = %self.service.name, error = %e, "upstream write failed");
            self.lose_upstream(Loss::Closed);
        }
    }

    fn flush_client(&mut self) -> Result<(), SessionError> {
        let before = self.to_client.bytes();
        self.to_client
            .flush(&self.client)
            .map_err(SessionError::Client)?;
        if self.service.idle_timeout.is_some() && self.to_client.bytes() < before {
            // A client downloading a large reply is active too.
            self.last_activity = Instant::now();
        }
        Ok(())
    }

    /// Pushes queued bytes out (the one place a wake-up's writes are made,
    /// after all its reads) and moves the session between phases.
    fn after_io(&mut self) -> Result<(), SessionError> {
        if self.hold.is_silenced() {
            self.resume_silenced();
        }
        self.flush_upstream();
        self.move_if_quiet();
        if self.state.in_flight() == 0
            && self.to_upstream.is_empty()
            && let Some(error) = self.fatal.take()
        {
            self.to_client.push(error);
            self.closing = true;
        }
        if self.client_eof
            && self.to_upstream.is_empty()
            && self.held.is_empty()
            && !self.upstream_half_closed
            && let Upstream::Connected { stream, .. } = &self.upstream
        {
            // Let Redis answer what was sent, then close, as it does itself.
            let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
            self.upstream_half_closed = true;
        }
        self.flush_client()
    }

    /// Once a master is verified, the requests that waited unread behind
    /// a `CLIENT REPLY OFF|SKIP` go on. Rare: kept out of the loop.
    #[cold]
    #[inline(never)]
    fn resume_silenced(&mut self) {
        if self.sending() {
            self.hold.unsilence();
            self.process_requests();
        }
    }

    fn finished(&self) -> Option<End> {
        if !self.to_client.is_empty() {
            return None;
        }
        if self.closing {
            Some(End::ProtocolError)
        } else if let Some(end) = self.end {
            Some(end)
        } else if self.client_eof
            && self.state.in_flight() == 0
            && self.to_upstream.is_empty()
            && self.held.is_empty()
        {
            Some(End::ClientClosed)
        } else if self.draining && self.is_quiet() {
            Some(End::Shutdown)
        } else {
            None
        }
    }

    /// Requests given to the upstream (not held) and not yet answered.
    fn sent_requests(&self) -> usize {
        self.state.in_flight().saturating_sub(self.held_requests)
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
        self.state.in_flight() > 0
            || self.hold.is_silenced()
            || self.state.subscribed()
            || self.state.monitor
    }
}

/// Moves a `BytesMut`'s start forward (drops bytes already handled).
trait AdvanceTo {
    fn advance_to(&mut self, n: usize);
}

impl AdvanceTo for BytesMut {
    fn advance_to(&mut self, n: usize) {
        bytes::Buf::advance(self, n.min(self.len()));
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
    hold: bool,
}

/// Read directions whose poll found nothing and left this task's waker
/// registered, since the last time the session went to sleep. Until then
/// they need no second poll in the same wake-up (each poll of a not-ready
/// socket takes a lock): if one becomes ready meanwhile, its waker marks the
/// task to run again, and that next wake-up starts with no marks and polls
/// everything. A read, which may consume the readiness, is always re-polled
/// because only directions that were not ready are marked.
#[derive(Default)]
struct Armed {
    client_read: bool,
    upstream_read: bool,
}

/// The session's timers, polled from `poll_ready`.
struct Timers<'a> {
    idle: Pin<&'a mut Sleep>,
    hold: Pin<&'a mut Sleep>,
}

/// The events that are ready (writes need no flag: every loop flushes).
#[derive(Default)]
struct Ready {
    client_read: bool,
    upstream_read: bool,
    stop: bool,
    idle: bool,
    hold: bool,
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
        // Unconstrained by tokio's cooperative budget: a budget-forced
        // Pending would not register the waker, and `poll_changed` trusts
        // a Pending to have registered it (then a route change is missed
        // until something else wakes the session).
        let wait = Box::pin(tokio::task::coop::unconstrained(async move {
            let mut route = route;
            if route.changed().await.is_err() {
                // No control plane (an observer): the route never changes.
                std::future::pending::<()>().await;
            }
            route
        }));
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

/// Whether an inline request line is `CLIENT REPLY OFF|SKIP` (see
/// [`SessionState::silences_replies`]).
fn inline_silences(line: &[u8]) -> bool {
    inline_args(line).is_ok_and(|args| {
        args.first()
            .is_some_and(|name| SessionState::silences_replies(&encode_command(&args), name))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};

    use super::*;
    use crate::route::{self, Route};

    #[derive(Default)]
    struct Woken(AtomicBool);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A busy session may begin to wait for the route with its cooperative
    /// budget spent: the change must still wake it.
    #[tokio::test]
    async fn a_route_change_wakes_a_session_that_began_waiting_with_no_budget_left() {
        let route = |port| Route {
            master: SocketAddr::from(([127, 0, 0, 1], port)),
            config_epoch: 0,
        };
        let (tx, rx) = route::channel(route(1));
        let mut watch = RouteWatch::new(rx);
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        poll_fn(|task| {
            while let Poll::Ready(spent) = tokio::task::coop::poll_proceed(task) {
                spent.made_progress();
            }
            assert!(
                watch
                    .poll_changed(&mut Context::from_waker(&waker))
                    .is_none()
            );
            Poll::Ready(())
        })
        .await;
        // A budget-forced Pending wakes at once; only a later wake counts.
        woken.0.store(false, Ordering::SeqCst);
        tx.send_replace(route(2));
        assert!(
            woken.0.load(Ordering::SeqCst),
            "the route changed, but the waiting session was not woken"
        );
    }
}
