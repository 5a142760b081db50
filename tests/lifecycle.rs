//! Connection lifecycle: admission, idle timeout, an unreachable or dying
//! master, and graceful shutdown (in-process and of the binary on SIGTERM).

mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};

use redis_protocol::resp3::types::OwnedFrame;
use support::*;

const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// The message of an error reply (panics on anything else).
fn error_text(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleError { data, .. } => data.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn is_pong(frame: &OwnedFrame) -> bool {
    matches!(frame, OwnedFrame::SimpleString { data, .. } if data == b"PONG")
}

/// Waits until the client's connection is closed by the proxy, and asserts
/// nothing more arrived before the close.
fn assert_closed(client: &mut Client, who: &str) {
    let rest = client.read_to_close();
    assert!(
        rest.is_empty(),
        "{who}: unexpected bytes before close: {:?}",
        rest.escape_ascii().to_string()
    );
}

/// Waits until Redis reports `n` clients blocked in a command.
fn wait_blocked(redis: &Redis, n: usize) {
    let mut direct = redis.client();
    wait_until(&format!("{n} blocked client(s) in Redis"), || {
        let info = text(&direct.cmd(&["INFO", "clients"]));
        info.lines()
            .any(|l| l.trim() == format!("blocked_clients:{n}"))
    });
}

// ---------------------------------------------------------------- admission

/// Connects and sends PING: Ok(client) if served, Err(reply) if rejected.
fn try_admit(addr: SocketAddr) -> Result<Client, String> {
    let mut c = Client::connect(addr);
    let reply = c.cmd(&["PING"]);
    if is_pong(&reply) {
        Ok(c)
    } else {
        Err(format!("{reply:?}"))
    }
}

#[test]
fn max_clients_rejects_like_redis_and_admits_again_after_one_leaves() {
    let redis = Redis::start();
    let proxy = Proxy::start_with(redis.addr, "max_clients = 2");
    let c1 = try_admit(proxy.addr).expect("first client admitted");
    let mut c2 = try_admit(proxy.addr).expect("second client admitted");

    let mut third = proxy.client();
    let got = third.read_to_close();
    assert_eq!(
        got,
        MAX_CLIENTS_REPLY,
        "got {:?}",
        got.escape_ascii().to_string()
    );
    assert_eq!(
        text(&c2.cmd(&["PING"])),
        "PONG",
        "an admitted client is unaffected"
    );

    drop(c1);
    let mut admitted = None;
    wait_until("a new client to be admitted after one left", || {
        admitted = try_admit(proxy.addr).ok();
        admitted.is_some()
    });
    let mut c3 = admitted.expect("admitted");
    assert_eq!(text(&c3.cmd(&["SET", "k", "v"])), "OK");
    assert_eq!(text(&c2.cmd(&["GET", "k"])), "v");

    // Full again: the freed slot was reused, not added.
    let mut fourth = proxy.client();
    assert_eq!(fourth.read_to_close(), MAX_CLIENTS_REPLY);
}

// ---------------------------------------------------------------- idle timeout

#[test]
fn idle_timeout_closes_idle_clients_but_not_subscribers_or_blocked_ones() {
    let redis = Redis::start();
    let proxy = Proxy::start_with(redis.addr, "client_idle_timeout = \"1s\"");

    let mut subscriber = proxy.client();
    assert_eq!(
        strings(&subscriber.cmd(&["SUBSCRIBE", "news"])),
        ["subscribe", "news", "1"]
    );
    let mut blocked = proxy.client();
    blocked.send(&encode(&["BLPOP", "jobs", "0"]));
    wait_blocked(&redis, 1);

    // Connected after the others, so their idle time is always the longer.
    let mut silent = proxy.client(); // never sends a byte
    let mut idle = proxy.client();
    assert_eq!(text(&idle.cmd(&["PING"])), "PONG");
    assert_closed(&mut idle, "idle client");
    assert_closed(&mut silent, "silent client");
    // One more idle period, so the exempt sessions have surely been checked.
    let mut idle2 = proxy.client();
    assert_eq!(text(&idle2.cmd(&["PING"])), "PONG");
    assert_closed(&mut idle2, "second idle client");

    let mut direct = redis.client();
    assert_eq!(
        text(&direct.cmd(&["PUBLISH", "news", "hello"])),
        "1",
        "subscriber still connected upstream"
    );
    assert_eq!(
        strings(&subscriber.read_frame()),
        ["message", "news", "hello"]
    );
    assert_eq!(text(&direct.cmd(&["RPUSH", "jobs", "j1"])), "1");
    assert_eq!(strings(&blocked.read_frame()), ["jobs", "j1"]);

    // Once no longer blocked or subscribed, they are ordinary idle clients.
    assert_closed(&mut blocked, "formerly blocked client");
    assert_eq!(
        strings(&subscriber.cmd(&["UNSUBSCRIBE", "news"])),
        ["unsubscribe", "news", "0"]
    );
    assert_closed(&mut subscriber, "former subscriber");
}

#[test]
fn without_idle_timeout_idle_clients_stay() {
    // The default "0s" means never: an idle client outlives a client that is
    // closed for idling on another proxy with a 1s timeout.
    let redis = Redis::start();
    let lenient = Proxy::start(redis.addr);
    let strict = Proxy::start_with(redis.addr, "client_idle_timeout = \"1s\"");
    let mut stays = lenient.client();
    assert_eq!(text(&stays.cmd(&["PING"])), "PONG");
    let mut goes = strict.client();
    assert_eq!(text(&goes.cmd(&["PING"])), "PONG");
    assert_closed(&mut goes, "client of the strict proxy");
    assert_eq!(text(&stays.cmd(&["PING"])), "PONG");
}

// ---------------------------------------------------------------- master unreachable

#[test]
fn unreachable_master_gets_an_error_reply_and_the_connection_stays_usable() {
    with_port_for_a_late_redis(unreachable_then_recovered);
}

/// Runs `scenario` with a free port where it starts Redis later. The port
/// must still be free then; if another test took it meanwhile (`scenario`
/// returns false), runs again on another.
fn with_port_for_a_late_redis(scenario: impl Fn(u16) -> bool) {
    support::require("redis-server");
    for _attempt in 0..5 {
        if scenario(free_port()) {
            return;
        }
    }
    panic!("5 free ports were taken before redis-server could use them");
}

/// False if `port` was taken before redis-server could start on it.
fn unreachable_then_recovered(port: u16) -> bool {
    let master = SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy::start_with(master, "hold_timeout = \"300ms\"");
    let mut c = proxy.client();

    let message = error_text(&c.cmd(&["PING"]));
    assert!(message.starts_with("ERR "), "{message}");
    assert!(message.contains("mymaster"), "names the service: {message}");
    assert!(
        message.contains(&master.to_string()),
        "names the address: {message}"
    );

    // Still usable: pipelined and inline requests each get their error, in order.
    let mut pipeline = encode(&["SET", "k", "v"]);
    pipeline.extend(encode(&["GET", "k"]));
    pipeline.extend_from_slice(b"PING\r\n");
    c.send(&pipeline);
    for _ in 0..3 {
        assert!(error_text(&c.read_frame()).contains("mymaster"));
    }

    // Once Redis is there, the same connection gets through.
    let Some(_redis) = Redis::start_on(port) else {
        return false;
    };
    wait_until("the session to reach the new master", || {
        is_pong(&c.cmd(&["PING"]))
    });
    assert_eq!(text(&c.cmd(&["SET", "k", "v"])), "OK");
    assert_eq!(text(&c.cmd(&["GET", "k"])), "v");
    true
}

/// `CLIENT REPLY OFF` and `SKIP` get no reply, so a held one could not be
/// failed with an error: with no master verified yet they wait, unread, and
/// go on once one is (they used to close the connection at once, even as a
/// healthy master's new connection's first request).
#[test]
fn replies_turned_off_before_a_master_is_verified_wait_for_one() {
    with_port_for_a_late_redis(|port| replies_off_then_recovered(port, false));
}

/// While it waits, the connection is not idle: the idle timeout must not
/// drop the requests it has not read yet.
#[test]
fn replies_turned_off_outlast_the_idle_timeout_while_waiting_for_a_master() {
    with_port_for_a_late_redis(|port| replies_off_then_recovered(port, true));
}

/// False if `port` was taken before redis-server could start on it. With
/// `idle_timeout`, the master comes only after the idle timeout passed.
fn replies_off_then_recovered(port: u16, idle_timeout: bool) -> bool {
    let master = SocketAddr::from(([127, 0, 0, 1], port));
    let config = if idle_timeout {
        "hold_timeout = \"20s\"\nclient_idle_timeout = \"300ms\""
    } else {
        "hold_timeout = \"10s\""
    };
    let proxy = Proxy::start_with(master, config);
    let mut c = proxy.client();
    // OFF typed inline (as in telnet), SKIP in RESP: both paths wait.
    let mut pipeline = b"CLIENT REPLY OFF\r\n".to_vec();
    pipeline.extend(encode(&["SET", "k", "1"]));
    pipeline.extend(encode(&["CLIENT", "REPLY", "ON"]));
    pipeline.extend(encode(&["CLIENT", "REPLY", "SKIP"]));
    pipeline.extend(encode(&["SET", "k", "2"]));
    pipeline.extend(encode(&["GET", "k"]));
    c.send(&pipeline);
    if idle_timeout {
        // It has passed once a client opened after it is closed.
        let mut idle = proxy.client();
        assert_closed(&mut idle, "idle client");
    }
    let Some(redis) = Redis::start_on(port) else {
        return false;
    };
    // What Redis itself answers: CLIENT REPLY ON's OK, then GET's value.
    assert_eq!(text(&c.read_frame()), "OK", "CLIENT REPLY ON");
    assert_eq!(text(&c.read_frame()), "2", "GET k after SET k 2");
    assert_eq!(text(&redis.client().cmd(&["GET", "k"])), "2");
    assert_eq!(text(&c.cmd(&["PING"])), "PONG", "the connection goes on");
    true
}

#[test]
fn replies_turned_off_with_no_master_close_the_connection_after_hold_timeout() {
    // Held, not just free: a Redis another test starts must not take it.
    let (_held, master) = test_support::refusing_addr();
    let proxy = Proxy::start_with(master, "hold_timeout = \"300ms\"");
    let mut c = proxy.client();
    let mut pipeline = encode(&["PING"]);
    pipeline.extend(encode(&["CLIENT", "REPLY", "OFF"]));
    pipeline.extend(encode(&["SET", "k", "v"]));
    c.send(&pipeline);
    // The PING before it is held and gets the service's error, which comes
    // only after hold_timeout; then the connection closes: nothing would
    // tell whether the silenced SET ran.
    let held = error_text(&c.read_frame());
    assert!(held.contains("no master verified within 300ms"), "{held}");
    assert_closed(&mut c, "client that turned replies off");
}

// ---------------------------------------------------------------- upstream dies

#[test]
fn master_dying_keeps_idle_clients_and_closes_blocked_ones() {
    let mut redis = Redis::start();
    let proxy = Proxy::start_with(redis.addr, "hold_timeout = \"500ms\"");
    let mut idle = proxy.client();
    assert_eq!(text(&idle.cmd(&["SET", "k", "v"])), "OK");
    let mut blocked = proxy.client();
    blocked.send(&encode(&["BLPOP", "jobs", "0"]));
    wait_blocked(&redis, 1);

    redis.kill();
    // A blocking command in flight on a dead master: closed, as Redis would.
    assert_closed(&mut blocked, "blocked client");
    // An idle client keeps its connection: its request waits for a master
    // for hold_timeout, then gets an error naming the service.
    let held = error_text(&idle.cmd(&["GET", "k"]));
    assert!(held.contains("service 'mymaster'"), "{held}");
    assert!(held.contains("no master verified within 500ms"), "{held}");
    // The connection stays open: the next request is held and bounded too.
    let next = error_text(&idle.cmd(&["PING"]));
    assert!(next.contains("service 'mymaster'"), "{next}");

    // The proxy itself carries on: a new client is told the master is down.
    let mut c = proxy.client();
    assert!(error_text(&c.cmd(&["PING"])).contains("mymaster"));
}

/// The number on the `key:` line of `text` (Redis's INFO, /proc status).
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number for {key} in:\n{text}"))
}

