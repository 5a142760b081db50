//! Failover harness: Redis replicas, real Sentinels (`redis-server --sentinel`)
//! and voter sentinel-proxy *processes*, each in its own temp dir on free
//! loopback ports, killed by pid on drop. Plus a small client for the
//! Sentinel port that works against proxies and real Sentinels alike, and
//! never panics (a dead or stopped member is just "no answer").

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode as resp2_decode;
use redis_protocol::resp2::types::OwnedFrame as Frame;

use super::{PATIENCE, Redis, free_port, proxy_binary, require};

/// How long a failover may take on a loaded 2-core machine.
pub const FAILOVER_PATIENCE: Duration = Duration::from_secs(60);

/// The master name every member monitors.
pub const MASTER_NAME: &str = "mymaster";

// ---------------------------------------------------------------------------
// Temp dirs, signals, polling

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "sp-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Bytes that arrived on the TCP connection between `server` (local side)
/// and `peer` but were not read yet by the process at `server` (the
/// `rx_queue` column of `/proc/net/tcp`, IPv4 only). For a SIGSTOPped
/// server, a non-zero count says a request reached it and waits there.
/// `None` if no such connection exists.
pub fn unread_bytes(server: SocketAddr, peer: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("unread_bytes: IPv4 only, got {a}"),
    };
    let (local, remote) = (hex(server), hex(peer));
    read_lossy(Path::new("/proc/net/tcp"))
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
                return None;
            }
            let (_tx, rx) = fields.get(4)?.split_once(':')?;
            u64::from_str_radix(rx, 16).ok()
        })
}

/// Sends `signal` to `pid` (SIGSTOP, SIGCONT, ...).
pub fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with the
/// last reason it gave. Returns the value `check` produced.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}: {why}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the last `n` lines of `text` under a heading (for failed tests).
fn dump_tail(heading: &str, text: &str, n: usize) {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    eprintln!("----- {heading} (last {} lines) -----", lines.len() - start);
    for line in &lines[start..] {
        eprintln!("{line}");
    }
}

