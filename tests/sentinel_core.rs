//! Scripted, single-voter tests of the core's observable behaviour against
//! the protocol document: vote semantics (4.3), TILT (3.7), hello processing
//! (2.4), replica selection (6), the failover event sequence (8) and
//! `SENTINEL FAILOVER` replies.

use std::collections::BTreeMap;

use sentinel_proxy::sentinel::core::{
    Action, Addr, Config, ConfigError, Core, Event, FailoverRefused, FailoverState, Hello,
    InfoReport, InstanceKind, LinkRef, MasterConfig, PersistedState, PingReply, Timing,
};

const ME: &str = "1111111111111111111111111111111111111111";
const PEER: &str = "2222222222222222222222222222222222222222";
const AAAA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BBBB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const T0: u64 = 1_000_000;

fn addr(port: u16) -> Addr {
    Addr::new("127.0.0.1", port)
}

fn config(quorum: u32) -> Config {
    let mut mc = MasterConfig::new("mymaster", addr(27000), quorum);
    mc.down_after = 3_000;
    mc.failover_timeout = 20_000;
    Config {
        myid: ME.into(),
        announce: addr(28000),
        masters: vec![mc],
        timing: Timing::default(),
        seed: 7,
    }
}

fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PublishEvent { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn vote(core: &mut Core, epoch: u64, runid: &str, now: u64) -> (Vec<Action>, (bool, String, u64)) {
    let out = core.handle(
        Event::IsMasterDownRequest {
            request: 9,
            ip: "127.0.0.1".into(),
            port: 27000,
            epoch,
            runid: (runid != "*").then(|| runid.to_string()),
        },
        now,
    );
    let reply = out
        .iter()
        .find_map(|a| match a {
            Action::ReplyIsMasterDown {
                down,
                leader,
                leader_epoch,
                ..
            } => Some((*down, leader.clone(), *leader_epoch)),
            _ => None,
        })
        .expect("a reply");
    (out, reply)
}

#[test]
fn votes_follow_the_lab_examples_and_are_persisted_before_the_reply() {
    let mut core = Core::new(config(2), T0).unwrap();
    core.handle(Event::Tick, T0);
    let (_, r) = vote(&mut core, 0, "*", T0 + 10);
    assert_eq!(r, (false, "*".into(), 0));

    let (out, r) = vote(&mut core, 10, AAAA, T0 + 20);
    assert_eq!(r, (false, AAAA.into(), 10));
    let persist = out
        .iter()
        .position(|a| matches!(a, Action::Persist { .. }))
        .expect("vote persisted");
    let reply = out
        .iter()
        .position(|a| matches!(a, Action::ReplyIsMasterDown { .. }))
        .unwrap();
    assert!(persist < reply, "Persist must come before the reply");
    match &out[persist] {
        Action::Persist { state } => {
            assert_eq!(state.current_epoch, 10);
            assert_eq!(state.masters[0].leader_epoch, 10);
            assert_eq!(state.masters[0].leader.as_deref(), Some(AAAA));
        }
        _ => unreachable!(),
    }
    assert_eq!(events(&out), ["+new-epoch", "+vote-for-leader"]);

    // Same epoch, other candidate: first come first served, nothing persisted.
    let (out, r) = vote(&mut core, 10, BBBB, T0 + 30);
    assert_eq!(r, (false, AAAA.into(), 10));
    assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));
    // Older epoch: the existing vote is returned.
    assert_eq!(
        vote(&mut core, 9, BBBB, T0 + 40).1,
        (false, AAAA.into(), 10)
    );
    // Newer epoch: a new vote.
    assert_eq!(
        vote(&mut core, 11, BBBB, T0 + 50).1,
        (false, BBBB.into(), 11)
    );
    assert_eq!(core.current_epoch(), 11);

    // Unknown master address.
    let out = core.handle(
        Event::IsMasterDownRequest {
            request: 1,
            ip: "10.9.9.9".into(),
            port: 1,
            epoch: 99,
            runid: Some(AAAA.into()),
        },
        T0 + 60,
    );
    assert!(out.contains(&Action::ReplyIsMasterDown {
        request: 1,
        down: false,
        leader: "*".into(),
        leader_epoch: 0
    }));
    assert_eq!(core.current_epoch(), 11);
}

#[test]
fn a_restarted_voter_keeps_its_vote() {
    let mut core = Core::new(config(2), T0).unwrap();
    let (out, _) = vote(&mut core, 5, AAAA, T0);
    let state = out
        .iter()
        .find_map(|a| match a {
            Action::Persist { state } => Some(state.clone()),
            _ => None,
        })
        .unwrap();
    let mut again = Core::restore(config(2), &state, T0 + 1).unwrap();
    assert_eq!(again.current_epoch(), 5);
    assert_eq!(vote(&mut again, 5, BBBB, T0 + 2).1, (false, AAAA.into(), 5));

    let mut wrong = state.clone();
    wrong.myid = BBBB.into();
    assert!(matches!(
        Core::restore(config(2), &wrong, T0),
        Err(ConfigError::MyIdMismatch { .. })
    ));
}

