//! Hello messages (section 2): the 8-field payload, and how a received hello
//! discovers peers, raises our epoch and switches us to a newer config.

use super::instance::Peer;
use super::types::{Action, Addr, FailoverState, InstanceKind};
use super::{Core, failover};

/// `<ip>,<port>,<runid>,<current_epoch>,<master_name>,<master_ip>,<master_port>,<config_epoch>`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub sentinel_addr: Addr,
    pub runid: String,
    pub current_epoch: u64,
    pub master_name: String,
    pub master_addr: Addr,
    pub config_epoch: u64,
}

impl Hello {
    /// Exactly 8 comma-separated tokens with numeric ports and epochs, a
    /// 40-hex runid, and host and name tokens without spaces or control
    /// characters, else `None`. Hellos are unauthenticated (any Redis client
    /// can PUBLISH one) and their fields end up in the state file, so
    /// anything that could not be a real Sentinel's hello is dropped.
    pub fn parse(payload: &str) -> Option<Hello> {
        let t: Vec<&str> = payload.split(',').collect();
        let [ip, port, runid, epoch, name, mip, mport, cepoch] = t.as_slice() else {
            return None;
        };
        let is_runid = runid.len() == 40 && runid.bytes().all(|b| b.is_ascii_hexdigit());
        let is_token =
            |s: &str| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
        if !(is_runid && is_token(ip) && is_token(name) && is_token(mip)) {
            return None;
        }
        Some(Hello {
            sentinel_addr: Addr::new(*ip, port.parse().ok()?),
            runid: (*runid).to_string(),
            current_epoch: epoch.parse().ok()?,
            master_name: (*name).to_string(),
            master_addr: Addr::new(*mip, mport.parse().ok()?),
            config_epoch: cepoch.parse().ok()?,
        })
    }

    pub fn payload(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            self.sentinel_addr.ip,
            self.sentinel_addr.port,
            self.runid,
            self.current_epoch,
            self.master_name,
            self.master_addr.ip,
            self.master_addr.port,
            self.config_epoch
        )
    }
}

impl Core {
    /// `sentinelProcessHelloMessage` (2.4). Runs in TILT too.
    pub(super) fn on_hello(&mut self, payload: &str, now: u64, out: &mut Vec<Action>) {
        // Our own echoes (and anything quoting our id) are dropped.
        if payload.contains(self.g.myid.as_str()) {
            return;
        }
        let Some(h) = Hello::parse(payload) else {
            return;
        };
        let Some(mi) = self.masters.iter().position(|m| m.name == h.master_name) else {
            return;
        };
        let sa = &h.sentinel_addr;
        let known = self.masters.get(mi).is_some_and(|m| {
            m.peers
                .iter()
                .any(|p| p.runid == h.runid && p.c.addr.same_as(&sa.ip, sa.port))
        });
        if !known {
            self.add_peer(mi, &h, now, out);
        }
        let g = &mut self.g;
        let Some(m) = self.masters.get_mut(mi) else {
            return;
        };
        g.raise_epoch(h.current_epoch, out);
        if m.config_epoch < h.config_epoch {
            m.config_epoch = h.config_epoch;
            // Sentinel defers this write; we flush so a restart never goes
            // back to an older config epoch.
            g.persist(out);
            let ma = &h.master_addr;
            // Deviation: Sentinel compares with the configured address and
            // lets its own failover run on. But a configuration newer than
            // our failover's epoch means another failover finished after
            // ours started, and the address we hand out from reconf_slaves
            // on is our promoted replica: had the newer config picked our
            // old master (alive, a replica since a planned switchover), we
            // would serve the promoted replica under the newer epoch, and
            // switch to it with that epoch when our failover ends, a config
            // nobody else holds.
            let superseded =
                m.failover_state != FailoverState::None && h.config_epoch > m.failover_epoch;
            if superseded {
                g.event(out, "-failover-abort-superseded", m.details());
            }
            let cur = m.current_addr().clone();
            let moved = !cur.same_as(&ma.ip, ma.port);
            if moved {
                let from = m.sub_details("sentinel", &h.runid, sa);
                g.event(out, "+config-update-from", from);
                let text = format!("{} {} {} {} {}", m.name, cur.ip, cur.port, ma.ip, ma.port);
                g.event(out, "+switch-master", text);
            }
            if moved || superseded {
                failover::reset_and_change_address(g, m, ma.clone(), now, out);
            }
        }
        if let Some(p) = m.peers.iter_mut().find(|p| p.runid == h.runid) {
            p.last_hello = Some(now);
        }
    }

    /// Step 3 of 2.4: a new (runid, address) pair.
    fn add_peer(&mut self, mi: usize, h: &Hello, now: u64, out: &mut Vec<Action>) {
        let sa = &h.sentinel_addr;
        let g = &mut self.g;
        let mut obsolete: Option<String> = None;
        let Some(m) = self.masters.get_mut(mi) else {
            return;
        };
        let (moved, kept): (Vec<Peer>, Vec<Peer>) =
            m.peers.drain(..).partition(|p| p.runid == h.runid);
        m.peers = kept;
        let switched = !moved.is_empty();
        for p in &moved {
            out.push(Action::Disconnect {
                link: m.link(InstanceKind::Sentinel, &p.c.addr),
            });
        }
        if switched {
            let text = format!(
                "{} ip {} port {} for {}",
                m.details(),
                sa.ip,
                sa.port,
                h.runid
            );
            g.event(out, "+sentinel-address-switch", text);
        } else if let Some(other) = m.peers.iter().find(|p| p.c.addr.same_as(&sa.ip, sa.port)) {
            let text = m.sub_details("sentinel", &other.runid, &other.c.addr);
            g.event(out, "+sentinel-invalid-addr", text);
            obsolete = Some(other.runid.clone());
        }
        if let Some(old) = obsolete {
            // Another runid now owns this address: forget the old one everywhere.
            for m in &mut self.masters {
                let name = m.name.clone();
                m.peers.retain(|p| {
                    if p.runid == old {
                        out.push(Action::Disconnect {
                            link: super::LinkRef {
                                master: name.clone(),
                                kind: InstanceKind::Sentinel,
                                addr: p.c.addr.clone(),
                            },
                        });
                    }
                    p.runid != old
                });
            }
        }
        let Some(m) = self.masters.get_mut(mi) else {
            return;
        };
        m.peers.push(Peer::new(h.runid.clone(), sa.clone(), now));
        if !switched {
            let text = m.sub_details("sentinel", &h.runid, sa);
            g.event(out, "+sentinel", text);
        }
        g.persist(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_wrong_arity() {
        let s =
            "127.0.0.1,28001,adaba5249d65054507b94d74dbbed1cbbccd455d,1,mymaster,127.0.0.1,27002,1";
        let h = Hello::parse(s).expect("valid hello");
        assert_eq!(h.payload(), s);
        assert_eq!(h.master_addr, Addr::new("127.0.0.1", 27002));
        assert!(Hello::parse("a,1,b,1,m,ip,1").is_none());
        assert!(Hello::parse("a,1,b,1,m,ip,1,2,3").is_none());
        assert!(Hello::parse("a,x,b,1,m,ip,1,2").is_none());
    }
}