/// Redis's count of connections it refused at `maxclients`.
fn rejected_connections(direct: &mut Client) -> u64 {
    counter(
        &text(&direct.cmd(&["INFO", "stats"])),
        "rejected_connections",
    )
}

#[test]
fn an_instance_that_accepts_and_refuses_is_retried_with_backoff_not_in_a_loop() {
    // Redis at maxclients accepts a connection, answers
    // `-ERR max number of clients reached` and closes it.
    let redis = Redis::start_with(&["--maxclients", "1"]);
    // The harness's readiness check may hold the one slot for a moment
    // after it hung up (Redis frees it when it sees the close).
    let mut occupant_slot = None;
    wait_until("a connection to take Redis's only client slot", || {
        let mut c = redis.client();
        let admitted = is_pong(&c.cmd(&["PING"]));
        if admitted {
            occupant_slot = Some(c);
        }
        admitted
    });
    let occupant = occupant_slot.as_mut().expect("admitted");
    let rejected_before = rejected_connections(occupant);
    let proxy = Proxy::start_with(redis.addr, "hold_timeout = \"600ms\"");
    let mut c = proxy.client();
    let held = error_text(&c.cmd(&["PING"]));
    assert!(held.contains("service 'mymaster'"), "{held}");
    assert!(held.contains("max number of clients reached"), "{held}");
    // Attempts back off (100 ms, doubling): a handful, not thousands.
    let rejected = rejected_connections(occupant) - rejected_before;
    assert!(
        (1..=20).contains(&rejected),
        "{rejected} connections refused by Redis while one request waited 600 ms"
    );
    // Once there is room, the same connection gets through.
    drop(occupant_slot);
    wait_until("the session to get a slot on the master", || {
        is_pong(&c.cmd(&["PING"]))
    });
}

