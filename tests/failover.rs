//! Failover end to end: real redis-server masters and replicas, voter
//! sentinel-proxy processes and real Sentinels (`redis-server --sentinel`),
//! all on loopback. Every wait is a poll with a deadline; every process is
//! killed by pid when its handle drops.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame as Frame;

use support::cluster::{
    self, FAILOVER_PATIENCE, RealSentinel, TempDir, Trio, VoterProxy, VoterSpec, config_epoch,
    current_epoch_in, logged_event, master_addr_by_name, masters_among, poll, replica_of, role,
    sentinel_addrs, sentinel_master, sentinel_myid, wait_discovered, wait_follows, wait_new_master,
    wait_same_epoch,
};
use support::{PATIENCE, free_port, proxy_binary, strings, text};

/// Three voters (quorum 2, down_after 1s) watching a fresh master and two
/// replicas, with everyone discovered.
fn three_voters() -> (Trio, Vec<VoterProxy>) {
    let trio = Trio::start();
    let spec = VoterSpec::new(trio.master.addr(), 2, "1s", "20s");
    let voters = cluster::start_voters(&spec, 3, 2);
    (trio, voters)
}

/// The replica that is not `promoted` follows it (its INFO says so).
fn wait_repointed(trio: &Trio, promoted: SocketAddr) {
    let other = trio
        .replica_addrs()
        .into_iter()
        .find(|&a| a != promoted)
        .expect("another replica");
    wait_follows(
        "the other replica to follow the new master",
        other,
        promoted,
    );
}

/// A new session through each voter's data port writes to `promoted`.
fn writes_reach(voters: &[VoterProxy], promoted: SocketAddr, tag: &str) {
    let mut direct = support::Client::connect(promoted);
    for (i, v) in voters.iter().enumerate() {
        let key = format!("failover:{tag}:{i}");
        let mut session = v.client();
        assert_eq!(
            text(&session.cmd(&["SET", &key, "written-through-proxy"])),
            "OK",
            "SET through voter {i}"
        );
        assert_eq!(
            text(&direct.cmd(&["GET", &key])),
            "written-through-proxy",
            "key {key} on the new master {promoted}"
        );
    }
}

#[test]
fn kill_9_of_the_master_promotes_a_replica_and_moves_every_voter() {
    let (mut trio, voters) = three_voters();
    let members = sentinel_addrs(&voters);
    let old = trio.master.addr();
    trio.master.kill();

    let promoted = wait_new_master(&members, &trio.replica_addrs());
    assert_ne!(promoted, old);
    wait_repointed(&trio, promoted);
    let epoch = wait_same_epoch(&members);
    assert!(epoch >= 1, "config epoch {epoch}");
    writes_reach(&voters, promoted, "kill9");
}

#[test]
fn sessions_on_the_old_master_move_when_the_route_moves() {
    let (trio, voters) = three_voters();
    let members = sentinel_addrs(&voters);
    let old = trio.master.addr();
    let mut idle = voters[0].client();
    assert_eq!(text(&idle.cmd(&["SELECT", "3"])), "OK");
    assert_eq!(text(&idle.cmd(&["SET", "route:before", "v"])), "OK");
    let mut subscriber = voters[1].client();
    subscriber.cmd(&["SUBSCRIBE", "news"]);

    // A planned failover: FAILOVER TO demotes the old master in the same
    // step, and does not disconnect its clients; only the route tells the
    // sessions.
    let reply = cluster::ask(members[0], &["SENTINEL", "FAILOVER", cluster::MASTER_NAME]);
    assert!(
        matches!(&reply, Ok(Frame::SimpleString(s)) if s == b"OK"),
        "{reply:?}"
    );
    let promoted = wait_new_master(&members, &trio.replica_addrs());
    // The same connections now reach the new master, state included.
    cluster::poll("the idle session to reach the new master", PATIENCE, || {
        let port = strings(&idle.cmd(&["CONFIG", "GET", "port"]));
        (port.get(1) == Some(&promoted.port().to_string()))
            .then_some(())
            .ok_or(format!("CONFIG GET port: {port:?}"))
    });
    assert_eq!(text(&idle.cmd(&["GET", "route:before"])), "v", "db 3 kept");
    let mut direct = support::Client::connect(promoted);
    cluster::poll("a message published on the new master", PATIENCE, || {
        let receivers = direct.cmd(&["PUBLISH", "news", "after"]);
        (text(&receivers) == "1")
            .then_some(())
            .ok_or(format!("PUBLISH: {receivers:?}"))
    });
    assert_eq!(
        strings(&subscriber.read_frame()),
        ["message", "news", "after"]
    );
    assert_eq!(
        replica_of(old),
        Some(promoted),
        "the old master was demoted by FAILOVER TO"
    );
    writes_reach(&voters, promoted, "route-moved");
}

