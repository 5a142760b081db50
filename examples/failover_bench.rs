//! Failover as clients see it: sentinel-proxy voters vs three real Redis Sentinels with
//! sentinel-aware clients, for a `kill -9` of the master and for a planned switchover
//! (`SENTINEL FAILOVER`), with many client connections writing at once.
//!
//! Run (one command, from the repository root):
//!
//! ```text
//! cargo run --release --example failover_bench
//! cargo run --release --example failover_bench -- --scenario planned --rounds 5 --connections 50
//! ```
//!
//! The default run (both scenarios, both systems, 3 rounds each, 20 connections) takes
//! about 90 seconds on two cores after the build; a round that never settles takes up to
//! `--give-up-s` longer.
//! The report (Markdown) goes to stdout, progress to stderr.
//!
//! Flags (all optional):
//!
//! * `--scenario kill|planned|both` (default `both`): which failover to trigger.
//! * `--connections N` (default 20): writer connections, each on its own thread, each
//!   writing its own keys.
//! * `--rounds N` (default 3): rounds per scenario and system. Rounds are interleaved
//!   (round 1: proxies then Sentinels, round 2: Sentinels then proxies, ...; within a
//!   round, kill then planned); figures are medians with min-max over the rounds.
//! * `--pause-ms MS` (default 1): each connection's pause after an acknowledged write.
//! * `--retry-ms MS` (default 10): each connection's pause after a failed attempt (error
//!   reply, failed connect, Sentinel not answering) before it retries. Error counts of
//!   clients that retry through an outage scale with this rate (1000 / MS per second
//!   per connection), so compare errors within one run.
//! * `--timeout-ms MS` (default 10000): how long a writer waits for a reply before it
//!   gives up on its connection (counted as a dropped connection, kind `timeout`).
//!   Longer than the proxies' `hold_timeout` (5 s), so held writes are not cut short.
//! * `--down-after-ms MS` (default 1000): `down_after` / `down-after-milliseconds`.
//! * `--failover-timeout-ms MS` (default 10000): `failover_timeout` / `failover-timeout`.
//! * `--before-ms MS` (default 1000): how long the writers run before the trigger.
//! * `--after-ms MS` (default 1000): how long they keep writing once the switch has
//!   settled (see step 5).
//! * `--give-up-s S` (default 30): a round that has not settled this long after the
//!   trigger is stopped and reported as failed (`ok` = NO).
//! * `--build`: rebuild the release `sentinel-proxy` even if it looks current (it is
//!   built when missing or older than a file under `src/`; if that build fails and a
//!   binary exists, the existing one is used, with a warning).
//! * `--bin PATH`: use this sentinel-proxy binary instead (no build).
//! * `--keep`: keep the temporary directory (configurations and logs) and print its path.
//!
//! One round of one scenario and one system, all on 127.0.0.1 and on free ports, in a
//! fresh temporary directory:
//!
//! 1. a redis-server master and two replicas (`--replicaof`), no persistence; waits until
//!    both replicas report `master_link_status:up`;
//! 2. three voters: either sentinel-proxy processes (`role = "voter"`, quorum 2,
//!    `down_after`, `failover_timeout`, each with its own config and state file, logging
//!    JSON at `RUST_LOG=info`) or three `redis-server sentinel.conf --sentinel` with the same
//!    settings; waits until each answers `SENTINEL master mymaster` with `num-slaves` 2 and
//!    `num-other-sentinels` 2;
//! 3. `--connections` writers; writer `i` does `SET w<i>:<n> <n>` for n = 0, 1, 2, ...,
//!    one request at a time, pausing `--pause-ms` after each acknowledgement; a failed
//!    write is retried with the same key;
//!    * proxies: writer `i` connects to the data port of proxy `i % 3 + 1`. It keeps its
//!      connection on an error reply (like any plain Redis client) and reconnects to the
//!      same proxy only when the connection ends (EOF, reset, timeout). To know which
//!      instance acknowledged a write, it asks `CONFIG GET port` on the same connection
//!      after its first acknowledged write, then at most every 100 ms, and once more when
//!      it stops; the writes between two probes that name the same instance are
//!      attributed to it, the others stay unattributed (notably the last ones before a
//!      connection ends). Only the attribution columns and the settle test of step 5
//!      depend on this, never errors, drops, gaps or lost writes;
//!    * Sentinels (like redis-py's `Sentinel.master_for`): writer `i` keeps a connection to
//!      each Sentinel, asks them in order `SENTINEL get-master-addr-by-name mymaster` and
//!      connects there; it asks again and reconnects when its connection ends, when a
//!      connect fails, and on a `-READONLY` reply (redis-py turns that into a
//!      `ConnectionError` and disconnects); other error replies keep the connection;
//! 4. the trigger: `kill -9` of the master by pid (kill scenario), or
//!    `SENTINEL FAILOVER mymaster` on voter 1's Sentinel port (planned scenario; retried
//!    for up to 5 s while it is refused);
//! 5. settling: polls every 50 ms until every voter answers `get-master-addr-by-name` with
//!    the same new master and every writer's latest attributed write was acknowledged by
//!    it; then the writers go on for `--after-ms` and stop;
//! 6. checks: the final master is the one the voters name, confirmed by `ROLE`; waits until
//!    its `DBSIZE` stops changing (three equal readings 100 ms apart, at most 5 s), then
//!    reads every acknowledged key back with `MGET` and counts the missing or different
//!    ones; extracts the Sentinel events (`+sdown`, `+odown`, `+try-failover`,
//!    `+elected-leader`, `+selected-slave`, `+promoted-slave`, `+switch-master`,
//!    `+convert-to-slave`, and the proxies' `route changed`) from the voters' logs,
//!    relative to the trigger.
//!
//! Reported per scenario and system (medians with min-max over the rounds):
//!
//! * longest gap without an acknowledged write: the longest interval between two
//!   consecutive acknowledgements, merged over all connections (a round that never
//!   settles counts up to the moment it was stopped);
//! * longest stall of one connection: the same, per connection, the worst one;
//! * trigger -> first write acknowledged by the new master;
//! * errors: client-visible failed attempts that were not a dropped connection: error
//!   replies (`-READONLY`, `-ERR ...`), failed connects, no Sentinel answering;
//! * dropped connections: connections that ended under a writer (EOF, reset, timeout),
//!   each followed by a reconnect;
//! * lost: acknowledged writes missing on the final master;
//! * targets (from the issue; checked per round, "pass" only if every round meets it,
//!   and a round that did not settle meets none):
//!   * kill -9: gap <= `down_after` + 0.5 s (1.5 s at the default 1 s); errors and drops
//!     only for writes that were in flight when the master died (every failed attempt was
//!     sent before the kill completed); 0 lost;
//!   * planned: gap <= 250 ms; 0 errors; 0 dropped connections; 0 lost.
//!
//! Also reported: a timeline of the failover (events from the voters' logs and the polls
//! above, ms after the trigger), a table per round (including `-READONLY` replies,
//! timeouts, reconnects, attempts in flight at the trigger, acknowledged writes, when the
//! lost writes were acknowledged, writes attributed to the old master after the trigger
//! (a lower bound through proxies: see the unattributed column), unattributed writes
//! after the trigger), and each kind of error with a sample of its text.
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
    voter_config,
};

