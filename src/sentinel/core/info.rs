//! The INFO fields Sentinel reads (3.4), parsed from the raw reply text.

use super::instance::{Common, Master, Reconf, Replica};
use super::types::{Action, Addr, FailoverState, InstanceKind, LinkRef, ReportedRole};
use super::{Core, Global, elapsed, failover};

/// What one INFO reply said. `Default` is "nothing reported".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InfoReport {
    pub run_id: Option<String>,
    pub role: Option<ReportedRole>,
    /// `slaveN:` lines (only meaningful when the reporter is the master).
    pub replicas: Vec<Addr>,
    /// `master_link_down_since_seconds` x 1000; 0 when the line is absent.
    pub master_link_down_ms: u64,
    pub master_host: Option<String>,
    pub master_port: Option<u16>,
    pub master_link_up: bool,
    pub slave_priority: Option<u32>,
    pub slave_repl_offset: Option<u64>,
    pub replica_announced: Option<bool>,
}

impl InfoReport {
    /// Parse an INFO reply line by line, by prefix, like `sentinelRefreshInstanceInfo`.
    /// Unknown or malformed lines are ignored.
    pub fn parse(text: &str) -> InfoReport {
        let mut r = InfoReport::default();
        for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
            let line = line.trim_end_matches('\r');
            if let Some(v) = line.strip_prefix("run_id:") {
                if v.len() == 40 {
                    r.run_id = Some(v.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("slave") {
                if rest.starts_with(|c: char| c.is_ascii_digit()) {
                    if let Some(addr) = parse_slave_line(rest) {
                        r.replicas.push(addr);
                    }
                } else if let Some(v) = rest.strip_prefix("_priority:") {
                    r.slave_priority = v.trim().parse().ok();
                } else if let Some(v) = rest.strip_prefix("_repl_offset:") {
                    r.slave_repl_offset = v.trim().parse().ok();
                }
            } else if let Some(v) = line.strip_prefix("master_link_down_since_seconds:") {
                // Redis prints -1 when the link never came up; treat as "down now".
                r.master_link_down_ms = v
                    .trim()
                    .parse::<i64>()
                    .map(|s| u64::try_from(s).unwrap_or(0).saturating_mul(1000))
                    .unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("role:") {
                r.role = match v.trim() {
                    "master" => Some(ReportedRole::Master),
                    "slave" => Some(ReportedRole::Slave),
                    _ => r.role,
                };
            } else if let Some(v) = line.strip_prefix("master_host:") {
                r.master_host = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("master_port:") {
                r.master_port = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("master_link_status:") {
                r.master_link_up = v.trim() == "up";
            } else if let Some(v) = line.strip_prefix("replica_announced:") {
                r.replica_announced = Some(v.trim() != "0");
            }
        }
        r
    }
}

/// `N:ip=..,port=..,...` (new format) or `N:<ip>,<port>,<state>` (old format).
fn parse_slave_line(rest: &str) -> Option<Addr> {
    let (_, fields) = rest.split_once(':')?;
    if fields.contains("ip=") {
        let mut ip = None;
        let mut port = None;
        for kv in fields.split(',') {
            if let Some(v) = kv.strip_prefix("ip=") {
                ip = Some(v);
            } else if let Some(v) = kv.strip_prefix("port=") {
                port = v.parse::<u16>().ok();
            }
        }
        Some(Addr::new(ip?, port?))
    } else {
        let mut it = fields.split(',');
        let ip = it.next()?;
        let port = it.next()?.parse::<u16>().ok()?;
        Some(Addr::new(ip, port))
    }
}

impl Core {
    /// `sentinelRefreshInstanceInfo` (3.4, 7.5, 7.6, 7.10).
    pub(super) fn on_info(
        &mut self,
        link: &LinkRef,
        info: InfoReport,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let g = &mut self.g;
        let Some(m) = self.masters.iter_mut().find(|m| m.name == link.master) else {
            return;
        };
        if m.c.addr == link.addr {
            master_info(g, m, info, now, out);
        } else if let Some(i) = m.replicas.iter().position(|r| r.c.addr == link.addr) {
            replica_info(g, m, i, info, now, out);
        }
    }
}

/// The fields every instance shares: run id, reported role, refresh time.
fn refresh_common(
    g: &Global,
    c: &mut Common,
    details: String,
    configured: ReportedRole,
    info: &InfoReport,
    now: u64,
    out: &mut Vec<Action>,
) {
    if let Some(id) = &info.run_id {
        if c.run_id.as_ref().is_some_and(|old| old != id) {
            g.event(out, "+reboot", details.clone());
        }
        c.run_id = Some(id.clone());
    }
    c.info_refresh = Some(now);
    c.last_info_sent = None;
    let role = info.role.unwrap_or(c.role_reported);
    if role != c.role_reported {
        c.role_reported = role;
        c.role_reported_time = now;
        let name = if role == configured {
            "+role-change"
        } else {
            "-role-change"
        };
        g.event(
            out,
            name,
            format!("{details} new reported role is {}", role.as_str()),
        );
    }
}

fn master_info(g: &mut Global, m: &mut Master, info: InfoReport, now: u64, out: &mut Vec<Action>) {
    let details = m.details();
    refresh_common(g, &mut m.c, details, ReportedRole::Master, &info, now, out);
    // The master's INFO is the only way replicas are discovered.
    for a in info.replicas {
        if a != m.c.addr && !m.replicas.iter().any(|r| r.c.addr == a) {
            g.event(out, "+slave", m.replica_details(&a));
            m.replicas.push(Replica::new(a, now));
            g.persist(out);
        }
    }
}

fn replica_info(
    g: &mut Global,
    m: &mut Master,
    i: usize,
    info: InfoReport,
    now: u64,
    out: &mut Vec<Action>,
) {
    let t = g.timing.clone();
    let Some(r) = m.replicas.get(i) else { return };
    let details = m.replica_details(&r.c.addr);
    let link = m.link(InstanceKind::Replica, &r.c.addr);
    let sane = m.looks_sane(&t, now);
    let master_addr = m.c.addr.clone();
    let promoted = m.promoted.clone();
    let Some(r) = m.replicas.get_mut(i) else {
        return;
    };
    refresh_common(
        g,
        &mut r.c,
        details.clone(),
        ReportedRole::Slave,
        &info,
        now,
        out,
    );
    r.master_link_down_ms = info.master_link_down_ms;
    if info.role == Some(ReportedRole::Slave) {
        let port = info.master_port.unwrap_or(0);
        if info.master_host != r.master_host || port != r.master_port {
            r.slave_conf_change_time = now;
        }
        r.master_host = info.master_host.clone();
        r.master_port = port;
        r.master_link_up = info.master_link_up;
        if let Some(p) = info.slave_priority {
            r.priority = p;
        }
        if let Some(o) = info.slave_repl_offset {
            r.repl_offset = o;
        }
        if let Some(a) = info.replica_announced {
            r.announced = a;
        }
    }
    if g.tilt {
        return;
    }
    match info.role {
        Some(ReportedRole::Master) => {
            if r.promoted && m.failover_state == FailoverState::WaitPromotion {
                let addr = r.c.addr.clone();
                failover::promotion_observed(g, m, &addr, now, out);
            } else {
                // A replica claiming to be master: after a grace period that
                // lets newer configs arrive, demote it (returning old master).
                let wait = t.publish_period.saturating_mul(4);
                if !r.promoted
                    && sane
                    && r.c.no_down_for(wait, now)
                    && elapsed(now, r.c.role_reported_time) > wait
                {
                    out.push(Action::SendReconfigure {
                        link,
                        master: master_addr,
                    });
                    g.event(out, "+convert-to-slave", details);
                }
            }
        }
        Some(ReportedRole::Slave) => {
            let follows_ours = r
                .master_host
                .as_deref()
                .is_some_and(|h| master_addr.same_as(h, r.master_port));
            let wait = m.failover_timeout;
            if !follows_ours
                && sane
                && r.c.no_down_for(wait, now)
                && elapsed(now, r.slave_conf_change_time) > wait
            {
                out.push(Action::SendReconfigure {
                    link,
                    master: master_addr,
                });
                g.event(out, "+fix-slave-config", details.clone());
            }
            // Reconfiguration progress during reconf_slaves.
            let Some(p) = promoted else { return };
            let follows_promoted = r
                .master_host
                .as_deref()
                .is_some_and(|h| p.same_as(h, r.master_port));
            if matches!(r.reconf, Reconf::Sent { .. }) && follows_promoted {
                r.reconf = Reconf::InProgress;
                g.event(out, "+slave-reconf-inprog", details.clone());
            }
            if r.reconf == Reconf::InProgress && r.master_link_up {
                r.reconf = Reconf::Done;
                g.event(out, "+slave-reconf-done", details);
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_master_and_replica_info() {
        let m = InfoReport::parse(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=10.0.0.2,port=6379,state=online,offset=10,lag=0\r\n\
             slave1:10.0.0.3,6380,online\r\nrun_id:0123456789012345678901234567890123456789\r\n",
        );
        assert_eq!(m.role, Some(ReportedRole::Master));
        assert_eq!(
            m.replicas,
            vec![Addr::new("10.0.0.2", 6379), Addr::new("10.0.0.3", 6380)]
        );
        assert!(m.run_id.is_some());

        let r = InfoReport::parse(
            "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\n\
             master_link_down_since_seconds:7\r\nslave_priority:50\r\nslave_repl_offset:1234\r\n",
        );
        assert_eq!(r.role, Some(ReportedRole::Slave));
        assert_eq!(r.master_host.as_deref(), Some("10.0.0.1"));
        assert_eq!(r.master_port, Some(6379));
        assert!(!r.master_link_up);
        assert_eq!(r.master_link_down_ms, 7000);
        assert_eq!(r.slave_priority, Some(50));
        assert_eq!(r.slave_repl_offset, Some(1234));
    }
}