#[test]
fn config_is_validated() {
    let mut c = config(2);
    c.myid = "short".into();
    assert!(matches!(Core::new(c, 0), Err(ConfigError::BadMyId(_))));
    let mut c = config(0);
    c.masters[0].quorum = 0;
    assert!(matches!(Core::new(c, 0), Err(ConfigError::BadQuorum(_))));
    let mut c = config(1);
    c.masters[0].name = "a,b".into();
    assert!(matches!(
        Core::new(c, 0),
        Err(ConfigError::BadMasterName(_))
    ));
}

#[test]
fn tilt_on_clock_jump_answers_down_0_but_still_votes() {
    let mut core = Core::new(config(2), T0).unwrap();
    core.handle(Event::Tick, T0);
    let out = core.handle(Event::Tick, T0 + 2_500);
    assert_eq!(events(&out), ["+tilt"]);
    assert!(core.in_tilt());
    let (_, r) = vote(&mut core, 3, AAAA, T0 + 2_600);
    assert_eq!(r, (false, AAAA.into(), 3));
    // Backwards jump re-triggers and restarts the period.
    let out = core.handle(Event::Tick, T0 + 1_000);
    assert_eq!(events(&out), ["+tilt"]);
    let mut now = T0 + 1_000;
    let mut exited = false;
    while now < T0 + 40_000 {
        now += 100;
        if events(&core.handle(Event::Tick, now)).contains(&"-tilt".to_string()) {
            exited = true;
            break;
        }
    }
    assert!(exited);
    assert_eq!(now, T0 + 1_000 + 30_000);
}

#[test]
fn hellos_discover_peers_raise_epochs_and_switch_master() {
    let mut core = Core::new(config(2), T0).unwrap();
    let first = core.handle(Event::Tick, T0);
    assert!(first.contains(&Action::RouteChanged {
        master: "mymaster".into(),
        addr: addr(27000),
        config_epoch: 0
    }));
    // Our own echo is ignored.
    let own = format!("127.0.0.1,28000,{ME},0,mymaster,127.0.0.1,27000,0");
    assert!(
        core.handle(Event::HelloReceived { payload: own }, T0)
            .is_empty()
    );

    let hello = format!("127.0.0.1,28001,{PEER},3,mymaster,127.0.0.1,27000,0");
    let out = core.handle(Event::HelloReceived { payload: hello }, T0 + 1);
    assert_eq!(events(&out), ["+sentinel", "+new-epoch"]);
    assert!(matches!(out.first(), Some(Action::PublishEvent { .. })));
    assert!(out.iter().any(|a| matches!(a, Action::Persist { .. })));
    assert_eq!(core.current_epoch(), 3);
    assert_eq!(core.master("mymaster").unwrap().peers.len(), 1);

    let newer = format!("127.0.0.1,28001,{PEER},3,mymaster,127.0.0.1,27002,2");
    let out = core.handle(Event::HelloReceived { payload: newer }, T0 + 2);
    assert_eq!(
        events(&out),
        ["+config-update-from", "+switch-master", "+slave"]
    );
    assert!(out.contains(&Action::RouteChanged {
        master: "mymaster".into(),
        addr: addr(27002),
        config_epoch: 2
    }));
    let m = core.master("mymaster").unwrap();
    assert_eq!(m.addr, addr(27002));
    assert_eq!(
        m.replicas,
        vec![addr(27000)],
        "old master kept as a replica"
    );

    // An older config never wins.
    let older = format!("127.0.0.1,28001,{PEER},3,mymaster,127.0.0.1,27000,1");
    core.handle(Event::HelloReceived { payload: older }, T0 + 3);
    assert_eq!(core.master("mymaster").unwrap().addr, addr(27002));

    // Same runid at a new address replaces the entry.
    let moved = format!("127.0.0.9,28001,{PEER},3,mymaster,127.0.0.1,27002,2");
    let out = core.handle(Event::HelloReceived { payload: moved }, T0 + 4);
    assert_eq!(events(&out), ["+sentinel-address-switch"]);
    assert_eq!(
        core.master("mymaster").unwrap().peers,
        vec![(PEER.to_string(), Addr::new("127.0.0.9", 28001))]
    );
}

/// A tiny scripted world answering PING/INFO/SLAVEOF immediately.
struct World {
    up: BTreeMap<u16, bool>,
    /// port -> Some(master port) for replicas, None for masters.
    role: BTreeMap<u16, Option<u16>>,
    priority: BTreeMap<u16, u32>,
    offset: BTreeMap<u16, u64>,
    log: Vec<String>,
    /// Answer the SLAVEOF transaction with its EXEC reply (the shell does).
    reply_slaveof: bool,
    /// When each logged event happened.
    times: Vec<(String, u64)>,
    now: u64,
    /// SLAVEOF NO ONE is received but not carried out (the test does it).
    hold_promotion: bool,
    /// Every INFO asked for: (port, when).
    infos: Vec<(u16, u64)>,
    /// How the master answers FAILOVER TO.
    failover_to: FailoverTo,
    /// Every role-changing command sent, as `<port>: <command>`.
    commands: Vec<String>,
}

