//! What the benchmark drivers share: child processes killed by pid (and by
//! the kernel if the driver dies), temporary directories, free loopback
//! ports, and small reporting helpers.
#![allow(dead_code)] // each driver uses a different subset

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
pub const STARTUP: Duration = Duration::from_secs(20);

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    killed: bool,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now (kill -9 by pid) and reap.
    pub fn kill(&mut self) {
        if !self.killed {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.killed = true;
        }
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the child's log if it has exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` with output to `log`, killed by the kernel if the driver dies.
pub fn spawn(name: impl Into<String>, mut cmd: Command, log: PathBuf) -> Guard {
    let name = name.into();
    let out = std::fs::File::create(&log).expect("cannot create a log file");
    let err = out.try_clone().expect("cannot clone a log file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Guard {
        name,
        child,
        log,
        killed: false,
    }
}

/// Starts a server on a free port (`up` says when it answers), retrying on
/// another port if it does not come up (port taken between probe and bind).
pub fn start_on_free_port(
    name: &str,
    mut make: impl FnMut(u16) -> Command,
    log: PathBuf,
    up: impl Fn(u16) -> bool,
) -> (Guard, u16) {
    for _attempt in 0..5 {
        let port = free_port();
        let mut guard = spawn(name, make(port), log.clone());
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if guard.exited() {
                break;
            }
            if up(port) {
                return (guard, port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{name} did not come up on port {port}; retrying. Log:\n{}",
            guard.log_text()
        );
    }
    panic!("{name} did not start after 5 attempts");
}

/// A directory removed when dropped (unless kept).
pub struct TempDir {
    pub path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str, keep: bool) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temporary directory");
        TempDir { path, keep }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A sentinel-proxy voter configuration: Sentinel port `sentinel`, sessions
/// on `threads` threads, one service `name` listening on `listen` in front of
/// `master`, plus the service keys in `service_extra` (TOML lines).
pub fn voter_config(
    sentinel: u16,
    state: &Path,
    threads: usize,
    name: &str,
    listen: u16,
    master: u16,
    service_extra: &str,
) -> String {
    format!(
        r#"[sentinel]
role = "voter"
listen = "127.0.0.1:{sentinel}"
state_file = "{state}"

[admin]
listen = "127.0.0.1:{admin}"

[proxy]
drain_timeout = "1s"
worker_threads = {threads}

[[service]]
name = "{name}"
listen = "127.0.0.1:{listen}"
master = "127.0.0.1:{master}"
{service_extra}"#,
        admin = free_port(),
        state = state.display(),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first line a command prints for `arg` (its version).
pub fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}