/// Logs of Sentinels and voters are printed when they drop during a panic,
/// or always with `SP_TEST_LOGS=1`.
fn show_logs() -> bool {
    std::thread::panicking() || std::env::var_os("SP_TEST_LOGS").is_some()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Redis instances

/// A `redis-server` with its own working directory (replication's RDB files
/// and `CONFIG REWRITE` attempts stay out of the repository).
pub struct Node {
    pub redis: Redis,
    pub dir: TempDir,
}

impl Node {
    /// A master (a standalone redis-server).
    pub fn master() -> Node {
        Node::start(&[])
    }

    /// A master started with extra `--option value` arguments.
    pub fn master_with(extra: &[&str]) -> Node {
        Node::start(extra)
    }

    /// A replica of `master` (`--replicaof 127.0.0.1 <port>`).
    pub fn replica_of(master: SocketAddr) -> Node {
        Node::start(&["--replicaof", "127.0.0.1", &master.port().to_string()])
    }

    fn start(extra: &[&str]) -> Node {
        let dir = TempDir::new("redis");
        let dir_arg = dir.path.to_string_lossy().into_owned();
        let mut args = vec!["--dir", dir_arg.as_str()];
        args.extend_from_slice(extra);
        let redis = Redis::start_with(&args);
        Node { redis, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.redis.addr
    }

    pub fn pid(&self) -> u32 {
        self.redis.pid()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.redis.kill();
    }

    pub fn stop(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn cont(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Kills the server and starts a fresh one (empty dataset, a master)
    /// on the same port and in the same directory.
    pub fn restart(&mut self) {
        self.redis.kill();
        let port = self.addr().port();
        let dir_arg = self.dir.path.to_string_lossy().into_owned();
        self.redis = poll(
            &format!("redis-server to start again on port {port}"),
            PATIENCE,
            || {
                Redis::start_on_with(port, &["--dir", &dir_arg])
                    .ok_or_else(|| "it exited (port still taken?) or did not answer".to_owned())
            },
        );
    }
}

/// A master and two replicas, replication established.
pub struct Trio {
    pub master: Node,
    pub replicas: Vec<Node>,
}

impl Trio {
    pub fn start() -> Trio {
        Trio::start_with_master(&[])
    }

    /// A trio whose master gets extra `--option value` arguments.
    pub fn start_with_master(extra: &[&str]) -> Trio {
        let master = Node::master_with(extra);
        let replicas = vec![
            Node::replica_of(master.addr()),
            Node::replica_of(master.addr()),
        ];
        let addr = master.addr();
        poll("both replicas to be in sync", PATIENCE, || {
            let info = info_replication(addr).ok_or("no INFO from the master")?;
            let connected = info.get("connected_slaves").map(String::as_str);
            let online = info.values().filter(|v| v.contains("state=online")).count();
            if connected == Some("2") && online == 2 {
                Ok(())
            } else {
                Err(format!("connected_slaves={connected:?}, online={online}"))
            }
        });
        Trio { master, replicas }
    }

    pub fn replica_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(Node::addr).collect()
    }
}

// ---------------------------------------------------------------------------
// Real Sentinel

/// A real Redis Sentinel (`redis-server <conf> --sentinel`) in a temp dir,
/// logging to `sentinel.log` there.
pub struct RealSentinel {
    pub addr: SocketAddr,
    pub dir: TempDir,
    child: Child,
}

impl RealSentinel {
    pub fn start(
        master: SocketAddr,
        quorum: u32,
        down_after_ms: u64,
        failover_timeout_ms: u64,
    ) -> RealSentinel {
        require("redis-server");
        let dir = TempDir::new("sentinel");
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("sentinel.conf");
            let text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 protected-mode no\n\
                 daemonize no\n\
                 dir {dir}\n\
                 logfile {log}\n\
                 loglevel notice\n\
                 sentinel monitor {MASTER_NAME} {ip} {mport} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n\
                 sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n",
                dir = dir.path.display(),
                log = dir.join("sentinel.log").display(),
                ip = master.ip(),
                mport = master.port(),
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot spawn redis-server --sentinel");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if wait_serving(&mut child, addr) {
                return RealSentinel { addr, dir, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "redis-server --sentinel did not start after 5 attempts; log:\n{}",
            read_lossy(&dir.join("sentinel.log"))
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("sentinel.log"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealSentinel {
    fn drop(&mut self) {
        self.kill();
        if show_logs() {
            dump_tail(&format!("real sentinel {}", self.addr), &self.log(), 60);
        }
    }
}

/// Waits until `child` answers PING on `addr`; false if it exited first
/// (port taken) or never answered.
fn wait_serving(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if matches!(ask(addr, &["PING"]), Ok(Frame::SimpleString(ref s)) if s == b"PONG") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------------------
// Voter proxy process

/// What a voter proxy is configured with.
#[derive(Clone, Debug)]
pub struct VoterSpec {
    pub master: SocketAddr,
    pub quorum: u32,
    pub down_after: String,
    pub failover_timeout: String,
    /// Extra `key = value` lines for the service section.
    pub service_extra: Vec<String>,
}

impl VoterSpec {
    pub fn new(
        master: SocketAddr,
        quorum: u32,
        down_after: &str,
        failover_timeout: &str,
    ) -> VoterSpec {
        VoterSpec {
            master,
            quorum,
            down_after: down_after.into(),
            failover_timeout: failover_timeout.into(),
            service_extra: Vec::new(),
        }
    }

    /// Adds a `key = value` line to the service section, e.g.
    /// `hold_timeout = "1s"`.
    pub fn with(mut self, line: &str) -> VoterSpec {
        self.service_extra.push(line.to_owned());
        self
    }
}

/// The sentinel-proxy binary running as a voter, with its config, state
/// file and stderr log in its own temp dir. Restarting keeps all three and
/// the ports.
pub struct VoterProxy {
    /// The Sentinel port.
    pub sentinel_addr: SocketAddr,
    /// The data port of service `mymaster`.
    pub data_addr: SocketAddr,
    pub dir: TempDir,
    child: Option<Child>,
}

impl VoterProxy {
    pub fn start(spec: &VoterSpec) -> VoterProxy {
        let dir = TempDir::new("voter");
        for _attempt in 0..5 {
            let sentinel_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let data_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            if sentinel_addr == data_addr {
                continue;
            }
            let text = format!(
                r#"
[sentinel]
role = "voter"
listen = "{sentinel_addr}"
state_file = "{state}"

[admin]
listen = "127.0.0.1:{admin}"

[proxy]
drain_timeout = "1s"

[[service]]
name = "{MASTER_NAME}"
listen = "{data_addr}"
master = "{master}"
quorum = {quorum}
down_after = "{down_after}"
failover_timeout = "{failover_timeout}"
{extra}
"#,
                state = dir.join("sentinel-proxy.state").display(),
                admin = free_port(),
                master = spec.master,
                quorum = spec.quorum,
                down_after = spec.down_after,
                failover_timeout = spec.failover_timeout,
                extra = spec.service_extra.join("\n"),
            );
            std::fs::write(dir.join("config.toml"), text).expect("write config.toml");
            if let Some(child) = spawn_voter(&dir.path, sentinel_addr, data_addr) {
                return VoterProxy {
                    sentinel_addr,
                    data_addr,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!(
            "sentinel-proxy voter did not start after 5 attempts; stderr:\n{}",
            read_lossy(&dir.join("stderr.log"))
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("voter is running").id()
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("sentinel-proxy.state")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Everything the process wrote to stderr, across restarts.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.join("stderr.log"))
    }

    /// SIGKILL (`kill -9`), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn cont(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Kills the process if running and starts it again with the same
    /// config, ports and state file.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = spawn_voter(&self.dir.path, self.sentinel_addr, self.data_addr) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "restarted voter did not come up; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A client session through the data port.
    pub fn client(&self) -> super::Client {
        super::Client::connect(self.data_addr)
    }
}

/// Starts the binary with `dir/config.toml`, stderr appended to
/// `dir/stderr.log`; the child once both ports answer, `None` if it exited
/// (a port was taken) or never answered.
fn spawn_voter(dir: &Path, sentinel_addr: SocketAddr, data_addr: SocketAddr) -> Option<Child> {
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .expect("open stderr.log");
    let mut child = proxy_binary()
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("cannot spawn sentinel-proxy");
    if wait_serving(&mut child, sentinel_addr)
        && TcpStream::connect_timeout(&data_addr, Duration::from_secs(1)).is_ok()
    {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for VoterProxy {
    fn drop(&mut self) {
        self.kill();
        if show_logs() {
            dump_tail(
                &format!("voter proxy {}", self.sentinel_addr),
                &self.stderr(),
                60,
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Asking Sentinel ports (proxies and real Sentinels) and Redis instances

/// Sends one command on a new connection and reads one RESP2 reply, with
/// short timeouts. Errors (refused, timed out, closed) are returned, never
/// panicked on.
pub fn ask(addr: SocketAddr, args: &[&str]) -> Result<Frame, String> {
    let mut stream = connect(addr)?;
    ask_on(&mut stream, args)
}

/// A connection with short timeouts, for [`ask_on`].
pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends one command on `stream` and reads one RESP2 reply (the stream
/// carries nothing else, so no bytes are left over).
pub fn ask_on(stream: &mut TcpStream, args: &[&str]) -> Result<Frame, String> {
    stream
        .write_all(&super::encode(args))
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((frame, _)) = resp2_decode(&buf).map_err(|e| format!("bad RESP: {e:?}"))? {
            return Ok(frame);
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn frame_text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::SimpleString(b) | Frame::BulkString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        Frame::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `SENTINEL get-master-addr-by-name mymaster`.
pub fn master_addr_by_name(sentinel: SocketAddr) -> Result<SocketAddr, String> {
    let frame = ask(
        sentinel,
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    )?;
    if let Frame::Array(items) = &frame
        && let [ip, port] = items.as_slice()
        && let (Some(ip), Some(port)) = (frame_text(ip), frame_text(port))
    {
        return format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("{ip}:{port}: {e}"));
    }
    Err(format!(
        "get-master-addr-by-name from {sentinel}: {frame:?}"
    ))
}

/// `SENTINEL master mymaster` as a field map.
pub fn sentinel_master(sentinel: SocketAddr) -> Result<HashMap<String, String>, String> {
    let frame = ask(sentinel, &["SENTINEL", "master", MASTER_NAME])?;
    let Frame::Array(items) = &frame else {
        return Err(format!("SENTINEL master from {sentinel}: {frame:?}"));
    };
    let texts: Vec<String> = items.iter().filter_map(frame_text).collect();
    if texts.len() != items.len() || !texts.len().is_multiple_of(2) {
        return Err(format!("SENTINEL master from {sentinel}: {frame:?}"));
    }
    Ok(texts
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect())
}

/// The `config-epoch` field of `SENTINEL master mymaster`.
pub fn config_epoch(sentinel: SocketAddr) -> Result<u64, String> {
    let fields = sentinel_master(sentinel)?;
    let epoch = fields
        .get("config-epoch")
        .ok_or_else(|| format!("no config-epoch in {fields:?}"))?;
    epoch
        .parse()
        .map_err(|e| format!("config-epoch {epoch:?}: {e}"))
}

/// `SENTINEL myid`.
pub fn sentinel_myid(sentinel: SocketAddr) -> Result<String, String> {
    let frame = ask(sentinel, &["SENTINEL", "myid"])?;
    frame_text(&frame).ok_or_else(|| format!("SENTINEL myid from {sentinel}: {frame:?}"))
}

/// `INFO replication` of a Redis instance as a field map.
pub fn info_replication(redis: SocketAddr) -> Option<HashMap<String, String>> {
    let frame = ask(redis, &["INFO", "replication"]).ok()?;
    let text = frame_text(&frame)?;
    Some(
        text.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The first element of `ROLE` ("master", "slave"), if the instance answers.
pub fn role(redis: SocketAddr) -> Option<String> {
    match ask(redis, &["ROLE"]).ok()? {
        Frame::Array(items) => items.first().and_then(frame_text),
        _ => None,
    }
}

/// The instances among `candidates` that say they are a master, by both
/// `ROLE` and `INFO replication` (a dead or stopped one says nothing).
pub fn masters_among(candidates: &[SocketAddr]) -> Vec<SocketAddr> {
    candidates
        .iter()
        .copied()
        .filter(|&a| {
            role(a).as_deref() == Some("master")
                && info_replication(a)
                    .is_some_and(|i| i.get("role").map(String::as_str) == Some("master"))
        })
        .collect()
}

/// The master a replica follows, per its `INFO replication`.
/// Waits (up to [`FAILOVER_PATIENCE`]) until `redis` is a replica of `master`.
pub fn wait_follows(what: &str, redis: SocketAddr, master: SocketAddr) {
    poll(what, FAILOVER_PATIENCE, || match replica_of(redis) {
        Some(m) if m == master => Ok(()),
        m => Err(format!("{redis} follows {m:?}")),
    });
}

pub fn replica_of(redis: SocketAddr) -> Option<SocketAddr> {
    let info = info_replication(redis)?;
    if info.get("role").map(String::as_str) != Some("slave") {
        return None;
    }
    format!("{}:{}", info.get("master_host")?, info.get("master_port")?)
        .parse()
        .ok()
}

/// Waits until every Sentinel port in `members` knows `replicas` replicas
/// and all the other members, so a failover has everything it needs.
pub fn wait_discovered(members: &[SocketAddr], replicas: usize) {
    poll(
        "every member to discover the replicas and the other members",
        FAILOVER_PATIENCE,
        || {
            for &m in members {
                let fields = sentinel_master(m)?;
                let slaves = fields.get("num-slaves").cloned().unwrap_or_default();
                let others = fields
                    .get("num-other-sentinels")
                    .cloned()
                    .unwrap_or_default();
                if slaves != replicas.to_string() || others != (members.len() - 1).to_string() {
                    return Err(format!(
                        "{m}: num-slaves={slaves} num-other-sentinels={others}"
                    ));
                }
            }
            Ok(())
        },
    );
}

/// `n` voter proxies started from `spec`, returned once every one knows
/// `replicas` replicas and all the others (see [`wait_discovered`]).
pub fn start_voters(spec: &VoterSpec, n: usize, replicas: usize) -> Vec<VoterProxy> {
    let voters: Vec<VoterProxy> = (0..n).map(|_| VoterProxy::start(spec)).collect();
    wait_discovered(&sentinel_addrs(&voters), replicas);
    voters
}

/// The Sentinel ports of `voters`.
pub fn sentinel_addrs(voters: &[VoterProxy]) -> Vec<SocketAddr> {
    voters.iter().map(|v| v.sentinel_addr).collect()
}

/// Waits until exactly one of `candidates` is a master and every member
/// reports it; returns it.
pub fn wait_new_master(members: &[SocketAddr], candidates: &[SocketAddr]) -> SocketAddr {
    poll(
        "a replica to be promoted and every member to report it",
        FAILOVER_PATIENCE,
        || {
            let masters = masters_among(candidates);
            let [promoted] = masters.as_slice() else {
                return Err(format!("masters among the candidates: {masters:?}"));
            };
            for &m in members {
                let reported = master_addr_by_name(m)?;
                if reported != *promoted {
                    return Err(format!("{m} reports {reported}, {promoted} is master"));
                }
            }
            Ok(*promoted)
        },
    )
}

/// Waits until every member reports the same config epoch (at least 1); returns it.
pub fn wait_same_epoch(members: &[SocketAddr]) -> u64 {
    poll(
        "every member to report the same config epoch",
        FAILOVER_PATIENCE,
        || {
            let epochs = members
                .iter()
                .map(|&m| config_epoch(m))
                .collect::<Result<Vec<u64>, String>>()?;
            match epochs.as_slice() {
                [first, rest @ ..] if *first >= 1 && rest.iter().all(|e| e == first) => Ok(*first),
                _ => Err(format!("config epochs: {epochs:?}")),
            }
        },
    )
}

/// `sentinel current-epoch N` from a state or Sentinel config file.
pub fn current_epoch_in(path: &Path) -> Option<u64> {
    read_lossy(path).lines().find_map(|l| {
        l.trim()
            .strip_prefix("sentinel current-epoch ")?
            .trim()
            .parse()
            .ok()
    })
}

/// Whether a log holds the event `name` exactly (so `+failover-end` does not
/// match `+failover-end-for-timeout`).
pub fn logged_event(log: &str, name: &str) -> bool {
    log.lines().any(|line| {
        line.match_indices(name).any(|(i, _)| {
            line[i + name.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '"')
        })
    })
}

/// Creates a file with `text`, for tests that plant state files.
pub fn write_file(path: &Path, text: &str) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("write");
}
