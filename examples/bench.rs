//! End-to-end benchmark: direct Redis vs sentinel-proxy vs HAProxy (TCP mode).
//!
//! Run (one command, from the repository root):
//!
//! ```text
//! cargo run --release --example bench
//! cargo run --release --example bench -- --rounds 7 --requests 200000
//! ```
//!
//! Flags (all optional):
//!
//! * `--rounds R` (default 5): interleaved rounds; every figure is the median over rounds.
//! * `--requests N` (default 100000): requests per redis-benchmark run at `-P 1`.
//! * `--pipelined-requests M` (default 4 x N): requests per run at `-P 16`
//!   (more, so that a run lasts long enough to measure).
//! * `--clients C` (default 50): redis-benchmark `-c`.
//! * `--idle-conns K` (default 10000): idle connections for the memory test; 0 skips it.
//! * `--threads T` (default 2): threads for both proxies (sentinel-proxy's
//!   `worker_threads`, HAProxy's `nbthread`), the same for a fair comparison.
//!
//! What one run does, all on 127.0.0.1 and on free ports:
//!
//! 1. builds `target/release/sentinel-proxy` (`cargo build --release --bin sentinel-proxy`),
//!    starts a redis-server (no persistence, `--maxclients 30000`), a sentinel-proxy process
//!    in front of it (`max_clients = 20000`, `worker_threads = T`) and an HAProxy (`mode tcp`,
//!    `nbthread T`) in front of the same redis, configurations in a temporary directory;
//! 2. idle memory: opens K client connections to each proxy in turn, each sends one PING
//!    and reads +PONG (so the upstream connection exists), and reports the growth of the
//!    proxy's VmRSS per connection; then closes them and waits until Redis saw them go;
//! 3. throughput: `redis-benchmark --csv -t set|get -c C -P 1|16` against direct Redis,
//!    sentinel-proxy and HAProxy, round-robin per round (the starting target rotates from
//!    round to round) so that noise from the shared machine hits all targets alike;
//!    the CPU time (utime+stime from /proc/PID/stat) each proxy process used during its
//!    own runs is summed and divided by the requests it carried;
//! 4. prints Markdown tables (stdout; progress goes to stderr).
//!
//! Every child is killed by pid when the driver ends, also on panic (Drop guards), and
//! gets SIGKILL from the kernel if the driver itself dies (PR_SET_PDEATHSIG).
//! The driver raises its own RLIMIT_NOFILE (children inherit it).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Guard, TempDir, addr, free_port, load_average, median, start_on_free_port, version,
    voter_config,
};

/// Descriptor limit asked for (driver and, by inheritance, every child).
const NOFILE: u64 = 131_072;
/// Connections opened (and PINGed) at once in the idle-memory test.
const IDLE_BATCH: usize = 250;
/// Descriptors a proxy needs besides two per connection (listeners, epoll, logs...).
const FD_SPARE: u64 = 100;
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

// ---------------------------------------------------------------- options

struct Options {
    rounds: usize,
    requests: u64,
    pipelined_requests: u64,
    clients: u32,
    idle_conns: usize,
    threads: usize,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            rounds: 5,
            requests: 100_000,
            pipelined_requests: 0,
            clients: 50,
            idle_conns: 10_000,
            threads: 2,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                eprintln!(
                    "usage: cargo run --release --example bench -- [--rounds R] [--requests N] \
                     [--pipelined-requests M] [--clients C] [--idle-conns K] [--threads T]"
                );
                std::process::exit(0);
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
                "--requests" => o.requests = number(&value).max(1),
                "--pipelined-requests" => o.pipelined_requests = number(&value).max(1),
                "--clients" => o.clients = number(&value).max(1) as u32,
                "--idle-conns" => o.idle_conns = number(&value) as usize,
                "--threads" => o.threads = number(&value).max(1) as usize,
                _ => die(&format!("unknown flag {flag} (try --help)")),
            }
        }
        if o.pipelined_requests == 0 {
            o.pipelined_requests = o.requests * 4;
        }
        o
    }
}