/// How a World master answers `FAILOVER TO`.
#[derive(Clone, Debug, PartialEq)]
enum FailoverTo {
    /// Like Redis 6.2+ with a caught-up replica: hands over at once.
    HandsOver,
    /// An error reply (old Redis, renamed command, ...), nothing done.
    Refused(String),
    /// The command vanishes: no reply, nothing done.
    Silent,
}

impl World {
    fn info(&self, port: u16) -> String {
        match self.role.get(&port).copied().flatten() {
            None => {
                let mut s = String::from("role:master\r\n");
                for (p, r) in &self.role {
                    if *r == Some(port) && self.up[p] {
                        s.push_str(&format!("slave0:ip=127.0.0.1,port={p},state=online\r\n"));
                    }
                }
                s
            }
            Some(m) => {
                let link = if self.up[&m] { "up" } else { "down" };
                format!(
                    "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:{m}\r\n\
                     master_link_status:{link}\r\nslave_priority:{}\r\nslave_repl_offset:{}\r\n",
                    self.priority.get(&port).unwrap_or(&100),
                    self.offset.get(&port).unwrap_or(&0)
                )
            }
        }
    }

    /// Run ticks every 100 ms until `until`, answering every action at once.
    fn run(&mut self, core: &mut Core, from: u64, until: u64) {
        self.run_every(core, from, until, 100);
    }

    /// Run ticks every `step` ms until `until`, answering every action at once.
    fn run_every(&mut self, core: &mut Core, from: u64, until: u64, step: u64) {
        let mut now = from;
        while now < until {
            now += step;
            self.feed(core, Event::Tick, now);
        }
    }

    /// Deliver `event` at `now` and answer every resulting action at once;
    /// returns the actions the core produced along the way.
    fn feed(&mut self, core: &mut Core, event: Event, now: u64) -> Vec<Action> {
        self.now = now;
        let mut all = Vec::new();
        let mut queue = vec![event];
        while let Some(ev) = queue.pop() {
            for a in core.handle(ev, now) {
                all.push(a.clone());
                self.answer(a, &mut queue);
            }
        }
        all
    }

    fn answer(&mut self, a: Action, queue: &mut Vec<Event>) {
        let port = |l: &LinkRef| l.addr.port;
        match a {
            Action::Connect { link } if self.up[&port(&link)] => queue.push(Event::LinkUp { link }),
            Action::Connect { link } => queue.push(Event::LinkDown { link }),
            Action::SendPing { link } if self.up[&port(&link)] => queue.push(Event::PingReply {
                link,
                reply: PingReply::Pong,
            }),
            Action::SendInfo { link } if self.up[&port(&link)] => {
                self.infos.push((port(&link), self.now));
                let info = InfoReport::parse(&self.info(port(&link)));
                queue.push(Event::InfoReply { link, info });
            }
            Action::SendSlaveOfNoOne { link } => {
                self.commands
                    .push(format!("{}: SLAVEOF NO ONE", port(&link)));
                if !self.hold_promotion {
                    self.role.insert(port(&link), None);
                }
                if self.reply_slaveof {
                    queue.push(Event::SlaveOfReply { link, ok: true });
                }
            }
            Action::SendReconfigure { link, master } => {
                self.commands
                    .push(format!("{}: SLAVEOF {}", port(&link), master.port));
                self.role.insert(port(&link), Some(master.port));
            }
            Action::SendFailoverTo {
                link,
                target,
                timeout_ms,
            } => {
                let (me, to) = (port(&link), target.port);
                self.commands
                    .push(format!("{me}: FAILOVER TO {to} TIMEOUT {timeout_ms}"));
                match self.failover_to.clone() {
                    FailoverTo::HandsOver => {
                        assert_eq!(self.role[&to], Some(me), "target follows the master");
                        self.role.insert(me, Some(to));
                        self.role.insert(to, None);
                        queue.push(Event::FailoverToReply {
                            link,
                            result: Ok(()),
                        });
                    }
                    FailoverTo::Refused(error) => queue.push(Event::FailoverToReply {
                        link,
                        result: Err(error),
                    }),
                    FailoverTo::Silent => {}
                }
            }
            Action::SendConfigRewrite { link } => {
                self.commands
                    .push(format!("{}: CONFIG REWRITE", port(&link)));
            }
            Action::PublishEvent { name, .. } => {
                self.times.push((name.clone(), self.now));
                self.log.push(name);
            }
            _ => {}
        }
    }
}

fn world() -> World {
    World {
        up: [(27000, true), (27001, true), (27002, true)].into(),
        role: [(27000, None), (27001, Some(27000)), (27002, Some(27000))].into(),
        priority: [(27001, 100), (27002, 50)].into(),
        offset: [(27001, 10), (27002, 10)].into(),
        log: Vec::new(),
        reply_slaveof: false,
        times: Vec::new(),
        now: 0,
        hold_promotion: false,
        infos: Vec::new(),
        failover_to: FailoverTo::HandsOver,
        commands: Vec::new(),
    }
}

