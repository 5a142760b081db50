use std::process::{Child, Command, Stdio};

use super::*;
use crate::route::{self, Route, RouteReceiver};

// ---------------------------------------------------------------------------
// A hand-written COMMAND reply

/// A RESP2 value, for writing replies by hand.
enum V {
    /// `+text`
    S(&'static str),
    /// `$len text`
    B(&'static str),
    I(i64),
    A(Vec<V>),
}

fn encode(v: &V, out: &mut Vec<u8>) {
    match v {
        V::S(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        V::B(s) => out.extend_from_slice(format!("${}\r\n{s}\r\n", s.len()).as_bytes()),
        V::I(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        V::A(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

fn bytes(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

fn statuses(list: &[&'static str]) -> V {
    V::A(list.iter().map(|s| V::S(s)).collect())
}

/// A Redis 7 entry: Redis 6's fields, then tips, key specs, subcommands.
fn entry7(name: &'static str, flags: &[&'static str], cats: &[&'static str], subs: Vec<V>) -> V {
    let mut fields = fields6(name, flags, cats);
    fields.extend([
        V::A(vec![]),
        // A key spec, to give the reply Redis 7's depth.
        V::A(vec![V::A(vec![
            V::B("flags"),
            V::A(vec![V::S("RO"), V::S("access")]),
            V::B("begin_search"),
            V::A(vec![
                V::B("type"),
                V::B("index"),
                V::B("spec"),
                V::A(vec![V::B("index"), V::I(1)]),
            ]),
        ])]),
        V::A(subs),
    ]);
    V::A(fields)
}

/// A Redis 6 entry: name, arity, flags, keys (3), categories.
fn entry6(name: &'static str, flags: &[&'static str], cats: &[&'static str]) -> V {
    V::A(fields6(name, flags, cats))
}

fn fields6(name: &'static str, flags: &[&'static str], cats: &[&'static str]) -> Vec<V> {
    vec![
        V::B(name),
        V::I(-2),
        statuses(flags),
        V::I(0),
        V::I(0),
        V::I(0),
        statuses(cats),
    ]
}

fn small_reply() -> Vec<u8> {
    bytes(&V::A(vec![
        entry7("get", &["readonly", "fast"], &["@read", "@string"], vec![]),
        entry7("set", &["write", "denyoom"], &["@write", "@string"], vec![]),
        entry7(
            "shutdown",
            &["admin", "noscript", "loading", "stale"],
            &["@admin"],
            vec![],
        ),
        entry7(
            "blpop",
            &["write", "noscript", "blocking"],
            &["@write", "@blocking"],
            vec![],
        ),
        entry7(
            "config",
            &[],
            &["@slow"],
            vec![
                entry7("config|get", &["admin", "noscript"], &["@admin"], vec![]),
                entry7("config|help", &["loading", "stale"], &["@slow"], vec![]),
            ],
        ),
        entry7(
            "command",
            &["loading", "stale"],
            &["@slow"],
            vec![entry7(
                "command|count",
                &["loading", "stale"],
                &["@slow"],
                vec![],
            )],
        ),
        entry7(
            "eval",
            &["noscript", "skip_monitor"],
            &["@slow", "@scripting"],
            vec![],
        ),
        entry7(
            "eval_ro",
            &["readonly", "noscript"],
            &["@slow", "@scripting"],
            vec![],
        ),
        entry7(
            "publish",
            &["pubsub", "loading", "stale", "fast"],
            &["@pubsub"],
            vec![],
        ),
        entry7("subscribe", &["pubsub", "noscript"], &["@pubsub"], vec![]),
        entry7(
            "exec",
            &["noscript", "loading", "stale"],
            &["@slow"],
            vec![],
        ),
        entry7("ping", &["fast"], &["@fast", "@connection"], vec![]),
    ]))
}

fn req(args: &[&str]) -> Vec<u8> {
    encode_command(args).to_vec()
}

#[test]
fn a_small_reply_classifies_each_kind() {
    let table = CommandTable::parse(&small_reply()).unwrap();
    assert_eq!(table.len(), 15);
    assert_eq!(table.rerun(&req(&["GET", "k"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["get", "k"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["PING"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["SET", "k", "v"])), Rerun::Write);
    assert_eq!(table.rerun(&req(&["SHUTDOWN"])), Rerun::Unsafe);
    // Blocking wins over write.
    assert_eq!(table.rerun(&req(&["BLPOP", "k", "0"])), Rerun::Unsafe);
    // Subcommands have their own flags.
    assert_eq!(table.rerun(&req(&["CONFIG", "help"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["Config", "GET", "x"])), Rerun::Unsafe);
    assert_eq!(table.rerun(&req(&["CONFIG", "nope"])), Rerun::Unsafe);
    // A container named alone uses its own flags.
    assert_eq!(table.rerun(&req(&["COMMAND"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["COMMAND", "COUNT"])), Rerun::Harmless);
    // What Redis 7 hides: scripting without readonly, PUBLISH, EXEC.
    assert_eq!(table.rerun(&req(&["EVAL", "return 1", "0"])), Rerun::Unsafe);
    assert_eq!(
        table.rerun(&req(&["EVAL_RO", "return 1", "0"])),
        Rerun::Harmless
    );
    assert_eq!(table.rerun(&req(&["PUBLISH", "c", "m"])), Rerun::Unsafe);
    assert_eq!(table.rerun(&req(&["SUBSCRIBE", "c"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["EXEC"])), Rerun::Unsafe);
    // Unknown commands.
    assert_eq!(table.rerun(&req(&["NOPE"])), Rerun::Unsafe);
    assert_eq!(table.rerun(&req(&["config|get"])), Rerun::Unsafe);
    assert_eq!(table.rerun(&req(&[&"g".repeat(300)])), Rerun::Unsafe);
}

#[test]
fn requests_that_are_not_resp_arrays_are_unsafe() {
    let table = CommandTable::parse(&small_reply()).unwrap();
    for bad in [
        &b"PING\r\n"[..],
        b"*0\r\n",
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        b"*2\r\n$3\r\nGET\r\n",
        b"*1\r\n:1\r\n",
        b"",
        b"garbage",
    ] {
        assert_eq!(table.rerun(bad), Rerun::Unsafe, "{}", bad.escape_ascii());
    }
}

#[test]
fn redis_6_entries_use_the_containers_flags() {
    let reply = bytes(&V::A(vec![
        entry6("client", &["admin", "noscript", "random"], &["@admin"]),
        entry6("object", &["readonly", "random"], &["@keyspace"]),
        entry6(
            "evalsha",
            &["noscript", "may_replicate", "movablekeys"],
            &["@scripting"],
        ),
        entry6("pfcount", &["readonly", "may_replicate"], &["@read"]),
        // Redis 5: no ACL categories either.
        V::A(vec![
            V::B("get"),
            V::I(2),
            statuses(&["readonly", "fast"]),
            V::I(1),
            V::I(1),
            V::I(1),
        ]),
    ]));
    let table = CommandTable::parse(&reply).unwrap();
    assert_eq!(table.len(), 5);
    assert_eq!(
        table.rerun(&req(&["CLIENT", "SETNAME", "x"])),
        Rerun::Unsafe
    );
    assert_eq!(
        table.rerun(&req(&["OBJECT", "ENCODING", "k"])),
        Rerun::Harmless
    );
    assert_eq!(table.rerun(&req(&["EVALSHA", "abc", "0"])), Rerun::Unsafe);
    // Readonly wins over may_replicate (PFCOUNT only refreshes its cache),
    // which keeps 6.x and 7.x (where the flag is hidden) in agreement.
    assert_eq!(table.rerun(&req(&["PFCOUNT", "k"])), Rerun::Harmless);
    assert_eq!(table.rerun(&req(&["GET", "k"])), Rerun::Harmless);
}

#[test]
fn bad_replies_are_reported() {
    let err = |bytes: &[u8]| CommandTable::parse(bytes).unwrap_err().to_string();
    assert_eq!(err(b"+OK\r\n"), "COMMAND reply is not an array");
    assert_eq!(
        err(b"-NOAUTH Authentication required.\r\n"),
        "COMMAND reply is an error: NOAUTH Authentication required."
    );
    assert_eq!(err(b"*0\r\n"), "COMMAND reply lists no commands");
    let full = small_reply();
    assert_eq!(
        err(full.get(..full.len() - 3).unwrap()),
        "COMMAND reply is incomplete"
    );
    let mut twice = full.clone();
    twice.extend_from_slice(b"+OK\r\n");
    assert_eq!(err(&twice), "COMMAND reply is followed by 5 more bytes");
    assert_eq!(
        err(b"*1\r\n:1\r\n"),
        "COMMAND reply entry 0: is not an array"
    );
    assert_eq!(
        err(b"*1\r\n*3\r\n$3\r\nget\r\n:2\r\n:0\r\n"),
        "COMMAND reply entry 0: flags are not an array"
    );
    assert_eq!(
        err(b"*1\r\n*3\r\n:1\r\n:2\r\n*0\r\n"),
        "COMMAND reply entry 0: has no name"
    );
    let bad_sub = bytes(&V::A(vec![entry7("config", &[], &[], vec![V::I(3)])]));
    assert_eq!(
        err(&bad_sub),
        "COMMAND reply entry 0 subcommand 0: is not an array"
    );
    // Nesting is refused by our scanner before redis-protocol recurses.
    let mut deep = b"*1\r\n".repeat(100_000);
    deep.extend_from_slice(b":1\r\n");
    assert!(
        err(&deep).contains("nesting deeper than 16"),
        "{}",
        err(&deep)
    );
    assert!(err(b"%1\r\n+a\r\n+b\r\n").contains("could not be decoded"));
}

#[test]
fn the_shared_table_starts_empty() {
    let shared = SharedTable::default();
    assert!(shared.get().is_none());
    shared.set(CommandTable::parse(&small_reply()).unwrap());
    assert_eq!(shared.get().map(|t| t.len()), Some(15));
}

// ---------------------------------------------------------------------------
// Against a real redis-server

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start(extra: &[&str]) -> Redis {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("no free loopback port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server (Redis 7.0 must be installed and on PATH): {e}")
                });
            let mut redis = Redis {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            for _ in 0..200 {
                if !matches!(redis.child.try_wait(), Ok(None)) {
                    break; // exited: most likely the port was taken meanwhile
                }
                if std::net::TcpStream::connect(redis.addr).is_ok() {
                    return redis;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        panic!("redis-server did not start listening");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn redis_7_flags_classify_everyday_commands() {
    let redis = Redis::start(&[]);
    let table = fetch(redis.addr, None, TIMEOUT).await.unwrap();
    assert!(table.len() > 200, "only {} entries", table.len());
    let check = |class: Rerun, requests: &[&[&str]]| {
        for args in requests {
            assert_eq!(table.rerun(&req(args)), class, "{args:?}");
        }
    };
    check(
        Rerun::Harmless,
        &[
            &["GET", "k"],
            &["MGET", "a", "b"],
            &["PING"],
            &["SELECT", "1"],
            &["AUTH", "pw"],
            &["CLIENT", "SETNAME", "x"],
            &["client", "setname", "x"],
            &["SUBSCRIBE", "c"],
            &["EVAL_RO", "return 1", "0"],
            &["PFCOUNT", "h"],
            &["HELLO", "3"],
            &["INFO"],
            &["COMMAND"],
            &["OBJECT", "ENCODING", "k"],
        ],
    );
    check(
        Rerun::Write,
        &[
            &["SET", "k", "v"],
            &["INCR", "k"],
            &["DEL", "k"],
            &["FLUSHALL"],
            &["XADD", "s", "*", "f", "v"],
            &["LPUSH", "l", "v"],
        ],
    );
    check(
        Rerun::Unsafe,
        &[
            &["EVAL", "return 1", "0"],
            &["EVALSHA", "abc", "0"],
            &["FCALL", "f", "0"],
            &["SCRIPT", "LOAD", "return 1"],
            &["FUNCTION", "LOAD", "x"],
            &["PUBLISH", "c", "m"],
            &["SPUBLISH", "c", "m"],
            &["BLPOP", "k", "0"],
            &["XREAD", "STREAMS", "s", "0"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
            &["CONFIG", "SET", "maxmemory", "0"],
            &["CONFIG", "GET", "maxmemory"],
            &["CLIENT", "KILL", "ID", "1"],
            &["CLIENT", "NOSUCH"],
            &["SHUTDOWN"],
            &["EXEC"],
            &["WAIT", "1", "0"],
            &["NOSUCHCOMMAND"],
        ],
    );
}

#[tokio::test]
async fn fetch_authenticates_when_asked() {
    let redis = Redis::start(&["--requirepass", "s3cret"]);
    let table = fetch(redis.addr, Some((None, "s3cret".into())), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(table.rerun(&req(&["GET", "k"])), Rerun::Harmless);
    let table = fetch(
        redis.addr,
        Some((Some("default".into()), "s3cret".into())),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(table.rerun(&req(&["SET", "k", "v"])), Rerun::Write);

    let e = fetch(redis.addr, None, TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{} answered COMMAND with an error: NOAUTH Authentication required.",
            redis.addr
        )
    );
    let e = fetch(redis.addr, Some((None, "wrong".into())), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("AUTH at {} failed: WRONGPASS", redis.addr)),
        "{e}"
    );
}

#[tokio::test]
async fn fetch_reports_unreachable_and_silent_servers() {
    let (_held, closed) = crate::test_support::refusing_addr();
    let e = fetch(closed, None, TIMEOUT).await.unwrap_err().to_string();
    assert!(e.starts_with(&format!("connect {closed}: ")), "{e}");
    assert!(e.contains("refused"), "{e}");

    // Accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let timeout = Duration::from_millis(300);
    let e = fetch(addr, None, timeout).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{addr} did not send the command table within {timeout:?}")
    );
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Captures the log lines of the test's thread.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts `keep_loaded` (no credentials) on `route`.
fn spawn_loader(
    route: RouteReceiver,
) -> (
    Arc<SharedTable>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let shared = Arc::new(SharedTable::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(keep_loaded(
        shared.clone(),
        route,
        None,
        TIMEOUT,
        shutdown.clone(),
    ));
    (shared, shutdown, task)
}

#[tokio::test]
async fn keep_loaded_retries_and_reloads_after_a_route_change() {
    let logs = Logs::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let (_held, dead) = crate::test_support::refusing_addr();
    let a = Redis::start(&[]);
    let b = Redis::start(&["--rename-command", "GET", ""]);
    let (tx, rx) = route::channel(Route {
        master: dead,
        config_epoch: 0,
    });
    let (shared, shutdown, task) = spawn_loader(rx);

    // The master is down: nothing loads, and the loader keeps trying.
    // It warns once, not once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(shared.get().is_none());
    let warnings = logs.text().matches("command table not loaded").count();
    assert_eq!(warnings, 1, "{}", logs.text());
    assert!(
        logs.text().contains(&format!("connect {dead}")),
        "{}",
        logs.text()
    );

    tx.send_replace(Route {
        master: a.addr,
        config_epoch: 1,
    });
    wait_for("the table from A", || shared.get().is_some()).await;
    let get = req(&["GET", "k"]);
    assert_eq!(shared.get().map(|t| t.rerun(&get)), Some(Rerun::Harmless));

    // B has no GET: its table replaces A's.
    tx.send_replace(Route {
        master: b.addr,
        config_epoch: 2,
    });
    wait_for("the table from B", || {
        shared.get().map(|t| t.rerun(&get)) == Some(Rerun::Unsafe)
    })
    .await;
    let table = shared.get().unwrap();
    assert!(table.len() > 200, "only {} entries", table.len());
    assert_eq!(
        logs.text().matches("command table loaded").count(),
        2,
        "{}",
        logs.text()
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("keep_loaded did not end on shutdown")
        .unwrap();
}

#[tokio::test]
async fn keep_loaded_outlives_its_route_sender_until_shutdown() {
    let a = Redis::start(&[]);
    let (tx, rx) = route::channel(Route {
        master: a.addr,
        config_epoch: 0,
    });
    drop(tx);
    let (shared, shutdown, task) = spawn_loader(rx);
    wait_for("the table", || shared.get().is_some()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("keep_loaded did not end on shutdown")
        .unwrap();
}
