//! The command line: `check`, configuration errors that name the file, line
//! and key, the config path from the environment, log formats; and the
//! configuration's defaults and value formats.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use sentinel_proxy::config::{ByteSize, Config, ConfigError, Dur, Role};
use support::*;

const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");

/// A valid configuration; appended lines start at line 12, inside the service.
const BASE: &str = r#"[sentinel]
role = "voter"
listen = "127.0.0.1:26379"

[admin]
listen = "127.0.0.1:9187"

[[service]]
name = "mymaster"
listen = "127.0.0.1:6380"
master = "127.0.0.1:6379"
"#;

/// The binary, without any configuration path from our own environment.
fn binary() -> Command {
    let mut cmd = proxy_binary();
    cmd.env_remove("SENTINEL_PROXY_CONFIG")
        .env("RUST_LOG", "info");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .expect("run sentinel-proxy")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `sentinel-proxy check --config <path>`.
fn check(path: &Path) -> Output {
    run(binary().arg("check").arg("--config").arg(path))
}

/// Asserts that `text` fails `check` with exit 2 and a message that names
/// the file, `line` and `key`, and contains `detail`.
fn assert_invalid(text: &str, line: usize, key: &str, detail: &str) {
    let written = text.lines().nth(line - 1).unwrap_or_default();
    let bare_key = key.rsplit('.').next().unwrap_or(key);
    assert!(
        written.contains(bare_key),
        "test bug: line {line} is {written:?}, not `{key}`"
    );
    let config = TempFile::new("sentinel-proxy-cli", text);
    let out = check(&config.0);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    let place = format!("{}:{line}: key `{key}`: ", config.0.display());
    assert!(err.contains(&place), "expected {place:?} in stderr: {err}");
    assert!(err.contains(detail), "expected {detail:?} in stderr: {err}");
}

// ---------------------------------------------------------------- check

#[test]
fn check_accepts_the_repo_config() {
    let out = check(Path::new(REPO_CONFIG));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok"), "stdout: {stdout}");
}

#[test]
fn check_accepts_the_base_config() {
    let config = TempFile::new("sentinel-proxy-cli", BASE);
    let out = check(&config.0);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn unknown_key() {
    assert_invalid(
        &format!("{BASE}bogus = 1\n"),
        12,
        "service.bogus",
        "unknown field `bogus`",
    );
}

#[test]
fn unknown_key_in_a_top_level_table() {
    let text = BASE.replace(
        "listen = \"127.0.0.1:9187\"",
        "listen = \"127.0.0.1:9187\"\nport = 9187",
    );
    assert_invalid(&text, 7, "admin.port", "unknown field `port`");
}

#[test]
fn bad_address() {
    let text = BASE.replace("master = \"127.0.0.1:6379\"", "master = \"redis.local\"");
    assert_invalid(&text, 11, "service.master", "invalid socket address");
}

#[test]
fn bad_duration() {
    assert_invalid(
        &format!("{BASE}quorum = 2\ndown_after = \"5 seconds\"\n"),
        13,
        "service.down_after",
        "invalid duration \"5 seconds\"",
    );
}

#[test]
fn bad_size() {
    assert_invalid(
        &format!("{BASE}proto_max_bulk_len = \"12xb\"\n"),
        12,
        "service.proto_max_bulk_len",
        "invalid size \"12xb\"",
    );
}

#[test]
fn duplicate_service_names() {
    let text = format!(
        "{BASE}\n[[service]]\nname = \"mymaster\"\nlisten = \"127.0.0.1:6381\"\nmaster = \"127.0.0.1:6379\"\n"
    );
    assert_invalid(
        &text,
        14,
        "service.name",
        "duplicate service name \"mymaster\"",
    );
}

#[test]
fn duplicate_listen_addresses_between_services() {
    let text = format!(
        "{BASE}\n[[service]]\nname = \"other\"\nlisten = \"127.0.0.1:6380\"\nmaster = \"127.0.0.1:6379\"\n"
    );
    assert_invalid(
        &text,
        15,
        "service.listen",
        "address 127.0.0.1:6380 is already used by service \"mymaster\"",
    );
}

#[test]
fn duplicate_listen_address_of_a_service_and_admin() {
    let text = BASE.replace("listen = \"127.0.0.1:6380\"", "listen = \"127.0.0.1:9187\"");
    assert_invalid(
        &text,
        10,
        "service.listen",
        "127.0.0.1:9187 is already used by admin.listen",
    );
}

#[test]
fn duplicate_listen_address_of_admin_and_sentinel() {
    let text = BASE.replace(
        "listen = \"127.0.0.1:9187\"",
        "listen = \"127.0.0.1:26379\"",
    );
    assert_invalid(
        &text,
        6,
        "admin.listen",
        "already used by `sentinel.listen`",
    );
}

/// The repo's own config.toml puts comments after table headers; errors in
/// such a file must still name the line and the key.
const COMMENTED: &str = r#"[sentinel]                 # identity
role = "voter"
listen = "127.0.0.1:26379"

[[service]]                # the first
name = "mymaster"
listen = "127.0.0.1:6380"
master = "127.0.0.1:6379"
"#;

#[test]
fn duplicate_service_names_after_commented_headers() {
    let text = format!(
        "{COMMENTED}\n[[service]]                # the second\nname = \"mymaster\"\nlisten = \"127.0.0.1:6381\"\nmaster = \"127.0.0.1:6379\"\n"
    );
    assert_invalid(
        &text,
        11,
        "service.name",
        "duplicate service name \"mymaster\"",
    );
}

#[test]
fn unknown_key_after_a_commented_header() {
    assert_invalid(
        &format!("{COMMENTED}bogus = 1\n"),
        9,
        "service.bogus",
        "unknown field `bogus`",
    );
}

#[test]
fn missing_required_key() {
    let config = TempFile::new(
        "sentinel-proxy-cli",
        &BASE.replace("master = \"127.0.0.1:6379\"\n", ""),
    );
    let out = check(&config.0);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    // The table that lacks it, by its header line.
    let expected = format!("{}:8: missing field `master`", config.0.display());
    assert!(
        err.contains(&expected),
        "expected {expected:?} in stderr: {err}"
    );
}

#[test]
fn missing_file() {
    let path = std::env::temp_dir().join(format!(
        "sentinel-proxy-cli-missing-{}.toml",
        std::process::id()
    ));
    let out = check(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains(&format!("{}: cannot read", path.display())),
        "stderr: {err}"
    );
}

#[test]
fn running_with_a_bad_config_exits_2_too() {
    let config = TempFile::new("sentinel-proxy-cli", &format!("{BASE}bogus = 1\n"));
    let out = run(binary().arg("--config").arg(&config.0));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains(&format!("{}:12: key `service.bogus`", config.0.display())),
        "stderr: {err}"
    );
}

// ---------------------------------------------------------------- config path

#[test]
fn config_path_from_the_environment() {
    let out = run(binary()
        .arg("check")
        .env("SENTINEL_PROXY_CONFIG", REPO_CONFIG));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));

    // It really is the file that is read: a bad one is reported by name.
    let bad = TempFile::new("sentinel-proxy-cli", &format!("{BASE}bogus = 1\n"));
    let out = run(binary().arg("check").env("SENTINEL_PROXY_CONFIG", &bad.0));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains(&format!("{}:12", bad.0.display())),
        "stderr: {err}"
    );

    // --config wins over the environment.
    let out = run(binary()
        .arg("check")
        .arg("--config")
        .arg(REPO_CONFIG)
        .env("SENTINEL_PROXY_CONFIG", &bad.0));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn no_config_at_all() {
    for args in [&["check"][..], &[][..]] {
        let out = run(binary().args(args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "args {args:?}; stderr: {err}");
        assert!(
            err.contains("no configuration"),
            "args {args:?}; stderr: {err}"
        );
        assert!(
            err.contains("--config") && err.contains("SENTINEL_PROXY_CONFIG"),
            "stderr: {err}"
        );
    }
}

// ---------------------------------------------------------------- log format

/// The running binary; its stderr lines arrive on `lines`. Killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    _config: TempFile,
}

