//! Per-instance bookkeeping (1.2, 1.4) and the checks that only need one
//! instance: periodic PING/INFO/hello scheduling and SDOWN (3.2, 3.3).

use super::switchover::Handoff;
use super::types::{Action, Addr, FailoverState, InstanceKind, LinkRef, PingReply, ReportedRole};
use super::{Timing, elapsed};

/// Link state as the core sees it; the sockets live in the shell.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub connected: bool,
    pub conn_time: u64,
    pub last_connect_attempt: Option<u64>,
    /// Oldest unanswered PING. Starts "pending" at creation so an instance
    /// that never answers goes SDOWN.
    pub act_ping_time: Option<u64>,
    pub last_ping_time: Option<u64>,
    pub last_avail_time: u64,
    pub last_pong_time: u64,
}

impl Link {
    pub fn new(now: u64) -> Self {
        Link {
            connected: false,
            conn_time: 0,
            last_connect_attempt: None,
            act_ping_time: Some(now),
            last_ping_time: None,
            last_avail_time: now,
            last_pong_time: now,
        }
    }
}

/// Fields every instance kind has.
#[derive(Clone, Debug)]
pub(crate) struct Common {
    pub addr: Addr,
    pub link: Link,
    pub s_down: bool,
    /// 0 = never; kept after SDOWN ends (convert-to-slave compares episode starts).
    pub s_down_since: u64,
    pub o_down_since: u64,
    pub last_pub_time: Option<u64>,
    pub info_refresh: Option<u64>,
    pub last_info_sent: Option<u64>,
    pub role_reported: ReportedRole,
    pub role_reported_time: u64,
    pub run_id: Option<String>,
}

impl Common {
    pub fn new(addr: Addr, role: ReportedRole, now: u64) -> Self {
        Common {
            addr,
            link: Link::new(now),
            s_down: false,
            s_down_since: 0,
            o_down_since: 0,
            last_pub_time: None,
            info_refresh: None,
            last_info_sent: None,
            role_reported: role,
            role_reported_time: now,
            run_id: None,
        }
    }

    pub fn on_link_up(&mut self, now: u64) {
        self.link.connected = true;
        self.link.conn_time = now;
    }

    pub fn on_link_down(&mut self) {
        self.link.connected = false;
    }

    pub fn on_ping_reply(&mut self, reply: &PingReply, now: u64) {
        self.link.last_pong_time = now;
        if reply.is_acceptable() {
            self.link.last_avail_time = now;
            self.link.act_ping_time = None;
        }
    }

    pub fn link(&self, master: &str, kind: InstanceKind) -> LinkRef {
        LinkRef {
            master: master.to_string(),
            kind,
            addr: self.addr.clone(),
        }
    }

    /// Reconnect (rate-limited to one attempt per ping period), PING, INFO.
    /// Hello is scheduled by the caller since it needs the payload.
    #[allow(clippy::too_many_arguments)]
    pub fn periodic(
        &mut self,
        master: &str,
        kind: InstanceKind,
        down_after: u64,
        info_period: Option<u64>,
        t: &Timing,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if !self.link.connected {
            let due = self
                .link
                .last_connect_attempt
                .is_none_or(|at| elapsed(now, at) >= t.ping_period);
            if due {
                self.link.last_connect_attempt = Some(now);
                out.push(Action::Connect {
                    link: self.link(master, kind),
                });
            }
            return;
        }
        if let Some(period) = info_period {
            let stale = self.info_refresh.is_none_or(|r| elapsed(now, r) > period);
            // Don't re-send while one is plausibly in flight (real Sentinel
            // re-sends every tick, bounded only by its pending-commands cap).
            let not_in_flight = self
                .last_info_sent
                .is_none_or(|s| elapsed(now, s) >= t.ping_period);
            if stale && not_in_flight {
                self.last_info_sent = Some(now);
                out.push(Action::SendInfo {
                    link: self.link(master, kind),
                });
            }
        }
        let p = down_after.min(t.ping_period);
        let pong_old = elapsed(now, self.link.last_pong_time) > p;
        let ping_old = self
            .link
            .last_ping_time
            .is_none_or(|l| elapsed(now, l) > p / 2);
        if pong_old && ping_old {
            let link = self.link(master, kind);
            self.send_ping(link, now, out);
        }
    }

    pub fn send_ping(&mut self, link: LinkRef, now: u64, out: &mut Vec<Action>) {
        self.link.last_ping_time = Some(now);
        if self.link.act_ping_time.is_none() {
            self.link.act_ping_time = Some(now);
        }
        out.push(Action::SendPing { link });
    }

    pub fn hello_due(&self, t: &Timing, now: u64) -> bool {
        self.link.connected
            && self
                .last_pub_time
                .is_none_or(|p| elapsed(now, p) > t.publish_period)
    }

