//! The periodic timer (`sentinelTimer`): TILT detection, then for every
//! master the monitoring half (links, PING, INFO, hello; runs in TILT too)
//! and the acting half (SDOWN, ODOWN, failover; skipped in TILT).

use super::instance::{Common, Master};
use super::types::{Action, FailoverState, InstanceKind};
use super::{Core, Global, Hello, elapsed, election, failover, switchover};

impl Core {
    /// The timer (`sentinelTimer`): TILT detection, then every master.
    pub(super) fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        // A clock jump or a stalled process: our timers can't be trusted.
        let jumped = self
            .g
            .previous_time
            .is_some_and(|prev| now < prev || now - prev > self.g.timing.tilt_trigger);
        if jumped {
            // A new trigger inside TILT restarts the period (and re-announces it).
            self.g.tilt = true;
            self.g.tilt_start = now;
            self.g.event(out, "+tilt", "#tilt mode entered".to_string());
        }
        self.g.previous_time = Some(now);
        if self.g.tilt && elapsed(now, self.g.tilt_start) >= self.g.timing.tilt_period {
            self.g.tilt = false;
            self.g.event(out, "-tilt", "#tilt mode exited".to_string());
        }
        for m in &mut self.masters {
            monitor_master(&mut self.g, m, now, out);
        }
        // update_config runs after all masters were handled (7.7).
        for m in &mut self.masters {
            if m.failover_state == FailoverState::UpdateConfig {
                failover::switch_to_promoted(&mut self.g, m, now, out);
            }
        }
    }
}

/// One master's share of a timer tick, in Sentinel's order
/// (`sentinelHandleRedisInstance`): the master (monitoring, then acting),
/// then its replicas, then its peers. The order matters: replicas are
/// polled after the master's state moved, so a fresh ODOWN switches their
/// INFO to 1 s on the same tick, before `select_slave` runs on the next.
fn monitor_master(g: &mut Global, m: &mut Master, now: u64, out: &mut Vec<Action>) {
    let t = g.timing.clone();
    let down_after = m.down_after;
    let hello = |g: &Global, m: &Master| {
        let due = m.c.hello_due(&t, now)
            || m.replicas.iter().any(|r| r.c.hello_due(&t, now))
            || m.peers.iter().any(|p| p.c.hello_due(&t, now));
        due.then(|| {
            Hello {
                sentinel_addr: g.announce.clone(),
                runid: g.myid.clone(),
                current_epoch: g.current_epoch,
                master_name: m.name.clone(),
                master_addr: m.current_addr().clone(),
                config_epoch: m.config_epoch,
            }
            .payload()
        })
    };
    let publish = |c: &mut Common,
                   payload: &Option<String>,
                   name: &str,
                   kind: InstanceKind,
                   out: &mut Vec<Action>| {
        if let Some(p) = payload
            && c.hello_due(&t, now)
        {
            c.last_pub_time = Some(now);
            out.push(Action::PublishHello {
                link: c.link(name, kind),
                payload: p.clone(),
            });
        }
    };

    // The master. Monitoring runs even in TILT; acting does not.
    let payload = hello(g, m);
    m.c.periodic(
        &m.name,
        InstanceKind::Master,
        down_after,
        Some(t.info_period),
        &t,
        now,
        out,
    );
    if !switchover::handing_over(m) {
        publish(&mut m.c, &payload, &m.name, InstanceKind::Master, out);
    }
    if !g.tilt {
        let name = m.name.as_str();
        let change =
            m.c.check_sdown(name, InstanceKind::Master, true, down_after, &t, now, out);
        sdown_event(g, change, || m.details(), out);
        election::check_odown(g, m, now, out);
        if failover::start_if_needed(g, m, now, out) {
            election::ask_master_state(g, m, true, now, out);
        }
        failover::step(g, m, now, out);
        election::ask_master_state(g, m, false, now, out);
    }

    // Replicas and peers (the state above may have changed the hello).
    let payload = hello(g, m);
    let fast_info = m.o_down || m.failover_state != FailoverState::None;
    let name = m.name.as_str();
    let ma = &m.c.addr;
    let at = || format!("@ {name} {} {}", ma.ip, ma.port);
    let promoting = m.failover_state == FailoverState::WaitPromotion;
    for r in &mut m.replicas {
        let period = if promoting && r.promoted {
            t.promotion_info_period
        } else if fast_info || r.master_link_down_ms > 0 {
            t.ping_period
        } else {
            t.info_period
        };
        r.c.periodic(
            name,
            InstanceKind::Replica,
            down_after,
            Some(period),
            &t,
            now,
            out,
        );
        publish(&mut r.c, &payload, name, InstanceKind::Replica, out);
        if !g.tilt {
            let change =
                r.c.check_sdown(name, InstanceKind::Replica, false, down_after, &t, now, out);
            let a = &r.c.addr;
            sdown_event(
                g,
                change,
                || format!("slave {a} {} {} {}", a.ip, a.port, at()),
                out,
            );
        }
    }
    for p in &mut m.peers {
        p.c.periodic(name, InstanceKind::Sentinel, down_after, None, &t, now, out);
        publish(&mut p.c, &payload, name, InstanceKind::Sentinel, out);
        if !g.tilt {
            let change = p.c.check_sdown(
                name,
                InstanceKind::Sentinel,
                false,
                down_after,
                &t,
                now,
                out,
            );
            let (a, id) = (&p.c.addr, &p.runid);
            sdown_event(
                g,
                change,
                || format!("sentinel {id} {} {} {}", a.ip, a.port, at()),
                out,
            );
        }
    }
}

fn sdown_event(
    g: &Global,
    change: Option<bool>,
    details: impl FnOnce() -> String,
    out: &mut Vec<Action>,
) {
    match change {
        Some(true) => g.event(out, "+sdown", details()),
        Some(false) => g.event(out, "-sdown", details()),
        None => {}
    }
}
