//! The failover contract from the client's side (DESIGN.md, "What a
//! connected client sees on failover"): one test per row of the table, plus
//! the planned switchover and the never-route-to-a-non-master rule, through
//! real processes (a master and two replicas, three voter sentinel-proxy
//! processes). Clients speak raw RESP so replies are asserted byte for byte.
//!
//! Every wait is a poll with a deadline; a connection the proxy closes is
//! reported as such ("the proxy closed the connection"), never as a bare
//! read error.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame as Frame;

use support::cluster::{
    self, FAILOVER_PATIENCE, MASTER_NAME, Node, Trio, VoterProxy, VoterSpec, poll, sentinel_addrs,
    start_voters, unread_bytes, wait_follows, wait_new_master,
};
use support::raw::{Conn, Got, aggregate, bulk, bulk_array, bulk_text, int, is_error, show};
use support::{PATIENCE, Proxy};

/// What every error reply about the service must name.
const SERVICE: &str = "service 'mymaster'";

/// Held requests wait this long in the main setup: longer than a failover
/// takes on a loaded machine, so a held request is answered by the new
/// master, never by the bound.
const LONG_HOLD: &str = "hold_timeout = \"30s\"";

/// The bound in the tests of the bound.
const SHORT_HOLD: Duration = Duration::from_secs(1);
const SHORT_HOLD_LINE: &str = "hold_timeout = \"1s\"";

/// A held request's error may come this much before the bound (timer
/// granularity), and no later than this much after it.
const HOLD_EARLY: Duration = Duration::from_millis(100);
const HOLD_LATE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Setup

/// A master, two replicas and three voters (quorum 2, down_after 1s),
/// everyone discovered.
struct Setup {
    trio: Trio,
    voters: Vec<VoterProxy>,
    members: Vec<SocketAddr>,
}

impl Setup {
    fn start() -> Setup {
        Setup::start_with(LONG_HOLD)
    }

    fn start_with(service_line: &str) -> Setup {
        let trio = Trio::start();
        let spec = VoterSpec::new(trio.master.addr(), 2, "1s", "10s").with(service_line);
        let voters = start_voters(&spec, 3, 2);
        let members = sentinel_addrs(&voters);
        Setup {
            trio,
            voters,
            members,
        }
    }

    /// A client connection to voter `i`'s data port.
    fn client(&self, i: usize, label: &str) -> Conn {
        Conn::connect(self.voters[i].data_addr, label)
    }

    /// `kill -9` of the master.
    fn kill_master(&mut self) {
        self.trio.master.kill();
    }

    /// Waits until a replica is master and every voter reports it.
    fn new_master(&self) -> SocketAddr {
        wait_new_master(&self.members, &self.trio.replica_addrs())
    }

    /// `SENTINEL FAILOVER mymaster` on voter 0's Sentinel port.
    fn switchover(&self) {
        let reply = cluster::ask(self.members[0], &["SENTINEL", "FAILOVER", MASTER_NAME]);
        assert!(
            matches!(&reply, Ok(Frame::SimpleString(s)) if s == b"OK"),
            "SENTINEL FAILOVER {MASTER_NAME} on voter 0: expected +OK, got {reply:?}"
        );
    }

