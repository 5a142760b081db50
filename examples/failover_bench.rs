//! Failover as a client sees it: sentinel-proxy voters vs real Redis Sentinels
//! with a sentinel-aware client, master killed with `kill -9`.
//!
//! Run (one command, from the repository root):
//!
//! ```text
//! cargo run --release --example failover_bench
//! cargo run --release --example failover_bench -- --rounds 5 --down-after-ms 1000
//! ```
//!
//! Flags (all optional):
//!
//! * `--rounds N` (default 3): rounds per system, interleaved (proxies, Sentinels,
//!   Sentinels, proxies, ...); figures are medians with min-max.
//! * `--down-after-ms MS` (default 1000): `down_after` / `down-after-milliseconds`.
//! * `--failover-timeout-ms MS` (default 10000): `failover_timeout` / `failover-timeout`.
//! * `--before-ms MS` (default 1000): how long the writer runs before the kill.
//! * `--after-ms MS` (default 1000): how long it keeps writing after its first write
//!   acknowledged by the new master.
//! * `--give-up-s S` (default 30): a round with no write on a new master this long after
//!   the kill is reported as failed.
//! * `--build`: rebuild `target/release/sentinel-proxy` even if it looks current
//!   (it is built when missing or older than a file under `src/`; if that build fails
//!   and a binary exists, the existing one is used, with a warning).
//! * `--bin PATH`: use this sentinel-proxy binary instead (no build).
//! * `--keep`: keep the temporary directory (configurations and logs) and print its path.
//!
//! One round of one system, all on 127.0.0.1 and on free ports, in a fresh temporary
//! directory:
//!
//! 1. a redis-server master and two replicas (`--replicaof`), no persistence; waits until
//!    both replicas report `master_link_status:up`;
//! 2. three voters: either sentinel-proxy processes (`role = "voter"`, quorum 2,
//!    `down_after`, `failover_timeout`, each with its own config and state file, logging
//!    JSON at `RUST_LOG=info`) or three `redis-server sentinel.conf --sentinel` with the same
//!    settings; waits until each answers `SENTINEL master mymaster` with `num-slaves` 2 and
//!    `num-other-sentinels` 2;
//! 3. one writer thread doing `SET key:<n> <n>`, a distinct key about every 1 ms:
//!    * proxies: connects to proxy 1's data port; on any error reply, I/O error or closed
//!      connection it reconnects to the same port and retries the same key;
//!    * Sentinels (like redis-py's Sentinel client): asks the Sentinels in order
//!      `SENTINEL get-master-addr-by-name mymaster`, connects there; on an error, a closed
//!      connection or a `-READONLY` reply it asks again, reconnects and retries the key.
//!
//!    After the first acknowledged write on every new connection it asks `CONFIG GET port`
//!    on the same connection (through a proxy that reaches the same upstream), so every
//!    acknowledged write is attributed to the instance that acknowledged it;
//! 4. `kill -9` of the master by pid; the writer keeps going until a write is acknowledged
//!    by another instance, then for `--after-ms` more;
//! 5. checks which instance is master (`ROLE` on the survivors, and every voter's
//!    `get-master-addr-by-name`), reads every acknowledged key back from it (`MGET`) and
//!    counts the missing ones; extracts the Sentinel events (`+sdown`, `+odown`,
//!    `+elected-leader`, `+promoted-slave`, `+switch-master`, and the proxies'
//!    `route changed`) from the voters' logs, relative to the kill.
//!
//! Reported per system (stdout, Markdown; progress on stderr): the longest gap between two
//! acknowledged writes, kill -> first acknowledged write (by anyone, and by the new
//! master), client-visible errors, reconnects (connection attempts after the first one),
//! acknowledged writes missing on the final master, and a timeline of the failover.
//!
//! Every child is killed by pid when the driver ends, also on panic (Drop guards), and
//! gets SIGKILL from the kernel if the driver itself dies (PR_SET_PDEATHSIG).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Guard, STARTUP, TempDir, addr, free_port, load_average, median, start_on_free_port, version,
};

/// Whether a server on `port` answers PING.
fn answers(port: u16) -> bool {
    Conn::open(port).and_then(|mut c| c.cmd(&["PING"])).is_ok()
}

/// How long voters may take to discover both replicas and both peers.
const DISCOVERY: Duration = Duration::from_secs(30);
/// Pause after a failed write attempt, and the write period.
const PACE: Duration = Duration::from_millis(1);
/// Socket timeouts of the writer (a hung request counts as an error).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const MASTER_NAME: &str = "mymaster";

