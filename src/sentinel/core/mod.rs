//! The pure decision core of the Sentinel control plane.
//!
//! [`Core::handle`] takes one [`Event`] and the caller's clock `now` (ms) and
//! returns the [`Action`]s to perform, in order (see the ordering contract on
//! [`Action`]). There is no I/O, no clock and no randomness source inside: the
//! jitter Sentinel draws from `rand()` comes from a seeded PRNG, so a run is
//! fully determined by the config, the seed and the event sequence.
//!
//! # What the shell must do
//!
//! * Execute each returned batch **in order**. [`Action::Persist`] is a
//!   barrier: write durably (temp file, fsync, rename) before running the
//!   next action; if the write fails, drop the rest of the batch and stop
//!   voting. This is what keeps votes and epochs from getting ahead of disk.
//!   Persist [`Core::persisted_state`] once at first start.
//! * Fire [`Event::Tick`] every 50-100 ms (jittered), with `now` in ms from
//!   any clock; a monotonic one means TILT only trips on real stalls.
//! * Own one link per [`LinkRef`], keyed by `(master, addr)`: on `Connect`,
//!   connect unless already connecting; report `LinkUp` once the command
//!   connection (and, for masters and replicas, the pubsub connection with
//!   `SUBSCRIBE __sentinel__:hello`) is up, `LinkDown` on failure or drop.
//!   After `Disconnect`, report nothing more from the old connection, and
//!   drop replies that arrive on a connection other than the current one.
//! * Deliver every hello payload (pubsub `message` frames, and `PUBLISH
//!   __sentinel__:hello` sent to our Sentinel port) raw; parse
//!   `is-master-down-by-addr` requests and replies (arity and integer
//!   errors are the shell's replies; malformed replies are dropped).
//! * Build the MULTI / SLAVEOF / CONFIG REWRITE / CLIENT KILL x2 / EXEC
//!   transaction for `SendSlaveOfNoOne` / `SendReconfigure`, honouring
//!   rename-command; the replies need not be reported. Send `FAILOVER TO`
//!   for `SendFailoverTo` and report its reply as `FailoverToReply`.
//! * Publish `PublishEvent`s on the Sentinel port and feed `RouteChanged`
//!   to the data plane's route watch; pass the data plane's re-check
//!   requests in as [`Event::Recheck`].
//!
//! Module map: `types` (boundary data), `instance` (per-instance state, PING,
//! SDOWN), `info` (INFO parsing and the reactions to it), `hello` (gossip),
//! `election` (is-master-down, votes, ODOWN), `failover` (the state machine,
//! replica selection, switch), `switchover` (`SENTINEL FAILOVER` with the
//! old master up: `FAILOVER TO`), `recheck` (INFO on the data plane's demand),
//! `tick` (the periodic timer and TILT),
//! `config`, `persist` (durable state), `rng` (jitter).

mod config;
mod election;
mod failover;
mod hello;
mod info;
mod instance;
mod persist;
mod recheck;
mod rng;
mod switchover;
mod tick;
mod types;
mod views;

pub use config::{Config, MasterConfig, Timing};
pub use hello::Hello;
pub use info::InfoReport;
pub use persist::{PersistedMaster, PersistedState};
pub use types::{
    Action, Addr, ConfigError, Event, FailoverRefused, FailoverState, InstanceKind, LinkRef,
    PingReply, ReportedRole,
};
pub use views::{Fields, QuorumCheck};

use instance::{Common, Master, Peer, Replica};
use rng::Rng;

/// A read-only snapshot of one master, for `SENTINEL MASTER`-style views and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterView {
    pub name: String,
    /// The address clients should use (promoted replica from reconf_slaves on).
    pub addr: Addr,
    pub config_epoch: u64,
    pub s_down: bool,
    pub o_down: bool,
    pub leader: Option<String>,
    pub leader_epoch: u64,
    pub failover_state: FailoverState,
    pub failover_epoch: u64,
    pub replicas: Vec<Addr>,
    pub peers: Vec<(String, Addr)>,
}

/// Epochs and state of one master, borrowed (cheap enough to call per event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterBrief<'a> {
    /// The address clients should use.
    pub addr: &'a Addr,
    pub config_epoch: u64,
    /// Epoch of our last vote for this master.
    pub leader_epoch: u64,
    pub failover_state: FailoverState,
    pub failover_epoch: u64,
}