#[test]
fn a_successful_slaveof_no_one_is_confirmed_at_once() {
    let delay = |reply_slaveof: bool, promotion_info_period: u64| {
        let mut c = config(1);
        c.timing.promotion_info_period = promotion_info_period;
        let mut core = Core::new(c, T0).unwrap();
        let mut w = World {
            reply_slaveof,
            ..world()
        };
        w.run(&mut core, T0, T0 + 2_000);
        w.up.insert(27000, false);
        w.run(&mut core, T0 + 2_000, T0 + 12_000);
        let sent = logged_at(&w, "+failover-state-wait-promotion").expect("promotion started");
        let confirmed = logged_at(&w, "+promoted-slave").expect("promotion confirmed");
        confirmed - sent
    };
    // With Sentinel's 1 s poll, and without the EXEC reply, the promotion
    // waits for the next INFO poll; with it, an INFO is sent at once and
    // the promotion is confirmed in the same step.
    assert!(delay(false, 1_000) > 0);
    assert_eq!(delay(true, 1_000), 0);
    // The fast poll of the replica being promoted sends INFO in the tick
    // that sent SLAVEOF NO ONE (on the same link, so it is answered after
    // the transaction): confirmed at once either way.
    assert_eq!(delay(false, 15), 0);
    assert_eq!(delay(true, 15), 0);
}

/// The ports of the links a batch of actions sends INFO on, in order.
fn info_ports(actions: &[Action]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendInfo { link } => Some(link.addr.port),
            _ => None,
        })
        .collect()
}

#[test]
fn a_recheck_sends_info_to_the_master_and_every_replica_at_most_every_100ms() {
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    let recheck = || Event::Recheck {
        master: "mymaster".into(),
    };
    let now = T0 + 2_050;
    // Between INFO periods a tick asks nobody.
    assert_eq!(
        info_ports(&core.handle(Event::Tick, now)),
        Vec::<u16>::new()
    );
    let out = core.handle(recheck(), now);
    assert_eq!(info_ports(&out), [27000, 27001, 27002]);
    // A flood of sessions asking: one round of INFO per 100 ms.
    for dt in [0, 1, 50, 99] {
        let out = core.handle(recheck(), now + dt);
        assert_eq!(info_ports(&out), Vec::<u16>::new(), "{dt} ms later");
    }
    // The INFO just sent counts as in flight: the tick does not repeat it.
    assert_eq!(
        info_ports(&core.handle(Event::Tick, now + 60)),
        Vec::<u16>::new()
    );
    assert_eq!(
        info_ports(&core.handle(recheck(), now + 100)),
        [27000, 27001, 27002]
    );
    // Unknown service: nothing.
    let out = core.handle(
        Event::Recheck {
            master: "nope".into(),
        },
        now + 500,
    );
    assert!(out.is_empty(), "{out:?}");
    // A replica whose link is down is not asked.
    w.up.insert(27001, false);
    core.handle(
        Event::LinkDown {
            link: LinkRef {
                master: "mymaster".into(),
                kind: InstanceKind::Replica,
                addr: addr(27001),
            },
        },
        now + 600,
    );
    assert_eq!(
        info_ports(&core.handle(recheck(), now + 700)),
        [27000, 27002]
    );
}

#[test]
fn a_recheck_shows_a_role_change_at_once_instead_of_at_the_next_info_period() {
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    // Someone else (another voter's FAILOVER TO) swapped master and replica.
    w.role.insert(27002, None);
    w.role.insert(27000, Some(27002));
    w.role.insert(27001, Some(27002));
    w.log.clear();
    w.run(&mut core, T0 + 2_000, T0 + 3_000);
    assert_eq!(
        w.log,
        Vec::<String>::new(),
        "the periodic INFO is 10 s away"
    );
    let out = w.feed(
        &mut core,
        Event::Recheck {
            master: "mymaster".into(),
        },
        T0 + 3_000,
    );
    let mut changes: Vec<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::PublishEvent { name, text } if name.ends_with("role-change") => {
                Some(format!("{name} {text}"))
            }
            _ => None,
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            "-role-change master mymaster 127.0.0.1 27000 new reported role is slave",
            "-role-change slave 127.0.0.1:27002 127.0.0.1 27002 @ mymaster 127.0.0.1 27000 \
             new reported role is master",
        ]
    );
}

/// When `name` was first logged.
fn logged_at(w: &World, name: &str) -> Option<u64> {
    w.times.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
}

#[test]
fn the_replica_being_promoted_is_polled_every_20ms_and_the_promotion_seen_within_one_poll() {
    let mut core = Core::new(config(1), T0).unwrap();
    let mut w = World {
        hold_promotion: true,
        ..world()
    };
    w.run(&mut core, T0, T0 + 2_000);
    w.up.insert(27000, false);
    // The shell's 10 ms timer.
    let mut now = T0 + 2_000;
    while logged_at(&w, "+failover-state-wait-promotion").is_none() {
        assert!(now < T0 + 12_000, "no promotion attempt: {:?}", w.log);
        w.run_every(&mut core, now, now + 10, 10);
        now += 10;
    }
    // The replica got SLAVEOF NO ONE but takes its time: INFO every 20 ms.
    w.infos.clear();
    w.run_every(&mut core, now, now + 200, 10);
    let polls: Vec<u64> = w
        .infos
        .iter()
        .filter(|(p, _)| *p == 27002)
        .map(|(_, t)| *t - now)
        .collect();
    assert_eq!(polls, [20, 40, 60, 80, 100, 120, 140, 160, 180, 200]);
    assert!(logged_at(&w, "+promoted-slave").is_none());
    // It is master now: seen at the next poll, and our route moves.
    now += 200;
    w.role.insert(27002, None);
    let promoted_at = now;
    w.run_every(&mut core, now, now + 100, 10);
    let seen = logged_at(&w, "+promoted-slave").expect("promotion seen");
    assert!(
        seen - promoted_at <= 20,
        "seen {} ms after",
        seen - promoted_at
    );
    assert_eq!(core.master("mymaster").unwrap().addr, addr(27002));
    // Only the replica being promoted is polled that fast.
    let others = w
        .infos
        .iter()
        .filter(|(p, t)| *p != 27002 && *t > promoted_at - 200 && *t <= promoted_at)
        .count();
    assert!(others <= 2, "{:?}", w.infos);
}

