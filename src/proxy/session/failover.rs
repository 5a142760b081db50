//! Moving a session to a new master (the failover contract in DESIGN.md).
//!
//! Every upstream connection starts with a handshake: the commands that
//! restore the client's connection state, and a `ROLE` check. Client
//! requests are held until `ROLE` says master (an error such as `-NOAUTH`
//! trusts the route: the client has not authenticated yet). Requests wait
//! in `held` for at most `hold_timeout`; past it each gets an error reply
//! naming the service, and new ones are answered at once until a master is
//! verified again. `CLIENT REPLY OFF|SKIP` is not held (an error reply
//! would break the silence it asks for): it and what follows wait unread
//! for a verified master, and past `hold_timeout` the connection is closed.
//!
//! When the upstream is lost, the requests it had not answered are judged:
//! one that may have run and whose re-run is not harmless (a write, a
//! script, a blocking command, EXEC, a reply already half sent) makes its
//! outcome unknown, so the client connection is closed, exactly as if Redis
//! had died. Otherwise they are re-sent to the next verified master, ahead
//! of the held ones. A `-READONLY`, `-MASTERDOWN`, `-LOADING` or
//! `-UNBLOCKED` (instance state changed) reply means the command did not
//! run: it is re-sent the same way, for at most `hold_timeout` in a row.
//! After a replica's refusal, the writes and blocking commands sent after
//! it did not run either (the replica refused them too, or answered WAIT
//! with an error), so they are re-sent as well. A refused command queued in
//! a transaction (or its refused EXEC) means the EXEC ran nothing: it ends
//! the transaction as a failover does (re-sent as DISCARD, answered with
//! the failover's EXECABORT).
//!
//! When the route moves while the old master still answers (a planned
//! switchover), new requests are held and the session moves as soon as
//! nothing of the client's is in flight. An old master that has not
//! answered it all `hold_timeout` after the move (stopped, or cut off) is
//! given up like one that closed: what may be re-sent goes to the new
//! master, and a request of unknown outcome closes the client connection.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::io::Chunks;
use super::{End, Session, Upstream};
use crate::proxy::command_table::Rerun as ByTable;
use crate::proxy::state::{ReplyRole, Rerun};
use crate::proxy::upstream;
use crate::resp::{Direction, FrameInfo, Scanner, reply};

/// First wait before trying an unreachable master again; it doubles up to
/// [`MAX_BACKOFF`] (a route change tries at once).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why the upstream connection is being given up.
pub(super) enum Loss {
    /// It closed or failed.
    Closed,
    /// It answered the oldest request with a refusal: the command did not run.
    Refused(Refusal),
    /// Its `ROLE` is not master (or it refused ROLE).
    NotMaster(String),
    /// The route moved away from it `hold_timeout` ago and it still has
    /// not answered what it was sent.
    Silent,
}

/// A reply saying that the command did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `-READONLY`, `-MASTERDOWN`, `-UNBLOCKED` after a role change: the
    /// instance is a replica now, so it refused every write sent after too.
    Replica,
    /// `-LOADING`: the instance is loading its data set.
    Loading,
}

/// What a replica answers an EXEC whose transaction holds writes.
const EXEC_ON_REPLICA: &[u8] = b"EXECABORT Transaction discarded because of: READONLY ";

impl Refusal {
    /// The refusal an error reply announces, if any (`text`: the reply
    /// without its type byte).
    fn of(text: &[u8]) -> Option<Refusal> {
        let starts = |prefix: &[u8]| text.starts_with(prefix);
        if starts(b"READONLY ")
            || starts(b"MASTERDOWN ")
            || starts(b"UNBLOCKED force")
            || starts(EXEC_ON_REPLICA)
        {
            Some(Refusal::Replica)
        } else if starts(b"LOADING ") {
            Some(Refusal::Loading)
        } else {
            None
        }
    }
}

