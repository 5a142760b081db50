//! Test harness: real `redis-server` processes and sentinel-proxy instances
//! on free loopback ports, killed by pid when dropped.
#![allow(dead_code)]

pub mod cluster;
pub mod raw;
// The library's own helper (a port that refuses connections), shared as is.
#[path = "../../src/test_support.rs"]
pub mod test_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode as resp2_decode;
use redis_protocol::resp2::types::OwnedFrame as Resp2Frame;
use redis_protocol::resp3::decode::complete::decode;
use redis_protocol::resp3::types::OwnedFrame;
use sentinel_proxy::config::Config;
use tokio_util::sync::CancellationToken;

/// How long any wait in a test may take before it fails. Generous: tests run
/// in parallel on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Fails the test with an install hint when a program is missing.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not on PATH: install it with `apt-get install -y redis-server redis-tools` (Debian/Ubuntu)"
    );
}

/// Polls `condition` until it holds or [`PATIENCE`] runs out.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A `redis-server` child process on a free loopback port.
pub struct Redis {
    pub addr: SocketAddr,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts redis-server with extra `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        require("redis-server");
        for _attempt in 0..5 {
            if let Some(redis) = Redis::spawn(free_port(), extra) {
                return redis;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    /// Starts redis-server on `port`; `None` if it cannot (the port was
    /// taken meanwhile).
    pub fn start_on(port: u16) -> Option<Redis> {
        Redis::start_on_with(port, &[])
    }

    /// Starts redis-server on `port` with extra arguments; `None` if it
    /// cannot (the port was taken meanwhile).
    pub fn start_on_with(port: u16, extra: &[&str]) -> Option<Redis> {
        require("redis-server");
        Redis::spawn(port, extra)
    }

    fn spawn(port: u16, extra: &[&str]) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot spawn redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // port taken or bad option
            }
            if ping(addr) {
                return Some(Redis { addr, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A direct connection, bypassing any proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok()
        && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// A configuration text with one service in front of `master`, plus extra
/// `key = value` lines for that service.
pub fn config_text(master: SocketAddr, listen: &str, service_extra: &str) -> String {
    format!(
        r#"
[sentinel]
role = "observer"
listen = "127.0.0.1:{sentinel}"

[admin]
listen = "127.0.0.1:{admin}"

[proxy]
drain_timeout = "5s"

[[service]]
name = "mymaster"
listen = "{listen}"
master = "{master}"
{service_extra}
"#,
        sentinel = free_port(),
        admin = free_port(),
    )
}

/// sentinel-proxy running in this test process, on its own runtime thread.
pub struct Proxy {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy in front of `master` with default settings.
    pub fn start(master: SocketAddr) -> Proxy {
        Proxy::start_with(master, "")
    }

    /// A proxy in front of `master` with extra service settings.
    pub fn start_with(master: SocketAddr, service_extra: &str) -> Proxy {
        let text = config_text(master, "127.0.0.1:0", service_extra);
        let config =
            Config::parse(&PathBuf::from("test.toml"), &text).expect("test config is valid");
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listeners = sentinel_proxy::Listeners::bind(&config)
                    .await
                    .expect("bind");
                let addr = listeners.services[0].local_addr().expect("local addr");
                tx.send(addr).expect("report address");
                sentinel_proxy::run(config, listeners, stop)
                    .await
                    .expect("proxy run");
            });
        });
        let addr = rx.recv_timeout(PATIENCE).expect("proxy did not start");
        Proxy {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether `run` has returned (all sessions drained).
    pub fn is_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sentinel-proxy binary built by cargo for these tests.
pub fn proxy_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sentinel-proxy"))
}

/// A blocking test client that speaks raw bytes and decodes RESP2/RESP3.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends one command as a RESP array and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> OwnedFrame {
        self.send(&encode(args));
        self.read_frame()
    }

    /// Reads one complete frame (RESP2 or RESP3; RESP2 nulls become `Null`).
    pub fn read_frame(&mut self) -> OwnedFrame {
        loop {
            let decoded = match decode(&self.buf) {
                Ok(decoded) => decoded,
                // The RESP3 decoder rejects RESP2's `$-1` and `*-1`.
                Err(_) => resp2_decode(&self.buf)
                    .expect("valid RESP from the proxy")
                    .map(|(frame, used)| (from_resp2(frame), used)),
            };
            if let Some((frame, used)) = decoded {
                self.buf.drain(..used);
                return frame;
            }
            self.fill();
        }
    }

    /// Reads exactly `n` raw bytes.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until the server closes the connection; returns what came.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return std::mem::take(&mut self.buf);
                }
                Err(e) => panic!("read while waiting for close: {e}"),
            }
        }
    }

    fn fill(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "connection closed; buffered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A simple-string or bulk frame as text (panics on other kinds).
/// The elements of an array reply, as text.
pub fn strings(frame: &OwnedFrame) -> Vec<String> {
    match frame {
        OwnedFrame::Array { data, .. } | OwnedFrame::Push { data, .. } => {
            data.iter().map(text).collect()
        }
        other => panic!("not an array: {other:?}"),
    }
}

pub fn text(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleString { data, .. } | OwnedFrame::BlobString { data, .. } => {
            String::from_utf8_lossy(data).into_owned()
        }
        OwnedFrame::SimpleError { data, .. } => data.clone(),
        OwnedFrame::Number { data, .. } => data.to_string(),
        other => panic!("not a string frame: {other:?}"),
    }
}

fn from_resp2(frame: Resp2Frame) -> OwnedFrame {
    match frame {
        Resp2Frame::SimpleString(data) => OwnedFrame::SimpleString {
            data,
            attributes: None,
        },
        Resp2Frame::Error(data) => OwnedFrame::SimpleError {
            data,
            attributes: None,
        },
        Resp2Frame::Integer(data) => OwnedFrame::Number {
            data,
            attributes: None,
        },
        Resp2Frame::BulkString(data) => OwnedFrame::BlobString {
            data,
            attributes: None,
        },
        Resp2Frame::Array(items) => OwnedFrame::Array {
            data: items.into_iter().map(from_resp2).collect(),
            attributes: None,
        },
        Resp2Frame::Null => OwnedFrame::Null,
    }
}

/// A file in the temp dir with a unique name, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(prefix: &str, text: &str) -> TempFile {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