/// What a writer that SETs distinct keys straight to one Redis saw.
struct Writes {
    /// The `n` of every `SET switchover:<n>` answered `+OK`.
    acked: Vec<u64>,
    /// The reply (or failure) that stopped it.
    ended: String,
    ended_at: Instant,
}

/// SETs `switchover:0`, `switchover:1`, ... on one connection to `redis`
/// until a reply is not `+OK` (a demoted master says `-READONLY`); tells
/// `warm` once it has written a few hundred.
fn write_until_refused(redis: SocketAddr, warm: mpsc::Sender<()>) -> Writes {
    let stop = |acked, ended: String| Writes {
        acked,
        ended,
        ended_at: Instant::now(),
    };
    let mut stream = match cluster::connect(redis) {
        Ok(stream) => stream,
        Err(e) => return stop(Vec::new(), e),
    };
    // A write paused by FAILOVER waits up to its TIMEOUT (5 s) for a reply.
    if let Err(e) = stream.set_read_timeout(Some(Duration::from_secs(15))) {
        return stop(Vec::new(), e.to_string());
    }
    let deadline = Instant::now() + FAILOVER_PATIENCE;
    let mut acked = Vec::new();
    for n in 0u64.. {
        if Instant::now() > deadline {
            return stop(acked, "still a master at the deadline".into());
        }
        let key = format!("switchover:{n}");
        match cluster::ask_on(&mut stream, &["SET", &key, &n.to_string()]) {
            Ok(Frame::SimpleString(s)) if s == b"OK" => acked.push(n),
            Ok(Frame::Error(e)) => return stop(acked, e.to_string()),
            other => return stop(acked, format!("{other:?}")),
        }
        if acked.len() == 300 {
            let _ = warm.send(());
        }
    }
    stop(acked, "ran out of numbers".into())
}

/// How many of `keys` exist on `redis` (EXISTS, in batches).
fn count_existing(redis: SocketAddr, keys: &[u64]) -> u64 {
    let mut stream = cluster::connect(redis).expect("connect to the new master");
    let mut found = 0;
    for batch in keys.chunks(500) {
        let names: Vec<String> = batch.iter().map(|n| format!("switchover:{n}")).collect();
        let mut args = vec!["EXISTS"];
        args.extend(names.iter().map(String::as_str));
        match cluster::ask_on(&mut stream, &args) {
            Ok(Frame::Integer(n)) => found += u64::try_from(n).expect("a count"),
            other => panic!("EXISTS on {redis}: {other:?}"),
        }
    }
    found
}

/// When, after `t0`, the old master first said it is a replica, and each
/// member first reported a master other than `old` (and which).
struct Moves {
    demoted: Duration,
    routes: Vec<(Duration, SocketAddr)>,
}

