//! The failover state machine (section 7), replica selection (section 6)
//! and the reset-and-switch that ends a failover or adopts a newer config.

use std::cmp::Ordering;

use super::election::{get_leader, vote_leader};
use super::instance::{Common, Master, Reconf, Replica};
use super::types::{Action, Addr, FailoverRefused, FailoverState, InstanceKind, ReportedRole};
use super::{Core, Global, elapsed, switchover};

/// `sentinelStartFailoverIfNeeded` (5.2). Returns true if an attempt started.
pub(crate) fn start_if_needed(
    g: &mut Global,
    m: &mut Master,
    now: u64,
    out: &mut Vec<Action>,
) -> bool {
    if !m.o_down || m.failover_state != FailoverState::None {
        return false;
    }
    let backoff_over = m
        .failover_start_time
        .is_none_or(|s| now >= s && now - s >= m.failover_timeout.saturating_mul(2));
    if !backoff_over {
        return false;
    }
    start(g, m, now, out);
    true
}

/// `sentinelStartFailover`. Deviation: we cast our self-vote here, so the
/// new epoch and the vote are persisted before any vote request goes out
/// (Sentinel casts it a moment later, in the first `wait_start` step).
fn start(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    m.failover_state = FailoverState::WaitStart;
    // Saturating: epochs arrive unauthenticated in hellos (2.4) and a
    // hostile u64::MAX must not crash us.
    let epoch = g.current_epoch.saturating_add(1);
    g.raise_epoch(epoch, out);
    m.failover_epoch = epoch;
    g.event(out, "+try-failover", m.details());
    m.failover_start_time = Some(now.saturating_add(g.rng.below(1000)));
    m.failover_state_change_time = now;
    m.handoff = None;
    let me = g.myid.clone();
    vote_leader(g, m, epoch, &me, now, out);
    g.persist(out);
}

/// One step of the state machine per tick (outside TILT).
pub(crate) fn step(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    match m.failover_state {
        FailoverState::None | FailoverState::UpdateConfig => {}
        FailoverState::WaitStart => wait_start(g, m, now, out),
        FailoverState::SelectSlave => select_slave(g, m, now, out),
        FailoverState::SendSlaveOfNoOne => send_slaveof_noone(g, m, now, out),
        FailoverState::WaitPromotion => {
            switchover::check_deadline(g, m, now, out);
            if m.failover_state == FailoverState::WaitPromotion
                && elapsed(now, m.failover_state_change_time) > m.failover_timeout
            {
                g.event(out, "-failover-abort-slave-timeout", m.details());
                abort(m, now);
            }
        }
        FailoverState::ReconfSlaves => reconf_slaves(g, m, now, out),
    }
}

fn set_state(
    g: &Global,
    m: &mut Master,
    state: FailoverState,
    now: u64,
    out: &mut Vec<Action>,
    details: String,
) {
    m.failover_state = state;
    m.failover_state_change_time = now;
    let name = format!("+failover-state-{}", state.as_str().replace('_', "-"));
    g.event(out, &name, details);
}

fn wait_start(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let epoch = m.failover_epoch;
    let leader = get_leader(g, m, epoch, now, out);
    let is_leader = leader.is_some_and(|l| g.is_me(&l));
    if !is_leader && !m.forced {
        let limit = g.timing.election_timeout.min(m.failover_timeout);
        let started = m.failover_start_time.unwrap_or(now);
        if now > started && now - started > limit {
            g.event(out, "-failover-abort-not-elected", m.details());
            abort(m, now);
        }
        return;
    }
    g.event(out, "+elected-leader", m.details());
    set_state(g, m, FailoverState::SelectSlave, now, out, m.details());
}

fn select_slave(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let Some(addr) = select_replica(g, m, now) else {
        g.event(out, "-failover-abort-no-good-slave", m.details());
        abort(m, now);
        return;
    };
    let details = m.replica_details(&addr);
    g.event(out, "+selected-slave", details.clone());
    if let Some(r) = m.replica_mut(&addr) {
        r.promoted = true;
    }
    m.promoted = Some(addr);
    set_state(g, m, FailoverState::SendSlaveOfNoOne, now, out, details);
}