/// State shared by all masters. Kept apart from the masters so one master
/// and the globals can be borrowed mutably together.
#[derive(Clone, Debug)]
pub(crate) struct Global {
    pub myid: String,
    pub announce: Addr,
    pub current_epoch: u64,
    pub tilt: bool,
    pub tilt_start: u64,
    pub previous_time: Option<u64>,
    pub timing: Timing,
    pub rng: Rng,
    /// Index in the current output of the first `Persist` barrier, if any.
    pub persist_at: Option<usize>,
}

impl Global {
    pub fn event(&self, out: &mut Vec<Action>, name: &str, text: String) {
        out.push(Action::PublishEvent {
            name: name.to_string(),
            text,
        });
    }

    /// Ask for a durable write before anything emitted after this point.
    /// One barrier per `handle` call is enough: it is filled with the final
    /// state of the call, which includes every change made before it.
    pub fn persist(&mut self, out: &mut Vec<Action>) {
        if self.persist_at.is_none() {
            self.persist_at = Some(out.len());
            out.push(Action::Persist {
                state: PersistedState::default(),
            });
        }
    }

    /// Raise `current_epoch` (never lowers it).
    pub fn raise_epoch(&mut self, epoch: u64, out: &mut Vec<Action>) {
        if epoch > self.current_epoch {
            self.current_epoch = epoch;
            self.persist(out);
            self.event(out, "+new-epoch", epoch.to_string());
        }
    }

    pub fn is_me(&self, runid: &str) -> bool {
        runid.eq_ignore_ascii_case(&self.myid)
    }
}

/// `now - then`, 0 if the clock went backwards (TILT handles that case).
pub(crate) fn elapsed(now: u64, then: u64) -> u64 {
    now.saturating_sub(then)
}

/// The Sentinel control plane for one voter.
#[derive(Clone, Debug)]
pub struct Core {
    g: Global,
    masters: Vec<Master>,
}

