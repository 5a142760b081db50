//! The user's configuration file: schema, defaults, validation, and errors
//! that name the file, line and key.
//!
//! `config.toml` belongs to the user and is never rewritten; machine state
//! (myid, epochs) lives in the separate `state_file`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sentinel: SentinelConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// Whether this proxy takes part in failover decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A full Sentinel peer: monitors, announces itself, votes, can lead.
    Voter,
    /// Routes clients and follows the voters, but never votes or announces.
    Observer,
}

/// `[sentinel]`: this proxy's identity on the Sentinel protocol.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    pub role: Role,
    pub listen: SocketAddr,
    pub announce_ip: Option<String>,
    pub announce_port: Option<u16>,
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    #[serde(default)]
    pub sentinels: Vec<SocketAddr>,
}

/// `[admin]`: the HTTP endpoints for Prometheus and probes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
        }
    }
}

/// `[proxy]`: process-wide data-plane settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// After SIGTERM/SIGINT, how long sessions may take to finish.
    pub drain_timeout: Dur,
    /// Threads serving client sessions, each with its own event loop; a
    /// session stays on one. 1 runs everything on one thread, 0 means one per CPU.
    pub worker_threads: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            drain_timeout: Dur(Duration::from_secs(10)),
            worker_threads: 1,
        }
    }
}

/// `[[service]]`: one monitored master and the listener its clients use.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The Sentinel master name.
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The initial master address.
    pub master: SocketAddr,
    #[serde(default = "default_quorum")]
    pub quorum: u32,
    #[serde(default = "default_down_after")]
    pub down_after: Dur,
    #[serde(default = "default_failover_timeout")]
    pub failover_timeout: Dur,
    #[serde(default = "default_parallel_syncs")]
    pub parallel_syncs: u32,
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout: Dur,
    pub auth_user: Option<String>,
    pub auth_pass: Option<String>,
    /// Most client connections at once, like Redis's `maxclients`.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Close clients idle this long (0 = never), like Redis's `timeout`.
    #[serde(default = "zero")]
    pub client_idle_timeout: Dur,
    /// Give up connecting to an instance after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// TCP keepalive idle time on both sides (0 = off), like Redis's `tcp-keepalive`.
    #[serde(default = "default_tcp_keepalive")]
    pub tcp_keepalive: Dur,
    /// Longest bulk string accepted, like Redis's `proto-max-bulk-len`.
    #[serde(default = "default_max_bulk_len")]
    pub proto_max_bulk_len: ByteSize,
}

fn default_state_file() -> PathBuf {
    PathBuf::from("sentinel-proxy.state")
}
fn default_quorum() -> u32 {
    2
}
fn default_down_after() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_failover_timeout() -> Dur {
    Dur(Duration::from_secs(180))
}
fn default_parallel_syncs() -> u32 {
    1
}
fn default_hold_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_max_clients() -> usize {
    10_000
}
fn zero() -> Dur {
    Dur(Duration::ZERO)
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_tcp_keepalive() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_max_bulk_len() -> ByteSize {
    ByteSize(512 * 1024 * 1024)
}

/// A duration written as a string with a unit: `"500ms"`, `"5s"`, `"2m"`, `"1h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// `None` for zero, which means "off" where a duration is optional.
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl std::str::FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration \"{s}\": expected a number and a unit (ms, s, m, h), like \"500ms\" or \"5s\""
            )
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let ms = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => None,
        };
        ms.map(|ms| Dur(Duration::from_millis(ms))).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A size in bytes: an integer, or a string with a Redis-style unit
/// (`"512mb"`, `"64kb"`, `"1gb"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size \"{s}\": expected bytes or a number with a unit (kb, mb, gb), like \"512mb\""
            )
        };
        let lower = s.to_ascii_lowercase();
        let split = lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len());
        let (digits, unit) = lower.split_at(split);
        let n: usize = digits.parse().map_err(|_| bad())?;
        let mult: usize = match unit {
            "" | "b" => 1,
            "k" | "kb" => 1 << 10,
            "m" | "mb" => 1 << 20,
            "g" | "gb" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, like 536870912 or \"512mb\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                usize::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// A configuration that cannot be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", located(.path, *.line, .key.as_deref(), .message))]
    Invalid {
        path: PathBuf,
        /// 1-based; 0 when the problem has no single place.
        line: usize,
        key: Option<String>,
        message: String,
    },
}