/// The session's wait for a verified master.
pub(super) struct Hold {
    timeout: Duration,
    /// When the held requests arrived: (time, how many), oldest first.
    arrivals: VecDeque<(Instant, usize)>,
    /// Why there is no master, for error replies and logs.
    reason: String,
    /// When to try connecting again (only while there is no upstream).
    next_attempt: Option<Instant>,
    backoff: Duration,
    /// The first of the current run of refusals that were re-sent.
    refused_since: Option<Instant>,
    /// The first loss of the upstream since a client request was last
    /// answered: re-sent requests count as waiting since then.
    lost_since: Option<Instant>,
    /// The deadline the timer is set to.
    armed_at: Option<Instant>,
    /// Since when a request that turns replies off (`CLIENT REPLY OFF`)
    /// waits, unread, for a verified master: it is never held, because an
    /// error reply could not be told apart from the silence it asks for.
    silenced_since: Option<Instant>,
}

impl Hold {
    /// A new session: connect now.
    pub(super) fn new(now: Instant, timeout: Duration) -> Hold {
        Hold {
            timeout,
            arrivals: VecDeque::new(),
            reason: String::new(),
            next_attempt: Some(now),
            backoff: MIN_BACKOFF,
            refused_since: None,
            lost_since: None,
            armed_at: None,
            silenced_since: None,
        }
    }

    /// A request that turns replies off waits for a verified master from
    /// `now` on (see `silenced_since`).
    pub(super) fn silenced(&mut self, now: Instant) {
        self.silenced_since.get_or_insert(now);
    }

    pub(super) fn is_silenced(&self) -> bool {
        self.silenced_since.is_some()
    }

    pub(super) fn unsilence(&mut self) {
        self.silenced_since = None;
    }

    /// `requests` more requests are held from `now` on.
    pub(super) fn arrived(&mut self, now: Instant, requests: usize) {
        if requests > 0 {
            self.arrivals.push_back((now, requests));
        }
    }

    /// Whether it is time to connect.
    pub(super) fn attempt_due(&self, upstream: &Upstream) -> bool {
        matches!(upstream, Upstream::Down)
            && self.next_attempt.is_some_and(|at| at <= Instant::now())
    }