/// Whether a server on `port` answers PING.
fn answers(port: u16) -> bool {
    Conn::open(port).and_then(|mut c| c.cmd(&["PING"])).is_ok()
}

/// How long voters may take to discover both replicas and both peers.
const DISCOVERY: Duration = Duration::from_secs(30);
/// Socket timeouts of the driver's own queries (setup, checks).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A writer asks which instance is behind its proxy connection at most this often.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How often the driver polls the voters and the writers while the switch settles.
const POLL: Duration = Duration::from_millis(50);
/// How long `SENTINEL FAILOVER` is retried while it is refused.
const TRIGGER_RETRY: Duration = Duration::from_secs(5);
const MASTER_NAME: &str = "mymaster";

// ---------------------------------------------------------------- options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Kill,
    Planned,
}

impl Scenario {
    fn short(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Planned => "planned",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::Kill => "kill -9 of the master",
            Scenario::Planned => "planned switchover (`SENTINEL FAILOVER mymaster` on voter 1)",
        }
    }
}

struct Options {
    scenarios: Vec<Scenario>,
    connections: usize,
    rounds: usize,
    pause_ms: u64,
    retry_ms: u64,
    timeout_ms: u64,
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
            scenarios: vec![Scenario::Kill, Scenario::Planned],
            connections: 20,
            rounds: 3,
            pause_ms: 1,
            retry_ms: 10,
            timeout_ms: 10_000,
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
                        "usage: cargo run --release --example failover_bench -- \
                         [--scenario kill|planned|both] [--connections N] [--rounds N] \
                         [--pause-ms MS] [--retry-ms MS] [--timeout-ms MS] \
                         [--down-after-ms MS] [--failover-timeout-ms MS] [--before-ms MS] \
                         [--after-ms MS] [--give-up-s S] [--build] [--bin PATH] [--keep]\n\
                         (see the doc comment of examples/failover_bench.rs)"
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
                "--scenario" => {
                    o.scenarios = match value.as_str() {
                        "kill" => vec![Scenario::Kill],
                        "planned" => vec![Scenario::Planned],
                        "both" => vec![Scenario::Kill, Scenario::Planned],
                        other => die(&format!(
                            "--scenario: expected kill, planned or both, not {other}"
                        )),
                    }
                }
                "--connections" => o.connections = number(&value).max(1) as usize,
                "--rounds" => o.rounds = number(&value).max(1) as usize,
                "--pause-ms" => o.pause_ms = number(&value),
                "--retry-ms" => o.retry_ms = number(&value),
                "--timeout-ms" => o.timeout_ms = number(&value).max(1),
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
            System::Proxy => "sentinel-proxy voters (writers spread over the 3 proxies)",
            System::Sentinel => "3 Redis Sentinels + sentinel-aware clients (redis-py style)",
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
        let extra = format!(
            "quorum = 2\ndown_after = \"{}ms\"\nfailover_timeout = \"{}ms\"\n",
            o.down_after_ms, o.failover_timeout_ms
        );
        let state = dir.join(format!("proxy{i}.state"));
        let text = voter_config(sentinel_port, &state, 1, MASTER_NAME, data, master, &extra);
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

// ---------------------------------------------------------------- the writers

/// An acknowledged write.
#[derive(Clone, Copy)]
struct Ack {
    n: u64,
    sent: Instant,
    at: Instant,
    /// Port of the instance that acknowledged it (0 = not attributed).
    port: u16,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Failure {
    /// An error reply, a failed connect, or no Sentinel answering.
    Error,
    /// The connection ended under the writer (EOF, reset, timeout).
    Drop,
}

/// A failed attempt.
#[derive(Clone, Copy)]
struct Failed {
    sent: Instant,
    at: Instant,
    what: Failure,
}

#[derive(Default)]
struct WriterResult {
    acks: Vec<Ack>,
    failed: Vec<Failed>,
    /// Reply errors starting with `READONLY` (also counted as errors).
    readonly: u64,
    /// Drops that were reply timeouts (also counted as drops).
    timeouts: u64,
    /// Connections opened after the first one.
    reconnects: u64,
    /// Failure kinds with counts, and the first full text of each.
    kinds: BTreeMap<String, (u64, String)>,
}

impl WriterResult {
    fn count(&self, what: Failure) -> usize {
        self.failed.iter().filter(|f| f.what == what).count()
    }
}

/// What the main thread watches while the writers run.
struct Shared {
    stop: AtomicBool,
    acks: AtomicU64,
    /// Per writer: the instance behind its latest attributed write (0 = not known yet).
    upstream: Vec<AtomicU32>,
}

/// Where a writer sends its writes.
#[derive(Clone)]
enum Dial {
    /// Connect to this proxy data port; reconnect to it when the connection ends.
    Proxy(u16),
    /// Ask these Sentinels for the master, in order, like redis-py.
    Sentinels(Vec<u16>),
}

/// A writer's connection.
struct Link {
    conn: Conn,
    /// Direct connection to this instance (Sentinel clients); `None` through a proxy.
    direct: Option<u16>,
    /// Time and answer (0 = no port in the reply) of the latest `CONFIG GET port`.
    probed: Option<(Instant, u16)>,
    /// Index of the first acknowledged write after that probe.
    unprobed_from: usize,
}

/// One writer connection: `SET w<id>:<n> <n>`, one at a time.
struct Writer {
    id: usize,
    dial: Dial,
    pause: Duration,
    retry: Duration,
    timeout: Duration,
    shared: Arc<Shared>,
    /// Open connections to the Sentinels (Sentinel clients keep them, as redis-py does).
    sentinels: Vec<Option<Conn>>,
    r: WriterResult,
}

/// An error text without the numbers in it (ports, pids, counts), so that errors group.
fn error_kind(e: &str) -> String {
    e.split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

impl Writer {
    fn fail(&mut self, sent: Instant, what: Failure, kind: String, text: String) {
        self.r.failed.push(Failed {
            sent,
            at: Instant::now(),
            what,
        });
        let entry = self.r.kinds.entry(kind).or_insert((0, text));
        entry.0 += 1;
    }

    /// `SENTINEL get-master-addr-by-name` on the Sentinels in order; the first answer wins.
    fn ask_sentinels(&mut self, ports: &[u16]) -> Option<u16> {
        for (i, port) in ports.iter().enumerate() {
            if self.sentinels[i].is_none() {
                self.sentinels[i] = Conn::open_with(
                    *port,
                    Duration::from_millis(100),
                    Duration::from_millis(500),
                )
                .ok();
            }
            let Some(c) = self.sentinels[i].as_mut() else {
                continue;
            };
            match c.cmd(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) {
                Ok(Reply::Array(Some(items))) => {
                    if let Some(p) = items
                        .get(1)
                        .and_then(Reply::text)
                        .and_then(|p| p.parse().ok())
                    {
                        return Some(p);
                    }
                }
                Ok(_) => {}
                Err(_) => self.sentinels[i] = None,
            }
        }
        None
    }

    /// Opens a connection where the writes go; the error text on failure.
    fn connect(&mut self) -> Result<Link, (String, String)> {
        let (port, direct) = match self.dial.clone() {
            Dial::Proxy(p) => (p, false),
            Dial::Sentinels(ports) => match self.ask_sentinels(&ports) {
                Some(p) => (p, true),
                None => {
                    let text = "no Sentinel named a master".to_string();
                    return Err((text.clone(), text));
                }
            },
        };
        match Conn::open_with(port, CONNECT_TIMEOUT, self.timeout) {
            Ok(conn) => Ok(Link {
                conn,
                direct: direct.then_some(port),
                probed: None,
                unprobed_from: self.r.acks.len(),
            }),
            Err(e) => Err((
                format!("connect: {:?}", e.kind()),
                format!("connect to :{port}: {e}"),
            )),
        }
    }

    /// Through a proxy: which instance answers this connection (`CONFIG GET port`), and
    /// attribution of the writes acknowledged since the previous probe.
    /// `force`: probe even if the previous probe is recent (the writer is stopping).
    fn probe(&mut self, link: &mut Link, force: bool) -> io::Result<()> {
        let now = Instant::now();
        let recent = link.probed.is_some_and(|(t, _)| now - t < PROBE_EVERY);
        if link.direct.is_some() || (recent && !force) {
            return Ok(());
        }
        let port: u16 = link
            .conn
            .cmd(&["CONFIG", "GET", "port"])?
            .pairs()
            .get("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // The first probe of a connection follows its first write; later ones vouch for
        // the writes in between only if the previous probe named the same instance.
        let same = link.probed.is_none_or(|(_, p)| p == port);
        if port != 0 {
            if same {
                for a in &mut self.r.acks[link.unprobed_from..] {
                    a.port = port;
                }
            }
            self.shared.upstream[self.id].store(u32::from(port), Ordering::Relaxed);
        }
        link.probed = Some((now, port));
        link.unprobed_from = self.r.acks.len();
        Ok(())
    }

    fn dropped(&mut self, sent: Instant, e: &io::Error, during: &str) {
        let timeout = matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        let kind = if timeout {
            self.r.timeouts += 1;
            format!("timeout ({during})")
        } else {
            format!("connection ended: {:?} ({during})", e.kind())
        };
        self.fail(sent, Failure::Drop, kind, format!("{during}: {e}"));
    }

    fn run(mut self) -> WriterResult {
        let mut link: Option<Link> = None;
        let mut opened = 0u64;
        let mut n = 0u64;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let Some(l) = link.as_mut() else {
                let attempt = Instant::now();
                match self.connect() {
                    Ok(l) => {
                        if opened > 0 {
                            self.r.reconnects += 1;
                        }
                        opened += 1;
                        link = Some(l);
                    }
                    Err((kind, text)) => {
                        self.fail(attempt, Failure::Error, kind, text);
                        std::thread::sleep(self.retry);
                    }
                }
                continue;
            };
            let key = format!("w{}:{n}", self.id);
            let value = n.to_string();
            let sent = Instant::now();
            match l.conn.cmd(&["SET", &key, &value]) {
                Ok(Reply::Simple(s)) if s == "OK" => {
                    let at = Instant::now();
                    let port = l.direct.unwrap_or(0);
                    self.r.acks.push(Ack { n, sent, at, port });
                    self.shared.acks.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    if port != 0 {
                        self.shared.upstream[self.id].store(u32::from(port), Ordering::Relaxed);
                    }
                    let probe_sent = Instant::now();
                    if let Err(e) = self.probe(l, false) {
                        self.dropped(probe_sent, &e, "CONFIG GET port");
                        link = None;
                        continue;
                    }
                    std::thread::sleep(self.pause);
                }
                Ok(reply) => {
                    let text = match &reply {
                        Reply::Error(e) => e.clone(),
                        other => format!("unexpected reply to SET: {other:?}"),
                    };
                    let readonly = text.starts_with("READONLY");
                    if readonly {
                        self.r.readonly += 1;
                    }
                    self.fail(sent, Failure::Error, error_kind(&text), text);
                    // redis-py's Sentinel connections disconnect on READONLY; anything
                    // but an error reply means the stream is out of step.
                    let sentinel_client = matches!(self.dial, Dial::Sentinels(_));
                    if (readonly && sentinel_client) || !matches!(reply, Reply::Error(_)) {
                        link = None;
                    }
                    std::thread::sleep(self.retry);
                }
                Err(e) => {
                    self.dropped(sent, &e, "SET");
                    link = None;
                }
            }
        }
        // Attribute the writes since the last probe (a failure here is not counted:
        // the run is over).
        if let Some(mut l) = link {
            let _ = self.probe(&mut l, true);
        }
        self.r
    }
}

/// Starts `o.connections` writers.
fn start_writers(
    system: System,
    voters: &[Voter],
    o: &Options,
) -> (Arc<Shared>, Vec<std::thread::JoinHandle<WriterResult>>) {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        acks: AtomicU64::new(0),
        upstream: (0..o.connections).map(|_| AtomicU32::new(0)).collect(),
    });
    let handles = (0..o.connections)
        .map(|id| {
            let dial = match system {
                System::Proxy => Dial::Proxy(
                    voters[id % voters.len()]
                        .data_port
                        .expect("a proxy voter has a data port"),
                ),
                System::Sentinel => {
                    Dial::Sentinels(voters.iter().map(|v| v.sentinel_port).collect())
                }
            };
            let writer = Writer {
                id,
                dial,
                pause: Duration::from_millis(o.pause_ms),
                retry: Duration::from_millis(o.retry_ms),
                timeout: Duration::from_millis(o.timeout_ms),
                shared: shared.clone(),
                sentinels: (0..voters.len()).map(|_| None).collect(),
                r: WriterResult::default(),
            };
            std::thread::Builder::new()
                .name(format!("writer{id}"))
                .stack_size(256 * 1024)
                .spawn(move || writer.run())
                .expect("cannot start a writer thread")
        })
        .collect();
    (shared, handles)
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
/// The timeline rows, in failover order (labels; see `timeline` for the events).
const TIMELINE: [&str; 13] = [
    "+sdown (master)",
    "+odown",
    "+try-failover",
    "+elected-leader",
    "+selected-slave",
    "+failover-state-wait-promotion (SLAVEOF NO ONE sent)",
    "+promoted-slave (INFO shows role:master)",
    "+switch-master (first voter)",
    "voter 1 switched (route changed / +switch-master)",
    "+convert-to-slave (old master demoted)",
    "every voter names the new master (polled)",
    "first write acknowledged by the new master",
    "every connection's latest write acknowledged by the new master (polled)",
];
/// Rows of `TIMELINE` filled by the round itself rather than from the logs.
const ROW_VOTERS_AGREE: usize = 10;
const ROW_FIRST_NEW_ACK: usize = 11;
const ROW_ALL_ON_NEW: usize = 12;

/// Milliseconds after the trigger of each timeline row (`None` = not seen).
fn timeline(system: System, voters: &[Voter], trigger_wall: SystemTime) -> Vec<Option<f64>> {
    let trigger = utc_seconds_of_day(trigger_wall);
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
            // Seconds of the day: fold a midnight crossing back.
            let mut ms = (t - trigger) * 1000.0;
            if ms < -43_200_000.0 {
                ms += 86_400_000.0;
            } else if ms > 43_200_000.0 {
                ms -= 86_400_000.0;
            }
            if ms < -50.0 {
                continue; // before the trigger (setup events)
            }
            // Logs have millisecond stamps; an event of the trigger itself can look
            // a little earlier.
            let ms = ms.max(0.0);
            let row = match event.as_str() {
                "+sdown" if text.starts_with("master") => Some(0),
                "+odown" => Some(1),
                "+try-failover" => Some(2),
                "+elected-leader" => Some(3),
                "+selected-slave" => Some(4),
                "+failover-state-wait-promotion" => Some(5),
                "+promoted-slave" => Some(6),
                "+switch-master" => Some(7),
                "+convert-to-slave" => Some(9),
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
    scenario: Scenario,
    ok: bool,
    note: String,
    longest_gap_ms: f64,
    worst_stall_ms: f64,
    trigger_to_first_ack_ms: Option<f64>,
    trigger_to_new_master_ack_ms: Option<f64>,
    errors: usize,
    drops: usize,
    readonly: u64,
    timeouts: u64,
    reconnects: u64,
    /// Failed attempts not in flight at the trigger (sent after the old master was gone
    /// or the command was sent, or failed before the trigger).
    failed_not_in_flight: usize,
    /// Attempts sent before the old master was gone and answered after the trigger.
    in_flight_at_trigger: usize,
    acked: usize,
    /// Acknowledged writes missing on the final master (`None`: could not be read).
    lost: Option<usize>,
    lost_after_trigger: usize,
    /// When the first and the last lost write were acknowledged, ms after the trigger.
    lost_window_ms: Option<(f64, f64)>,
    acked_by_old_after_trigger: usize,
    unattributed_after_trigger: usize,
    kinds: BTreeMap<String, (u64, String)>,
    timeline: Vec<Option<f64>>,
}

/// One master, two replicas and three voters, ready.
struct Cluster {
    master: Redis,
    replicas: [Redis; 2],
    voters: Vec<Voter>,
}

fn start_cluster(system: System, name: &str, bin: &Path, dir: &Path, o: &Options) -> Cluster {
    // Redis: one master, two replicas, in sync.
    let master = start_redis(dir, "master", None);
    let replicas = [
        start_redis(dir, "replica1", Some(master.port)),
        start_redis(dir, "replica2", Some(master.port)),
    ];
    for r in &replicas {
        wait_for("replicas in sync", STARTUP, || {
            info_field(r.port, "replication", "master_link_status").as_deref() == Some("up")
        });
    }

    // Voters.
    let voters: Vec<Voter> = (1..=3)
        .map(|i| match system {
            System::Proxy => start_proxy_voter(bin, dir, i, master.port, o),
            System::Sentinel => start_sentinel_voter(dir, i, master.port, o),
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
        "{name}: master :{} (pid {}), replicas :{} :{}, voters {} ready after {:.1?}",
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
    Cluster {
        master,
        replicas,
        voters,
    }
}

/// When the trigger was pulled.
struct Trigger {
    wall: SystemTime,
    at: Instant,
    /// Kill: when the old master was reaped (its sockets closed). Planned: `at`.
    gone: Instant,
    /// Planned: whether `SENTINEL FAILOVER` was accepted.
    accepted: bool,
}

fn pull_trigger(scenario: Scenario, cluster: &mut Cluster, note: &mut String) -> Trigger {
    match scenario {
        Scenario::Kill => {
            let wall = SystemTime::now();
            let at = Instant::now();
            cluster.master.guard.kill();
            Trigger {
                wall,
                at,
                gone: Instant::now(),
                accepted: true,
            }
        }
        Scenario::Planned => {
            let port = cluster.voters[0].sentinel_port;
            let deadline = Instant::now() + TRIGGER_RETRY;
            let mut refusals = 0;
            loop {
                let wall = SystemTime::now();
                let at = Instant::now();
                let reply = query(port, &["SENTINEL", "FAILOVER", MASTER_NAME]);
                let accepted = matches!(&reply, Ok(Reply::Simple(s)) if s == "OK");
                if !accepted {
                    refusals += 1;
                }
                if accepted || Instant::now() > deadline {
                    if refusals > 0 {
                        let _ = write!(
                            note,
                            "SENTINEL FAILOVER refused {refusals} times (last: {reply:?}); "
                        );
                    }
                    return Trigger {
                        wall,
                        at,
                        gone: at,
                        accepted,
                    };
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn voter_views(voters: &[Voter]) -> Vec<Option<u16>> {
    voters
        .iter()
        .map(|v| master_addr_by_name(v.sentinel_port))
        .collect()
}

/// The master a majority of the voters name.
fn majority(views: &[Option<u16>]) -> Option<u16> {
    views.iter().flatten().copied().find(|p| {
        let agree = views.iter().filter(|v| **v == Some(*p)).count();
        agree * 2 > views.len()
    })
}

/// `ROLE`'s first element (`master`, `slave`), or `?`.
fn role(port: u16) -> String {
    match query(port, &["ROLE"]) {
        Ok(Reply::Array(Some(items))) => items.first().and_then(Reply::text).unwrap_or_default(),
        _ => "?".into(),
    }
}

/// What the settle poll saw.
#[derive(Default)]
struct Settled {
    /// The new master, once every voter names it and every writer writes to it.
    new_master: Option<u16>,
    voters_agree_at: Option<Instant>,
    all_on_new_at: Option<Instant>,
}

/// Polls until every voter names the same new master and every writer's latest
/// attributed write was acknowledged by it, or until `give_up`.
fn settle(voters: &[Voter], shared: &Shared, old: u16, give_up: Instant) -> Settled {
    let mut s = Settled::default();
    loop {
        let views = voter_views(voters);
        let agreed = match views.first() {
            Some(Some(m)) if *m != old && views.iter().all(|v| *v == Some(*m)) => Some(*m),
            _ => None,
        };
        let now = Instant::now();
        match agreed {
            Some(m) => {
                s.voters_agree_at.get_or_insert(now);
                let all_on_new = shared
                    .upstream
                    .iter()
                    .all(|u| u.load(Ordering::Relaxed) == u32::from(m));
                if all_on_new {
                    s.new_master = Some(m);
                    s.all_on_new_at = Some(now);
                    return s;
                }
            }
            None => s.voters_agree_at = None,
        }
        if now > give_up {
            return s;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `DBSIZE` on `port` gives three equal readings 100 ms apart (at most 5 s).
fn wait_keys_settle(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    let mut same = 0;
    while Instant::now() < deadline && same < 2 {
        let size = query(port, &["DBSIZE"]).ok().and_then(|r| r.text());
        if size.is_some() && size == last {
            same += 1;
        } else {
            same = 0;
            last = size;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Acknowledged writes missing on the final master.
#[derive(Default)]
struct Lost {
    count: usize,
    /// Of those, acknowledged after the trigger.
    after_trigger: usize,
    /// When the first and the last of them were acknowledged, ms after the trigger.
    window_ms: Option<(f64, f64)>,
}

/// Reads every acknowledged key back from `port` (`MGET`, 1000 keys at a time).
fn count_lost(port: u16, writers: &[WriterResult], trigger: Instant) -> io::Result<Lost> {
    let mut c = Conn::open(port)?;
    let mut lost = Lost::default();
    let ms = |t: Instant| {
        if t >= trigger {
            (t - trigger).as_secs_f64() * 1000.0
        } else {
            -(trigger - t).as_secs_f64() * 1000.0
        }
    };
    for (id, w) in writers.iter().enumerate() {
        for chunk in w.acks.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|a| format!("w{id}:{}", a.n)).collect();
            let mut args = vec!["MGET"];
            args.extend(keys.iter().map(String::as_str));
            let values = match c.cmd(&args)? {
                Reply::Array(Some(values)) if values.len() == chunk.len() => values,
                other => {
                    return Err(io::Error::other(format!(
                        "MGET of {} keys: unexpected reply {other:?}",
                        chunk.len()
                    )));
                }
            };
            for (a, v) in chunk.iter().zip(values) {
                if v != Reply::Bulk(Some(a.n.to_string().into_bytes())) {
                    lost.count += 1;
                    if a.at > trigger {
                        lost.after_trigger += 1;
                    }
                    let t = ms(a.at);
                    lost.window_ms = Some(match lost.window_ms {
                        None => (t, t),
                        Some((lo, hi)) => (lo.min(t), hi.max(t)),
                    });
                }
            }
        }
    }
    Ok(lost)
}

/// The longest interval between consecutive instants (sorted), and from the last one
/// to `end` if given.
fn longest_gap(sorted: &[Instant], end: Option<Instant>) -> Duration {
    let mut gap = sorted
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default();
    if let (Some(end), Some(last)) = (end, sorted.last()) {
        gap = gap.max(end.saturating_duration_since(*last));
    }
    gap
}

fn run_round(
    system: System,
    scenario: Scenario,
    round: usize,
    bin: &Path,
    base: &Path,
    o: &Options,
) -> RoundResult {
    let name = format!("{} {} round {round}", system.short(), scenario.short());
    let dir = base.join(format!("{}-{}-{round}", system.short(), scenario.short()));
    std::fs::create_dir_all(&dir).expect("cannot create a round directory");
    let mut cluster = start_cluster(system, &name, bin, &dir, o);
    let old = cluster.master.port;

    let (shared, handles) = start_writers(system, &cluster.voters, o);
    std::thread::sleep(Duration::from_millis(o.before_ms));
    assert!(
        shared.acks.load(Ordering::Relaxed) > 0,
        "{name}: no write acknowledged in the {} ms before the trigger",
        o.before_ms
    );

    let mut note = String::new();
    let trigger = pull_trigger(scenario, &mut cluster, &mut note);
    let give_up = trigger.at + Duration::from_secs(o.give_up_s);
    let settled = if trigger.accepted {
        settle(&cluster.voters, &shared, old, give_up)
    } else {
        Settled::default()
    };
    let mut ok = settled.new_master.is_some();
    if ok {
        std::thread::sleep(Duration::from_millis(o.after_ms));
    } else {
        let _ = write!(
            note,
            "not settled: voters name {:?}, writers' latest instances {:?}; ",
            voter_views(&cluster.voters),
            shared
                .upstream
                .iter()
                .map(|u| u.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        );
    }
    shared.stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let writers: Vec<WriterResult> = handles
        .into_iter()
        .map(|h| h.join().expect("a writer thread panicked"))
        .collect();

    // The final master: the one the voters name, if ROLE agrees.
    let views = voter_views(&cluster.voters);
    let named = majority(&views);
    let mut alive: Vec<u16> = cluster.replicas.iter().map(|r| r.port).collect();
    if scenario == Scenario::Planned {
        alive.push(old);
    }
    let masters: Vec<u16> = alive
        .iter()
        .copied()
        .filter(|p| role(*p) == "master")
        .collect();
    let final_master = match named {
        Some(m) if masters.contains(&m) => Some(m),
        _ => {
            ok = false;
            let _ = write!(
                note,
                "voters name {views:?} but ROLE master is {masters:?}; "
            );
            None
        }
    };
    if masters.len() > 1 {
        let _ = write!(note, "at the end ROLE says master on {masters:?}; ");
    }

    // Acknowledged writes missing on the final master.
    let lost = final_master.and_then(|m| {
        wait_keys_settle(m);
        count_lost(m, &writers, trigger.at)
            .map_err(|e| {
                let _ = write!(note, "reading the keys back from :{m} failed: {e}; ");
            })
            .ok()
    });

    // Gaps, over all connections and per connection.
    let end = (!ok).then_some(stopped);
    let mut all: Vec<Instant> = writers
        .iter()
        .flat_map(|w| w.acks.iter().map(|a| a.at))
        .collect();
    all.sort_unstable();
    let longest = longest_gap(&all, end);
    let worst_stall = writers
        .iter()
        .map(|w| {
            let times: Vec<Instant> = w.acks.iter().map(|a| a.at).collect();
            longest_gap(&times, end)
        })
        .max()
        .unwrap_or_default();

    // Around the trigger.
    let after: Vec<&Ack> = writers
        .iter()
        .flat_map(|w| &w.acks)
        .filter(|a| a.at > trigger.at)
        .collect();
    let ms = |t: Instant| (t - trigger.at).as_secs_f64() * 1000.0;
    let new_master = final_master.or(settled.new_master);
    let trigger_to_first_ack_ms = after.iter().map(|a| a.at).min().map(ms);
    let trigger_to_new_master_ack_ms = after
        .iter()
        .filter(|a| match new_master {
            Some(m) => a.port == m,
            None => a.port != 0 && a.port != old,
        })
        .map(|a| a.at)
        .min()
        .map(ms);
    let acked_by_old_after_trigger = after.iter().filter(|a| a.port == old).count();
    let unattributed_after_trigger = after.iter().filter(|a| a.port == 0).count();
    if let Some(m) = final_master
        && let Some(a) = after
            .iter()
            .filter(|a| a.port != 0 && a.port != m && a.port != old)
            .min_by_key(|a| a.at)
    {
        let _ = write!(
            note,
            "a write {:.0} ms after the trigger was acknowledged by :{} (final master :{m}); ",
            ms(a.at),
            a.port
        );
    }
    let in_flight = |sent: Instant, at: Instant| sent < trigger.gone && at >= trigger.at;
    let in_flight_at_trigger = writers
        .iter()
        .map(|w| {
            w.acks.iter().filter(|a| in_flight(a.sent, a.at)).count()
                + w.failed.iter().filter(|f| in_flight(f.sent, f.at)).count()
        })
        .sum();
    let failed_not_in_flight = writers
        .iter()
        .flat_map(|w| &w.failed)
        .filter(|f| !in_flight(f.sent, f.at))
        .count();

    let mut kinds: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for w in &writers {
        for (kind, (count, sample)) in &w.kinds {
            kinds.entry(kind.clone()).or_insert((0, sample.clone())).0 += count;
        }
    }

    let mut timeline = timeline(system, &cluster.voters, trigger.wall);
    timeline[ROW_VOTERS_AGREE] = settled.voters_agree_at.map(ms);
    timeline[ROW_FIRST_NEW_ACK] = trigger_to_new_master_ack_ms;
    timeline[ROW_ALL_ON_NEW] = settled.all_on_new_at.map(ms);
    if !ok {
        for v in &cluster.voters {
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
        scenario,
        ok,
        note,
        longest_gap_ms: longest.as_secs_f64() * 1000.0,
        worst_stall_ms: worst_stall.as_secs_f64() * 1000.0,
        trigger_to_first_ack_ms,
        trigger_to_new_master_ack_ms,
        errors: writers.iter().map(|w| w.count(Failure::Error)).sum(),
        drops: writers.iter().map(|w| w.count(Failure::Drop)).sum(),
        readonly: writers.iter().map(|w| w.readonly).sum(),
        timeouts: writers.iter().map(|w| w.timeouts).sum(),
        reconnects: writers.iter().map(|w| w.reconnects).sum(),
        failed_not_in_flight,
        in_flight_at_trigger,
        acked: writers.iter().map(|w| w.acks.len()).sum(),
        lost: lost.as_ref().map(|l| l.count),
        lost_after_trigger: lost.as_ref().map_or(0, |l| l.after_trigger),
        lost_window_ms: lost.as_ref().and_then(|l| l.window_ms),
        acked_by_old_after_trigger,
        unattributed_after_trigger,
        kinds,
        timeline,
    };
    progress!(
        "{name}: {} gap {:.0} ms (worst connection {:.0} ms), trigger->ack by new master :{} {} ms, \
         errors {}, drops {}, acked {}, lost {} ({} after the trigger){}",
        if result.ok { "ok" } else { "FAILED" },
        result.longest_gap_ms,
        result.worst_stall_ms,
        final_master.map_or("?".into(), |p| p.to_string()),
        opt_ms(result.trigger_to_new_master_ack_ms),
        result.errors,
        result.drops,
        result.acked,
        result.lost.map_or("?".into(), |l| l.to_string()),
        result.lost_after_trigger,
        if result.note.is_empty() {
            String::new()
        } else {
            format!("; {}", result.note)
        }
    );
    let line: Vec<String> = TIMELINE
        .iter()
        .zip(&result.timeline)
        .filter(|(_, v)| v.is_some())
        .map(|(label, v)| {
            format!(
                "{} {}",
                label.split(" (").next().unwrap_or(label),
                opt_ms(*v)
            )
        })
        .collect();
    progress!("  timeline (ms after the trigger): {}", line.join(", "));
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

// ---------------------------------------------------------------- targets

/// A target from the issue, checked per round.
struct Goal {
    label: String,
    met: Box<dyn Fn(&RoundResult) -> bool>,
}

impl Goal {
    /// A round that did not settle meets no target.
    fn new(label: impl Into<String>, met: impl Fn(&RoundResult) -> bool + 'static) -> Goal {
        Goal {
            label: label.into(),
            met: Box::new(move |r| r.ok && met(r)),
        }
    }
}

fn goals(scenario: Scenario, o: &Options) -> Vec<Goal> {
    let lost = Goal::new("0 lost", |r| r.lost == Some(0));
    match scenario {
        Scenario::Kill => {
            let limit_ms = (o.down_after_ms + 500) as f64;
            vec![
                Goal::new(format!("gap <= {:.2} s", limit_ms / 1000.0), move |r| {
                    r.longest_gap_ms <= limit_ms
                }),
                Goal::new("errors and drops only for writes in flight", |r| {
                    r.failed_not_in_flight == 0
                }),
                lost,
            ]
        }
        Scenario::Planned => vec![
            Goal::new("gap <= 0.25 s", |r| r.longest_gap_ms <= 250.0),
            Goal::new("0 errors", |r| r.errors == 0),
            Goal::new("0 dropped connections", |r| r.drops == 0),
            lost,
        ],
    }
}

// ---------------------------------------------------------------- report

/// Text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn report_scenario(out: &mut String, scenario: Scenario, results: &[RoundResult], o: &Options) {
    let of = |s: System| {
        results
            .iter()
            .filter(move |r| r.system == s && r.scenario == scenario)
    };
    let systems = [System::Proxy, System::Sentinel];
    let _ = writeln!(
        out,
        "\n### {}\n\n\
         | system | rounds (ok) | longest gap without an acknowledged write, s | longest stall of one connection, s | trigger -> first ack by the new master, s | errors | dropped connections | acknowledged writes lost | acknowledged writes |\n\
         |---|---|---|---|---|---|---|---|---|",
        scenario.title()
    );
    for s in systems {
        let rs: Vec<&RoundResult> = of(s).collect();
        let f = |g: &dyn Fn(&RoundResult) -> f64| rs.iter().map(|r| g(r)).collect::<Vec<f64>>();
        let lost: Vec<f64> = rs.iter().filter_map(|r| r.lost).map(|l| l as f64).collect();
        let unread = rs.len() - lost.len();
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {}{} | {} |",
            s.label(),
            rs.len(),
            rs.iter().filter(|r| r.ok).count(),
            summary(&f(&|r| r.longest_gap_ms), 1e-3, 2),
            summary(&f(&|r| r.worst_stall_ms), 1e-3, 2),
            summary(
                &rs.iter()
                    .filter_map(|r| r.trigger_to_new_master_ack_ms)
                    .collect::<Vec<_>>(),
                1e-3,
                2
            ),
            summary(&f(&|r| r.errors as f64), 1.0, 0),
            summary(&f(&|r| r.drops as f64), 1.0, 0),
            summary(&lost, 1.0, 0),
            if unread > 0 {
                format!(" [{unread} rounds not read]")
            } else {
                String::new()
            },
            summary(&f(&|r| r.acked as f64), 1.0, 0),
        );
    }
    let gap = |s: System| median(of(s).map(|r| r.longest_gap_ms).collect());
    let _ = writeln!(
        out,
        "\nMedian longest gap, proxies / Sentinels: {:.2}.",
        gap(System::Proxy) / gap(System::Sentinel)
    );

    // Targets.
    let goals = goals(scenario, o);
    let _ = writeln!(
        out,
        "\nTargets (down-after {} ms; pass = met in every round, rounds that met it in brackets; \
         a round that did not settle meets none):\n\n| system | {} |\n|---|{}",
        o.down_after_ms,
        goals
            .iter()
            .map(|g| g.label.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(goals.len())
    );
    for s in systems {
        let rs: Vec<&RoundResult> = of(s).collect();
        let marks: Vec<String> = goals
            .iter()
            .map(|g| {
                let met = rs.iter().filter(|r| (g.met)(r)).count();
                let mark = if met == rs.len() { "pass" } else { "FAIL" };
                format!("{mark} ({met}/{})", rs.len())
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", s.label(), marks.join(" | "));
    }

    // Timeline: rows seen in at least one round.
    let _ = writeln!(
        out,
        "\nTimeline, ms after the trigger (earliest voter unless said otherwise; median (min-max)):\n\n\
         | event | sentinel-proxy voters | Redis Sentinels |\n|---|---|---|"
    );
    for (i, label) in TIMELINE.iter().enumerate() {
        let col = |s: System| {
            let v: Vec<f64> = of(s).filter_map(|r| r.timeline[i]).collect();
            let total = of(s).count();
            let mut text = summary(&v, 1.0, 0);
            if !v.is_empty() && v.len() < total {
                let _ = write!(text, " [{}/{total} rounds]", v.len());
            }
            (v.is_empty(), text)
        };
        let (proxy_none, proxy) = col(System::Proxy);
        let (sentinel_none, sentinel) = col(System::Sentinel);
        if !(proxy_none && sentinel_none) {
            let _ = writeln!(out, "| {label} | {proxy} | {sentinel} |");
        }
    }
}

fn report(results: &[RoundResult], o: &Options, bin: &Path, load: (&str, &str)) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Failover as clients see it: sentinel-proxy voters vs Redis Sentinel\n\n\
         {}; 1 master + 2 replicas, 3 voters, quorum 2, down-after {} ms, failover-timeout {} ms; \
         {} connections, each `SET w<conn>:<n> <n>` one at a time, {} ms pause after an \
         acknowledgement, {} ms before a retry, {} ms reply timeout; {} rounds per scenario and \
         system, interleaved; median (min-max). {} CPUs; load average {} at start, {} at end. \
         sentinel-proxy binary: `{}`.",
        version("redis-server", "--version")
            .split(" sha=")
            .next()
            .unwrap_or(""),
        o.down_after_ms,
        o.failover_timeout_ms,
        o.connections,
        o.pause_ms,
        o.retry_ms,
        o.timeout_ms,
        o.rounds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load.0,
        load.1,
        bin.display(),
    );
    for scenario in &o.scenarios {
        report_scenario(&mut out, *scenario, results, o);
    }

    let _ = writeln!(
        out,
        "\nPer round (errors include READONLY replies; drops include timeouts; \"not in flight\": \
         failed attempts sent after the old master was gone or the command was sent):\n\n\
         | scenario | system | round | ok | gap ms | worst connection ms | trigger -> first ack ms | trigger -> ack by new master ms | errors | READONLY | drops | timeouts | failed, not in flight | in flight at the trigger | reconnects | acked | lost (after the trigger) | lost writes acknowledged, ms after the trigger | acked by the old master after the trigger | unattributed after the trigger | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut rounds_seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in results {
        let n = rounds_seen
            .entry((r.scenario.short(), r.system.short()))
            .or_default();
        *n += 1;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.scenario.short(),
            r.system.short(),
            n,
            if r.ok { "yes" } else { "NO" },
            r.longest_gap_ms,
            r.worst_stall_ms,
            opt_ms(r.trigger_to_first_ack_ms),
            opt_ms(r.trigger_to_new_master_ack_ms),
            r.errors,
            r.readonly,
            r.drops,
            r.timeouts,
            r.failed_not_in_flight,
            r.in_flight_at_trigger,
            r.reconnects,
            r.acked,
            r.lost.map_or("?".into(), |l| l.to_string()),
            r.lost_after_trigger,
            r.lost_window_ms
                .map_or("-".into(), |(lo, hi)| format!("{lo:.0} to {hi:.0}")),
            r.acked_by_old_after_trigger,
            r.unattributed_after_trigger,
            cell(r.note.trim_end_matches("; ")),
        );
    }

    let _ = writeln!(
        out,
        "\nErrors and drops by kind, all rounds (digits removed from the kind; one full text as a sample):\n\n\
         | scenario | system | kind | count | sample |\n|---|---|---|---|---|"
    );
    let mut kinds: BTreeMap<(&str, &str, &str), (u64, &str)> = BTreeMap::new();
    for r in results {
        for (kind, (count, sample)) in &r.kinds {
            kinds
                .entry((r.scenario.short(), r.system.short(), kind))
                .or_insert((0, sample))
                .0 += count;
        }
    }
    for ((scenario, system, kind), (count, sample)) in &kinds {
        let _ = writeln!(
            out,
            "| {scenario} | {system} | {} | {count} | {} |",
            cell(kind),
            cell(sample)
        );
    }
    out
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
            for scenario in &o.scenarios {
                results.push(run_round(system, *scenario, round, &bin, &base.path, &o));
            }
        }
    }
    let load_end = load_average();

    let mut out = report(&results, &o, &bin, (&load_start, &load_end));
    let _ = writeln!(out, "\nTotal run time {:.0?}.", started.elapsed());
    print!("{out}");
    let _ = io::stdout().flush();
    drop(base);
}