    /// Waits until the old master follows `promoted` (demoted, not just
    /// outvoted).
    fn wait_old_master_demoted(&self, promoted: SocketAddr) {
        let old = self.trio.master.addr();
        wait_follows(
            "the old master to be demoted to a replica of the new one",
            old,
            promoted,
        );
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Asserts `frame` is an error reply that names the service.
fn assert_service_error(frame: &[u8], what: &str) {
    let text = String::from_utf8_lossy(frame);
    assert!(
        is_error(frame) && text.contains(SERVICE),
        "{what}: expected an error reply containing {SERVICE:?}, got {}",
        show(frame)
    );
}

/// Sends `args`, expects an error reply naming the service that comes only
/// after the request was held for `hold` (and not much later).
fn expect_held_then_error(conn: &mut Conn, args: &[&str], hold: Duration) {
    let sent = Instant::now();
    conn.send(args);
    let what = format!("{args:?} (held, bound {hold:?})");
    let reply = conn.reply(&what, hold + HOLD_LATE);
    let waited = sent.elapsed();
    assert_service_error(&reply, &format!("{}: reply to {what}", conn.label));
    assert!(
        waited + HOLD_EARLY >= hold,
        "{}: the error to {what} came after {waited:?}: the request was not held for hold_timeout",
        conn.label
    );
}

/// A field of `CLIENT INFO` as the server sees the session.
fn client_info_field(conn: &mut Conn, key: &str) -> String {
    let reply = conn.cmd(&["CLIENT", "INFO"]);
    let info = bulk_text(&reply).unwrap_or_else(|| {
        panic!(
            "{}: CLIENT INFO: expected a bulk string, got {}",
            conn.label,
            show(&reply)
        )
    });
    let prefix = format!("{key}=");
    info.split_whitespace()
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{}: no {key}= in CLIENT INFO: {info}", conn.label))
        .to_owned()
}

/// The session's upstream connection as the server sees it (its client
/// address in `CLIENT INFO`).
fn upstream_addr(conn: &mut Conn) -> SocketAddr {
    let addr = client_info_field(conn, "addr");
    addr.parse()
        .unwrap_or_else(|e| panic!("{}: CLIENT INFO addr={addr}: {e}", conn.label))
}

/// Waits until the bytes of a request sent on `upstream` sit unread in the
/// (stopped) `server`'s socket: the request is in flight there.
fn wait_in_flight(server: SocketAddr, upstream: SocketAddr) {
    poll(
        "the request to reach the stopped master's socket",
        PATIENCE,
        || match unread_bytes(server, upstream) {
            Some(n) if n > 0 => Ok(()),
            other => Err(format!(
                "unread bytes on {server} from {upstream}: {other:?}"
            )),
        },
    );
}

/// Waits until `server` has executed `cmd` from its client `upstream` and
/// handed the whole reply to the kernel (`CLIENT LIST`: last command `cmd`,
/// empty output buffers), so a SIGSTOP now cannot hold the reply back.
fn wait_reply_written(server: SocketAddr, upstream: SocketAddr, cmd: &str) {
    let fields = [
        format!("addr={upstream}"),
        format!("cmd={cmd}"),
        "obl=0".to_owned(),
        "oll=0".to_owned(),
    ];
    poll(
        &format!("{server} to execute {cmd} from {upstream} and write the reply"),
        PATIENCE,
        || {
            let list = match cluster::ask(server, &["CLIENT", "LIST"]) {
                Ok(Frame::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                other => return Err(format!("CLIENT LIST: {other:?}")),
            };
            let line = list
                .lines()
                .find(|l| l.split_whitespace().any(|kv| kv == fields[0]))
                .ok_or_else(|| format!("no client {upstream} in CLIENT LIST"))?;
            let words: Vec<&str> = line.split_whitespace().collect();
            if fields.iter().all(|f| words.contains(&f.as_str())) {
                Ok(())
            } else {
                Err(line.to_owned())
            }
        },
    );
}

/// Waits until `server` reports `n` clients blocked on a command.
fn wait_blocked(server: SocketAddr, n: usize) {
    let want = format!("blocked_clients:{n}\r\n");
    poll(
        &format!("{n} blocked client(s)"),
        PATIENCE,
        || match cluster::ask(server, &["INFO", "clients"]) {
            Ok(Frame::BulkString(b)) if String::from_utf8_lossy(&b).contains(&want) => Ok(()),
            other => Err(format!("INFO clients: {other:?}")),
        },
    );
}

/// `GET key` straight on `server`, raw.
fn direct_get(server: SocketAddr, key: &str) -> Vec<u8> {
    Conn::connect(server, &format!("direct {server}")).cmd(&["GET", key])
}

/// Asserts the session is on `master` (polling until it is: after a
/// planned switchover the old master is alive and may answer for a moment),
/// still in db 5 under the name `app1`, can read `k` and write. Every
/// reply on the way must be a non-error.
fn assert_session_moved_with_state(conn: &mut Conn, master: SocketAddr) {
    let want_port = bulk_array(&["port", &master.port().to_string()]);
    poll(
        "the session to answer from the new master",
        PATIENCE,
        || {
            let got = conn.cmd(&["CONFIG", "GET", "port"]);
            assert!(
                !is_error(&got),
                "{}: CONFIG GET port after the failover: error reply {}",
                conn.label,
                show(&got)
            );
            if got == want_port {
                Ok(())
            } else {
                Err(format!(
                    "CONFIG GET port: {} (new master is {master})",
                    show(&got)
                ))
            }
        },
    );
    let db = client_info_field(conn, "db");
    assert_eq!(
        db, "5",
        "{}: CLIENT INFO db= on the new master (SELECT 5 must be replayed)",
        conn.label
    );
    let name = client_info_field(conn, "name");
    assert_eq!(
        name, "app1",
        "{}: CLIENT INFO name= on the new master (CLIENT SETNAME must be replayed)",
        conn.label
    );
    conn.expect(&["GET", "k"], &bulk("v"));
    conn.expect(&["SET", "k2", "after"], b"+OK\r\n");
    let mut direct = Conn::connect(master, "direct new master");
    direct.expect(&["SELECT", "5"], b"+OK\r\n");
    direct.expect(&["GET", "k2"], &bulk("after"));
}

/// SELECT 5, CLIENT SETNAME app1, SET k v in db 5, and both replicas have it.
fn give_session_state(conn: &mut Conn) {
    conn.expect(&["SELECT", "5"], b"+OK\r\n");
    conn.expect(&["CLIENT", "SETNAME", "app1"], b"+OK\r\n");
    conn.expect(&["SET", "k", "v"], b"+OK\r\n");
    conn.expect(&["WAIT", "2", "5000"], &int(2));
}

// ---------------------------------------------------------------------------
// Idle sessions

#[test]
fn idle_session_keeps_db_name_and_data_across_kill_9_of_the_master() {
    let mut setup = Setup::start();
    let mut session = setup.client(0, "idle session");
    give_session_state(&mut session);

    setup.kill_master();
    let promoted = setup.new_master();
    assert_session_moved_with_state(&mut session, promoted);
}

#[test]
fn idle_session_keeps_its_state_across_a_planned_switchover() {
    let setup = Setup::start();
    let mut session = setup.client(1, "idle session");
    give_session_state(&mut session);

    setup.switchover();
    let promoted = setup.new_master();
    // Nothing unsolicited (an error, a stray reply) reached the client.
    match session.next(Duration::from_millis(200)) {
        Got::Silent(partial) if partial.is_empty() => {}
        Got::Silent(partial) => panic!(
            "idle session: unsolicited bytes during the switchover: {}",
            show(&partial)
        ),
        Got::Frame(frame) => panic!(
            "idle session: unsolicited frame during the switchover: {}",
            show(&frame)
        ),
        Got::Closed(_) => panic!(
            "idle session: the proxy closed the connection ({}) during the planned switchover",
            session.how_closed()
        ),
    }
    assert_session_moved_with_state(&mut session, promoted);
    // Still right once the old master has been demoted.
    setup.wait_old_master_demoted(promoted);
    assert_session_moved_with_state(&mut session, promoted);
}

// ---------------------------------------------------------------------------
// Pub/Sub

/// Payload tags the tests publish: before the failover and after it.
const TAGS: [&str; 2] = ["before-", "after-"];

/// The payload of `frame` if it is exactly `head` (the frame's header and
/// leading elements) followed by one bulk string.
fn payload_after(frame: &[u8], head: &[u8]) -> Option<String> {
    let rest = frame.strip_prefix(head)?;
    let payload = bulk_text(rest)?;
    (bulk(&payload) == rest).then_some(payload)
}

/// A connection subscribed to `ch` and `p*`, in RESP2 or RESP3.
struct Subscriber {
    conn: Conn,
    resp3: bool,
    got_message: bool,
    got_pmessage: bool,
}

impl Subscriber {
    fn start(addr: SocketAddr, resp3: bool) -> Subscriber {
        let label = if resp3 {
            "RESP3 subscriber"
        } else {
            "RESP2 subscriber"
        };
        let mut conn = Conn::connect(addr, label);
        let kind = if resp3 {
            let hello = conn.cmd(&["HELLO", "3"]);
            assert!(
                hello.starts_with(b"%"),
                "{label}: HELLO 3: expected a map, got {}",
                show(&hello)
            );
            b'>'
        } else {
            b'*'
        };
        let confirm =
            |what: &str, name: &str, n: i64| aggregate(kind, &[bulk(what), bulk(name), int(n)]);
        conn.expect(&["SUBSCRIBE", "ch"], &confirm("subscribe", "ch", 1));
        conn.expect(&["PSUBSCRIBE", "p*"], &confirm("psubscribe", "p*", 2));
        Subscriber {
            conn,
            resp3,
            got_message: false,
            got_pmessage: false,
        }
    }

    /// Reads what comes within `wait`. Every frame must be a message on
    /// `ch` or a pmessage on `pch` (matched by `p*`) with a payload this
    /// test published: no extra subscribe confirmation, no error, nothing
    /// else. Those tagged `tag` are counted.
    fn drain(&mut self, wait: Duration, tag: &str) {
        let kind = if self.resp3 { b'>' } else { b'*' };
        let message_head = [vec![kind, b'3', b'\r', b'\n'], bulk("message"), bulk("ch")].concat();
        let pmessage_head = [
            vec![kind, b'4', b'\r', b'\n'],
            bulk("pmessage"),
            bulk("p*"),
            bulk("pch"),
        ]
        .concat();
        let ours = |p: &Option<String>| {
            p.as_deref()
                .is_some_and(|p| TAGS.iter().any(|t| p.starts_with(t)))
        };
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.next(left) {
                Got::Frame(frame) => {
                    let message = payload_after(&frame, &message_head);
                    let pmessage = payload_after(&frame, &pmessage_head);
                    if ours(&message) {
                        self.got_message |= message.is_some_and(|p| p.starts_with(tag));
                    } else if ours(&pmessage) {
                        self.got_pmessage |= pmessage.is_some_and(|p| p.starts_with(tag));
                    } else {
                        panic!(
                            "{}: unexpected frame {} (expected only `message ch <payload>` and \
                             `pmessage p* pch <payload>`: no extra subscribe confirmation, no error)",
                            self.conn.label,
                            show(&frame)
                        );
                    }
                }
                Got::Silent(_) => return,
                Got::Closed(partial) => panic!(
                    "{}: the proxy closed the subscriber's connection ({}); unfinished bytes: {}",
                    self.conn.label,
                    self.conn.how_closed(),
                    show(&partial)
                ),
            }
        }
    }

    fn done(&self) -> bool {
        self.got_message && self.got_pmessage
    }
}

/// Publishes `tag<n>` on `ch` and `pch` at `publisher` until every
/// subscriber got both a message and a pmessage.
fn publish_until_received(publisher: SocketAddr, subscribers: &mut [Subscriber], tag: &str) {
    let mut conn = Conn::connect(publisher, &format!("publisher on {publisher}"));
    let mut n = 0;
    poll(
        &format!("every subscriber to receive messages published on {publisher}"),
        PATIENCE,
        || {
            let payload = format!("{tag}{n}");
            let to_ch = conn.cmd(&["PUBLISH", "ch", &payload]);
            let to_pch = conn.cmd(&["PUBLISH", "pch", &payload]);
            n += 1;
            for s in subscribers.iter_mut() {
                s.drain(Duration::from_millis(100), tag);
            }
            let waiting: Vec<String> = subscribers
                .iter()
                .filter(|s| !s.done())
                .map(|s| {
                    format!(
                        "{} (message: {}, pmessage: {})",
                        s.conn.label, s.got_message, s.got_pmessage
                    )
                })
                .collect();
            if waiting.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "still waiting for {waiting:?}; last PUBLISH receivers: ch {}, pch {}",
                    show(&to_ch),
                    show(&to_pch)
                ))
            }
        },
    );
    for s in subscribers.iter_mut() {
        s.got_message = false;
        s.got_pmessage = false;
    }
}