    fn deadline(&self, move_deadline: Option<Instant>) -> Option<Instant> {
        let expiry = self.arrivals.front().map(|(at, _)| *at + self.timeout);
        let silence = self.silenced_since.map(|at| at + self.timeout);
        [expiry, silence, self.next_attempt, move_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// The timer's new deadline, if it changed (`move_deadline`: see
    /// [`Session::move_deadline`]).
    pub(super) fn rearm(&mut self, move_deadline: Option<Instant>) -> Option<Instant> {
        let deadline = self.deadline(move_deadline);
        if deadline == self.armed_at {
            return None;
        }
        self.armed_at = deadline;
        deadline
    }

    pub(super) fn timer_armed(&self) -> bool {
        self.armed_at.is_some()
    }

    /// A client request got a real answer: the connection works, so
    /// refusals, losses and the backoff start afresh.
    pub(super) fn answered(&mut self) {
        // Called for every reply: write only when there is something to reset.
        if self.refused_since.is_some() || self.lost_since.is_some() || self.backoff != MIN_BACKOFF
        {
            self.refused_since = None;
            self.lost_since = None;
            self.backoff = MIN_BACKOFF;
        }
    }

    /// Whether a refused request may be re-sent (once more).
    fn may_resend(&mut self, now: Instant) -> bool {
        let since = *self.refused_since.get_or_insert(now);
        now.duration_since(since) < self.timeout
    }

    fn retry_in(&mut self, now: Instant, delay: Duration) {
        self.next_attempt = Some(now + delay);
    }

    fn failed_attempt(&mut self, now: Instant, reason: String) {
        self.reason = reason;
        self.retry_in(now, self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Requests are no longer held (the backoff is reset only by a real
    /// answer: an instance that accepts and then closes must not make
    /// sessions reconnect in a loop).
    fn verified(&mut self) {
        self.arrivals.clear();
    }

    /// How many of the oldest held requests have waited `timeout`.
    fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(&(at, requests)) = self.arrivals.front() {
            if now < at + self.timeout {
                break;
            }
            expired += requests;
            self.arrivals.pop_front();
        }
        expired
    }
}

impl Session {
    /// Connects to the routed master and sends the handshake.
    pub(super) async fn attempt(&mut self) {
        self.hold.next_attempt = None;
        let master = self.service.route.borrow().master;
        self.master = master;
        let service = &self.service;
        match upstream::connect(master, service.connect_timeout, service.keepalive).await {
            Ok(stream) => match self.state.handshake() {
                Ok(handshake) => {
                    self.give_upstream(handshake.freeze());
                    self.upstream = Upstream::Connected {
                        stream,
                        verified: false,
                    };
                }
                Err(e) => {
                    tracing::info!(service = %service.name, error = %e, "closing a client connection that cannot move to the new master");
                    self.end = Some(End::Unmovable);
                }
            },
            Err(e) => {
                let reason = format!("master {master} is unreachable: {e}");
                tracing::debug!(service = %service.name, %reason, "connect failed");
                self.hold.failed_attempt(Instant::now(), reason);
            }
        }
    }

    /// The answer to the handshake's `ROLE` (`error`: its text, if it is
    /// one). Returns false if the connection was given up: the instance
    /// is not a master, or refused for another reason than authentication
    /// (`-NOAUTH`, `-NOPERM`: the client has not authenticated, or may not
    /// run ROLE; the route is trusted then).
    pub(super) fn on_role(&mut self, info: &FrameInfo, error: Option<String>) -> bool {
        let role = info.head();
        let reason = match error {
            Some(_) if role.starts_with(b"NOAUTH") || role.starts_with(b"NOPERM") => None,
            Some(error) => Some(format!(
                "{} refused ROLE: {}",
                self.master,
                error.trim_start_matches(['-', '!'])
            )),
            None if role.eq_ignore_ascii_case(b"master") => None,
            None => Some(format!(
                "{} is not a master (ROLE: {})",
                self.master,
                String::from_utf8_lossy(role)
            )),
        };
        if let Some(reason) = reason {
            self.lose_upstream(Loss::NotMaster(reason));
            return false;
        }
        if let Upstream::Connected { verified, .. } = &mut self.upstream {
            *verified = true;
        }
        if self.route_moved.is_none() {
            self.send_held();
        }
        true
    }

    /// Sends the held requests to the verified master.
    fn send_held(&mut self) {
        self.hold.verified();
        for chunk in std::mem::take(&mut self.held).into_chunks() {
            self.give_upstream(chunk);
        }
        self.held_requests = 0;
    }

    /// Whether a reply (at `frame` in `from_upstream`, summed up in
    /// `info`) is a refusal whose request can be re-sent.
    pub(super) fn refusal(&mut self, info: &FrameInfo, frame: Range<usize>) -> Option<Refusal> {
        if !info.is_error() {
            return None;
        }
        let text = self.from_upstream.get(frame.start + 1..frame.end)?;
        let refusal = Refusal::of(text)?;
        (self.state.oldest_is_resendable() && self.hold.may_resend(Instant::now()))
            .then_some(refusal)
    }

    /// The control plane moved the master.
    pub(super) fn on_route(&mut self, master: std::net::SocketAddr) {
        match &self.upstream {
            Upstream::Down => {
                self.hold.backoff = MIN_BACKOFF;
                self.hold.next_attempt = Some(Instant::now());
            }
            Upstream::Connected { .. } if master != self.master => {
                self.route_moved.get_or_insert_with(Instant::now);
            }
            // Moved back before the session left: stay.
            Upstream::Connected { verified, .. } => {
                if self.route_moved.take().is_some() && *verified {
                    self.send_held();
                }
            }
        }
    }

    /// After a route change, leaves the old master as soon as nothing the
    /// client sent is in flight there (requests meanwhile are held).
    pub(super) fn move_if_quiet(&mut self) {
        if self.route_moved.is_some() && self.sent_requests() == 0 && self.upstream_scan.is_idle() {
            tracing::debug!(service = %self.service.name, from = %self.master, "moving to the new master");
            self.leave_upstream();
            self.hold.next_attempt = Some(Instant::now());
        }
    }

    /// When the old master is given up if it has sent nothing more by then
    /// (`route_moved` is restarted by every read from it).
    pub(super) fn move_deadline(&self) -> Option<Instant> {
        self.route_moved.map(|at| at + self.hold.timeout)
    }

    /// The hold timer fired: maybe the old master has not answered since
    /// the route moved, or the oldest held requests waited too long.
    pub(super) fn on_hold_timer(&mut self) {
        self.hold.armed_at = None;
        let now = Instant::now();
        // First: the requests it re-sends then wait ahead of the held ones
        // (which arrived after the move, so expire no sooner).
        if self.move_deadline().is_some_and(|at| now >= at) {
            if self.client_backlogged() {
                // Not read (the client is slow), so not silent: wait on.
                self.route_moved = Some(now);
            } else {
                self.lose_upstream(Loss::Silent);
                if self.end.is_some() {
                    return;
                }
            }
        }
        self.expire_held(now);
        // A master verified in this same wake-up lets the silenced requests go.
        if !self.sending()
            && self
                .hold
                .silenced_since
                .is_some_and(|at| now >= at + self.hold.timeout)
        {
            tracing::info!(service = %self.service.name, reason = %self.hold.reason, "closing a connection that turns replies off: no master verified in time");
            // Requests re-sent after a loss wait since it, maybe less long
            // than the silenced one; with no upstream, all pending are held.
            if matches!(self.upstream, Upstream::Down) && self.state.in_flight() > 0 {
                self.fail_held(self.state.in_flight());
            }
            self.end.get_or_insert(End::Unmovable);
        }
    }

    /// Answers the held requests that waited `hold_timeout` with an error.
    fn expire_held(&mut self, now: Instant) {
        let expired = self.hold.expire(now);
        if expired == 0 {
            return;
        }
        match self.upstream {
            // Held since the route moved, behind requests in flight on the
            // old master, which still answers now and then (each answer
            // restarts the move deadline): the held ones waited
            // hold_timeout, so give the old master up and fail them all.
            Upstream::Connected { verified: true, .. } => {
                self.lose_upstream(Loss::Closed);
                if self.end.is_some() {
                    return;
                }
                // The requests that were in flight are older still.
                self.hold.reason = format!("the old master {} stopped answering", self.master);
                self.hold.arrivals.clear();
                self.fail_held(self.state.in_flight());
                return;
            }
            Upstream::Connected { .. } => {
                self.hold.reason = format!("{} did not answer ROLE", self.master);
                self.leave_upstream();
                self.hold.retry_in(now, self.hold.backoff);
            }
            Upstream::Down => {}
        }
        self.fail_held(expired);
    }

    /// Answers the `count` oldest held requests with an error naming the
    /// service, as if Redis had refused them.
    fn fail_held(&mut self, count: usize) {
        let service = &self.service.name;
        let timeout = self.hold.timeout;
        tracing::info!(service = %service, reason = %self.hold.reason, requests = count, "no master verified in time: failing held requests");
        let error = reply::error(&format!(
            "ERR sentinel-proxy: service '{service}': no master verified within {timeout:?}: {}",
            self.hold.reason
        ));
        let info = error_info(&error);
        let bytes: usize = self.state.unanswered().take(count).map(|r| r.len).sum();
        for _ in 0..count.min(self.state.in_flight()) {
            match self.state.on_reply(&info) {
                ReplyRole::Replace(reply) => self.to_client.push(reply),
                _ => self.to_client.push(error.clone()),
            }
        }
        let _ = self.state.take_released();
        let _ = self.held.take_front(bytes);
        self.held_requests = self.state.in_flight();
    }

    /// Gives up the upstream connection: re-sends what may be re-sent to
    /// the next master, or closes the client connection if an unanswered
    /// request's outcome is unknown.
    pub(super) fn lose_upstream(&mut self, loss: Loss) {
        let now = Instant::now();
        self.release_answered();
        if self.state.quit_sent() {
            self.end = Some(End::UpstreamClosed);
            self.leave_upstream();
            return;
        }
        // Part of a reply already went to the client.
        let half_sent = self.streaming;
        let written = self
            .unanswered
            .bytes
            .saturating_sub(self.to_upstream.bytes());
        let table = self.service.commands.get();
        let sent = self.sent_requests();
        let mut resend = Chunks::default();
        let mut offset = 0;
        let mut oldest = true;
        let mut unknown = half_sent;
        // A command queued, since the last EXEC, on the server that refused
        // that it may have run (see `Rerun::Exec` below).
        let mut queued_unknown = false;
        let requests: Vec<_> = self.state.unanswered().take(sent).collect();
        for request in requests {
            let mut bytes = self.unanswered.take_front(request.len);
            offset += request.len;
            if request.internal {
                continue;
            }
            let refused = oldest && matches!(loss, Loss::Refused(_));
            oldest = false;
            let may_have_run = offset <= written && !refused;
            let by_table = || table.as_ref().map(|t| t.rerun(&bytes.contiguous()));
            // What came after a replica's refusal, that replica ran: it
            // refused every write (a blocking one's too), answered WAIT
            // with an error and kept blocking reads waiting. (Not scripts:
            // one with no `#!` line runs there until its first write.)
            let on_replica = matches!(loss, Loss::Refused(Refusal::Replica));
            let rerun_ok = match request.kind {
                Rerun::Queued => {
                    queued_unknown |= may_have_run
                        && !matches!(by_table(), Some(ByTable::Harmless | ByTable::Write));
                    true
                }
                Rerun::Blocking => on_replica,
                Rerun::Exec if matches!(loss, Loss::Refused(_)) => {
                    match self.state.discard_refused_exec() {
                        // A refused command in its transaction made it run
                        // nothing: sent as a DISCARD, answered as lost.
                        Some(discard) => {
                            bytes = Chunks::default();
                            bytes.push(Bytes::from_static(discard));
                            true
                        }
                        // Begun after the refusal: the refusing server
                        // refused its writes (so it ran nothing) or ran
                        // reads only, unless something else was queued.
                        None => !std::mem::take(&mut queued_unknown),
                    }
                }
                Rerun::Exec | Rerun::Never => false,
                Rerun::ByCommand => match by_table() {
                    Some(ByTable::Harmless) => true,
                    Some(ByTable::Write) => on_replica,
                    Some(ByTable::Unsafe) | None => false,
                },
            };
            if may_have_run && !rerun_ok {
                unknown = true;
                break;
            }
            resend.append(bytes);
        }
        if unknown {
            tracing::debug!(service = %self.service.name, master = %self.master, "upstream lost with a request of unknown outcome in flight: closing the client connection");
            self.end = Some(End::UpstreamClosed);
            self.leave_upstream();
            return;
        }
        self.leave_upstream();
        if self.end.is_some() {
            return;
        }
        resend.append(std::mem::take(&mut self.held));
        self.held = resend;
        let resent = self.state.in_flight().saturating_sub(self.held_requests);
        self.held_requests = self.state.in_flight();
        // Re-sent requests wait ahead of the held ones, counted from the
        // first loss since the connection last worked.
        let since = *self.hold.lost_since.get_or_insert(now);
        if resent > 0 {
            self.hold.arrivals.push_front((since, resent));
        }
        // Not a master any more: let the control plane look at once.
        if matches!(loss, Loss::Refused(_) | Loss::NotMaster(_)) {
            self.service.recheck.request();
        }
        let reason = match loss {
            Loss::Closed => format!("lost the connection to master {}", self.master),
            Loss::Refused(refusal) => format!("{} refused a command ({refusal:?})", self.master),
            Loss::NotMaster(reason) => reason,
            Loss::Silent => format!(
                "the old master {} did not answer within {:?} of the route moving",
                self.master, self.hold.timeout
            ),
        };
        tracing::debug!(service = %self.service.name, %reason, resent, held = self.held_requests, "upstream given up: its requests wait for the next master");
        self.hold.failed_attempt(now, reason);
        if self.service.route.borrow().master != self.master {
            // The route has moved on already: no need to wait.
            self.hold.retry_in(now, Duration::ZERO);
        }
    }

    /// Forgets the upstream connection, everything in transit on it and
    /// the proxy's own requests on it; a connection whose state cannot
    /// move to another master ends.
    fn leave_upstream(&mut self) {
        self.upstream = Upstream::Down;
        self.to_upstream = Default::default();
        self.unanswered = Chunks::default();
        self.from_upstream = Default::default();
        self.upstream_scanned = 0;
        self.upstream_scan = Scanner::new(Direction::Reply, self.service.limits);
        self.upstream_half_closed = false;
        self.route_moved = None;
        self.streaming = false;
        if let Err(e) = self.state.upstream_lost() {
            tracing::info!(service = %self.service.name, error = %e, "closing a client connection that cannot move to the new master");
            self.end.get_or_insert(End::Unmovable);
        }
    }
}

/// The scanner summary of an error reply the proxy makes up.
fn error_info(error: &[u8]) -> FrameInfo {
    let mut scanner = Scanner::new(Direction::Reply, Default::default());
    // Our own error replies are always one whole frame.
    let _ = scanner.scan(error);
    *scanner.info()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_the_replies_of_a_command_that_did_not_run() {
        for (head, refusal) in [
            (&b"READONLY You can't write against a read only replica."[..], Some(Refusal::Replica)),
            (b"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", Some(Refusal::Replica)),
            (b"UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)", Some(Refusal::Replica)),
            (b"LOADING Redis is loading the dataset in memory", Some(Refusal::Loading)),
            (b"EXECABORT Transaction discarded because of: READONLY You can't write against a read only replica.", Some(Refusal::Replica)),
            (b"EXECABORT Transaction discarded because of previous errors.", None),
            // Unblocked by an operator: the client must see it.
            (b"UNBLOCKED client unblocked via CLIENT UNBLOCK", None),
            (b"ERR wrong number of arguments", None),
            (b"READONLYX", None),
        ] {
            assert_eq!(Refusal::of(head), refusal, "{}", head.escape_ascii());
        }
    }

    #[test]
    fn each_held_request_expires_hold_timeout_after_its_arrival() {
        let t0 = Instant::now();
        let mut hold = Hold::new(t0, Duration::from_secs(5));
        hold.next_attempt = None;
        hold.arrived(t0, 2);
        hold.arrived(t0 + Duration::from_secs(3), 1);
        assert_eq!(hold.rearm(None), Some(t0 + Duration::from_secs(5)));
        assert_eq!(hold.expire(t0 + Duration::from_secs(5)), 2);
        assert_eq!(hold.rearm(None), Some(t0 + Duration::from_secs(8)));
        assert_eq!(hold.expire(t0 + Duration::from_secs(7)), 0);
        assert_eq!(hold.expire(t0 + Duration::from_secs(8)), 1);
        assert_eq!(hold.rearm(None), None);
    }

    #[test]
    fn failed_attempts_back_off_until_a_request_is_answered() {
        let t0 = Instant::now();
        let mut hold = Hold::new(t0, Duration::from_secs(5));
        let mut delays = Vec::new();
        for _ in 0..6 {
            hold.failed_attempt(t0, "refused".into());
            delays.push(hold.next_attempt.map(|at| at - t0));
        }
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // A ROLE check alone does not reset it (an instance that accepts
        // and closes must not cause a reconnect loop); a real answer does.
        hold.verified();
        hold.failed_attempt(t0, "closed".into());
        assert_eq!(hold.next_attempt.map(|at| at - t0), ms(1000));
        hold.answered();
        hold.failed_attempt(t0, "closed".into());
        assert_eq!(hold.next_attempt.map(|at| at - t0), ms(100));
    }
}