/// Polls as fast as it can (a few ms per round) until the old master says
/// "slave" and every member reports another master.
fn watch_switchover(old: SocketAddr, members: &[SocketAddr], t0: Instant) -> Moves {
    let mut demoted = None;
    let mut routes: Vec<Option<(Duration, SocketAddr)>> = vec![None; members.len()];
    let deadline = t0 + FAILOVER_PATIENCE;
    loop {
        if demoted.is_none() && role(old).as_deref() == Some("slave") {
            demoted = Some(t0.elapsed());
        }
        for (route, &m) in routes.iter_mut().zip(members) {
            if route.is_none()
                && let Ok(addr) = master_addr_by_name(m)
                && addr != old
            {
                *route = Some((t0.elapsed(), addr));
            }
        }
        if let (Some(demoted), Some(routes)) = (demoted, routes.iter().copied().collect()) {
            return Moves { demoted, routes };
        }
        assert!(
            Instant::now() < deadline,
            "switchover not seen: old master demoted {demoted:?}, routes {routes:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `SENTINEL FAILOVER` with the master up: FAILOVER TO demotes it in the
/// step that promotes the replica, so a writer on the old master gets
/// `-READONLY` instead of acknowledgements that a later demotion throws
/// away. Every acknowledged write is on the new master.
#[test]
fn planned_switchover_demotes_the_old_master_at_once_and_loses_no_acknowledged_write() {
    let (trio, voters) = three_voters();
    let members = sentinel_addrs(&voters);
    let old = trio.master.addr();
    let (warm_tx, warm) = mpsc::channel();
    let writer = std::thread::spawn(move || write_until_refused(old, warm_tx));
    warm.recv_timeout(PATIENCE)
        .expect("the writer to be writing to the master");

    let t0 = Instant::now();
    let reply = cluster::ask(members[0], &["SENTINEL", "FAILOVER", cluster::MASTER_NAME]);
    assert!(
        matches!(&reply, Ok(Frame::SimpleString(s)) if s == b"OK"),
        "{reply:?}"
    );
    let moves = watch_switchover(old, &members, t0);
    let promoted = moves.routes[0].1;
    for (i, (_, addr)) in moves.routes.iter().enumerate() {
        assert_eq!(*addr, promoted, "voter {i} moved to another master");
    }
    assert!(trio.replica_addrs().contains(&promoted), "{promoted}");

    let writes = writer.join().expect("writer thread");
    assert!(
        writes.ended.starts_with("READONLY"),
        "the writer stopped on {:?}, not -READONLY",
        writes.ended
    );
    assert!(!writes.acked.is_empty());
    let on_new_master = count_existing(promoted, &writes.acked);
    assert_eq!(
        on_new_master,
        writes.acked.len() as u64,
        "acknowledged writes missing on the new master {promoted}"
    );

    assert_eq!(
        replica_of(old),
        Some(promoted),
        "the old master follows the new one"
    );
    wait_repointed(&trio, promoted);
    wait_same_epoch(&members);
    let leader_log = voters[0].stderr();
    assert!(logged_event(&leader_log, "+failover-to"), "{leader_log}");
    assert!(
        !logged_event(&leader_log, "-failover-to-fallback"),
        "{leader_log}"
    );
    for v in &voters {
        let log = v.stderr();
        assert!(!logged_event(&log, "+convert-to-slave"), "{log}");
    }
    writes_reach(&voters, promoted, "switchover");

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let peers: Vec<String> = moves.routes[1..]
        .iter()
        .map(|(d, _)| format!("{:.0} ms", ms(*d)))
        .collect();
    eprintln!(
        "planned switchover, from SENTINEL FAILOVER: old master role:slave after {:.0} ms, \
         writer got -READONLY after {:.0} ms, routes moved on the leader after {:.0} ms and on \
         the peers after {}; {} acknowledged writes, all on the new master",
        ms(moves.demoted),
        ms(writes.ended_at.saturating_duration_since(t0)),
        ms(moves.routes[0].0),
        peers.join(", "),
        writes.acked.len(),
    );
}

/// The master cannot do FAILOVER (renamed away, as on Redis before 6.2):
/// `SENTINEL FAILOVER` still completes, through SLAVEOF NO ONE, and the
/// leader logs a warning that it fell back.
#[test]
fn planned_switchover_falls_back_to_slaveof_no_one_without_the_failover_command() {
    let trio = Trio::start_with_master(&["--rename-command", "FAILOVER", ""]);
    let spec = VoterSpec::new(trio.master.addr(), 2, "1s", "20s");
    let voters: Vec<VoterProxy> = (0..3).map(|_| VoterProxy::start(&spec)).collect();
    let members = sentinel_addrs(&voters);
    wait_discovered(&members, 2);
    let old = trio.master.addr();

    let reply = cluster::ask(members[0], &["SENTINEL", "FAILOVER", cluster::MASTER_NAME]);
    assert!(
        matches!(&reply, Ok(Frame::SimpleString(s)) if s == b"OK"),
        "{reply:?}"
    );
    let promoted = wait_new_master(&members, &trio.replica_addrs());
    wait_repointed(&trio, promoted);
    wait_same_epoch(&members);
    let log = voters[0].stderr();
    let fallback = log
        .lines()
        .find(|l| l.contains("-failover-to-fallback"))
        .unwrap_or_else(|| panic!("no fallback logged:\n{log}"));
    assert!(fallback.contains("WARN"), "{fallback}");
    assert!(fallback.contains("unknown command"), "{fallback}");
    assert!(
        fallback.contains("falling back to SLAVEOF NO ONE"),
        "{fallback}"
    );
    // Sentinel's way from there: the old master is converted later.
    wait_follows(
        "the old master to be converted to a replica of the new one",
        old,
        promoted,
    );
    writes_reach(&voters, promoted, "fallback");
}

#[test]
fn sigstop_of_the_master_fails_over_and_the_old_master_rejoins_as_a_replica() {
    let (trio, voters) = three_voters();
    let members = sentinel_addrs(&voters);
    let old = trio.master.addr();
    trio.master.stop();

    let promoted = wait_new_master(&members, &trio.replica_addrs());
    wait_repointed(&trio, promoted);
    wait_same_epoch(&members);
    trio.master.cont();

    // Sentinel converts a returning old master after a grace period (~8 s
    // in Redis Sentinel, plus INFO polling): allow a minute.
    wait_follows(
        "the old master to become a replica of the new one",
        old,
        promoted,
    );
    for &m in &members {
        assert_eq!(
            master_addr_by_name(m),
            Ok(promoted),
            "voter {m} after the old master came back"
        );
    }
    writes_reach(&voters, promoted, "sigstop");
}

#[test]
fn a_voter_stopped_during_the_failover_catches_up_after_sigcont() {
    let (mut trio, voters) = three_voters();
    let members = sentinel_addrs(&voters);
    voters[2].stop();
    let stopped = Instant::now();
    trio.master.kill();

    // Two of three voters are a majority (and the quorum): they fail over.
    let promoted = wait_new_master(&members[..2], &trio.replica_addrs());
    wait_repointed(&trio, promoted);
    let epoch = wait_same_epoch(&members[..2]);
    // Keep it stopped for longer than Sentinel's 2 s TILT trigger, so that
    // it comes back in TILT (its timer saw a jump).
    poll("the voter to have been stopped for 3 s", PATIENCE, || {
        if stopped.elapsed() >= Duration::from_secs(3) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    voters[2].cont();
    poll("the continued voter to enter TILT", PATIENCE, || {
        if logged_event(&voters[2].stderr(), "+tilt") {
            Ok(())
        } else {
            Err("no +tilt logged".into())
        }
    });

    // In TILT it does not act, but it still learns the new configuration
    // from its peers' hellos and moves its route.
    assert_eq!(wait_new_master(&members, &trio.replica_addrs()), promoted);
    assert_eq!(wait_same_epoch(&members), epoch);
    writes_reach(&voters, promoted, "sigcont-voter");
}

#[test]
fn no_failover_when_only_a_minority_of_voters_is_alive() {
    let (mut trio, mut voters) = three_voters();
    let old = trio.master.addr();
    voters[1].kill();
    voters[2].kill();
    trio.master.kill();
    let survivor = voters[0].sentinel_addr;

    // The survivor notices the master is gone...
    poll(
        "the surviving voter to see the master subjectively down",
        FAILOVER_PATIENCE,
        || {
            let fields = sentinel_master(survivor)?;
            let flags = fields.get("flags").cloned().unwrap_or_default();
            if flags.split(',').any(|f| f == "s_down") {
                Ok(())
            } else {
                Err(format!("flags {flags}"))
            }
        },
    );
    // ...and then must not act on it. This is a bounded negative check: over
    // a window of 6 x down_after (polling), the survivor keeps reporting the
    // old master and no replica becomes master. It cannot prove "never".
    let window = Instant::now() + 6 * Duration::from_secs(1);
    while Instant::now() < window {
        assert_eq!(
            master_addr_by_name(survivor),
            Ok(old),
            "a lone voter must not switch master"
        );
        let masters = masters_among(&trio.replica_addrs());
        assert!(
            masters.is_empty(),
            "a replica was promoted without a majority: {masters:?}"
        );
        let fields = sentinel_master(survivor).expect("SENTINEL master");
        let flags = fields.get("flags").cloned().unwrap_or_default();
        assert!(
            !flags.contains("o_down"),
            "ODOWN with one voter of quorum 2: {flags}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restarted_voter_keeps_its_myid_and_epochs() {
    let (mut trio, mut voters) = three_voters();
    let members = sentinel_addrs(&voters);
    trio.master.kill();
    let promoted = wait_new_master(&members, &trio.replica_addrs());
    let epoch = wait_same_epoch(&members);

    let voter = &mut voters[0];
    let addr = voter.sentinel_addr;
    let myid = sentinel_myid(addr).expect("myid");
    let current = poll("the state file to hold the current epoch", PATIENCE, || {
        current_epoch_in(&voter.state_file())
            .filter(|&e| e >= epoch)
            .ok_or_else(|| {
                format!(
                    "state file: {}",
                    std::fs::read_to_string(voter.state_file()).unwrap_or_default()
                )
            })
    });

    voter.kill();
    // A client that connects the moment the data port is back: its very
    // first request must reach the persisted (new) master, not the dead one
    // config.toml names (the control plane publishes the state file's master
    // before the data listeners start).
    let data = voter.data_addr;
    let early = std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        let mut stream = loop {
            match cluster::connect(data) {
                Ok(stream) => break stream,
                Err(e) => assert!(Instant::now() < deadline, "data port never came back: {e}"),
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        cluster::ask_on(&mut stream, &["SET", "restart:early", "v"])
    });
    voter.restart();
    let first = early.join().expect("early client");
    assert!(
        matches!(&first, Ok(Frame::SimpleString(s)) if s == b"OK"),
        "first request through the restarted voter: {first:?}"
    );
    assert_eq!(
        text(&support::Client::connect(promoted).cmd(&["GET", "restart:early"])),
        "v",
        "the early session wrote to the new master"
    );
    assert_eq!(
        sentinel_myid(addr).as_deref(),
        Ok(myid.as_str()),
        "myid after restart"
    );
    assert_eq!(
        config_epoch(addr),
        Ok(epoch),
        "config epoch right after restart"
    );
    assert_eq!(
        master_addr_by_name(addr),
        Ok(promoted),
        "master right after restart"
    );
    let restarted_current =
        current_epoch_in(&voter.state_file()).expect("current epoch in the state file");
    assert!(
        restarted_current >= current,
        "current epoch went from {current} to {restarted_current}"
    );

    // Never lower while it reconnects and rediscovers its peers.
    poll(
        "the restarted voter to rediscover its peers",
        FAILOVER_PATIENCE,
        || {
            let e = config_epoch(addr)?;
            assert!(
                e >= epoch,
                "config epoch went from {epoch} to {e} after restart"
            );
            let c = current_epoch_in(&voter.state_file()).unwrap_or(0);
            assert!(
                c >= current,
                "current epoch went from {current} to {c} after restart"
            );
            assert_eq!(sentinel_myid(addr)?, myid);
            let others = sentinel_master(addr)?
                .get("num-other-sentinels")
                .cloned()
                .unwrap_or_default();
            if others == "2" {
                Ok(())
            } else {
                Err(format!("num-other-sentinels={others}"))
            }
        },
    );
    assert_eq!(master_addr_by_name(addr), Ok(promoted));
    // Same identity, so the other voters count it once (no ghost voter).
    for other in &members[1..] {
        let others = sentinel_master(*other)
            .expect("SENTINEL master")
            .get("num-other-sentinels")
            .cloned();
        assert_eq!(
            others.as_deref(),
            Some("2"),
            "voter {other} after the restart"
        );
    }
}

#[test]
fn a_corrupt_state_file_stops_the_voter_with_a_message_naming_it() {
    let dir = TempDir::new("corrupt");
    let state = dir.join("sentinel-proxy.state");
    cluster::write_file(
        &state,
        "sentinel myid not-a-valid-id\nsentinel current-epoch banana\n",
    );
    let config = dir.join("config.toml");
    cluster::write_file(
        &config,
        &format!(
            r#"
[sentinel]
role = "voter"
listen = "127.0.0.1:{}"
state_file = "{}"

[admin]
listen = "127.0.0.1:{}"

[[service]]
name = "mymaster"
listen = "127.0.0.1:{}"
master = "127.0.0.1:{}"
down_after = "1s"
"#,
            free_port(),
            state.display(),
            free_port(),
            free_port(),
            free_port(),
        ),
    );
    let mut child = proxy_binary()
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sentinel-proxy");
    let status = poll(
        "the voter to exit on a corrupt state file",
        PATIENCE,
        || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        },
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(
        !status.success(),
        "exit status {status:?}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(&state.display().to_string()),
        "stderr does not name {}: {stderr}",
        state.display()
    );
    assert_eq!(
        std::fs::read_to_string(&state).expect("state file"),
        "sentinel myid not-a-valid-id\nsentinel current-epoch banana\n",
        "a corrupt state file must be left alone"
    );
}

// ---------------------------------------------------------------------------
// Mixed quorums: real Sentinels and voter proxies in one quorum (quorum 2).

enum Member {
    Real(RealSentinel),
    Proxy(VoterProxy),
}

impl Member {
    fn addr(&self) -> SocketAddr {
        match self {
            Member::Real(s) => s.addr,
            Member::Proxy(p) => p.sentinel_addr,
        }
    }

    fn log(&self) -> String {
        match self {
            Member::Real(s) => s.log(),
            Member::Proxy(p) => p.stderr(),
        }
    }

    fn describe(&self) -> String {
        let kind = match self {
            Member::Real(_) => "real Sentinel",
            Member::Proxy(_) => "sentinel-proxy",
        };
        let id = sentinel_myid(self.addr()).unwrap_or_else(|e| e);
        format!("{kind} {} ({})", self.addr(), id.get(..8).unwrap_or(&id))
    }

    fn is_real(&self) -> bool {
        matches!(self, Member::Real(_))
    }
}

/// `reals` real Sentinels and `proxies` voter proxies watching a fresh
/// trio, everyone discovered. `real_down_after` / `proxy_down_after` (ms)
/// bias who notices first, and so who wins the vote.
fn mixed(
    reals: usize,
    proxies: usize,
    real_down_after: u64,
    proxy_down_after: u64,
) -> (Trio, Vec<Member>) {
    let trio = Trio::start();
    let master = trio.master.addr();
    let spec = VoterSpec::new(master, 2, &format!("{proxy_down_after}ms"), "20s");
    let mut members = Vec::new();
    for _ in 0..reals {
        members.push(Member::Real(RealSentinel::start(
            master,
            2,
            real_down_after,
            20_000,
        )));
    }
    for _ in 0..proxies {
        members.push(Member::Proxy(VoterProxy::start(&spec)));
    }
    wait_discovered(&members.iter().map(Member::addr).collect::<Vec<_>>(), 2);
    (trio, members)
}

/// Who completed the failover: the members that logged `+failover-end`
/// (and, for the record, `+elected-leader`).
fn leaders(members: &[Member]) -> Vec<usize> {
    let led: Vec<usize> = poll("the leader to log +failover-end", FAILOVER_PATIENCE, || {
        let led: Vec<usize> = (0..members.len())
            .filter(|&i| logged_event(&members[i].log(), "+failover-end"))
            .collect();
        if led.is_empty() {
            Err("nobody logged +failover-end yet".into())
        } else {
            Ok(led)
        }
    });
    for (i, m) in members.iter().enumerate() {
        let log = m.log();
        eprintln!(
            "member {i}: {}: +elected-leader={} +failover-end={}",
            m.describe(),
            logged_event(&log, "+elected-leader"),
            led.contains(&i)
        );
    }
    led
}

/// Every member (real and proxy) agrees on `promoted` and on one config epoch.
fn all_agree(trio: &Trio, members: &[Member]) -> (SocketAddr, u64) {
    let addrs: Vec<SocketAddr> = members.iter().map(Member::addr).collect();
    let promoted = wait_new_master(&addrs, &trio.replica_addrs());
    wait_repointed(trio, promoted);
    let epoch = wait_same_epoch(&addrs);
    for m in members {
        assert_eq!(
            master_addr_by_name(m.addr()),
            Ok(promoted),
            "{}",
            m.describe()
        );
    }
    (promoted, epoch)
}

fn proxies(members: &[Member]) -> Vec<&VoterProxy> {
    members
        .iter()
        .filter_map(|m| match m {
            Member::Proxy(p) => Some(p),
            Member::Real(_) => None,
        })
        .collect()
}

fn proxy_writes_reach(members: &[Member], promoted: SocketAddr, tag: &str) {
    let mut direct = support::Client::connect(promoted);
    for (i, p) in proxies(members).into_iter().enumerate() {
        let key = format!("mixed:{tag}:{i}");
        assert_eq!(
            text(&p.client().cmd(&["SET", &key, "v"])),
            "OK",
            "SET through proxy {i}"
        );
        assert_eq!(
            text(&direct.cmd(&["GET", &key])),
            "v",
            "key {key} on {promoted}"
        );
    }
}

/// Two real Sentinels + one proxy; the real Sentinels have the shorter
/// down-after, so one of them should win the vote (either outcome is
/// accepted; the leader is printed).
#[test]
fn mixed_two_real_sentinels_and_one_proxy_fail_over_on_kill_9() {
    let (mut trio, members) = mixed(2, 1, 1000, 3000);
    trio.master.kill();
    let (promoted, epoch) = all_agree(&trio, &members);
    let led = leaders(&members);
    eprintln!(
        "2 real + 1 proxy, kill -9: led by {:?}, new master {promoted}, config epoch {epoch}",
        led.iter()
            .map(|&i| members[i].describe())
            .collect::<Vec<_>>()
    );
    proxy_writes_reach(&members, promoted, "2r1p");
}

/// One real Sentinel + two proxies; the proxies have the shorter
/// down-after, so one of them should win the vote.
#[test]
fn mixed_one_real_sentinel_and_two_proxies_fail_over_on_kill_9() {
    let (mut trio, members) = mixed(1, 2, 3000, 1000);
    trio.master.kill();
    let (promoted, epoch) = all_agree(&trio, &members);
    let led = leaders(&members);
    eprintln!(
        "1 real + 2 proxies, kill -9: led by {:?}, new master {promoted}, config epoch {epoch}",
        led.iter()
            .map(|&i| members[i].describe())
            .collect::<Vec<_>>()
    );
    proxy_writes_reach(&members, promoted, "1r2p");
}

/// `SENTINEL FAILOVER` sent to `leader`: that member leads a manual failover,
/// and everyone else follows its new configuration.
fn manual_failover(members: &[Member], trio: &Trio, leader: usize) -> (SocketAddr, u64) {
    let reply = cluster::ask(
        members[leader].addr(),
        &["SENTINEL", "FAILOVER", cluster::MASTER_NAME],
    );
    assert!(
        matches!(&reply, Ok(Frame::SimpleString(s)) if s == b"OK"),
        "SENTINEL FAILOVER to {}: {reply:?}",
        members[leader].describe()
    );
    let old = trio.master.addr();
    let (promoted, epoch) = all_agree(trio, members);
    let led = leaders(members);
    assert_eq!(
        led,
        vec![leader],
        "the member sent SENTINEL FAILOVER is the one that led it"
    );
    // The old master is alive. A proxy leader demotes it in the same step
    // as the promotion (FAILOVER TO); after a real Sentinel's, it still says
    // "master" and some member demotes it after Sentinel's convert-to-slave
    // grace period (~8 s + INFO polling).
    wait_follows(
        "the old master to be converted to a replica of the new one",
        old,
        promoted,
    );
    for m in members {
        assert_eq!(
            master_addr_by_name(m.addr()),
            Ok(promoted),
            "{} after the conversion",
            m.describe()
        );
        assert_eq!(
            config_epoch(m.addr()),
            Ok(epoch),
            "{} after the conversion",
            m.describe()
        );
    }
    (promoted, epoch)
}

#[test]
fn mixed_manual_failover_led_by_a_proxy_with_two_real_sentinels() {
    let (trio, members) = mixed(2, 1, 1000, 1000);
    let leader = members.iter().position(|m| !m.is_real()).expect("a proxy");
    let (promoted, epoch) = manual_failover(&members, &trio, leader);
    eprintln!(
        "2 real + 1 proxy, SENTINEL FAILOVER: led by {}, new master {promoted}, config epoch {epoch}",
        members[leader].describe()
    );
    proxy_writes_reach(&members, promoted, "manual-proxy");
}

#[test]
fn mixed_manual_failover_led_by_a_real_sentinel_with_two_proxies() {
    let (trio, members) = mixed(1, 2, 1000, 1000);
    let leader = members
        .iter()
        .position(Member::is_real)
        .expect("a real Sentinel");
    let (promoted, epoch) = manual_failover(&members, &trio, leader);
    eprintln!(
        "1 real + 2 proxies, SENTINEL FAILOVER: led by {}, new master {promoted}, config epoch {epoch}",
        members[leader].describe()
    );
    proxy_writes_reach(&members, promoted, "manual-real");
}

#[test]
fn a_voter_that_cannot_write_its_state_file_does_not_vote() {
    let trio = Trio::start();
    let spec = VoterSpec::new(trio.master.addr(), 2, "1s", "20s");
    let voter = VoterProxy::start(&spec);
    let master = trio.master.addr();
    let (ip, port) = (master.ip().to_string(), master.port().to_string());
    let candidate = "c".repeat(40);
    let ask = |epoch: &str| {
        cluster::ask(
            voter.sentinel_addr,
            &[
                "SENTINEL",
                "is-master-down-by-addr",
                &ip,
                &port,
                epoch,
                &candidate,
            ],
        )
    };
    // Make the next write fail: the rename onto a non-empty directory fails.
    let state = voter.state_file();
    std::fs::remove_file(&state).expect("remove the state file");
    std::fs::create_dir_all(state.join("blocker")).expect("block the state file path");
    let refused = ask("7");
    assert!(
        matches!(&refused, Ok(Frame::Error(e)) if e.contains("cannot write its state file")),
        "a vote that cannot be persisted is refused, not given: {refused:?}"
    );
    // The disk is back: the vote is given, and it is on disk.
    std::fs::remove_dir_all(&state).expect("unblock the state file path");
    let reply = poll("the voter to vote again", PATIENCE, || match ask("7") {
        Ok(Frame::Array(items)) => Ok(items),
        other => Err(format!("{other:?}")),
    });
    assert!(
        matches!(&reply[1], Frame::BulkString(b) if b == candidate.as_bytes()),
        "{reply:?}"
    );
    let text = std::fs::read_to_string(&state).expect("state file written again");
    assert!(text.contains("sentinel leader-epoch mymaster 7"), "{text}");
}