#[test]
fn subscribers_keep_receiving_after_kill_9_of_the_master() {
    let mut setup = Setup::start();
    let mut subscribers = vec![
        Subscriber::start(setup.voters[0].data_addr, false),
        Subscriber::start(setup.voters[1].data_addr, true),
    ];
    publish_until_received(setup.trio.master.addr(), &mut subscribers, "before-");

    setup.kill_master();
    let promoted = setup.new_master();
    // Messages published during the gap may be lost; these must arrive.
    publish_until_received(promoted, &mut subscribers, "after-");
    for s in &mut subscribers {
        s.drain(Duration::from_millis(200), "after-");
    }
}

// ---------------------------------------------------------------------------
// Requests while no master is verified

#[test]
fn requests_sent_during_the_failover_are_held_and_answered_by_the_new_master() {
    let mut setup = Setup::start();
    let mut connected = setup.client(0, "connected session");
    connected.expect(&["PING"], b"+PONG\r\n");

    setup.kill_master();
    connected.send(&["SET", "held:1", "x"]);
    let mut opened = setup.client(1, "session opened during the gap");
    opened.send(&["SET", "held:2", "y"]);
    let promoted_yet = cluster::masters_among(&setup.trio.replica_addrs());
    assert!(
        promoted_yet.is_empty(),
        "test setup: the requests must be sent before the failover, but {promoted_yet:?} is already master"
    );

    let first = connected.reply("SET held:1 x (sent after the kill)", FAILOVER_PATIENCE);
    assert!(
        first == b"+OK\r\n",
        "connected session: SET held:1 sent while no master was verified: expected +OK (held, then \
         answered by the new master), got {}",
        show(&first)
    );
    let second = opened.reply("SET held:2 y (sent after the kill)", FAILOVER_PATIENCE);
    assert!(
        second == b"+OK\r\n",
        "session opened during the gap: SET held:2: expected +OK (held, then answered by the new \
         master), got {}",
        show(&second)
    );
    let promoted = setup.new_master();
    assert_eq!(
        show(&direct_get(promoted, "held:1")),
        show(&bulk("x")),
        "held:1 on the new master {promoted}"
    );
    assert_eq!(
        show(&direct_get(promoted, "held:2")),
        show(&bulk("y")),
        "held:2 on the new master {promoted}"
    );
    connected.expect(&["PING"], b"+PONG\r\n");
    opened.expect(&["PING"], b"+PONG\r\n");
}