impl Running {
    fn start(redis: &Redis, args: &[&str]) -> Running {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = TempFile::new(
            "sentinel-proxy-cli",
            &config_text(redis.addr, &listen.to_string(), ""),
        );
        let mut child = binary()
            .args(args)
            .arg("--config")
            .arg(&config.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sentinel-proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut running = Running {
            child,
            lines,
            _config: config,
        };
        wait_until("sentinel-proxy to accept", || {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("sentinel-proxy exited early: {status}");
            }
            TcpStream::connect(listen).is_ok()
        });
        // A full round trip: the runtime is up, signal handlers included.
        assert_eq!(text(&Client::connect(listen).cmd(&["PING"])), "PONG");
        running
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("a log line on stderr")
    }

    /// SIGTERM, then the exit status and the remaining stderr lines.
    fn terminate(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let mut status = None;
        wait_until("sentinel-proxy to exit", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        let mut rest = Vec::new();
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        (status.expect("exited"), rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn looks_like_json_log(line: &str) -> bool {
    line.starts_with('{') && line.ends_with('}') && line.contains("\"level\"")
}

#[test]
fn log_format_json() {
    let redis = Redis::start();
    let mut proxy = Running::start(&redis, &["--log-format", "json"]);
    let first = proxy.next_line();
    assert!(looks_like_json_log(&first), "not a JSON log line: {first}");
    let (status, rest) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    for line in &rest {
        assert!(looks_like_json_log(line), "not a JSON log line: {line}");
    }
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM")),
        "the shutdown is logged: {rest:?}"
    );
}

#[test]
fn log_format_defaults_to_text() {
    let redis = Redis::start();
    let mut proxy = Running::start(&redis, &[]);
    let first = proxy.next_line();
    assert!(
        !first.starts_with('{') && first.contains("INFO"),
        "not a text log line: {first}"
    );
    let (status, _) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

// ---------------------------------------------------------------- Config::parse

const MINIMAL: &str = r#"
[sentinel]
role = "observer"
listen = "127.0.0.1:26379"

[[service]]
name = "mymaster"
listen = "127.0.0.1:6380"
master = "127.0.0.1:6379"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("unit.toml"), text)
}

#[test]
fn defaults() {
    let config = parse(MINIMAL).expect("minimal config is valid");
    assert_eq!(config.sentinel.role, Role::Observer);
    assert_eq!(
        config.sentinel.state_file,
        PathBuf::from("sentinel-proxy.state")
    );
    assert!(config.sentinel.sentinels.is_empty());
    assert_eq!(config.sentinel.announce_ip, None);
    assert_eq!(config.sentinel.announce_port, None);
    assert_eq!(
        config.admin.listen,
        SocketAddr::from(([127, 0, 0, 1], 9187))
    );
    assert_eq!(config.proxy.drain_timeout, Dur(Duration::from_secs(10)));
    let [s] = &config.services[..] else {
        panic!("one service")
    };
    assert_eq!(s.name, "mymaster");
    assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 6380)));
    assert_eq!(s.master, SocketAddr::from(([127, 0, 0, 1], 6379)));
    assert_eq!(s.quorum, 2);
    assert_eq!(s.down_after, Dur(Duration::from_secs(30)));
    assert_eq!(s.failover_timeout, Dur(Duration::from_secs(180)));
    assert_eq!(s.parallel_syncs, 1);
    assert_eq!(s.hold_timeout, Dur(Duration::from_secs(5)));
    assert_eq!(
        (s.auth_user.as_deref(), s.auth_pass.as_deref()),
        (None, None)
    );
    assert_eq!(s.max_clients, 10_000);
    assert_eq!(
        s.client_idle_timeout.non_zero(),
        None,
        "idle timeout is off by default"
    );
    assert_eq!(s.connect_timeout, Dur(Duration::from_secs(1)));
    assert_eq!(s.tcp_keepalive.non_zero(), Some(Duration::from_secs(300)));
    assert_eq!(s.proto_max_bulk_len, ByteSize(512 * 1024 * 1024));
}