// ---------------------------------------------------------------- graceful shutdown

#[test]
fn graceful_shutdown_closes_idle_sessions_and_lets_blocked_ones_finish() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.addr);
    let mut idle = proxy.client();
    assert_eq!(text(&idle.cmd(&["PING"])), "PONG");
    let mut blocked = proxy.client();
    blocked.send(&encode(&["BLPOP", "jobs", "0"]));
    wait_blocked(&redis, 1);

    proxy.begin_shutdown();
    assert_closed(&mut idle, "idle client");
    wait_until("the listener to stop accepting", || {
        TcpStream::connect(proxy.addr).is_err()
    });
    assert!(
        !proxy.is_stopped(),
        "run returned while a BLPOP was in flight"
    );

    // The blocked request is still served, and only then is the session closed.
    assert_eq!(text(&redis.client().cmd(&["RPUSH", "jobs", "last"])), "1");
    assert_eq!(strings(&blocked.read_frame()), ["jobs", "last"]);
    assert_closed(&mut blocked, "blocked client after its reply");
    wait_until("run to return", || proxy.is_stopped());
}

#[test]
fn graceful_shutdown_lets_an_open_transaction_finish() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.addr);
    let mut idle = proxy.client();
    assert_eq!(text(&idle.cmd(&["PING"])), "PONG");
    let mut tx = proxy.client();
    assert_eq!(text(&tx.cmd(&["MULTI"])), "OK");
    assert_eq!(text(&tx.cmd(&["SET", "tx-key", "committed"])), "QUEUED");

    proxy.begin_shutdown();
    assert_closed(&mut idle, "idle client");
    // Closing now would silently drop the transaction: EXEC still works.
    assert_eq!(strings(&tx.cmd(&["EXEC"])), ["OK"]);
    assert_closed(&mut tx, "client after EXEC");
    assert_eq!(text(&redis.client().cmd(&["GET", "tx-key"])), "committed");
    wait_until("run to return", || proxy.is_stopped());
}