fn die(message: &str) -> ! {
    eprintln!("bench: {message}");
    std::process::exit(2);
}

// ---------------------------------------------------------------- processes

/// One RESP PING answered by +PONG (through a proxy: the upstream works too).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    let mut buf = [0u8; 64];
    s.write_all(PING).is_ok() && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

fn start_redis(dir: &Path) -> (Guard, u16) {
    let make = |port: u16| {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            "--maxclients",
            "30000",
        ])
        .args(["--dir", &dir.display().to_string()]);
        cmd
    };
    start_on_free_port("redis-server", make, dir.join("redis.log"), ping)
}

fn start_sentinel_proxy(bin: &Path, dir: &Path, redis: u16, threads: usize) -> (Guard, u16) {
    let config = dir.join("sentinel-proxy.toml");
    let make = |port: u16| {
        let extra = "max_clients = 20000\nclient_idle_timeout = \"0s\"\nconnect_timeout = \"2s\"\n";
        let state = dir.join("sentinel-proxy.state");
        let text = voter_config(free_port(), &state, threads, "bench", port, redis, extra);
        std::fs::write(&config, text).expect("cannot write the proxy configuration");
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config).env("RUST_LOG", "warn");
        cmd
    };
    start_on_free_port("sentinel-proxy", make, dir.join("sentinel-proxy.log"), ping)
}

fn start_haproxy(dir: &Path, redis: u16, maxconn: u64, threads: usize) -> (Guard, u16) {
    let config = dir.join("haproxy.cfg");
    let make = |port: u16| {
        let text = format!(
            "global
    nbthread {threads}
    maxconn {maxconn}

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 2s
    timeout client 10m
    timeout server 10m

frontend redis_in
    bind 127.0.0.1:{port}
    default_backend redis_out

backend redis_out
    server redis 127.0.0.1:{redis}
"
        );
        std::fs::write(&config, text).expect("cannot write the HAProxy configuration");
        let mut cmd = Command::new("haproxy");
        cmd.arg("-f").arg(&config).arg("-db");
        cmd
    };
    start_on_free_port("haproxy", make, dir.join("haproxy.log"), ping)
}

/// Builds the release binary and returns its path.
fn build_proxy() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // target/<profile>/examples/bench -> target
    let exe = std::env::current_exe().expect("no current executable");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench: cargo build --release --bin sentinel-proxy");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "sentinel-proxy",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "cargo build --release failed");
    let bin = target.join("release").join("sentinel-proxy");
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------- /proc and rlimits

fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let wanted = libc::rlimit {
            rlim_cur: NOFILE,
            rlim_max: NOFILE.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            // Not privileged: the soft limit can still go up to the hard one.
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of a process (all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("cannot read /proc/PID/stat");
    // Fields after the command name, which ends at the last ')'; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("bad /proc/PID/stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("bad utime") + fields[12].parse::<u64>().expect("bad stime")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("cannot read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS")
}

fn redis_connected_clients(port: u16) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n").ok()?;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.windows(17).any(|w| w == b"connected_clients") || !text.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------- idle memory

struct IdleResult {
    before_kib: u64,
    after_kib: u64,
    after_close_kib: u64,
    conns: usize,
    redis_clients: Option<u64>,
    elapsed: Duration,
}

impl IdleResult {
    fn per_conn(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.conns as f64
    }
}

/// Opens `count` connections to `port`, each PINGed once, and measures `pid`'s RSS growth.
fn idle_memory(name: &str, proxy: &mut Guard, port: u16, redis: u16, count: usize) -> IdleResult {
    let pid = proxy.pid();
    let baseline_clients = redis_connected_clients(redis).unwrap_or(1);
    // Warm up: one session, so runtime threads and their allocator arenas exist.
    assert!(ping(port), "{name} does not answer PING");
    std::thread::sleep(Duration::from_millis(300));
    let before_kib = rss_kib(pid);
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
    while conns.len() < count {
        let batch = IDLE_BATCH.min(count - conns.len());
        let first = conns.len();
        for _ in 0..batch {
            let s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{name}: connection {} failed: {e}", conns.len() + 1));
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("read timeout");
            conns.push(s);
        }
        for s in &mut conns[first..] {
            s.write_all(PING).expect("cannot send PING");
        }
        for (i, s) in conns[first..].iter_mut().enumerate() {
            let mut reply = [0u8; 7];
            if let Err(e) = s.read_exact(&mut reply) {
                proxy.check_alive();
                panic!(
                    "{name}: connection {}: no reply to PING: {e}",
                    first + i + 1
                );
            }
            assert_eq!(
                &reply,
                b"+PONG\r\n",
                "{name}: connection {}: unexpected reply",
                first + i + 1
            );
        }
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after_kib = rss_kib(pid);
    let redis_clients = redis_connected_clients(redis);
    drop(conns);
    // Wait until the proxy has closed every upstream connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if redis_connected_clients(redis).is_some_and(|n| n <= baseline_clients) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after_close_kib = rss_kib(pid);
    IdleResult {
        before_kib,
        after_kib,
        after_close_kib,
        conns: count,
        redis_clients: redis_clients.map(|n| n.saturating_sub(baseline_clients)),
        elapsed,
    }
}

// ---------------------------------------------------------------- throughput

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Target {
    Direct,
    Proxy,
    HAProxy,
}

const TARGETS: [Target; 3] = [Target::Direct, Target::Proxy, Target::HAProxy];

#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
}

/// One `redis-benchmark --csv` run of one test.
fn redis_benchmark(port: u16, test: &str, clients: u32, pipeline: u32, requests: u64) -> Sample {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-t", test, "--csv"])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-benchmark failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let upper = test.to_ascii_uppercase();
    let row: Vec<String> = stdout
        .lines()
        .map(|l| {
            l.split(',')
                .map(|f| f.trim().trim_matches('"').to_string())
                .collect::<Vec<_>>()
        })
        .find(|f| f.first().is_some_and(|t| *t == upper) && f.len() >= 8)
        .unwrap_or_else(|| panic!("no {upper} row in redis-benchmark output:\n{stdout}"));
    let num = |i: usize| -> f64 {
        row[i]
            .parse()
            .unwrap_or_else(|_| panic!("bad number {:?} in {row:?}", row[i]))
    };
    Sample {
        rps: num(1),
        p50: num(4),
        p99: num(6),
    }
}

/// Everything measured for one (test, pipeline, target).
#[derive(Default)]
struct Series {
    samples: Vec<Sample>,
    proxy_ticks: u64,
    redis_ticks: u64,
    requests: u64,
}

fn fmt_rps(rps: f64) -> String {
    if rps >= 1e6 {
        format!("{:.2}M", rps / 1e6)
    } else {
        format!("{:.1}k", rps / 1e3)
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let mut opts = Options::parse();
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: note: the driver is a debug build; use `cargo run --release --example bench`"
        );
    }
    let nofile = raise_nofile();
    // A proxy holds two descriptors per idle client (client + upstream).
    let idle_cap = (nofile.saturating_sub(FD_SPARE) / 2) as usize;
    let mut idle_note = String::new();
    if opts.idle_conns > idle_cap {
        idle_note = format!(
            " (asked for {}, but RLIMIT_NOFILE is {nofile} and cannot be raised here: a proxy needs 2 \
             descriptors per connection)",
            opts.idle_conns
        );
        eprintln!("bench: warning: idle test reduced to {idle_cap} connections{idle_note}");
        opts.idle_conns = idle_cap;
    }
    let tck = clock_ticks();
    let bin = build_proxy();
    let started = Instant::now();
    let load_start = load_average();

    let dir = TempDir::new("sentinel-proxy-bench", false);
    let (mut redis, redis_port) = start_redis(&dir.path);
    let (mut proxy, proxy_port) = start_sentinel_proxy(&bin, &dir.path, redis_port, opts.threads);
    let (mut haproxy, haproxy_port) = start_haproxy(
        &dir.path,
        redis_port,
        (nofile.saturating_sub(FD_SPARE) / 2).min(30_000),
        opts.threads,
    );
    eprintln!(
        "bench: redis-server pid {} port {redis_port}; sentinel-proxy pid {} port {proxy_port}; \
         haproxy pid {} port {haproxy_port}; RLIMIT_NOFILE {nofile}",
        redis.pid(),
        proxy.pid(),
        haproxy.pid()
    );

    // Idle memory first, on fresh processes (so memory freed by the throughput
    // runs and kept by the allocators does not hide the growth).
    let mut idle = Vec::new();
    if opts.idle_conns > 0 {
        for (name, guard, port) in [
            ("sentinel-proxy", &mut proxy, proxy_port),
            ("HAProxy", &mut haproxy, haproxy_port),
        ] {
            eprintln!(
                "bench: idle memory: {} connections to {name}",
                opts.idle_conns
            );
            let r = idle_memory(name, guard, port, redis_port, opts.idle_conns);
            eprintln!(
                "bench:   {name}: RSS {} -> {} KiB ({:.2} KiB/conn), {} KiB after closing; opened in {:.2?}",
                r.before_kib,
                r.after_kib,
                r.per_conn(),
                r.after_close_kib,
                r.elapsed
            );
            idle.push((name, r));
        }
    }

    // Throughput, interleaved.
    let cases: [(&str, u32); 4] = [("set", 1), ("get", 1), ("set", 16), ("get", 16)];
    let mut series: BTreeMap<(usize, Target), Series> = BTreeMap::new();
    for round in 0..opts.rounds {
        for (case_index, &(test, pipeline)) in cases.iter().enumerate() {
            let requests = if pipeline == 1 {
                opts.requests
            } else {
                opts.pipelined_requests
            };
            for k in 0..TARGETS.len() {
                let target = TARGETS[(k + round) % TARGETS.len()];
                let (port, guard) = match target {
                    Target::Direct => (redis_port, None),
                    Target::Proxy => (proxy_port, Some(&mut proxy)),
                    Target::HAProxy => (haproxy_port, Some(&mut haproxy)),
                };
                let proxy_pid = guard.as_ref().map(|g| g.pid());
                let proxy_before = proxy_pid.map(cpu_ticks).unwrap_or(0);
                let redis_before = cpu_ticks(redis.pid());
                let sample = redis_benchmark(port, test, opts.clients, pipeline, requests);
                let redis_after = cpu_ticks(redis.pid());
                let proxy_after = proxy_pid.map(cpu_ticks).unwrap_or(0);
                if let Some(g) = guard {
                    g.check_alive();
                }
                redis.check_alive();
                eprintln!(
                    "bench: round {}/{} {:>3} -P {pipeline:<2} {target:<7?} {:>9} rps  p50 {:.3} ms  p99 {:.3} ms",
                    round + 1,
                    opts.rounds,
                    test.to_uppercase(),
                    fmt_rps(sample.rps),
                    sample.p50,
                    sample.p99
                );
                let s = series.entry((case_index, target)).or_default();
                s.samples.push(sample);
                s.proxy_ticks += proxy_after - proxy_before;
                s.redis_ticks += redis_after - redis_before;
                s.requests += requests;
            }
        }
    }
    let load_end = load_average();

    // ------------------------------------------------------------ report
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### sentinel-proxy vs HAProxy vs direct Redis\n\n\
         {} (no persistence), {}; {} CPUs; load average {} at start, {} at end.  \n\
         Both proxies on {} thread(s) (`worker_threads`, `nbthread`). redis-benchmark `-c {}`, {} rounds interleaved (medians), `-n {}` at P1, `-n {}` at P16; \
         throughput medians, latency medians of each run's p50/p99 (ms, direct / proxy / HAProxy); \
         CPU = utime+stime of the proxy process over all its runs / requests.\n",
        version("redis-server", "--version")
            .split(" sha=")
            .next()
            .unwrap_or(""),
        version("haproxy", "-v").split(" - ").next().unwrap_or(""),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load_start,
        load_end,
        opts.threads,
        opts.clients,
        opts.rounds,
        opts.requests,
        opts.pipelined_requests,
    );
    let _ = writeln!(
        out,
        "| test | P | direct rps | proxy rps | HAProxy rps | proxy/HAProxy (range, rounds won) | proxy/direct | p50 ms d/p/h | p99 ms d/p/h | CPU µs/req proxy | CPU µs/req HAProxy | CPU proxy/HAProxy |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut redis_rows = String::new();
    for (case_index, &(test, pipeline)) in cases.iter().enumerate() {
        let get = |t: Target| &series[&(case_index, t)];
        let rps = |t: Target| median(get(t).samples.iter().map(|s| s.rps).collect());
        let p50 = |t: Target| median(get(t).samples.iter().map(|s| s.p50).collect());
        let p99 = |t: Target| median(get(t).samples.iter().map(|s| s.p99).collect());
        let cpu_us = |t: Target| {
            let s = get(t);
            s.proxy_ticks as f64 / tck * 1e6 / s.requests as f64
        };
        let redis_us = |t: Target| {
            let s = get(t);
            s.redis_ticks as f64 / tck * 1e6 / s.requests as f64
        };
        // Per-round ratios, to show how noisy the pairing is.
        let ratios: Vec<f64> = get(Target::Proxy)
            .samples
            .iter()
            .zip(&get(Target::HAProxy).samples)
            .map(|(p, h)| p.rps / h.rps)
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // Rounds the proxy won: a sign test's count, read against R/2.
        let won = ratios.iter().filter(|&&r| r >= 1.0).count();
        let (d, p, h) = (Target::Direct, Target::Proxy, Target::HAProxy);
        let _ = writeln!(
            out,
            "| {} | {pipeline} | {} | {} | {} | {:.2} ({:.2}-{:.2}, {won}/{}) | {:.2} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.2} | {:.2} | {:.2} |",
            test.to_uppercase(),
            fmt_rps(rps(d)),
            fmt_rps(rps(p)),
            fmt_rps(rps(h)),
            rps(p) / rps(h),
            lo,
            hi,
            ratios.len(),
            rps(p) / rps(d),
            p50(d),
            p50(p),
            p50(h),
            p99(d),
            p99(p),
            p99(h),
            cpu_us(p),
            cpu_us(h),
            cpu_us(p) / cpu_us(h),
        );
        let _ = writeln!(
            redis_rows,
            "| {} | {pipeline} | {:.2} | {:.2} | {:.2} |",
            test.to_uppercase(),
            redis_us(d),
            redis_us(p),
            redis_us(h)
        );
    }
    let _ = writeln!(
        out,
        "\nredis-server CPU µs per request, by the path the requests took (same work, so differences \
         show how the proxy batches what it forwards):\n\n\
         | test | P | direct | via proxy | via HAProxy |\n|---|---|---|---|---|\n{redis_rows}"
    );
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "Idle connections: {} clients{idle_note}, each sent one PING and got +PONG (so the upstream connection exists), then idle.\n\n\
             | proxy | RSS before (KiB) | RSS with {} idle (KiB) | KiB per connection (client + upstream) | RSS after closing (KiB) | upstream conns seen by Redis | time to open all (batches of {IDLE_BATCH}) |\n\
             |---|---|---|---|---|---|---|",
            opts.idle_conns, opts.idle_conns
        );
        for (name, r) in &idle {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.2} | {} | {} | {:.2} s |",
                r.before_kib,
                r.after_kib,
                r.per_conn(),
                r.after_close_kib,
                r.redis_clients
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                r.elapsed.as_secs_f64()
            );
        }
    }
    let _ = writeln!(out, "\nTotal run time {:.0?}.", started.elapsed());
    print!("{out}");
    let _ = io::stdout().flush();

    drop(haproxy);
    drop(proxy);
    drop(redis);
    drop(dir);
}