#[test]
fn repo_config_parses() {
    let text = std::fs::read_to_string(REPO_CONFIG).expect("read config.toml");
    let config = parse(&text).expect("config.toml is valid");
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.services[0].name, "mymaster");
}

#[test]
fn durations() {
    let ms = |s: &str| Dur::from_str(s).map(|d| d.0.as_millis());
    assert_eq!(ms("500ms"), Ok(500));
    assert_eq!(ms("5s"), Ok(5_000));
    assert_eq!(ms("2m"), Ok(120_000));
    assert_eq!(ms("1h"), Ok(3_600_000));
    assert_eq!(ms("0s"), Ok(0));
    assert_eq!(Dur::from_str("0s").map(Dur::non_zero), Ok(None));
    for bad in ["5", "", "s", "5 s", "1.5s", "-1s", "1d", "5S", "5sec"] {
        let err = Dur::from_str(bad).expect_err(bad);
        assert!(
            err.contains(&format!("invalid duration \"{bad}\"")),
            "{bad}: {err}"
        );
    }
    // And through the file.
    let config = parse(&format!(
        "{MINIMAL}client_idle_timeout = \"500ms\"\nhold_timeout = \"2m\"\n"
    ))
    .expect("valid");
    assert_eq!(
        config.services[0].client_idle_timeout.non_zero(),
        Some(Duration::from_millis(500))
    );
    assert_eq!(
        config.services[0].hold_timeout,
        Dur(Duration::from_secs(120))
    );
    let err = parse(&format!("{MINIMAL}hold_timeout = 5\n"))
        .expect_err("a bare number is not a duration");
    assert!(
        err.to_string()
            .contains("unit.toml:10: key `service.hold_timeout`"),
        "{err}"
    );
}

