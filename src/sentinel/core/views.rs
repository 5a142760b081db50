//! Read-only views in Sentinel's reply shapes: the instance maps of
//! `SENTINEL MASTER/REPLICAS/SENTINELS` (9.2), field by field and in
//! Sentinel's order (tools read `SENTINEL MASTER` by position), and the
//! numbers behind `SENTINEL CKQUORUM`.

use super::instance::{Common, Master, Peer, Reconf, Replica};
use super::types::{FailoverState, ReportedRole};
use super::{Core, elapsed};

/// One instance map: `(field, value)` pairs in wire order.
pub type Fields = Vec<(&'static str, String)>;

/// What `SENTINEL CKQUORUM` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumCheck {
    /// This voter plus every peer not seen down.
    pub usable: usize,
    /// This voter plus every known peer.
    pub voters: usize,
    pub quorum: u32,
}

impl Core {
    fn find(&self, name: &str) -> Option<&Master> {
        self.masters.iter().find(|m| m.name == name)
    }

    /// `SENTINEL MASTER <name>`.
    pub fn master_fields(&self, name: &str, now: u64) -> Option<Fields> {
        let m = self.find(name)?;
        let mut flags = vec!["master"];
        if m.failover_state != FailoverState::None {
            flags.push("failover_in_progress");
        }
        if m.forced {
            flags.push("force_failover");
        }
        let mut f = common(
            &m.name,
            &m.c,
            m.o_down,
            &flags,
            m.failover_state,
            m.down_after,
            now,
        );
        info_fields(&mut f, &m.c, now);
        f.extend([
            ("config-epoch", m.config_epoch.to_string()),
            ("num-slaves", m.replicas.len().to_string()),
            ("num-other-sentinels", m.peers.len().to_string()),
            ("quorum", m.quorum.to_string()),
            ("failover-timeout", m.failover_timeout.to_string()),
            ("parallel-syncs", m.parallel_syncs.to_string()),
        ]);
        Some(f)
    }

    /// `SENTINEL REPLICAS <name>`: replicas that announce themselves.
    pub fn replica_fields(&self, name: &str, now: u64) -> Option<Vec<Fields>> {
        let m = self.find(name)?;
        Some(
            m.replicas
                .iter()
                .filter(|r| r.announced)
                .map(|r| replica(m, r, now))
                .collect(),
        )
    }

    /// `SENTINEL SENTINELS <name>`: the known peers (not this voter).
    pub fn sentinel_fields(&self, name: &str, now: u64) -> Option<Vec<Fields>> {
        let m = self.find(name)?;
        Some(m.peers.iter().map(|p| peer(m, p, now)).collect())
    }

    /// `SENTINEL CKQUORUM <name>`.
    pub fn quorum_check(&self, name: &str) -> Option<QuorumCheck> {
        let m = self.find(name)?;
        Some(QuorumCheck {
            usable: 1 + m.peers.iter().filter(|p| !p.c.s_down).count(),
            voters: 1 + m.peers.len(),
            quorum: m.quorum,
        })
    }
}

/// Fields 1-11, common to every kind.
fn common(
    name: &str,
    c: &Common,
    o_down: bool,
    kind_flags: &[&str],
    failover: FailoverState,
    down_after: u64,
    now: u64,
) -> Fields {
    let mut flags: Vec<&str> = Vec::new();
    if c.s_down {
        flags.push("s_down");
    }
    if o_down {
        flags.push("o_down");
    }
    flags.extend(kind_flags.iter().take(1));
    if !c.link.connected {
        flags.push("disconnected");
    }
    flags.extend(kind_flags.iter().skip(1));
    let since = |t: u64| elapsed(now, t).to_string();
    let mut f: Fields = vec![
        ("name", name.to_owned()),
        ("ip", c.addr.ip.clone()),
        ("port", c.addr.port.to_string()),
        ("runid", c.run_id.clone().unwrap_or_default()),
        ("flags", flags.join(",")),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
    ];
    if failover != FailoverState::None {
        f.push(("failover-state", failover.as_str().into()));
    }
    f.extend([
        (
            "last-ping-sent",
            c.link.act_ping_time.map_or_else(|| "0".into(), since),
        ),
        ("last-ok-ping-reply", since(c.link.last_avail_time)),
        ("last-ping-reply", since(c.link.last_pong_time)),
    ]);
    if c.s_down {
        f.push(("s-down-time", since(c.s_down_since)));
    }
    if o_down {
        f.push(("o-down-time", since(c.o_down_since)));
    }
    f.push(("down-after-milliseconds", down_after.to_string()));
    f
}

/// Fields 12-14, for masters and replicas.
fn info_fields(f: &mut Fields, c: &Common, now: u64) {
    let role = match c.role_reported {
        ReportedRole::Master => "master",
        ReportedRole::Slave => "slave",
    };
    f.extend([
        (
            "info-refresh",
            c.info_refresh
                .map_or_else(|| "0".into(), |t| elapsed(now, t).to_string()),
        ),
        ("role-reported", role.into()),
        (
            "role-reported-time",
            elapsed(now, c.role_reported_time).to_string(),
        ),
    ]);
}

fn replica(m: &Master, r: &Replica, now: u64) -> Fields {
    let mut flags = vec!["slave"];
    if r.promoted {
        flags.push("promoted");
    }
    match r.reconf {
        Reconf::Sent { .. } => flags.push("reconf_sent"),
        Reconf::InProgress => flags.push("reconf_inprog"),
        Reconf::Done => flags.push("reconf_done"),
        Reconf::None => {}
    }
    let name = format!("{}:{}", r.c.addr.ip, r.c.addr.port);
    let mut f = common(
        &name,
        &r.c,
        false,
        &flags,
        FailoverState::None,
        m.down_after,
        now,
    );
    info_fields(&mut f, &r.c, now);
    f.extend([
        ("master-link-down-time", r.master_link_down_ms.to_string()),
        (
            "master-link-status",
            if r.master_link_up { "ok" } else { "err" }.into(),
        ),
        (
            "master-host",
            r.master_host.clone().unwrap_or_else(|| "?".into()),
        ),
        ("master-port", r.master_port.to_string()),
        ("slave-priority", r.priority.to_string()),
        ("slave-repl-offset", r.repl_offset.to_string()),
        ("replica-announced", u8::from(r.announced).to_string()),
    ]);
    f
}

fn peer(m: &Master, p: &Peer, now: u64) -> Fields {
    let mut flags = vec!["sentinel"];
    if p.master_down {
        flags.push("master_down");
    }
    let mut f = common(
        &p.runid,
        &p.c,
        false,
        &flags,
        FailoverState::None,
        m.down_after,
        now,
    );
    f.extend([
        (
            "last-hello-message",
            p.last_hello
                .map_or_else(|| "0".into(), |t| elapsed(now, t).to_string()),
        ),
        (
            "voted-leader",
            p.leader.clone().unwrap_or_else(|| "?".into()),
        ),
        ("voted-leader-epoch", p.leader_epoch.to_string()),
    ]);
    f
}