/// `send_slaveof_noone` (7.3), or, for a planned switchover, `FAILOVER TO`
/// to the old master (see `switchover`).
pub(crate) fn send_slaveof_noone(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let connected = m.promoted_replica().is_some_and(|r| r.c.link.connected);
    let Some(addr) = m.promoted.clone() else {
        abort(m, now);
        return;
    };
    if !connected {
        if elapsed(now, m.failover_state_change_time) > m.failover_timeout {
            g.event(out, "-failover-abort-slave-timeout", m.details());
            abort(m, now);
        }
        return;
    }
    if switchover::wanted(m) {
        switchover::send(g, m, &addr, now, out);
    } else {
        m.handoff = Some(switchover::Handoff::SlaveOfNoOne);
        out.push(Action::SendSlaveOfNoOne {
            link: m.link(InstanceKind::Replica, &addr),
        });
    }
    let details = m.replica_details(&addr);
    set_state(g, m, FailoverState::WaitPromotion, now, out, details);
}

/// Called from INFO processing when the promoted replica reports
/// `role:master` during `wait_promotion` (7.5): the new config is born.
pub(crate) fn promotion_observed(
    g: &mut Global,
    m: &mut Master,
    addr: &Addr,
    now: u64,
    out: &mut Vec<Action>,
) {
    m.config_epoch = m.failover_epoch;
    g.persist(out);
    g.event(out, "+promoted-slave", m.replica_details(addr));
    switchover::promoted(m, addr, out);
    set_state(g, m, FailoverState::ReconfSlaves, now, out, m.details());
    // Force hellos with the new config out on the next tick (2.2).
    m.c.last_pub_time = None;
    for r in &mut m.replicas {
        r.c.last_pub_time = None;
    }
    for p in &mut m.peers {
        p.c.last_pub_time = None;
    }
}

/// `sentinelFailoverReconfNextSlave` + `sentinelFailoverDetectEnd` (7.6).
fn reconf_slaves(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let Some(promoted) = m.promoted.clone() else {
        return;
    };
    let mut in_progress = m
        .replicas
        .iter()
        .filter(|r| matches!(r.reconf, Reconf::Sent { .. } | Reconf::InProgress))
        .count() as u64;
    let timeout = g.timing.slave_reconf_timeout;
    for i in 0..m.replicas.len() {
        if in_progress >= u64::from(m.parallel_syncs) {
            break;
        }
        let Some(r) = m.replicas.get(i) else { break };
        if r.promoted || r.reconf == Reconf::Done {
            continue;
        }
        let details = m.replica_details(&r.c.addr);
        let link = m.link(InstanceKind::Replica, &r.c.addr);
        let Some(r) = m.replicas.get_mut(i) else {
            break;
        };
        if let Reconf::Sent { at } = r.reconf {
            if elapsed(now, at) > timeout {
                // Counted as done; fix-slave-config repairs it later if needed.
                r.reconf = Reconf::Done;
                g.event(out, "-slave-reconf-sent-timeout", details);
            }
            continue;
        }
        if r.reconf == Reconf::InProgress || !r.c.link.connected {
            continue;
        }
        r.reconf = Reconf::Sent { at: now };
        out.push(Action::SendReconfigure {
            link,
            master: promoted.clone(),
        });
        g.event(out, "+slave-reconf-sent", details);
        in_progress += 1;
    }
    detect_end(g, m, &promoted, now, out);
}

fn detect_end(g: &mut Global, m: &mut Master, promoted: &Addr, now: u64, out: &mut Vec<Action>) {
    if m.promoted_replica().is_none_or(|r| r.c.s_down) {
        return;
    }
    let not_reconfigured = m
        .replicas
        .iter()
        .filter(|r| !r.promoted && r.reconf != Reconf::Done && !r.c.s_down)
        .count();
    let timed_out = elapsed(now, m.failover_state_change_time) > m.failover_timeout;
    if timed_out {
        g.event(out, "+failover-end-for-timeout", m.details());
    }
    if not_reconfigured == 0 || timed_out {
        g.event(out, "+failover-end", m.details());
        m.failover_state = FailoverState::UpdateConfig;
        m.failover_state_change_time = now;
    }
    if timed_out {
        for i in 0..m.replicas.len() {
            let Some(r) = m.replicas.get(i) else { break };
            let skip = r.promoted || r.reconf != Reconf::None || !r.c.link.connected;
            if skip {
                continue;
            }
            let details = m.replica_details(&r.c.addr);
            let link = m.link(InstanceKind::Replica, &r.c.addr);
            out.push(Action::SendReconfigure {
                link,
                master: promoted.clone(),
            });
            g.event(out, "+slave-reconf-sent-be", details);
            if let Some(r) = m.replicas.get_mut(i) {
                r.reconf = Reconf::Sent { at: now };
            }
        }
    }
}