#[test]
fn graceful_shutdown_lets_a_half_sent_request_finish() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.addr);
    let mut idle = proxy.client();
    assert_eq!(text(&idle.cmd(&["PING"])), "PONG");
    let mut slow = proxy.client();
    let request = encode(&["SET", "half-key", "done"]);
    let (first, rest) = request.split_at(request.len() / 2);
    // A PING and half a SET in one small write: once the PONG is back, the
    // proxy has read the half request too.
    let mut write = encode(&["PING"]);
    write.extend_from_slice(first);
    slow.send(&write);
    assert_eq!(text(&slow.read_frame()), "PONG");

    proxy.begin_shutdown();
    assert_closed(&mut idle, "idle client");
    slow.send(rest);
    assert_eq!(text(&slow.read_frame()), "OK");
    assert_closed(&mut slow, "client after its request");
    assert_eq!(text(&redis.client().cmd(&["GET", "half-key"])), "done");
}

// ---------------------------------------------------------------- the binary

/// The binary as a child process, killed on drop if still running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("sentinel-proxy to exit", || {
            status = self.0.try_wait().expect("try_wait");
            status.is_some()
        });
        status.expect("exited")
    }
}

/// Starts the binary in front of `redis` and waits until it accepts,
/// probing its port without pausing (as an eager supervisor would). The
/// ports come from `free_port`, so another test's socket may take one
/// before the binary binds it: that start is tried again with new ports.
fn start_binary(redis: &Redis) -> (Running, SocketAddr, TempFile) {
    start_binary_with(redis, "")
}