#[test]
fn a_request_held_past_hold_timeout_gets_an_error_naming_the_service_and_the_connection_stays_open()
{
    let mut setup = Setup::start_with(SHORT_HOLD_LINE);
    let mut session = setup.client(0, "connected session");
    session.expect(&["PING"], b"+PONG\r\n");

    // No replica left: the master cannot be replaced.
    for replica in &mut setup.trio.replicas {
        replica.kill();
    }
    setup.kill_master();
    expect_held_then_error(&mut session, &["SET", "held", "x"], SHORT_HOLD);
    // Still open, and the next request is held and bounded the same way.
    expect_held_then_error(&mut session, &["GET", "held"], SHORT_HOLD);
    let mut opened = setup.client(1, "session opened during the outage");
    expect_held_then_error(&mut opened, &["SET", "held", "y"], SHORT_HOLD);

    // The master comes back on the same port: the same connections get the
    // real reply.
    setup.trio.master.restart();
    for conn in [&mut session, &mut opened] {
        poll(
            &format!("{} to reach the restarted master", conn.label),
            FAILOVER_PATIENCE,
            || {
                let got = conn.cmd(&["SET", "after-restart", "v"]);
                if got == b"+OK\r\n" {
                    return Ok(());
                }
                assert_service_error(&got, &format!("{}: SET after-restart", conn.label));
                Err(format!("still: {}", show(&got)))
            },
        );
    }
    assert_eq!(
        show(&direct_get(setup.trio.master.addr(), "after-restart")),
        show(&bulk("v")),
        "after-restart on the restarted master"
    );
}