fn located(path: &Path, line: usize, key: Option<&str>, message: &str) -> String {
    let place = if line > 0 {
        format!("{}:{line}", path.display())
    } else {
        path.display().to_string()
    };
    match key {
        Some(key) => format!("{place}: key `{key}`: {message}"),
        None => format!("{place}: {message}"),
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => place_of_offset(text, span.start),
                None => (0, None),
            };
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                key,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate(path, text)?;
        Ok(config)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |service: Option<usize>, key: &str, message: String| {
            let (line, key) = match service {
                Some(i) => (
                    line_of_key(text, "service", i, key),
                    format!("service.{key}"),
                ),
                None => (0, key.to_owned()),
            };
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                key: Some(key),
                message,
            }
        };
        if self.services.is_empty() {
            return Err(invalid(
                None,
                "service",
                "at least one [[service]] is required".into(),
            ));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut listens: HashMap<SocketAddr, String> = HashMap::new();
        listens.insert(self.sentinel.listen, "sentinel.listen".into());
        if let Some(other) = listens.insert(self.admin.listen, "admin.listen".into()) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of_key(text, "admin", 0, "listen"),
                key: Some("admin.listen".into()),
                message: format!("address {} is already used by `{other}`", self.admin.listen),
            });
        }
        for (i, s) in self.services.iter().enumerate() {
            if s.name.is_empty() || s.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    Some(i),
                    "name",
                    format!(
                        "invalid service name {:?}: it must be non-empty, without spaces",
                        s.name
                    ),
                ));
            }
            if let Some(first) = names.insert(&s.name, i) {
                return Err(invalid(
                    Some(i),
                    "name",
                    format!(
                        "duplicate service name \"{}\" (also service #{})",
                        s.name,
                        first + 1
                    ),
                ));
            }
            // Port 0 asks the kernel for a fresh port, so it never collides.
            if s.listen.port() != 0
                && let Some(other) = listens.insert(s.listen, format!("service \"{}\"", s.name))
            {
                return Err(invalid(
                    Some(i),
                    "listen",
                    format!("address {} is already used by {other}", s.listen),
                ));
            }
            if s.quorum == 0 {
                return Err(invalid(
                    Some(i),
                    "quorum",
                    "quorum must be at least 1".into(),
                ));
            }
            if s.parallel_syncs == 0 {
                return Err(invalid(
                    Some(i),
                    "parallel_syncs",
                    "parallel_syncs must be at least 1".into(),
                ));
            }
            if s.max_clients == 0 {
                return Err(invalid(
                    Some(i),
                    "max_clients",
                    "max_clients must be at least 1".into(),
                ));
            }
            for (key, d) in [
                ("down_after", s.down_after),
                ("failover_timeout", s.failover_timeout),
                ("connect_timeout", s.connect_timeout),
            ] {
                if d.0.is_zero() {
                    return Err(invalid(
                        Some(i),
                        key,
                        format!("{key} must be greater than zero"),
                    ));
                }
            }
            if s.auth_pass.is_none() && s.auth_user.is_some() {
                return Err(invalid(
                    Some(i),
                    "auth_user",
                    "auth_user needs auth_pass".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The 1-based line of byte `offset` and the key written on that line, if any.
fn place_of_offset(text: &str, offset: usize) -> (usize, Option<String>) {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let table = text.lines().take(line_no).filter_map(table_name).last();
    let key = key_name(line).map(|k| match table {
        Some(t) => format!("{t}.{k}"),
        None => k.to_owned(),
    });
    (line_no, key)
}

/// The table a `[table]` or `[[table]]` header line opens (comments allowed).
fn table_name(line: &str) -> Option<&str> {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    Some(inner.trim().trim_matches('"'))
}

/// The key a `key = value` line sets.
fn key_name(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then_some(key)
}

/// The 1-based line where `key` is set inside the `index`-th `table` table
/// (0 if it is not written there, for example when a default applies).
fn line_of_key(text: &str, table: &str, index: usize, key: &str) -> usize {
    let mut tables_seen = 0;
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        if let Some(name) = table_name(line) {
            inside = name == table && tables_seen == index;
            tables_seen += usize::from(name == table);
            continue;
        }
        if inside && key_name(line) == Some(key) {
            return n + 1;
        }
    }
    0
}