#[test]
fn byte_sizes() {
    let size = |s: &str| ByteSize::from_str(s).map(|b| b.0);
    assert_eq!(size("512mb"), Ok(512 << 20));
    assert_eq!(size("512MB"), Ok(512 << 20));
    assert_eq!(size("64kb"), Ok(64 << 10));
    assert_eq!(size("1gb"), Ok(1 << 30));
    assert_eq!(size("1024"), Ok(1024));
    for bad in ["", "mb", "12xb", "1.5mb", "-1", "1 mb"] {
        assert!(ByteSize::from_str(bad).is_err(), "{bad:?} accepted");
    }
    // Integers and strings through the file.
    let bulk = |v: &str| {
        parse(&format!("{MINIMAL}proto_max_bulk_len = {v}\n"))
            .map(|c| c.services[0].proto_max_bulk_len)
    };
    assert_eq!(bulk("1024").expect("integer"), ByteSize(1024));
    assert_eq!(bulk("\"512mb\"").expect("string"), ByteSize(512 << 20));
    let err = bulk("-1").expect_err("negative size");
    assert!(
        err.to_string()
            .contains("unit.toml:10: key `service.proto_max_bulk_len`"),
        "{err}"
    );
}

#[test]
fn zero_values_that_make_no_sense_are_errors() {
    for (key, value) in [
        ("quorum", "0"),
        ("parallel_syncs", "0"),
        ("max_clients", "0"),
        ("connect_timeout", "\"0s\""),
    ] {
        let err = parse(&format!("{MINIMAL}{key} = {value}\n")).expect_err(key);
        assert!(
            err.to_string()
                .contains(&format!("unit.toml:10: key `service.{key}`")),
            "{key}: {err}"
        );
    }
}

#[test]
fn at_least_one_service_is_required() {
    let text = "service = []\n[sentinel]\nrole = \"voter\"\nlisten = \"127.0.0.1:26379\"\n";
    let err = parse(text).expect_err("no services");
    assert!(err.to_string().contains("service"), "{err}");
}