    /// Evaluates SDOWN (3.3) and the command-link hygiene rule. Returns
    /// `Some(true)` on entering SDOWN, `Some(false)` on leaving it.
    #[allow(clippy::too_many_arguments)]
    pub fn check_sdown(
        &mut self,
        master: &str,
        kind: InstanceKind,
        configured_master: bool,
        down_after: u64,
        t: &Timing,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Option<bool> {
        let l = &self.link;
        let stale_link = l.connected
            && elapsed(now, l.conn_time) > t.min_link_reconnect_period
            && l.act_ping_time
                .is_some_and(|a| elapsed(now, a) > down_after / 2)
            && elapsed(now, l.last_pong_time) > down_after / 2;
        if stale_link {
            // A half-open TCP connection: drop it so the shell reconnects.
            self.link.connected = false;
            out.push(Action::Disconnect {
                link: self.link(master, kind),
            });
        }
        let since_avail = match self.link.act_ping_time {
            Some(a) => elapsed(now, a),
            None if !self.link.connected => elapsed(now, self.link.last_avail_time),
            None => 0,
        };
        let wrong_role = configured_master
            && self.role_reported == ReportedRole::Slave
            && elapsed(now, self.role_reported_time)
                > down_after.saturating_add(t.info_period.saturating_mul(2));
        let down = since_avail > down_after || wrong_role;
        if down && !self.s_down {
            self.s_down = true;
            self.s_down_since = now;
            Some(true)
        } else if !down && self.s_down {
            self.s_down = false;
            Some(false)
        } else {
            None
        }
    }

    /// Neither SDOWN nor ODOWN started within `ms` (`sentinelRedisInstanceNoDownFor`).
    pub fn no_down_for(&self, ms: u64, now: u64) -> bool {
        let recent = self.s_down_since.max(self.o_down_since);
        recent == 0 || elapsed(now, recent) > ms
    }
}

/// Reconfiguration progress of a replica during `reconf_slaves`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reconf {
    None,
    Sent { at: u64 },
    InProgress,
    Done,
}

#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub c: Common,
    pub master_link_down_ms: u64,
    pub priority: u32,
    pub repl_offset: u64,
    pub master_host: Option<String>,
    pub master_port: u16,
    pub master_link_up: bool,
    pub slave_conf_change_time: u64,
    pub announced: bool,
    pub promoted: bool,
    pub reconf: Reconf,
}

impl Replica {
    pub fn new(addr: Addr, now: u64) -> Self {
        Replica {
            c: Common::new(addr, ReportedRole::Slave, now),
            master_link_down_ms: 0,
            priority: 100,
            repl_offset: 0,
            master_host: None,
            master_port: 0,
            master_link_up: false,
            slave_conf_change_time: now,
            announced: true,
            promoted: false,
            reconf: Reconf::None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub runid: String,
    pub c: Common,
    pub last_hello: Option<u64>,
    pub last_down_reply: Option<u64>,
    pub last_ask: Option<u64>,
    /// The peer answered "down" to our last is-master-down query.
    pub master_down: bool,
    /// The peer's vote as it reported it.
    pub leader: Option<String>,
    pub leader_epoch: u64,
}

impl Peer {
    pub fn new(runid: String, addr: Addr, now: u64) -> Self {
        Peer {
            runid,
            c: Common::new(addr, ReportedRole::Master, now),
            last_hello: None,
            last_down_reply: None,
            last_ask: None,
            master_down: false,
            leader: None,
            leader_epoch: 0,
        }
    }
}

/// One monitored master with its replicas, peers, vote and failover state.
#[derive(Clone, Debug)]
pub(crate) struct Master {
    pub name: String,
    pub c: Common,
    pub quorum: u32,
    pub down_after: u64,
    pub failover_timeout: u64,
    pub parallel_syncs: u32,
    pub replicas: Vec<Replica>,
    pub peers: Vec<Peer>,
    pub config_epoch: u64,
    pub o_down: bool,
    /// Our vote for this master and the epoch it was cast in.
    pub leader: Option<String>,
    pub leader_epoch: u64,
    pub failover_state: FailoverState,
    pub failover_epoch: u64,
    /// `None` = may start at once (Sentinel uses 0 with a wall clock).
    pub failover_start_time: Option<u64>,
    pub failover_state_change_time: u64,
    pub forced: bool,
    /// Address of the replica being promoted.
    pub promoted: Option<Addr>,
    /// How it is being promoted (decided in `send_slaveof_noone`).
    pub handoff: Option<Handoff>,
    pub last_route: Option<(Addr, u64)>,
    /// When the data plane's last re-check of this master was acted on.
    pub last_recheck: Option<u64>,
}

impl Master {
    pub fn link(&self, kind: InstanceKind, addr: &Addr) -> LinkRef {
        LinkRef {
            master: self.name.clone(),
            kind,
            addr: addr.clone(),
        }
    }

    /// The address clients should use: the promoted replica from
    /// `reconf_slaves` on (2.1 field 5), else the configured one.
    pub fn current_addr(&self) -> &Addr {
        match (
            &self.promoted,
            self.failover_state >= FailoverState::ReconfSlaves,
        ) {
            (Some(p), true) => p,
            _ => &self.c.addr,
        }
    }

    pub fn replica_mut(&mut self, addr: &Addr) -> Option<&mut Replica> {
        self.replicas.iter_mut().find(|r| r.c.addr == *addr)
    }

    pub fn promoted_replica(&self) -> Option<&Replica> {
        let p = self.promoted.as_ref()?;
        self.replicas.iter().find(|r| r.c.addr == *p)
    }

    /// `<type> <name> <ip> <port>` for the master itself.
    pub fn details(&self) -> String {
        format!(
            "master {} {} {}",
            self.name, self.c.addr.ip, self.c.addr.port
        )
    }

    /// `<type> <name> <ip> <port> @ <master> <ip> <port>` for replicas and peers.
    pub fn sub_details(&self, kind: &str, name: &str, addr: &Addr) -> String {
        format!(
            "{kind} {name} {} {} @ {} {} {}",
            addr.ip, addr.port, self.name, self.c.addr.ip, self.c.addr.port
        )
    }

    pub fn replica_details(&self, addr: &Addr) -> String {
        self.sub_details("slave", &addr.to_string(), addr)
    }

    /// 3.6: only then do we push our config onto other instances.
    pub fn looks_sane(&self, t: &Timing, now: u64) -> bool {
        self.c.role_reported == ReportedRole::Master
            && !self.c.s_down
            && !self.o_down
            && self
                .c
                .info_refresh
                .is_some_and(|r| elapsed(now, r) < t.info_period.saturating_mul(2))
    }
}