// ---------------------------------------------------------------------------
// Writes rejected by a demoted master

/// One writer's outcome: how many writes were acknowledged, and the first
/// thing that was not an acknowledgement.
struct Written {
    label: String,
    acked: u64,
    /// Transactions whose EXEC ran (the others ended in the failover's
    /// EXECABORT).
    committed: u64,
    failure: Option<String>,
}

/// The EXEC reply of a transaction lost with the old master.
const FAILOVER_EXECABORT: &[u8] =
    b"-EXECABORT Transaction discarded because the master failed over while it was open.\r\n";

#[test]
fn writes_during_a_planned_switchover_are_all_acknowledged_and_kept() {
    const WRITERS: usize = 4;
    let setup = Setup::start();
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let failed = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut conn = setup.client(w % 3, &format!("writer w{w} (voter {})", w % 3));
            let (stop, acked, failed) = (stop.clone(), counters[w].clone(), failed.clone());
            std::thread::spawn(move || {
                let mut failure = None;
                let (mut n, mut committed) = (0u64, 0u64);
                let counter = format!("w{w}:t");
                while !stop.load(Ordering::Relaxed) {
                    // Pipelined: a write, a WAIT and a transaction, so a
                    // refusal of any is followed by others.
                    let value = n.to_string();
                    let mut round = vec![
                        vec!["SET".to_owned(), format!("w{w}:{n}"), value],
                        vec!["WAIT".to_owned(), "0".to_owned(), "0".to_owned()],
                        vec!["MULTI".to_owned()],
                        vec!["INCR".to_owned(), counter.clone()],
                        vec!["INCR".to_owned(), counter.clone()],
                        vec!["EXEC".to_owned()],
                    ];
                    if w % 2 == 1 {
                        // Transactions alone: a refusal lands inside them.
                        round.drain(..2);
                    }
                    for request in &round {
                        conn.send(&request.iter().map(String::as_str).collect::<Vec<_>>());
                    }
                    for request in &round {
                        let what = request.join(" ");
                        match conn.next(FAILOVER_PATIENCE) {
                            Got::Frame(f) if what == "EXEC" && f.starts_with(b"*2\r\n") => {
                                committed += 1;
                            }
                            Got::Frame(f)
                                if [&b"+OK\r\n"[..], b"+QUEUED\r\n", FAILOVER_EXECABORT]
                                    .contains(&f.as_slice())
                                    || f.first() == Some(&b':') => {}
                            Got::Frame(f) => {
                                failure = Some(format!(
                                    "{what}: expected +OK, :n, +QUEUED, EXEC's array or the \
                                     failover's EXECABORT, got {}",
                                    show(&f)
                                ));
                            }
                            Got::Closed(_) => {
                                failure = Some(format!(
                                    "the proxy closed the connection ({}) at {what}",
                                    conn.how_closed()
                                ));
                            }
                            Got::Silent(_) => {
                                failure = Some(format!(
                                    "no reply to {what} within {FAILOVER_PATIENCE:?}"
                                ));
                            }
                        }
                        if failure.is_some() {
                            break;
                        }
                    }
                    if failure.is_some() {
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                    n += 1;
                    acked.store(n, Ordering::Relaxed);
                    // Pacing, not synchronisation: keep the shared machine usable.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Written {
                    label: conn.label.clone(),
                    acked: n,
                    committed,
                    failure,
                }
            })
        })
        .collect();
    let acked = |w: usize| counters[w].load(Ordering::Relaxed);
    // Waits until every writer `w` has `more` acknowledged writes beyond
    // `from[w]`, or one writer failed (its failure is reported below).
    let wait_progress = |what: &str, from: Vec<u64>, more: u64| {
        poll(what, FAILOVER_PATIENCE, || {
            let behind: Vec<usize> = (0..WRITERS)
                .filter(|&w| acked(w) < from[w] + more)
                .collect();
            if behind.is_empty() || failed.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(format!("writers behind: {behind:?}"))
            }
        });
    };
    wait_progress("every writer to be writing", vec![0; WRITERS], 10);

    setup.switchover();
    let promoted = setup.new_master();
    if !failed.load(Ordering::Relaxed) {
        setup.wait_old_master_demoted(promoted);
    }
    let now: Vec<u64> = (0..WRITERS).map(acked).collect();
    wait_progress("every writer to write after the demotion", now, 20);
    stop.store(true, Ordering::Relaxed);
    let results: Vec<Written> = threads
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .collect();

    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{} after {} acknowledged writes: {f}", r.label, r.acked))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "during SENTINEL FAILOVER every write must be acknowledged (+OK, never -READONLY) and no \
         connection dropped; instead:\n{}",
        failures.join("\n")
    );
    // Every acknowledged write is on the new master.
    let mut direct = Conn::connect(promoted, "direct new master");
    for (w, r) in results.iter().enumerate() {
        let mut missing = Vec::new();
        let written: Vec<(String, u64)> = (0..r.acked)
            .filter(|_| w % 2 == 0)
            .map(|n| (format!("w{w}:{n}"), n))
            .collect();
        for batch in written.chunks(500) {
            let keys: Vec<&str> = batch.iter().map(|(key, _)| key.as_str()).collect();
            let mut args = vec!["MGET"];
            args.extend(&keys);
            let got = direct.cmd(&args);
            let values: Vec<String> = batch.iter().map(|(_, n)| n.to_string()).collect();
            let want = bulk_array(&values.iter().map(String::as_str).collect::<Vec<_>>());
            if got != want {
                // Which keys: one by one.
                for (key, value) in keys.iter().zip(&values) {
                    let one = direct.cmd(&["GET", key]);
                    if one != bulk(value) {
                        missing.push(format!("{key} = {}", show(&one)));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{}: {} of {} acknowledged writes are missing or wrong on the new master {promoted}, \
             first: {:?}",
            r.label,
            missing.len(),
            written.len(),
            &missing[..missing.len().min(10)]
        );
        let counter = direct.cmd(&["GET", &format!("w{w}:t")]);
        assert!(
            counter == bulk(&(2 * r.committed).to_string()),
            "{}: {} transactions of two INCRs committed, but the new master {promoted} has \
             w{w}:t = {}",
            r.label,
            r.committed,
            show(&counter)
        );
    }
}

// ---------------------------------------------------------------------------
// Transactions

#[test]
fn an_open_multi_at_kill_9_ends_in_execabort_and_the_connection_stays_usable() {
    let mut setup = Setup::start();
    let mut session = setup.client(0, "session in MULTI");
    session.expect(&["MULTI"], b"+OK\r\n");
    session.expect(&["SET", "tx", "1"], b"+QUEUED\r\n");

    setup.kill_master();
    let promoted = setup.new_master();
    let exec = session.cmd(&["EXEC"]);
    assert!(
        exec.starts_with(b"-EXECABORT"),
        "session in MULTI: EXEC after the failover: expected an error starting with -EXECABORT, got {}",
        show(&exec)
    );
    session.expect(&["PING"], b"+PONG\r\n");
    assert_eq!(
        show(&direct_get(promoted, "tx")),
        "$-1\\r\\n",
        "the discarded transaction must not have set tx on the new master {promoted}"
    );
}

#[test]
fn an_active_watch_at_kill_9_makes_the_next_exec_return_null() {
    let mut setup = Setup::start();
    let mut session = setup.client(0, "session with WATCH");
    session.expect(&["WATCH", "wk"], b"+OK\r\n");

    setup.kill_master();
    let promoted = setup.new_master();
    session.expect(&["MULTI"], b"+OK\r\n");
    session.expect(&["SET", "wk", "1"], b"+QUEUED\r\n");
    session.expect(&["EXEC"], b"*-1\r\n");
    assert_eq!(
        show(&direct_get(promoted, "wk")),
        "$-1\\r\\n",
        "the aborted transaction must not have set wk on the new master {promoted}"
    );
    session.expect(&["PING"], b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// Requests in flight on a master that died

#[test]
fn a_blocking_command_in_flight_on_a_dead_master_closes_the_connection() {
    let mut setup = Setup::start();
    let mut session = setup.client(0, "session in BLPOP");
    session.send(&["BLPOP", "nolist", "0"]);
    wait_blocked(setup.trio.master.addr(), 1);

    setup.kill_master();
    let killed = Instant::now();
    match session.closed_within(PATIENCE) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "session in BLPOP: expected the connection closed with no reply (as if Redis had \
             died), got {:?} before the close ({})",
            show(&bytes),
            session.how_closed()
        ),
        Err(e) => panic!("session in BLPOP on a killed master: expected EOF from the proxy: {e}"),
    }
    eprintln!("BLPOP session closed {:?} after the kill", killed.elapsed());
}

#[test]
fn a_read_in_flight_on_a_dead_master_is_resent_to_the_new_master() {
    let mut setup = Setup::start();
    let mut session = setup.client(0, "session reading");
    session.expect(&["SET", "k", "v"], b"+OK\r\n");
    session.expect(&["WAIT", "2", "5000"], &int(2));
    let upstream = upstream_addr(&mut session);
    let master = setup.trio.master.addr();

    setup.trio.master.stop();
    session.send(&["GET", "k"]);
    wait_in_flight(master, upstream);
    setup.kill_master();

    let reply = session.reply("GET k (in flight when the master died)", FAILOVER_PATIENCE);
    assert!(
        reply == bulk("v"),
        "session reading: GET k in flight on the killed master: expected it re-sent to the new \
         master ($1 v), got {}",
        show(&reply)
    );
    setup.new_master();
    session.expect(&["PING"], b"+PONG\r\n");
}

#[test]
fn a_write_in_flight_on_a_dead_master_closes_the_connection_after_earlier_replies() {
    let mut setup = Setup::start();
    let mut session = setup.client(0, "session writing");
    let upstream = upstream_addr(&mut session);
    let master = setup.trio.master.addr();
    // Answered by the master before it stops, but not read by the client.
    session.send(&["SET", "before", "1"]);
    wait_reply_written(master, upstream, "set");

    setup.trio.master.stop();
    session.send(&["INCR", "counter"]);
    wait_in_flight(master, upstream);
    setup.kill_master();

    match session.closed_within(FAILOVER_PATIENCE) {
        Ok(bytes) => assert!(
            bytes == b"+OK\r\n",
            "session writing: expected the reply to SET before (+OK) and then the close, got {:?} \
             before the close ({})",
            show(&bytes),
            session.how_closed()
        ),
        Err(e) => panic!(
            "session writing: INCR in flight on a killed master: expected the connection closed \
             (the write's outcome is unknown): {e}"
        ),
    }
    let promoted = setup.new_master();
    assert_eq!(
        show(&direct_get(promoted, "counter")),
        "$-1\\r\\n",
        "the in-flight INCR must not be re-sent to the new master {promoted}"
    );
}

// ---------------------------------------------------------------------------
// Never route to a non-master

#[test]
fn a_large_reply_still_streaming_from_the_old_master_arrives_whole_after_a_switchover() {
    const SIZE: usize = 32 << 20;
    let setup = Setup::start_with(SHORT_HOLD_LINE);
    let master = setup.trio.master.addr();
    Conn::connect(master, "direct master").expect(
        &["SETRANGE", "big", &(SIZE - 1).to_string(), "x"],
        &int(SIZE as i64),
    );
    let mut reader = setup.client(0, "slow reader");
    reader.send(&["GET", "big"]);
    // The reader does not read, so the proxy stops reading the master,
    // which then holds the rest of the reply.
    poll(
        "the master to hold reply bytes the proxy has not read",
        PATIENCE,
        || match cluster::ask(master, &["CLIENT", "LIST"]) {
            Ok(Frame::BulkString(list)) => {
                let list = String::from_utf8_lossy(&list).into_owned();
                let held = list
                    .lines()
                    .any(|line| line.contains("cmd=get") && !line.contains(" omem=0 "));
                if held { Ok(()) } else { Err(list) }
            }
            other => Err(format!("CLIENT LIST: {other:?}")),
        },
    );
    setup.switchover();
    setup.new_master();
    // Not synchronisation: the move deadline (hold_timeout of silence
    // from the old master) would pass meanwhile if a slow client's wait
    // counted as silence.
    std::thread::sleep(3 * SHORT_HOLD);
    let reply = reader.reply("GET big (after the switchover)", PATIENCE);
    let header = format!("${SIZE}\r\n");
    assert!(
        reply.len() == header.len() + SIZE + 2 && reply.starts_with(header.as_bytes()),
        "slow reader: expected the whole {SIZE}-byte value, got {} bytes starting {}",
        reply.len(),
        show(&reply[..reply.len().min(32)])
    );
}

/// The stopped-master test's hold_timeout: the old master is given up
/// this long after the route moves.
const STOPPED_HOLD: Duration = Duration::from_secs(3);

#[test]
fn requests_in_flight_on_a_master_that_stops_answering_leave_it_hold_timeout_after_the_failover() {
    let setup = Setup::start_with(&format!("hold_timeout = \"{}s\"", STOPPED_HOLD.as_secs()));
    let mut reader = setup.client(0, "session reading");
    reader.expect(&["SET", "k", "v"], b"+OK\r\n");
    reader.expect(&["WAIT", "2", "5000"], &int(2));
    let mut writer = setup.client(0, "session writing");
    let reader_upstream = upstream_addr(&mut reader);
    let writer_upstream = upstream_addr(&mut writer);
    let master = setup.trio.master.addr();

    // Stopped, never killed: its sockets stay open, as in a partition.
    setup.trio.master.stop();
    reader.send(&["GET", "k"]);
    writer.send(&["INCR", "counter"]);
    wait_in_flight(master, reader_upstream);
    wait_in_flight(master, writer_upstream);
    let promoted = setup.new_master();
    // Sent after the route moved: held behind the GET in flight.
    reader.send(&["GET", "k"]);

    let patience = STOPPED_HOLD + FAILOVER_PATIENCE;
    for which in ["in flight on the stopped master", "sent after the failover"] {
        let reply = reader.reply(&format!("GET k ({which})"), patience);
        assert!(
            reply == bulk("v"),
            "session reading: GET k {which}: expected it answered by the new master {promoted} \
             ($1 v) once the stopped one was given up, got {}",
            show(&reply)
        );
    }
    match writer.closed_within(patience) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "session writing: expected the connection closed with no reply, got {}",
            show(&bytes)
        ),
        Err(e) => panic!(
            "session writing: INCR in flight on a master that stopped answering: expected the \
             connection closed once the master was given up (the write's outcome is unknown): {e}"
        ),
    }
    assert_eq!(
        show(&direct_get(promoted, "counter")),
        "$-1\\r\\n",
        "the INCR in flight on the stopped master must not be re-sent to the new master {promoted}"
    );
    reader.expect(&["PING"], b"+PONG\r\n");
}

#[test]
fn an_observer_routed_at_a_replica_answers_with_an_error_naming_the_service() {
    let master = Node::master();
    let replica = Node::replica_of(master.addr());
    let proxy = Proxy::start_with(replica.addr(), SHORT_HOLD_LINE);
    let mut session = Conn::connect(proxy.addr, "observer session");

    // SET on a replica would come back -READONLY; GET would answer from the
    // replica. Neither may reach the client.
    expect_held_then_error(&mut session, &["SET", "x", "1"], SHORT_HOLD);
    expect_held_then_error(&mut session, &["GET", "x"], SHORT_HOLD);
    assert_eq!(
        show(&direct_get(master.addr(), "x")),
        "$-1\\r\\n",
        "x on the master"
    );
}
