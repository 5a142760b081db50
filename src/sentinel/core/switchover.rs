//! Planned switchover: how `SENTINEL FAILOVER` hands the master role over
//! when the old master is still up (not in Sentinel).
//!
//! Sentinel promotes with `SLAVEOF NO ONE` to the replica and demotes the
//! old master only later (convert-to-slave, 8 s or more): in between, the
//! old master keeps acknowledging writes that are then thrown away. When
//! the old master answers, a forced failover instead sends it Redis's
//! `FAILOVER TO <replica> TIMEOUT <ms>` (6.2+), which pauses writes on the
//! master, waits until the replica has the whole replication stream, then
//! promotes the replica and demotes the master to its replica, in one
//! step. Writes held by the pause get `-READONLY` and are re-sent by the
//! data plane to the new master: no acknowledged write is lost.
//!
//! The rest of the failover is Sentinel's: `wait_promotion` waits for the
//! replica's INFO to say `role:master`, then replicas are re-pointed and
//! the address switches. The old master then already follows the new one,
//! so it joins the replica list with nothing left to fix.
//!
//! Events (our own, in Sentinel's format): `+failover-to <replica details>`
//! when `FAILOVER TO` is sent, `-failover-to-fallback <replica details>
//! <reason>` when it failed and this attempt falls back to `SLAVEOF NO ONE`
//! (unknown command, refused, the master link dropped, or no promotion in
//! time: Redis then aborts the handover itself and resumes writes).
//!
//! `FORCE` is not used: it makes Redis hand over at the timeout even if the
//! replica has not caught up, which loses exactly the writes this exists to
//! keep. Without it, a timeout leaves the old master in charge and we fall
//! back to Sentinel's way, which is what `SENTINEL FAILOVER` did before.

use super::failover;
use super::instance::Master;
use super::types::{Action, Addr, FailoverState, InstanceKind, LinkRef};
use super::{Core, Global, elapsed};

/// How the replica being promoted is made master, once chosen in
/// `send_slaveof_noone`; `None` on the master before that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// `SLAVEOF NO ONE` to the replica: Sentinel's way, and the fallback.
    SlaveOfNoOne,
    /// `FAILOVER TO` was sent to the old master at `sent_at`.
    FailoverTo { sent_at: u64 },
}

/// The longest time Redis may hold writes paused waiting for the replica
/// to catch up. A healthy replica acknowledges its offset at least once a
/// second, so this is ample; past it, writes resume and we fall back.
const MAX_PAUSE_MS: u64 = 5_000;

/// How long after `FAILOVER TO`'s own timeout we give up on it. Redis
/// aborts on its timeout (checked every event loop), and we count from the
/// send, so by then the old master has resumed writes and can no longer
/// hand over behind our back.
const GIVE_UP_GRACE_MS: u64 = 1_000;

/// The `TIMEOUT` of `FAILOVER TO`: within the failover timeout, and never
/// long enough to hold clients' writes for more than a few seconds.
fn pause_limit(m: &Master) -> u64 {
    m.failover_timeout.clamp(1, MAX_PAUSE_MS)
}

/// Whether this attempt hands over with `FAILOVER TO`: a forced failover
/// (an automatic one means the master is down), not fallen back yet, with
/// the old master answering us.
pub(crate) fn wanted(m: &Master) -> bool {
    m.forced && m.handoff.is_none() && m.c.link.connected && !m.c.s_down
}

/// Asks the old master to hand over to `target`; the caller moves on to
/// `wait_promotion`.
pub(crate) fn send(g: &Global, m: &mut Master, target: &Addr, now: u64, out: &mut Vec<Action>) {
    out.push(Action::SendFailoverTo {
        link: m.link(InstanceKind::Master, &m.c.addr),
        target: target.clone(),
        timeout_ms: pause_limit(m),
    });
    m.handoff = Some(Handoff::FailoverTo { sent_at: now });
    g.event(out, "+failover-to", m.replica_details(target));
}

/// Waiting on `FAILOVER TO`. Meanwhile the old master must not get
/// commands that its write pause would block (a hello `PUBLISH`), or its
/// command link stalls and PINGs go unanswered until the pause ends.
pub(crate) fn handing_over(m: &Master) -> bool {
    m.failover_state == FailoverState::WaitPromotion
        && matches!(m.handoff, Some(Handoff::FailoverTo { .. }))
}

/// A `wait_promotion` step: no promotion long after `FAILOVER TO`'s timeout.
pub(crate) fn check_deadline(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    if let Some(Handoff::FailoverTo { sent_at }) = m.handoff
        && m.failover_state == FailoverState::WaitPromotion
    {
        let limit = pause_limit(m);
        if elapsed(now, sent_at) > limit.saturating_add(GIVE_UP_GRACE_MS) {
            let reason = format!("no promotion {limit} ms after FAILOVER TO");
            fall_back(g, m, &reason, now, out);
        }
    }
}

/// The link to `m`'s master dropped: a `FAILOVER TO` in flight has no
/// reply coming, and may never have arrived.
pub(crate) fn on_master_link_down(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    if handing_over(m) {
        fall_back(g, m, "link to the master lost", now, out);
    }
}

/// After the promotion was seen. Neither node got our SLAVEOF transaction
/// with its `CONFIG REWRITE`, so their config files still hold the old
/// roles: write the new ones, so that a restart keeps them (the old master
/// would otherwise come back as a master, the new one as a replica).
pub(crate) fn promoted(m: &Master, addr: &Addr, out: &mut Vec<Action>) {
    if matches!(m.handoff, Some(Handoff::FailoverTo { .. })) {
        for (kind, a) in [
            (InstanceKind::Replica, addr),
            (InstanceKind::Master, &m.c.addr),
        ] {
            out.push(Action::SendConfigRewrite {
                link: m.link(kind, a),
            });
        }
    }
}

/// Gives up on `FAILOVER TO` for this attempt and promotes Sentinel's way.
fn fall_back(g: &mut Global, m: &mut Master, reason: &str, now: u64, out: &mut Vec<Action>) {
    let details = m
        .promoted
        .as_ref()
        .map_or_else(|| m.details(), |p| m.replica_details(p));
    g.event(
        out,
        "-failover-to-fallback",
        format!("{details} {reason}; falling back to SLAVEOF NO ONE"),
    );
    m.handoff = Some(Handoff::SlaveOfNoOne);
    // Back one state, so the normal step sends SLAVEOF NO ONE (and waits
    // for the replica's link if need be, under its own timeout).
    m.failover_state = FailoverState::SendSlaveOfNoOne;
    m.failover_state_change_time = now;
    if !g.tilt {
        failover::send_slaveof_noone(g, m, now, out);
    }
}

impl Core {
    /// [`super::Event::FailoverToReply`].
    pub(super) fn on_failover_to_reply(
        &mut self,
        link: &LinkRef,
        result: Result<(), String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let g = &mut self.g;
        let Some(m) = self.masters.iter_mut().find(|m| m.name == link.master) else {
            return;
        };
        if m.c.addr != link.addr || !handing_over(m) {
            return;
        }
        if let Err(error) = result {
            let reason = format!("FAILOVER TO refused: {}", error.trim());
            fall_back(g, m, &reason, now, out);
        }
    }
}