// ---------------------------------------------------------------- options

struct Options {
    rounds: usize,
    down_after_ms: u64,
    failover_timeout_ms: u64,
    before_ms: u64,
    after_ms: u64,
    give_up_s: u64,
    build: bool,
    keep: bool,
    bin: Option<PathBuf>,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            rounds: 3,
            down_after_ms: 1000,
            failover_timeout_ms: 10_000,
            before_ms: 1000,
            after_ms: 1000,
            give_up_s: 30,
            build: false,
            keep: false,
            bin: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--help" | "-h" => {
                    eprintln!(
                        "usage: cargo run --release --example failover_bench -- [--rounds N] \
                         [--down-after-ms MS] [--failover-timeout-ms MS] [--before-ms MS] \
                         [--after-ms MS] [--give-up-s S] [--build] [--bin PATH] [--keep]"
                    );
                    std::process::exit(0);
                }
                "--build" => {
                    o.build = true;
                    continue;
                }
                "--keep" => {
                    o.keep = true;
                    continue;
                }
                _ => {}
            }
            let value = args
                .next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")));
            let number = |v: &str| -> u64 {
                v.parse()
                    .unwrap_or_else(|_| die(&format!("{flag}: not a number: {v}")))
            };
            match flag.as_str() {
                "--rounds" => o.rounds = number(&value).max(1) as usize,
                "--down-after-ms" => o.down_after_ms = number(&value).max(1),
                "--failover-timeout-ms" => o.failover_timeout_ms = number(&value).max(1),
                "--before-ms" => o.before_ms = number(&value),
                "--after-ms" => o.after_ms = number(&value),
                "--give-up-s" => o.give_up_s = number(&value).max(1),
                "--bin" => o.bin = Some(PathBuf::from(value)),
                _ => die(&format!("unknown flag {flag} (try --help)")),
            }
        }
        o
    }
}

fn die(message: &str) -> ! {
    eprintln!("failover_bench: {message}");
    std::process::exit(2);
}

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("failover_bench: {}", format_args!($($arg)*)) };
}

// ---------------------------------------------------------------- processes

// ---------------------------------------------------------------- a small RESP client

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// A flat RESP2 map (`SENTINEL master`, `CONFIG GET`) as pairs.
    fn pairs(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        if let Reply::Array(Some(items)) = self {
            for kv in items.chunks(2) {
                if let [k, v] = kv
                    && let (Some(k), Some(v)) = (k.text(), v.text())
                {
                    map.insert(k, v);
                }
            }
        }
        map
    }
}

/// Parses one reply from `buf`; `Ok(None)` if incomplete.
fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..end]).map_err(|_| bad("non-UTF-8 header"))?;
    let next = end + 2;
    let int = |s: &str| s.parse::<i64>().map_err(|_| bad("bad integer"));
    match buf.first() {
        Some(b'+') => Ok(Some((Reply::Simple(line.to_string()), next))),
        Some(b'-') => Ok(Some((Reply::Error(line.to_string()), next))),
        Some(b':') => Ok(Some((Reply::Int(int(line)?), next))),
        Some(b'$') => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let len = len as usize;
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            Ok(Some((
                Reply::Bulk(Some(buf[next..next + len].to_vec())),
                next + len + 2,
            )))
        }
        Some(b'*') => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = next;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err(bad("unknown reply type")),
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> io::Result<Conn> {
        Conn::open_with(port, CONNECT_TIMEOUT, IO_TIMEOUT)
    }

    fn open_with(port: u16, connect: Duration, io_timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr(port), connect)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((reply, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One command, one reply (error replies are `Ok(Reply::Error)`).
    fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.stream.write_all(&encode(args))?;
        self.read_reply()
    }
}

/// One command on a fresh connection.
fn query(port: u16, args: &[&str]) -> io::Result<Reply> {
    Conn::open(port)?.cmd(args)
}

fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let text = query(port, &["INFO", section]).ok()?.text()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- topology

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Proxy,
    Sentinel,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Proxy => "sentinel-proxy voters, client through proxy 1",
            System::Sentinel => "Redis Sentinel + sentinel-aware client (redis-py style)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            System::Proxy => "proxy",
            System::Sentinel => "sentinel",
        }
    }
}

struct Redis {
    guard: Guard,
    port: u16,
}

fn start_redis(dir: &Path, name: &str, replica_of: Option<u16>) -> Redis {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).expect("cannot create a redis directory");
    let make = |port: u16| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "notice"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--dir", &data.display().to_string()]);
        if let Some(master) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        cmd
    };
    let (guard, port) = start_on_free_port(name, make, dir.join(format!("{name}.log")), answers);
    Redis { guard, port }
}