/// Like [`start_binary`], with extra `[proxy]` settings.
fn start_binary_with(redis: &Redis, proxy_extra: &str) -> (Running, SocketAddr, TempFile) {
    for _attempt in 0..5 {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = config_text(redis.addr, &listen.to_string(), "")
            .replace("[proxy]\n", &format!("[proxy]\n{proxy_extra}"));
        let config = TempFile::new("sentinel-proxy-lifecycle", &text);
        let stderr = TempFile::new("sentinel-proxy-lifecycle-stderr", "");
        let child = proxy_binary()
            .arg("--config")
            .arg(&config.0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr.0).expect("create the stderr file"))
            .spawn()
            .expect("spawn sentinel-proxy");
        let mut running = Running(child);
        let deadline = std::time::Instant::now() + PATIENCE;
        while TcpStream::connect(listen).is_err() {
            if let Ok(Some(status)) = running.0.try_wait() {
                let said = std::fs::read_to_string(&stderr.0).unwrap_or_default();
                assert!(
                    said.contains("Address already in use"),
                    "sentinel-proxy exited early: {status}; stderr: {said}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sentinel-proxy never accepted"
            );
            std::thread::yield_now();
        }
        if running.0.try_wait().is_ok_and(|status| status.is_none()) {
            return (running, listen, config);
        }
    }
    panic!("sentinel-proxy found a port of its config taken in 5 attempts");
}

#[test]
fn binary_exits_zero_on_sigterm_after_closing_idle_clients() {
    let redis = Redis::start();
    let (mut proxy, addr, _config) = start_binary(&redis);
    let mut c = Client::connect(addr);
    assert_eq!(text(&c.cmd(&["SET", "k", "v"])), "OK");
    assert_eq!(
        text(&redis.client().cmd(&["GET", "k"])),
        "v",
        "really in front of our Redis"
    );

    proxy.sigterm();
    assert_closed(&mut c, "idle client");
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn binary_exits_zero_after_the_drain_timeout_with_a_stuck_blocked_client() {
    // BLPOP with no timeout never finishes: the 5s drain timeout ends it.
    let redis = Redis::start();
    let (mut proxy, addr, _config) = start_binary(&redis);
    let mut blocked = Client::connect(addr);
    blocked.send(&encode(&["BLPOP", "never", "0"]));
    wait_blocked(&redis, 1);

    proxy.sigterm();
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert_closed(&mut blocked, "blocked client");
}

/// SIGTERM is graceful from the moment the proxy accepts connections: a
/// supervisor that probes the port and then stops the proxy must not kill it.
#[test]
fn binary_sigterm_right_after_it_starts_accepting_is_graceful() {
    let redis = Redis::start();
    for attempt in 0..20 {
        let (mut proxy, _listen, _config) = start_binary(&redis);
        proxy.sigterm();
        let status = proxy.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: exit status {status}"
        );
    }
}

/// The id of the thread of process `pid` named `name`.
fn thread_named(pid: u32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list the proxy's threads")
        .filter_map(Result::ok)
        .map(|task| task.file_name().to_string_lossy().into_owned())
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
}

/// How many times a thread went to sleep (in epoll_wait, for a session thread).
fn voluntary_switches(pid: u32, tid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .expect("read the thread's status");
    counter(&status, "voluntary_ctxt_switches")
}

#[test]
fn binary_with_two_worker_threads_serves_sessions_on_the_second_thread() {
    let redis = Redis::start();
    let (mut proxy, addr, _config) = start_binary_with(&redis, "worker_threads = 2\n");
    let pid = proxy.0.id();
    // The port is bound before the session threads start.
    let mut worker = None;
    wait_until("a second session thread", || {
        worker = thread_named(pid, "sessions-1");
        worker.is_some()
    });
    let worker = worker.expect("found above");
    let before = voluntary_switches(pid, &worker);
    // Sessions are handed out in turn: clients 1 and 3 live on the second
    // thread, which sleeps between their one-at-a-time requests.
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    for round in 0..100 {
        for (i, c) in clients.iter_mut().enumerate() {
            let reply = c.cmd(&["SET", &format!("worker-key-{i}"), &round.to_string()]);
            assert_eq!(text(&reply), "OK", "client {i}, round {round}");
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(text(&c.cmd(&["GET", &format!("worker-key-{i}")])), "99");
    }
    let woke = voluntary_switches(pid, &worker) - before;
    assert!(
        woke >= 100,
        "the second session thread woke {woke} times for 200 requests of its two sessions"
    );
    proxy.sigterm();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_closed(c, &format!("client {i}"));
    }
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