fn valid_myid(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Core {
    /// A fresh voter. The shell should persist [`Core::persisted_state`] once
    /// at first start (Sentinel flushes when it generates its id).
    pub fn new(config: Config, now: u64) -> Result<Core, ConfigError> {
        if !valid_myid(&config.myid) {
            return Err(ConfigError::BadMyId(config.myid));
        }
        let mut masters: Vec<Master> = Vec::new();
        for mc in config.masters {
            if mc.name.is_empty() || mc.name.contains([',', ' ']) {
                return Err(ConfigError::BadMasterName(mc.name));
            }
            if mc.quorum == 0 {
                return Err(ConfigError::BadQuorum(mc.name));
            }
            if masters.iter().any(|m| m.name == mc.name) {
                return Err(ConfigError::DuplicateMaster(mc.name));
            }
            let mut m = Master {
                name: mc.name,
                c: Common::new(mc.addr, ReportedRole::Master, now),
                quorum: mc.quorum,
                down_after: mc.down_after,
                failover_timeout: mc.failover_timeout,
                parallel_syncs: mc.parallel_syncs.max(1),
                replicas: Vec::new(),
                peers: Vec::new(),
                config_epoch: 0,
                o_down: false,
                leader: None,
                leader_epoch: 0,
                failover_state: FailoverState::None,
                failover_epoch: 0,
                failover_start_time: None,
                failover_state_change_time: 0,
                forced: false,
                promoted: None,
                handoff: None,
                last_route: None,
                last_recheck: None,
            };
            for r in mc.known_replicas {
                if r != m.c.addr && !m.replicas.iter().any(|x| x.c.addr == r) {
                    m.replicas.push(Replica::new(r, now));
                }
            }
            for (runid, addr) in mc.known_sentinels {
                if !runid.eq_ignore_ascii_case(&config.myid)
                    && !m.peers.iter().any(|p| p.runid == runid)
                {
                    m.peers.push(Peer::new(runid, addr, now));
                }
            }
            masters.push(m);
        }
        let seed = config.seed
            ^ config
                .myid
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        Ok(Core {
            g: Global {
                myid: config.myid,
                announce: config.announce,
                current_epoch: 0,
                tilt: false,
                tilt_start: 0,
                previous_time: None,
                timing: config.timing,
                rng: Rng::new(seed),
                persist_at: None,
            },
            masters,
        })
    }

    /// A voter restarted from its state file. Masters missing from `config`
    /// are dropped; configured masters missing from the state start fresh.
    pub fn restore(config: Config, state: &PersistedState, now: u64) -> Result<Core, ConfigError> {
        if !state.myid.eq_ignore_ascii_case(&config.myid) {
            return Err(ConfigError::MyIdMismatch {
                config: config.myid,
                persisted: state.myid.clone(),
            });
        }
        let mut core = Core::new(config, now)?;
        core.g.current_epoch = state.current_epoch;
        for pm in &state.masters {
            let Some(m) = core.masters.iter_mut().find(|m| m.name == pm.name) else {
                continue;
            };
            m.c.addr = pm.addr.clone();
            m.config_epoch = pm.config_epoch;
            m.leader = pm.leader.clone();
            m.leader_epoch = pm.leader_epoch;
            m.replicas.retain(|r| r.c.addr != pm.addr);
            for r in &pm.known_replicas {
                if *r != m.c.addr && !m.replicas.iter().any(|x| x.c.addr == *r) {
                    m.replicas.push(Replica::new(r.clone(), now));
                }
            }
            for (runid, addr) in &pm.known_sentinels {
                m.peers.retain(|p| p.runid != *runid);
                m.peers.push(Peer::new(runid.clone(), addr.clone(), now));
            }
            // Like `sentinel config-epoch`, a larger config epoch raises current_epoch.
            core.g.current_epoch = core.g.current_epoch.max(pm.config_epoch);
        }
        Ok(core)
    }

    pub fn myid(&self) -> &str {
        &self.g.myid
    }

    pub fn current_epoch(&self) -> u64 {
        self.g.current_epoch
    }

    pub fn in_tilt(&self) -> bool {
        self.g.tilt
    }

    /// The allocation-free subset of [`Core::master`].
    pub fn master_brief(&self, name: &str) -> Option<MasterBrief<'_>> {
        let m = self.masters.iter().find(|m| m.name == name)?;
        Some(MasterBrief {
            addr: m.current_addr(),
            config_epoch: m.config_epoch,
            leader_epoch: m.leader_epoch,
            failover_state: m.failover_state,
            failover_epoch: m.failover_epoch,
        })
    }

    pub fn master(&self, name: &str) -> Option<MasterView> {
        let m = self.masters.iter().find(|m| m.name == name)?;
        Some(MasterView {
            name: m.name.clone(),
            addr: m.current_addr().clone(),
            config_epoch: m.config_epoch,
            s_down: m.c.s_down,
            o_down: m.o_down,
            leader: m.leader.clone(),
            leader_epoch: m.leader_epoch,
            failover_state: m.failover_state,
            failover_epoch: m.failover_epoch,
            replicas: m.replicas.iter().map(|r| r.c.addr.clone()).collect(),
            peers: m
                .peers
                .iter()
                .map(|p| (p.runid.clone(), p.c.addr.clone()))
                .collect(),
        })
    }

    /// Everything the state file must hold (10.2, 10.4).
    pub fn persisted_state(&self) -> PersistedState {
        PersistedState {
            myid: self.g.myid.clone(),
            current_epoch: self.g.current_epoch,
            masters: self
                .masters
                .iter()
                .map(|m| {
                    let cur = m.current_addr();
                    PersistedMaster {
                        name: m.name.clone(),
                        addr: cur.clone(),
                        config_epoch: m.config_epoch,
                        leader: m.leader.clone(),
                        leader_epoch: m.leader_epoch,
                        // Mid-failover the promoted replica is the master, so
                        // the old master is written as a replica instead (10.2).
                        known_replicas: m
                            .replicas
                            .iter()
                            .map(|r| {
                                if r.c.addr == *cur {
                                    m.c.addr.clone()
                                } else {
                                    r.c.addr.clone()
                                }
                            })
                            .collect(),
                        known_sentinels: m
                            .peers
                            .iter()
                            .map(|p| (p.runid.clone(), p.c.addr.clone()))
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    /// Process one event at time `now` (ms). See [`Action`] for the ordering contract.
    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.g.persist_at = None;
        match event {
            Event::Tick => self.tick(now, &mut out),
            Event::LinkUp { link } => self.on_link(&link, true, now, &mut out),
            Event::LinkDown { link } => self.on_link(&link, false, now, &mut out),
            Event::PingReply { link, reply } => {
                if let Some(c) = self.common_mut(&link) {
                    c.on_ping_reply(&reply, now);
                }
            }
            Event::InfoReply { link, info } => self.on_info(&link, info, now, &mut out),
            Event::HelloReceived { payload } => self.on_hello(&payload, now, &mut out),
            Event::IsMasterDownRequest {
                request,
                ip,
                port,
                epoch,
                runid,
            } => self.on_is_master_down_request(request, &ip, port, epoch, runid, now, &mut out),
            Event::IsMasterDownReply {
                link,
                down,
                leader,
                leader_epoch,
            } => self.on_is_master_down_reply(&link, down, leader, leader_epoch, now),
            Event::SlaveOfReply { link, ok } => self.on_slaveof_reply(&link, ok, now, &mut out),
            Event::FailoverToReply { link, result } => {
                self.on_failover_to_reply(&link, result, now, &mut out)
            }
            Event::ManualFailover { request, master } => {
                let result = self.manual_failover(&master, now, &mut out);
                out.push(Action::ManualFailoverReply { request, result });
            }
            Event::Recheck { master } => self.recheck(&master, now, &mut out),
        }
        self.emit_routes(&mut out);
        if let Some(i) = self.g.persist_at.take() {
            let state = self.persisted_state();
            if let Some(slot) = out.get_mut(i) {
                *slot = Action::Persist { state };
            }
        }
        out
    }

    /// Find the instance a link points at. Links are keyed by (master, addr);
    /// the kind is not trusted because roles change under a link on a switch.
    /// Sentinel learns of a promotion only from INFO, polled once a second.
    /// Asking as soon as the SLAVEOF NO ONE transaction has succeeded
    /// confirms it (and moves every route) up to a whole period sooner.
    fn on_slaveof_reply(&mut self, link: &LinkRef, ok: bool, now: u64, out: &mut Vec<Action>) {
        let Some(m) = self.masters.iter_mut().find(|m| m.name == link.master) else {
            return;
        };
        if !ok
            || link.kind != InstanceKind::Replica
            || m.failover_state != FailoverState::WaitPromotion
        {
            return;
        }
        if m.promoted.as_ref() != Some(&link.addr) {
            return;
        }
        if let Some(r) = m.replicas.iter_mut().find(|r| r.c.addr == link.addr) {
            r.c.last_info_sent = Some(now);
            out.push(Action::SendInfo { link: link.clone() });
        }
    }

    fn common_mut(&mut self, link: &LinkRef) -> Option<&mut Common> {
        let m = self.masters.iter_mut().find(|m| m.name == link.master)?;
        if link.kind == InstanceKind::Sentinel {
            return m
                .peers
                .iter_mut()
                .find(|p| p.c.addr == link.addr)
                .map(|p| &mut p.c);
        }
        if m.c.addr == link.addr {
            return Some(&mut m.c);
        }
        m.replicas
            .iter_mut()
            .find(|r| r.c.addr == link.addr)
            .map(|r| &mut r.c)
    }

    fn on_link(&mut self, link: &LinkRef, up: bool, now: u64, out: &mut Vec<Action>) {
        if let Some(c) = self.common_mut(link) {
            if up {
                c.on_link_up(now);
                // Sentinel PINGs right away on a new command link.
                c.send_ping(link.clone(), now, out);
            } else {
                c.on_link_down();
            }
        }
        if !up
            && link.kind != InstanceKind::Sentinel
            && let Some(m) = self
                .masters
                .iter_mut()
                .find(|m| m.name == link.master && m.c.addr == link.addr)
        {
            switchover::on_master_link_down(&mut self.g, m, now, out);
        }
    }

    /// Emit `RouteChanged` whenever a master's (address, config epoch) moved.
    fn emit_routes(&mut self, out: &mut Vec<Action>) {
        for m in &mut self.masters {
            let same = m
                .last_route
                .as_ref()
                .is_some_and(|(a, e)| a == m.current_addr() && *e == m.config_epoch);
            if !same {
                let cur = (m.current_addr().clone(), m.config_epoch);
                out.push(Action::RouteChanged {
                    master: m.name.clone(),
                    addr: cur.0.clone(),
                    config_epoch: cur.1,
                });
                m.last_route = Some(cur);
            }
        }
    }
}