/// A voter (sentinel-proxy or Sentinel).
struct Voter {
    guard: Guard,
    /// Sentinel-protocol port.
    sentinel_port: u16,
    /// Data port (proxies only).
    data_port: Option<u16>,
}

fn start_proxy_voter(bin: &Path, dir: &Path, i: usize, master: u16, o: &Options) -> Voter {
    let config = dir.join(format!("proxy{i}.toml"));
    let mut sentinel_port = 0;
    let make = |data: u16| {
        sentinel_port = free_port();
        let text = format!(
            r#"[sentinel]
role = "voter"
listen = "127.0.0.1:{sentinel_port}"
state_file = "{state}"

[admin]
listen = "127.0.0.1:{admin}"

[proxy]
drain_timeout = "1s"

[[service]]
name = "{MASTER_NAME}"
listen = "127.0.0.1:{data}"
master = "127.0.0.1:{master}"
quorum = 2
down_after = "{down_after}ms"
failover_timeout = "{failover_timeout}ms"
"#,
            admin = free_port(),
            state = dir.join(format!("proxy{i}.state")).display(),
            down_after = o.down_after_ms,
            failover_timeout = o.failover_timeout_ms,
        );
        std::fs::write(&config, text).expect("cannot write a proxy configuration");
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    };
    let (guard, data) = start_on_free_port(
        &format!("proxy{i}"),
        make,
        dir.join(format!("proxy{i}.log")),
        answers,
    );
    Voter {
        guard,
        sentinel_port,
        data_port: Some(data),
    }
}

fn start_sentinel_voter(dir: &Path, i: usize, master: u16, o: &Options) -> Voter {
    let config = dir.join(format!("sentinel{i}.conf"));
    let make = |port: u16| {
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile \"\"\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {down_after}\n\
             sentinel failover-timeout {MASTER_NAME} {failover_timeout}\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display(),
            down_after = o.down_after_ms,
            failover_timeout = o.failover_timeout_ms,
        );
        std::fs::write(&config, text).expect("cannot write a sentinel configuration");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&config).arg("--sentinel");
        cmd
    };
    let (guard, port) = start_on_free_port(
        &format!("sentinel{i}"),
        make,
        dir.join(format!("sentinel{i}.log")),
        answers,
    );
    Voter {
        guard,
        sentinel_port: port,
        data_port: None,
    }
}