/// `sentinelAbortFailover` (7.8); only legal up to `wait_promotion`.
fn abort(m: &mut Master, now: u64) {
    m.failover_state = FailoverState::None;
    m.failover_state_change_time = now;
    m.forced = false;
    m.handoff = None;
    if let Some(p) = m.promoted.take()
        && let Some(r) = m.replica_mut(&p)
    {
        r.promoted = false;
    }
}

/// `update_config` (7.7): announce and switch to the promoted replica.
pub(crate) fn switch_to_promoted(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let Some(new) = m.promoted.clone() else {
        abort(m, now);
        return;
    };
    let text = format!(
        "{} {} {} {} {}",
        m.name, m.c.addr.ip, m.c.addr.port, new.ip, new.port
    );
    g.event(out, "+switch-master", text);
    reset_and_change_address(g, m, new, now, out);
}

/// `sentinelResetMasterAndChangeAddress` (7.9). Peers, config epoch and
/// leader epoch survive; the old master becomes a replica so that it is
/// demoted (convert-to-slave) when it comes back.
pub(crate) fn reset_and_change_address(
    g: &mut Global,
    m: &mut Master,
    new: Addr,
    now: u64,
    out: &mut Vec<Action>,
) {
    let old = m.c.addr.clone();
    let mut addrs: Vec<Addr> = m
        .replicas
        .iter()
        .map(|r| r.c.addr.clone())
        .filter(|a| *a != new)
        .collect();
    if old != new && !addrs.contains(&old) {
        addrs.push(old.clone());
    }
    out.push(Action::Disconnect {
        link: m.link(InstanceKind::Master, &old),
    });
    for r in &m.replicas {
        out.push(Action::Disconnect {
            link: m.link(InstanceKind::Replica, &r.c.addr),
        });
    }
    m.replicas.clear();
    m.c = Common::new(new, ReportedRole::Master, now);
    m.o_down = false;
    m.leader = None;
    m.failover_state = FailoverState::None;
    m.failover_state_change_time = 0;
    m.failover_start_time = None;
    m.forced = false;
    m.promoted = None;
    m.handoff = None;
    for a in addrs {
        let details = m.replica_details(&a);
        m.replicas.push(Replica::new(a, now));
        g.event(out, "+slave", details);
    }
    g.persist(out);
}

/// `sentinelSelectSlave` (section 6): exclusions, then the best replica.
pub(crate) fn select_replica(g: &Global, m: &Master, now: u64) -> Option<Addr> {
    let t = &g.timing;
    let max_down = if m.c.s_down {
        elapsed(now, m.c.s_down_since)
    } else {
        0
    }
    .saturating_add(m.down_after.saturating_mul(10));
    let info_validity = if m.c.s_down {
        t.ping_period.saturating_mul(5)
    } else {
        t.info_period.saturating_mul(3)
    };
    let mut ok: Vec<&Replica> = m
        .replicas
        .iter()
        .filter(|r| {
            !r.c.s_down
                && r.c.link.connected
                && elapsed(now, r.c.link.last_avail_time) <= t.ping_period.saturating_mul(5)
                && r.priority != 0
                && r.c
                    .info_refresh
                    .is_some_and(|i| elapsed(now, i) <= info_validity)
                && r.master_link_down_ms <= max_down
        })
        .collect();
    ok.sort_by(|a, b| compare_replicas(a, b));
    ok.first().map(|r| r.c.addr.clone())
}

/// Lower priority, then higher offset, then smaller runid (missing last).
fn compare_replicas(a: &Replica, b: &Replica) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then(b.repl_offset.cmp(&a.repl_offset))
        .then_with(|| match (&a.c.run_id, &b.c.run_id) {
            (Some(x), Some(y)) => x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

impl Core {
    /// `SENTINEL FAILOVER <name>`: a forced attempt that skips the election.
    pub(super) fn manual_failover(
        &mut self,
        name: &str,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), FailoverRefused> {
        let g = &mut self.g;
        let m = self
            .masters
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or(FailoverRefused::NoSuchMaster)?;
        if m.failover_state != FailoverState::None {
            return Err(FailoverRefused::InProgress);
        }
        if select_replica(g, m, now).is_none() {
            return Err(FailoverRefused::NoGoodSlave);
        }
        start(g, m, now, out);
        m.forced = true;
        Ok(())
    }
}