#[test]
fn single_voter_failover_matches_the_lab_sequence() {
    let mut core = Core::new(config(1), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    assert_eq!(core.master("mymaster").unwrap().replicas.len(), 2);
    assert_eq!(w.log, ["+slave", "+slave"]);
    w.log.clear();

    w.up.insert(27000, false);
    w.run(&mut core, T0 + 2_000, T0 + 12_000);
    let m = core.master("mymaster").unwrap();
    assert_eq!(m.addr, addr(27002), "priority 50 wins: {:?}", w.log);
    assert_eq!(m.config_epoch, 1);
    assert_eq!(m.failover_state, FailoverState::None);
    let expected = [
        "+sdown",
        "+odown",
        "+new-epoch",
        "+try-failover",
        "+vote-for-leader",
        "+elected-leader",
        "+failover-state-select-slave",
        "+selected-slave",
        "+failover-state-send-slaveof-noone",
        "+failover-state-wait-promotion",
        "-role-change",
        "+promoted-slave",
        "+failover-state-reconf-slaves",
        "+slave-reconf-sent",
        "+slave-reconf-inprog",
        "+slave-reconf-done",
        "+failover-end",
        "+switch-master",
        "+slave",
        "+slave",
        "+sdown",
    ];
    assert_in_order(&w.log, &expected);
    assert_eq!(w.role[&27001], Some(27002));
    // The master is down: Sentinel's way, never FAILOVER TO.
    assert!(!w.log.iter().any(|e| e.contains("failover-to")));

    // The old master returns as a master and is demoted after the 8 s grace.
    w.up.insert(27000, true);
    w.log.clear();
    w.run(&mut core, T0 + 12_000, T0 + 40_000);
    assert!(
        w.log.contains(&"+convert-to-slave".to_string()),
        "{:?}",
        w.log
    );
    assert_eq!(w.role[&27000], Some(27002));
}

/// The replica promoted when the master of `w` dies (quorum 1).
fn promoted_after_master_death(mut w: World) -> Addr {
    let mut core = Core::new(config(1), T0).unwrap();
    w.run(&mut core, T0, T0 + 2_000);
    w.up.insert(27000, false);
    w.run(&mut core, T0 + 2_000, T0 + 12_000);
    core.master("mymaster").unwrap().addr
}

#[test]
fn replica_selection_prefers_priority_then_offset_then_runid_and_skips_priority_0() {
    let mut w = world();
    w.priority.insert(27002, 100);
    w.offset.insert(27001, 5);
    w.offset.insert(27002, 9);
    assert_eq!(promoted_after_master_death(w), addr(27002), "higher offset");

    let mut w = world();
    w.priority.insert(27002, 0);
    w.priority.insert(27001, 100);
    assert_eq!(
        promoted_after_master_death(w),
        addr(27001),
        "priority 0 never"
    );
}

#[test]
fn manual_failover_replies() {
    let mut core = Core::new(config(2), T0).unwrap();
    let ask = |core: &mut Core, name: &str, now| {
        core.handle(
            Event::ManualFailover {
                request: 4,
                master: name.into(),
            },
            now,
        )
        .into_iter()
        .find_map(|a| match a {
            Action::ManualFailoverReply { result, .. } => Some(result),
            _ => None,
        })
        .unwrap()
    };
    assert_eq!(
        ask(&mut core, "nope", T0),
        Err(FailoverRefused::NoSuchMaster)
    );
    assert_eq!(
        ask(&mut core, "mymaster", T0),
        Err(FailoverRefused::NoGoodSlave)
    );
    assert_eq!(
        FailoverRefused::NoGoodSlave.to_string(),
        "NOGOODSLAVE No suitable replica to promote"
    );

    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    assert_eq!(ask(&mut core, "mymaster", T0 + 2_000), Ok(()));
    assert_eq!(
        ask(&mut core, "mymaster", T0 + 2_001),
        Err(FailoverRefused::InProgress)
    );
    // Forced: no majority needed (quorum 2, no peers), the master is healthy.
    w.run(&mut core, T0 + 2_001, T0 + 20_000);
    let m = core.master("mymaster").unwrap();
    assert_eq!(m.addr, addr(27002));
    assert_eq!(m.config_epoch, 1);
    assert_eq!(w.role[&27000], Some(27002), "old master reconfigured");
}

#[test]
fn persisted_state_round_trips() {
    let mut core = Core::new(config(1), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    let s: PersistedState = core.persisted_state();
    assert_eq!(s.masters[0].known_replicas, vec![addr(27001), addr(27002)]);
    let back = Core::restore(config(1), &s, T0).unwrap();
    assert_eq!(back.persisted_state(), s);
    let _ = InstanceKind::Master;
}

#[test]
fn instance_maps_follow_sentinels_field_order() {
    let mut core = Core::new(config(1), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    let fields = core.master_fields("mymaster", T0 + 2_000).unwrap();
    let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "name",
            "ip",
            "port",
            "runid",
            "flags",
            "link-pending-commands",
            "link-refcount",
            "last-ping-sent",
            "last-ok-ping-reply",
            "last-ping-reply",
            "down-after-milliseconds",
            "info-refresh",
            "role-reported",
            "role-reported-time",
            "config-epoch",
            "num-slaves",
            "num-other-sentinels",
            "quorum",
            "failover-timeout",
            "parallel-syncs",
        ]
    );
    // Tools read the flat array by position: index 33 is num-other-sentinels' value.
    let flat: Vec<&str> = fields.iter().flat_map(|(k, v)| [*k, v.as_str()]).collect();
    assert_eq!((flat[32], flat[33]), ("num-other-sentinels", "0"));
    assert_eq!((flat[30], flat[31]), ("num-slaves", "2"));
    assert_eq!(flat[9], "master");

    let replicas = core.replica_fields("mymaster", T0 + 2_000).unwrap();
    assert_eq!(replicas.len(), 2);
    let r = &replicas[0];
    assert_eq!(r[0], ("name", "127.0.0.1:27001".to_string()));
    assert!(
        r.contains(&("master-link-status", "ok".to_string())),
        "{r:?}"
    );
    assert!(r.contains(&("master-port", "27000".to_string())), "{r:?}");
    assert_eq!(core.sentinel_fields("mymaster", T0).unwrap().len(), 0);
    assert_eq!(core.master_fields("nope", T0), None);

    // Down, then: s_down/o_down flags and their times appear.
    w.up.insert(27000, false);
    let mut now = T0 + 2_000;
    let flags = loop {
        w.run(&mut core, now, now + 100);
        now += 100;
        let f = core.master_fields("mymaster", now).unwrap();
        let flags = f.iter().find(|(k, _)| *k == "flags").unwrap().1.clone();
        if flags.contains("o_down") {
            assert!(f.iter().any(|(k, _)| *k == "s-down-time"), "{f:?}");
            assert!(f.iter().any(|(k, _)| *k == "o-down-time"), "{f:?}");
            break flags;
        }
        assert!(now < T0 + 20_000, "never went down: {flags}");
    };
    assert!(flags.starts_with("s_down,o_down,master"), "{flags}");

    let check = core.quorum_check("mymaster").unwrap();
    assert_eq!((check.usable, check.voters, check.quorum), (1, 1, 1));
}

#[test]
fn forged_hellos_are_dropped() {
    let good = format!(
        "127.0.0.1,26380,{},3,mymaster,127.0.0.1,6379,2",
        "b".repeat(40)
    );
    assert!(Hello::parse(&good).is_some());
    let forged = [
        // A runid that is not 40 hex characters (it would be written to the state file).
        "127.0.0.1,26380,abc,3,mymaster,127.0.0.1,6379,2".to_string(),
        format!(
            "127.0.0.1,26380,{}x,3,mymaster,127.0.0.1,6379,2",
            "b".repeat(39)
        ),
        // Whitespace or a newline would inject a line into the state file.
        format!(
            "127.0.0.1,26380,{},3,my master,127.0.0.1,6379,2",
            "b".repeat(40)
        ),
        format!(
            "127.0.0.1\nsentinel myid x,26380,{},3,mymaster,127.0.0.1,6379,2",
            "b".repeat(40)
        ),
        format!("127.0.0.1,26380,{},3,mymaster,,6379,2", "b".repeat(40)),
    ];
    let mut core = Core::new(config(1), T0).unwrap();
    for payload in forged {
        assert_eq!(Hello::parse(&payload), None, "{payload:?}");
        let out = core.handle(Event::HelloReceived { payload }, T0);
        assert!(
            out.iter().all(|a| !matches!(a, Action::Persist { .. })),
            "{out:?}"
        );
    }
    assert!(core.master("mymaster").unwrap().peers.is_empty());
}

/// Asks for `SENTINEL FAILOVER mymaster` at `now`; the reply must be OK.
fn sentinel_failover(w: &mut World, core: &mut Core, now: u64) {
    let out = w.feed(
        core,
        Event::ManualFailover {
            request: 1,
            master: "mymaster".into(),
        },
        now,
    );
    assert!(
        out.contains(&Action::ManualFailoverReply {
            request: 1,
            result: Ok(())
        }),
        "{out:?}"
    );
}

/// `expected` appear in `log` in this order (others may interleave).
fn assert_in_order(log: &[String], expected: &[&str]) {
    let mut it = log.iter();
    for e in expected {
        assert!(it.any(|s| s == e), "missing {e} in order; got {log:?}");
    }
}

#[test]
fn sentinel_failover_with_the_master_up_hands_over_with_failover_to() {
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    w.log.clear();
    sentinel_failover(&mut w, &mut core, T0 + 2_000);
    w.run_every(&mut core, T0 + 2_000, T0 + 60_000, 10);
    assert_in_order(
        &w.log,
        &[
            "+try-failover",
            "+elected-leader",
            "+failover-state-select-slave",
            "+selected-slave",
            "+failover-state-send-slaveof-noone",
            "+failover-to",
            "+failover-state-wait-promotion",
            "+promoted-slave",
            "+failover-state-reconf-slaves",
            "+slave-reconf-sent",
            "+slave-reconf-inprog",
            "+slave-reconf-done",
            "+failover-end",
            "+switch-master",
        ],
    );
    // FAILOVER TO replaces SLAVEOF NO ONE; the pause is capped at 5 s
    // (failover_timeout is 20 s). The old master already follows the new
    // one: nobody re-points it, neither the failover nor the checks after
    // the switch (convert-to-slave, fix-slave-config), over 58 s.
    assert_eq!(
        w.commands,
        [
            "27000: FAILOVER TO 27002 TIMEOUT 5000",
            "27002: CONFIG REWRITE",
            "27000: CONFIG REWRITE",
            "27001: SLAVEOF 27002",
        ]
    );
    for quiet in [
        "-failover-to-fallback",
        "+convert-to-slave",
        "+fix-slave-config",
        "+sdown",
        "-failover-abort-slave-timeout",
    ] {
        assert!(!w.log.iter().any(|e| e == quiet), "{quiet}: {:?}", w.log);
    }
    let m = core.master("mymaster").unwrap();
    assert_eq!((m.addr.clone(), m.config_epoch), (addr(27002), 1));
    assert_eq!(m.failover_state, FailoverState::None);
    assert_eq!(m.replicas, [addr(27001), addr(27000)]);
    assert_eq!(w.role[&27000], Some(27002));
    assert_eq!(w.role[&27001], Some(27002));
    // The promotion is seen by the 20 ms poll, at most two ticks later.
    let sent = logged_at(&w, "+failover-to").unwrap();
    let seen = logged_at(&w, "+promoted-slave").unwrap();
    assert!(seen - sent <= 20, "{} ms", seen - sent);
}

#[test]
fn a_refused_failover_to_falls_back_to_slaveof_no_one_at_once() {
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = World {
        failover_to: FailoverTo::Refused(
            "ERR unknown command 'FAILOVER', with args beginning with: 'TO' ".into(),
        ),
        ..world()
    };
    w.run(&mut core, T0, T0 + 2_000);
    w.log.clear();
    let mut texts = Vec::new();
    let out = w.feed(
        &mut core,
        Event::ManualFailover {
            request: 1,
            master: "mymaster".into(),
        },
        T0 + 2_000,
    );
    texts.extend(out);
    // A tick sends FAILOVER TO, gets the error and falls back, all in the
    // same step.
    let mut now = T0 + 2_000;
    while w.commands.is_empty() {
        now += 10;
        assert!(now < T0 + 3_000, "no FAILOVER TO: {:?}", w.log);
        texts.extend(w.feed(&mut core, Event::Tick, now));
    }
    assert_eq!(
        w.commands[..2],
        [
            "27000: FAILOVER TO 27002 TIMEOUT 5000",
            "27002: SLAVEOF NO ONE"
        ]
    );
    let fallback = texts
        .iter()
        .find_map(|a| match a {
            Action::PublishEvent { name, text } if name == "-failover-to-fallback" => {
                Some(text.clone())
            }
            _ => None,
        })
        .expect("fallback event");
    assert_eq!(
        fallback,
        "slave 127.0.0.1:27002 127.0.0.1 27002 @ mymaster 127.0.0.1 27000 FAILOVER TO refused: \
         ERR unknown command 'FAILOVER', with args beginning with: 'TO'; falling back to SLAVEOF NO ONE"
    );
    w.run_every(&mut core, now, T0 + 60_000, 10);
    assert_in_order(
        &w.log,
        &[
            "+failover-to",
            "-failover-to-fallback",
            "+failover-state-wait-promotion",
            "+promoted-slave",
            "+failover-end",
            "+switch-master",
            // Sentinel's way: the old master stays a master until converted.
            "+convert-to-slave",
        ],
    );
    assert_eq!(
        w.log.iter().filter(|e| *e == "+failover-to").count(),
        1,
        "one FAILOVER TO per attempt"
    );
    assert_eq!(core.master("mymaster").unwrap().addr, addr(27002));
    assert_eq!(w.role[&27000], Some(27002));
    assert_eq!(w.role[&27001], Some(27002));
    assert!(!w.commands.iter().any(|c| c.contains("CONFIG REWRITE")));
}

/// `SENTINEL FAILOVER` at 2 s, to a master that will never answer FAILOVER TO.
fn failover_to_sent_to_a_silent_master() -> (Core, World) {
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = World {
        failover_to: FailoverTo::Silent,
        ..world()
    };
    w.run(&mut core, T0, T0 + 2_000);
    sentinel_failover(&mut w, &mut core, T0 + 2_000);
    (core, w)
}

#[test]
fn failover_to_without_a_promotion_falls_back_after_its_timeout() {
    let (mut core, mut w) = failover_to_sent_to_a_silent_master();
    w.run_every(&mut core, T0 + 2_000, T0 + 30_000, 10);
    let sent = logged_at(&w, "+failover-to").expect("FAILOVER TO sent");
    let fell_back = logged_at(&w, "-failover-to-fallback").expect("fell back");
    // Redis gives up at its 5 s TIMEOUT and resumes writes; we wait 1 s more.
    assert!(
        (6_000..=6_020).contains(&(fell_back - sent)),
        "{} ms",
        fell_back - sent
    );
    assert_eq!(
        w.commands[..2],
        [
            "27000: FAILOVER TO 27002 TIMEOUT 5000",
            "27002: SLAVEOF NO ONE"
        ]
    );
    let m = core.master("mymaster").unwrap();
    assert_eq!((m.addr.clone(), m.config_epoch), (addr(27002), 1));
}

#[test]
fn failover_to_falls_back_when_the_master_link_drops_and_is_skipped_for_a_down_master() {
    let master_link = LinkRef {
        master: "mymaster".into(),
        kind: InstanceKind::Master,
        addr: addr(27000),
    };
    // The link drops while FAILOVER TO is in flight: no reply will come.
    let (mut core, mut w) = failover_to_sent_to_a_silent_master();
    w.run_every(&mut core, T0 + 2_000, T0 + 2_050, 10);
    assert_eq!(w.commands, ["27000: FAILOVER TO 27002 TIMEOUT 5000"]);
    w.up.insert(27000, false);
    let out = w.feed(
        &mut core,
        Event::LinkDown {
            link: master_link.clone(),
        },
        T0 + 2_060,
    );
    assert!(
        out.contains(&Action::SendSlaveOfNoOne {
            link: LinkRef {
                master: "mymaster".into(),
                kind: InstanceKind::Replica,
                addr: addr(27002),
            }
        }),
        "{out:?}"
    );
    assert!(w.log.contains(&"-failover-to-fallback".to_string()));

    // A master that does not answer us is not asked to hand over.
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    w.up.insert(27000, false);
    w.feed(&mut core, Event::LinkDown { link: master_link }, T0 + 2_000);
    sentinel_failover(&mut w, &mut core, T0 + 2_010);
    w.run_every(&mut core, T0 + 2_010, T0 + 20_000, 10);
    assert_eq!(w.commands[0], "27002: SLAVEOF NO ONE");
    assert!(
        !w.log.iter().any(|e| e.contains("failover-to")),
        "{:?}",
        w.log
    );
    assert_eq!(core.master("mymaster").unwrap().addr, addr(27002));
}

#[test]
fn a_newer_config_supersedes_our_failover_even_when_it_names_our_old_master() {
    let mut core = Core::new(config(2), T0).unwrap();
    let mut w = world();
    w.run(&mut core, T0, T0 + 2_000);
    sentinel_failover(&mut w, &mut core, T0 + 2_000);
    let mut now = T0 + 2_000;
    while logged_at(&w, "+failover-state-reconf-slaves").is_none() {
        assert!(now < T0 + 5_000, "no promotion: {:?}", w.log);
        w.run_every(&mut core, now, now + 10, 10);
        now += 10;
    }
    let m = core.master("mymaster").unwrap();
    assert_eq!(
        (m.addr, m.config_epoch, m.failover_state),
        (addr(27002), 1, FailoverState::ReconfSlaves)
    );
    // Before we finish, the new master dies and a peer fails over, in
    // epoch 2, to our old master: a healthy replica since FAILOVER TO.
    w.up.insert(27002, false);
    w.role.insert(27000, None);
    w.role.insert(27001, Some(27000));
    // The peer's Sentinel port (we only need its hello).
    w.up.insert(28001, false);
    let hello = format!("127.0.0.1,28001,{PEER},2,mymaster,127.0.0.1,27000,2");
    let out = core.handle(Event::HelloReceived { payload: hello }, now + 1);
    let texts: Vec<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::PublishEvent { name, text } => Some(format!("{name} {text}")),
            _ => None,
        })
        .collect();
    for e in [
        "-failover-abort-superseded master mymaster 127.0.0.1 27000",
        "+switch-master mymaster 127.0.0.1 27002 127.0.0.1 27000",
    ] {
        assert!(texts.iter().any(|t| t == e), "{e} not in {texts:?}");
    }
    assert!(out.contains(&Action::RouteChanged {
        master: "mymaster".into(),
        addr: addr(27000),
        config_epoch: 2
    }));
    let m = core.master("mymaster").unwrap();
    assert_eq!(
        (m.addr, m.config_epoch, m.failover_state),
        (addr(27000), 2, FailoverState::None)
    );
    // And it stays there: our failover never comes back to epoch 1's master.
    w.run(&mut core, now + 1, now + 40_000);
    let m = core.master("mymaster").unwrap();
    assert_eq!((m.addr, m.config_epoch), (addr(27000), 2));
}