fn master_addr_by_name(sentinel_port: u16) -> Option<u16> {
    match query(
        sentinel_port,
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    ) {
        Ok(Reply::Array(Some(items))) => items.get(1)?.text()?.parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------- the writer

#[derive(Clone, Copy)]
struct Ack {
    n: u64,
    at: Instant,
    /// Port of the instance that acknowledged it (0 = unknown).
    port: u16,
}

#[derive(Default)]
struct WriterResult {
    acks: Vec<Ack>,
    errors: u64,
    reconnects: u64,
    readonly: u64,
    /// Error kinds seen, with counts (for the per-round detail).
    kinds: BTreeMap<String, u64>,
}

/// What the main thread watches while the writer runs.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Port of the instance behind the writer's current connection (0 = unknown).
    last_ack_port: AtomicU32,
    acks: AtomicU64,
}

enum Target {
    /// Connect to this proxy data port; reconnect to it on errors.
    Proxy(u16),
    /// Ask these Sentinels for the master, in order, like redis-py.
    Sentinels(Vec<u16>),
}

fn error_kind(e: &str) -> String {
    let e = e.trim();
    // Keep the error code and a little context, without ports or pids.
    let kind: String = e
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect();
    if e.contains("is unreachable") {
        "ERR sentinel-proxy: master unreachable".into()
    } else {
        kind
    }
}

fn run_writer(target: Target, shared: Arc<Shared>) -> WriterResult {
    let mut r = WriterResult::default();
    let mut conn: Option<(Conn, u16)> = None;
    let mut opened = 0u64;
    let mut n = 0u64;
    let mut next_write = Instant::now();
    let fail = |r: &mut WriterResult, kind: String| {
        r.errors += 1;
        *r.kinds.entry(kind).or_default() += 1;
    };
    while !shared.stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            // Where to connect.
            let port = match &target {
                Target::Proxy(p) => Some(*p),
                Target::Sentinels(sentinels) => sentinels.iter().find_map(|s| {
                    Conn::open_with(*s, Duration::from_millis(100), Duration::from_millis(500))
                        .ok()
                        .and_then(|mut c| {
                            match c
                                .cmd(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
                                .ok()?
                            {
                                Reply::Array(Some(items)) => items.get(1)?.text()?.parse().ok(),
                                _ => None,
                            }
                        })
                }),
            };
            let Some(port) = port else {
                fail(&mut r, "no Sentinel answered".into());
                std::thread::sleep(PACE);
                continue;
            };
            if opened > 0 {
                r.reconnects += 1;
            }
            opened += 1;
            match Conn::open(port) {
                Ok(c) => {
                    // Through a proxy the acknowledging instance is learnt after the
                    // first write; a direct connection is to `port` itself.
                    let known = if matches!(target, Target::Proxy(_)) {
                        0
                    } else {
                        port
                    };
                    conn = Some((c, known));
                }
                Err(e) => {
                    fail(&mut r, format!("connect: {}", e.kind()));
                    std::thread::sleep(PACE);
                    continue;
                }
            }
        }
        let Some((c, port)) = conn.as_mut() else {
            continue;
        };
        let key = format!("key:{n}");
        let value = n.to_string();
        match c.cmd(&["SET", &key, &value]) {
            Ok(Reply::Simple(s)) if s == "OK" => {
                let at = Instant::now();
                if *port == 0 {
                    // Which instance did that? Same client connection, same upstream.
                    if let Ok(reply) = c.cmd(&["CONFIG", "GET", "port"]) {
                        *port = reply
                            .pairs()
                            .get("port")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0);
                    }
                }
                r.acks.push(Ack { n, at, port: *port });
                shared
                    .last_ack_port
                    .store(u32::from(*port), Ordering::Relaxed);
                shared.acks.fetch_add(1, Ordering::Relaxed);
                n += 1;
                next_write += PACE;
                let now = Instant::now();
                if next_write > now {
                    std::thread::sleep(next_write - now);
                } else {
                    next_write = now;
                }
            }
            Ok(reply) => {
                let text = match &reply {
                    Reply::Error(e) => e.clone(),
                    other => format!("unexpected reply {other:?}"),
                };
                if text.starts_with("READONLY") {
                    r.readonly += 1;
                }
                fail(&mut r, error_kind(&text));
                conn = None;
                std::thread::sleep(PACE);
                next_write = Instant::now();
            }
            Err(e) => {
                fail(&mut r, format!("io: {}", e.kind()));
                conn = None;
                std::thread::sleep(PACE);
                next_write = Instant::now();
            }
        }
    }
    r
}

// ---------------------------------------------------------------- event logs

/// Seconds since midnight UTC of a wall-clock instant.
fn utc_seconds_of_day(t: SystemTime) -> f64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs() % 86_400) as f64 + f64::from(since.subsec_nanos()) / 1e9
}

/// The local time zone's offset from UTC in seconds (Sentinel logs local time).
fn local_utc_offset() -> i64 {
    // SAFETY: plain libc calls on local structs.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    }
}

