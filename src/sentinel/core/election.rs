//! ODOWN agreement and leader election (sections 4 and 5):
//! `is-master-down-by-addr` both ways, the vote, and the tally.

use super::instance::Master;
use super::types::{Action, InstanceKind, LinkRef};
use super::{Core, Global, elapsed};

/// `sentinelVoteLeader` (5.3): at most one vote per master per epoch, first
/// come first served, never in an epoch lower than one already voted in.
/// Returns our (possibly older or unchanged) vote.
pub(crate) fn vote_leader(
    g: &mut Global,
    m: &mut Master,
    req_epoch: u64,
    req_runid: &str,
    now: u64,
    out: &mut Vec<Action>,
) -> (Option<String>, u64) {
    g.raise_epoch(req_epoch, out);
    if m.leader_epoch < req_epoch && g.current_epoch <= req_epoch {
        m.leader = Some(req_runid.to_string());
        m.leader_epoch = g.current_epoch;
        g.persist(out);
        g.event(
            out,
            "+vote-for-leader",
            format!("{req_runid} {}", m.leader_epoch),
        );
        if !g.is_me(req_runid) {
            // Back off our own attempts so candidates don't keep colliding.
            m.failover_start_time = Some(now.saturating_add(g.rng.below(1000)));
        }
    }
    (m.leader.clone(), m.leader_epoch)
}

/// `sentinelGetLeader` (5.4) for `epoch`. Deviation: peer votes are counted
/// only when cast in `epoch` (the failover epoch), not in `current_epoch`.
/// Counting current-epoch votes can crown us with votes from a newer epoch
/// while another candidate legitimately won our failover epoch, giving two
/// promotions stamped with the same config epoch.
pub(crate) fn get_leader(
    g: &mut Global,
    m: &mut Master,
    epoch: u64,
    now: u64,
    out: &mut Vec<Action>,
) -> Option<String> {
    let voters = m.peers.len() as u64 + 1;
    let mut tally: Vec<(String, u64)> = Vec::new();
    let add = |tally: &mut Vec<(String, u64)>, who: &str| match tally
        .iter_mut()
        .find(|(r, _)| r.eq_ignore_ascii_case(who))
    {
        Some((_, n)) => *n += 1,
        None => tally.push((who.to_string(), 1)),
    };
    for p in &m.peers {
        if let Some(l) = &p.leader
            && p.leader_epoch == epoch
        {
            add(&mut tally, l);
        }
    }
    let front = best(&tally).map(|(r, _)| r.clone());
    let candidate = front.unwrap_or_else(|| g.myid.clone());
    let (my_vote, my_epoch) = vote_leader(g, m, epoch, &candidate, now, out);
    if let Some(v) = my_vote
        && my_epoch == epoch
    {
        add(&mut tally, &v);
    }
    let (winner, votes) = best(&tally)?;
    let needed = (voters / 2 + 1).max(u64::from(m.quorum));
    (*votes >= needed).then(|| winner.clone())
}

/// Most votes; ties go to the earliest counted, like Sentinel's dict walk.
fn best(tally: &[(String, u64)]) -> Option<&(String, u64)> {
    tally
        .iter()
        .fold(None, |acc: Option<&(String, u64)>, e| match acc {
            Some(a) if a.1 >= e.1 => Some(a),
            _ => Some(e),
        })
}

/// `sentinelCheckObjectivelyDown` (4.5).
pub(crate) fn check_odown(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let votes = if m.c.s_down {
        1 + m.peers.iter().filter(|p| p.master_down).count() as u64
    } else {
        0
    };
    let odown = m.c.s_down && votes >= u64::from(m.quorum);
    if odown && !m.o_down {
        m.o_down = true;
        m.c.o_down_since = now;
        g.event(
            out,
            "+odown",
            format!("{} #quorum {votes}/{}", m.details(), m.quorum),
        );
    } else if !odown && m.o_down {
        m.o_down = false;
        g.event(out, "-odown", m.details());
    }
}

/// `sentinelAskMasterStateToOtherSentinels` (4.1). While we run a failover
/// the request carries our id and asks for a vote in the failover epoch.
pub(crate) fn ask_master_state(
    g: &mut Global,
    m: &mut Master,
    forced: bool,
    now: u64,
    out: &mut Vec<Action>,
) {
    let t = &g.timing;
    let in_failover = m.failover_state != super::FailoverState::None;
    let epoch = if in_failover {
        m.failover_epoch
    } else {
        g.current_epoch
    };
    for p in &mut m.peers {
        let since_reply = p.last_down_reply.map(|r| elapsed(now, r));
        if since_reply.is_none_or(|e| e > t.ask_period.saturating_mul(5)) {
            p.master_down = false;
            p.leader = None;
        }
        if !m.c.s_down || !p.c.link.connected {
            continue;
        }
        // Rate-limit on the last reply like Sentinel, and also on the last
        // request so an unanswering peer is not asked on every tick.
        let recent = |x: Option<u64>| x.is_some_and(|x| elapsed(now, x) < t.ask_period);
        if !forced && (recent(p.last_down_reply) || recent(p.last_ask)) {
            continue;
        }
        p.last_ask = Some(now);
        out.push(Action::AskIsMasterDown {
            link: LinkRef {
                master: m.name.clone(),
                kind: InstanceKind::Sentinel,
                addr: p.c.addr.clone(),
            },
            ip: m.c.addr.ip.clone(),
            port: m.c.addr.port,
            epoch,
            runid: if in_failover {
                g.myid.clone()
            } else {
                "*".to_string()
            },
        });
    }
}

impl Core {
    /// Receiver side of is-master-down-by-addr (4.2). Any vote is made
    /// durable before the reply: `g.persist` puts a barrier ahead of it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_is_master_down_request(
        &mut self,
        request: u64,
        ip: &str,
        port: u16,
        epoch: u64,
        runid: Option<String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let g = &mut self.g;
        let mut reply = (false, "*".to_string(), 0);
        if let Some(m) = self.masters.iter_mut().find(|m| m.c.addr.same_as(ip, port)) {
            reply.0 = !g.tilt && m.c.s_down;
            if let Some(r) = runid {
                let (leader, leader_epoch) = vote_leader(g, m, epoch, &r, now, out);
                reply.1 = leader.unwrap_or_else(|| "*".to_string());
                reply.2 = leader_epoch;
            }
        }
        out.push(Action::ReplyIsMasterDown {
            request,
            down: reply.0,
            leader: reply.1,
            leader_epoch: reply.2,
        });
    }

    /// Sender side (4.4): remember the peer's opinion and vote.
    pub(super) fn on_is_master_down_reply(
        &mut self,
        link: &LinkRef,
        down: bool,
        leader: Option<String>,
        leader_epoch: u64,
        now: u64,
    ) {
        let Some(m) = self.masters.iter_mut().find(|m| m.name == link.master) else {
            return;
        };
        let Some(p) = m.peers.iter_mut().find(|p| p.c.addr == link.addr) else {
            return;
        };
        p.last_down_reply = Some(now);
        p.master_down = down;
        if let Some(l) = leader {
            p.leader = Some(l);
            p.leader_epoch = leader_epoch;
        }
    }
}