/// `HH:MM:SS.fff...` to seconds.
fn parse_clock(s: &str) -> Option<f64> {
    let mut parts = s.splitn(3, ':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// (seconds of day UTC, event name, rest of the line) from one log line.
fn parse_log_line(system: System, line: &str) -> Option<(f64, String, String)> {
    match system {
        System::Proxy => {
            // {"timestamp":"2026-11-27T15:56:53.123456Z","level":"INFO","fields":{"message":"...","event":"+sdown"},...}
            let ts = line.split("\"timestamp\":\"").nth(1)?.split('"').next()?;
            let clock = ts.split('T').nth(1)?.trim_end_matches('Z');
            let t = parse_clock(clock)?;
            let message = line
                .split("\"message\":\"")
                .nth(1)
                .and_then(|m| m.split('"').next())
                .unwrap_or("")
                .to_string();
            if let Some(event) = line
                .split("\"event\":\"")
                .nth(1)
                .and_then(|e| e.split('"').next())
            {
                return Some((t, event.to_string(), message));
            }
            if message == "route changed" {
                let to = line
                    .split("\"master\":\"")
                    .nth(1)
                    .and_then(|e| e.split('"').next())
                    .unwrap_or("")
                    .to_string();
                return Some((t, "route changed".into(), to));
            }
            None
        }
        System::Sentinel => {
            // 12345:X 27 Nov 2026 15:56:53.123 # +sdown master mymaster 127.0.0.1 6379
            let mut words = line.split_whitespace();
            let _pid_role = words.next()?;
            let (_d, _mon, _y) = (words.next()?, words.next()?, words.next()?);
            let t = parse_clock(words.next()?)? - local_utc_offset() as f64;
            let _level = words.next()?;
            let event = words.next()?;
            if !event.starts_with(['+', '-']) {
                return None;
            }
            let rest: Vec<&str> = words.collect();
            Some((t.rem_euclid(86_400.0), event.to_string(), rest.join(" ")))
        }
    }
}

/// The timeline rows, in failover order (labels; see `timeline` for the events).
const TIMELINE: [&str; 10] = [
    "+sdown (master)",
    "+odown",
    "+try-failover",
    "+elected-leader",
    "+selected-slave",
    "+failover-state-wait-promotion (SLAVEOF NO ONE sent)",
    "+promoted-slave (INFO shows role:master)",
    "+switch-master (first voter)",
    "voter 1 switched (route changed / +switch-master)",
    "first write acknowledged by the new master",
];

/// Milliseconds after the kill of each timeline row (`None` = not seen).
fn timeline(system: System, voters: &[Voter], kill_wall: SystemTime) -> Vec<Option<f64>> {
    let kill = utc_seconds_of_day(kill_wall);
    let mut rows: Vec<Option<f64>> = vec![None; TIMELINE.len()];
    let mut first = |i: usize, ms: f64| {
        let slot = &mut rows[i];
        if slot.is_none_or(|v| ms < v) {
            *slot = Some(ms);
        }
    };
    for (v, voter) in voters.iter().enumerate() {
        for line in voter.guard.log_text().lines() {
            let Some((t, event, text)) = parse_log_line(system, line) else {
                continue;
            };
            let mut ms = (t - kill) * 1000.0;
            if ms < -43_200_000.0 {
                ms += 86_400_000.0;
            }
            if ms < -50.0 {
                continue; // before this kill (setup events)
            }
            let row = match event.as_str() {
                "+sdown" if text.starts_with("master") => Some(0),
                "+odown" => Some(1),
                "+try-failover" => Some(2),
                "+elected-leader" => Some(3),
                "+selected-slave" => Some(4),
                "+failover-state-wait-promotion" => Some(5),
                "+promoted-slave" => Some(6),
                "+switch-master" => Some(7),
                _ => None,
            };
            if let Some(row) = row {
                first(row, ms);
            }
            let switched = match system {
                System::Proxy => event == "route changed",
                System::Sentinel => event == "+switch-master" || event == "+promoted-slave",
            };
            if v == 0 && switched {
                first(8, ms);
            }
        }
    }
    rows
}

// ---------------------------------------------------------------- one round

struct RoundResult {
    system: System,
    ok: bool,
    note: String,
    longest_gap_ms: f64,
    kill_to_first_ack_ms: Option<f64>,
    kill_to_new_master_ack_ms: Option<f64>,
    errors: u64,
    reconnects: u64,
    readonly: u64,
    acked: usize,
    lost: usize,
    lost_after_kill: usize,
    acked_by_old_after_kill: usize,
    unattributed_after_kill: usize,
    kinds: BTreeMap<String, u64>,
    timeline: Vec<Option<f64>>,
}

fn run_round(system: System, round: usize, bin: &Path, base: &Path, o: &Options) -> RoundResult {
    let dir = base.join(format!("{}-{round}", system.short()));
    std::fs::create_dir_all(&dir).expect("cannot create a round directory");

    // Redis: one master, two replicas, in sync.
    let mut master = start_redis(&dir, "master", None);
    let replicas = [
        start_redis(&dir, "replica1", Some(master.port)),
        start_redis(&dir, "replica2", Some(master.port)),
    ];
    for r in &replicas {
        wait_for("replicas in sync", STARTUP, || {
            info_field(r.port, "replication", "master_link_status").as_deref() == Some("up")
        });
    }

    // Voters.
    let voters: Vec<Voter> = (1..=3)
        .map(|i| match system {
            System::Proxy => start_proxy_voter(bin, &dir, i, master.port, o),
            System::Sentinel => start_sentinel_voter(&dir, i, master.port, o),
        })
        .collect();
    let discovery_started = Instant::now();
    for v in &voters {
        wait_for(
            "every voter to know both replicas and both peers",
            DISCOVERY,
            || {
                let m = query(v.sentinel_port, &["SENTINEL", "master", MASTER_NAME])
                    .map(|r| r.pairs())
                    .unwrap_or_default();
                m.get("num-slaves").map(String::as_str) == Some("2")
                    && m.get("num-other-sentinels").map(String::as_str) == Some("2")
            },
        );
    }
    progress!(
        "{} round {round}: master :{} (pid {}), replicas :{} :{}, voters {} ready after {:.1?}",
        system.short(),
        master.port,
        master.guard.pid(),
        replicas[0].port,
        replicas[1].port,
        voters
            .iter()
            .map(|v| match v.data_port {
                Some(d) => format!(":{} (data :{d})", v.sentinel_port),
                None => format!(":{}", v.sentinel_port),
            })
            .collect::<Vec<_>>()
            .join(" "),
        discovery_started.elapsed()
    );

    // Writer.
    let shared = Arc::new(Shared::default());
    let target = match system {
        System::Proxy => Target::Proxy(voters[0].data_port.expect("proxy data port")),
        System::Sentinel => Target::Sentinels(voters.iter().map(|v| v.sentinel_port).collect()),
    };
    let writer = {
        let shared = shared.clone();
        std::thread::spawn(move || run_writer(target, shared))
    };
    std::thread::sleep(Duration::from_millis(o.before_ms));
    assert!(
        shared.acks.load(Ordering::Relaxed) > 0,
        "{} round {round}: no write acknowledged before the kill",
        system.short()
    );

    // kill -9 the master.
    let old_port = u32::from(master.port);
    let kill_wall = SystemTime::now();
    let kill_at = Instant::now();
    master.guard.kill();
    let give_up = kill_at + Duration::from_secs(o.give_up_s);
    let mut ok = true;
    loop {
        let p = shared.last_ack_port.load(Ordering::Relaxed);
        if p != 0 && p != old_port {
            break;
        }
        if Instant::now() > give_up {
            ok = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if ok {
        std::thread::sleep(Duration::from_millis(o.after_ms));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let w = writer.join().expect("the writer panicked");

    // Which instance is master now?
    let roles: Vec<(u16, String)> = replicas
        .iter()
        .map(|r| {
            let role = match query(r.port, &["ROLE"]) {
                Ok(Reply::Array(Some(items))) => {
                    items.first().and_then(Reply::text).unwrap_or_default()
                }
                _ => "?".into(),
            };
            (r.port, role)
        })
        .collect();
    let masters: Vec<u16> = roles
        .iter()
        .filter(|(_, role)| role == "master")
        .map(|(p, _)| *p)
        .collect();
    let voter_views: Vec<Option<u16>> = voters
        .iter()
        .map(|v| master_addr_by_name(v.sentinel_port))
        .collect();
    let mut note = String::new();
    let final_master = match masters.as_slice() {
        [one] => Some(*one),
        _ => {
            ok = false;
            let _ = write!(note, "masters among the replicas: {masters:?}; ");
            None
        }
    };
    if let Some(m) = final_master
        && voter_views.iter().any(|v| *v != Some(m))
    {
        let _ = write!(note, "voters name {voter_views:?}, ROLE says :{m}; ");
    }

    // Acknowledged writes missing on the final master.
    let mut lost = 0;
    let mut lost_after_kill = 0;
    if let Some(m) = final_master {
        let mut c = Conn::open(m).expect("cannot connect to the final master");
        for chunk in w.acks.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|a| format!("key:{}", a.n)).collect();
            let mut args = vec!["MGET"];
            args.extend(keys.iter().map(String::as_str));
            let Reply::Array(Some(values)) = c.cmd(&args).expect("MGET failed") else {
                panic!("MGET: not an array");
            };
            for (a, v) in chunk.iter().zip(values) {
                let want = a.n.to_string();
                if v != Reply::Bulk(Some(want.into_bytes())) {
                    lost += 1;
                    if a.at > kill_at {
                        lost_after_kill += 1;
                    }
                }
            }
        }
    }

    // Gaps and firsts.
    let mut longest_gap = Duration::ZERO;
    for pair in w.acks.windows(2) {
        longest_gap = longest_gap.max(pair[1].at - pair[0].at);
    }
    if !ok && let Some(last) = w.acks.last() {
        longest_gap = longest_gap.max(Instant::now() - last.at);
    }
    let after_kill: Vec<&Ack> = w.acks.iter().filter(|a| a.at > kill_at).collect();
    let ms = |a: &Ack| (a.at - kill_at).as_secs_f64() * 1000.0;
    let kill_to_first_ack_ms = after_kill.first().map(|a| ms(a));
    let kill_to_new_master_ack_ms = after_kill
        .iter()
        .find(|a| a.port != 0 && u32::from(a.port) != old_port)
        .map(|a| ms(a));
    let acked_by_old_after_kill = after_kill
        .iter()
        .filter(|a| u32::from(a.port) == old_port)
        .count();
    let unattributed_after_kill = after_kill.iter().filter(|a| a.port == 0).count();
    if let Some(m) = final_master
        && let Some(a) = after_kill.iter().find(|a| a.port != 0 && a.port != m)
    {
        let _ = write!(
            note,
            "write {} after the kill acknowledged by :{} (final master :{m}); ",
            a.n, a.port
        );
    }

    let mut timeline = timeline(system, &voters, kill_wall);
    if let Some(last) = timeline.last_mut() {
        *last = kill_to_new_master_ack_ms;
    }
    if !ok {
        for v in &voters {
            let log = v.guard.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            progress!(
                "{} log tail:\n{}",
                v.guard.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    let result = RoundResult {
        system,
        ok,
        note,
        longest_gap_ms: longest_gap.as_secs_f64() * 1000.0,
        kill_to_first_ack_ms,
        kill_to_new_master_ack_ms,
        errors: w.errors,
        reconnects: w.reconnects,
        readonly: w.readonly,
        acked: w.acks.len(),
        lost,
        lost_after_kill,
        acked_by_old_after_kill,
        unattributed_after_kill,
        kinds: w.kinds,
        timeline,
    };
    progress!(
        "{} round {round}: {} gap {:.0} ms, kill->first ack {} ms, kill->ack by new master :{} {} ms, \
         errors {}, reconnects {}, acked {}, lost {} ({} after the kill){}",
        system.short(),
        if result.ok { "ok" } else { "FAILED" },
        result.longest_gap_ms,
        opt_ms(result.kill_to_first_ack_ms),
        final_master.map_or("?".into(), |p| p.to_string()),
        opt_ms(result.kill_to_new_master_ack_ms),
        result.errors,
        result.reconnects,
        result.acked,
        result.lost,
        result.lost_after_kill,
        if result.note.is_empty() {
            String::new()
        } else {
            format!("; {}", result.note)
        }
    );
    let line: Vec<String> = TIMELINE
        .iter()
        .zip(&result.timeline)
        .map(|(label, v)| {
            format!(
                "{} {}",
                label.split(' ').next().unwrap_or(label),
                opt_ms(*v)
            )
        })
        .collect();
    progress!("  timeline (ms after kill): {}", line.join(", "));

    drop(voters);
    drop(replicas);
    drop(master);
    result
}

// ---------------------------------------------------------------- statistics

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// `median (min-max)` with a unit scale and precision.
fn summary(v: &[f64], scale: f64, digits: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min) * scale;
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max) * scale;
    let med = median(v.to_vec()) * scale;
    if v.len() == 1 {
        format!("{med:.digits$}")
    } else {
        format!("{med:.digits$} ({lo:.digits$}-{hi:.digits$})")
    }
}

// ---------------------------------------------------------------- binary

/// The release binary, built when missing, older than `src/`, or asked for.
fn proxy_binary(force: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // target/<profile>/examples/failover_bench -> target
    let exe = std::env::current_exe().expect("no current executable");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("sentinel-proxy");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest_source = newest_mtime(&root.join("src"));
    let stale = match (built, newest_source) {
        (None, _) => true,
        (Some(b), Some(s)) => s > b,
        (Some(_), None) => false,
    };
    if force || stale {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        progress!("cargo build --release --bin sentinel-proxy");
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "sentinel-proxy"])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cannot run cargo");
        if !status.success() {
            assert!(!force && built.is_some(), "cargo build --release failed");
            progress!(
                "warning: cargo build --release failed (is someone editing src/?); using the existing {}",
                bin.display()
            );
        }
    }
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

// ---------------------------------------------------------------- main

fn main() {
    let o = Options::parse();
    if cfg!(debug_assertions) {
        progress!(
            "note: the driver is a debug build; use `cargo run --release --example failover_bench`"
        );
    }
    let bin = match &o.bin {
        Some(bin) => bin.clone(),
        None => proxy_binary(o.build),
    };
    progress!("using {}", bin.display());
    let started = Instant::now();
    let load_start = load_average();
    let base = TempDir::new("sentinel-proxy-failover-bench", o.keep);

    let mut results: Vec<RoundResult> = Vec::new();
    for round in 1..=o.rounds {
        // Interleaved, the starting system alternating from round to round.
        let order = if round % 2 == 1 {
            [System::Proxy, System::Sentinel]
        } else {
            [System::Sentinel, System::Proxy]
        };
        for system in order {
            results.push(run_round(system, round, &bin, &base.path, &o));
        }
    }
    let load_end = load_average();

    // ------------------------------------------------------------ report
    let of = |s: System| results.iter().filter(move |r| r.system == s);
    let gap_median = |s: System| median(of(s).map(|r| r.longest_gap_ms).collect());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Failover as the client sees it: kill -9 of the master\n\n\
         {}; 1 master + 2 replicas, 3 voters, quorum 2, down-after {} ms, failover-timeout {} ms; \
         one writer, `SET key:<n> <n>` about every 1 ms, retrying the same key on any error; \
         {} rounds per system, interleaved; median (min-max). {} CPUs; load average {} at start, \
         {} at end. sentinel-proxy binary: `{}`.\n",
        version("redis-server", "--version")
            .split(" sha=")
            .next()
            .unwrap_or(""),
        o.down_after_ms,
        o.failover_timeout_ms,
        o.rounds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load_start,
        load_end,
        bin.display(),
    );
    let _ = writeln!(
        out,
        "| system | rounds (ok) | longest gap without an acknowledged write, s | kill -> first ack by the new master, s | client errors | reconnects | acknowledged writes lost | gap ratio proxy/baseline |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let proxy_gap = gap_median(System::Proxy);
    let base_gap = gap_median(System::Sentinel);
    for s in [System::Proxy, System::Sentinel] {
        let rs: Vec<&RoundResult> = of(s).collect();
        let f = |g: &dyn Fn(&RoundResult) -> f64| rs.iter().map(|r| g(r)).collect::<Vec<f64>>();
        let ratio = match s {
            System::Proxy => format!("{:.2}", proxy_gap / base_gap),
            System::Sentinel => "1.00".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
            s.label(),
            rs.len(),
            rs.iter().filter(|r| r.ok).count(),
            summary(&f(&|r| r.longest_gap_ms), 1e-3, 2),
            summary(
                &rs.iter()
                    .filter_map(|r| r.kill_to_new_master_ack_ms)
                    .collect::<Vec<_>>(),
                1e-3,
                2
            ),
            summary(&f(&|r| r.errors as f64), 1.0, 0),
            summary(&f(&|r| r.reconnects as f64), 1.0, 0),
            summary(&f(&|r| r.lost as f64), 1.0, 0),
            ratio,
        );
    }
    let _ = writeln!(
        out,
        "\nTarget: with down-after 1 s, writes flow again through the proxies within 1.5 s of the kill \
         (real Sentinels with a sentinel-aware client: ~2.2-2.3 s on this machine). \
         Median gap: proxies {:.2} s, Sentinels {:.2} s.\n",
        proxy_gap / 1000.0,
        base_gap / 1000.0
    );

    let _ = writeln!(
        out,
        "Timeline, ms after the kill (earliest voter unless said otherwise; median (min-max)):\n\n\
         | event | sentinel-proxy voters | Redis Sentinels |\n|---|---|---|"
    );
    for (i, label) in TIMELINE.iter().enumerate() {
        let col = |s: System| {
            let v: Vec<f64> = of(s).filter_map(|r| r.timeline[i]).collect();
            let seen = v.len();
            let total = of(s).count();
            let mut text = summary(&v, 1.0, 0);
            if seen < total {
                let _ = write!(text, " [{seen}/{total} rounds]");
            }
            text
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} |",
            col(System::Proxy),
            col(System::Sentinel)
        );
    }

    let _ = writeln!(
        out,
        "\nPer round:\n\n\
         | system | round | ok | gap ms | kill -> first ack ms | kill -> ack by new master ms | errors | READONLY | reconnects | acked | lost (after kill) | acked by old master after kill | unattributed after kill | errors by kind | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut rounds_seen: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &results {
        let n = rounds_seen.entry(r.system.short()).or_default();
        *n += 1;
        let kinds: Vec<String> = r.kinds.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.system.short(),
            n,
            if r.ok { "yes" } else { "NO" },
            r.longest_gap_ms,
            opt_ms(r.kill_to_first_ack_ms),
            opt_ms(r.kill_to_new_master_ack_ms),
            r.errors,
            r.readonly,
            r.reconnects,
            r.acked,
            r.lost,
            r.lost_after_kill,
            r.acked_by_old_after_kill,
            r.unattributed_after_kill,
            kinds.join("; "),
            r.note.trim_end_matches("; "),
        );
    }
    let _ = writeln!(out, "\nTotal run time {:.0?}.", started.elapsed());
    print!("{out}");
    let _ = io::stdout().flush();
    drop(base);
}
