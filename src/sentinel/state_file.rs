//! The voter's durable state: myid, epochs, and what it knows of each master.
//!
//! Written in Redis Sentinel's own `sentinel ...` directive syntax so that an
//! operator reads it like a Sentinel config. Every write is atomic and durable
//! (temp file, fsync, rename, fsync of the directory) and happens before a
//! vote is answered. A file that exists but cannot be read or parsed is a
//! startup error: silently starting fresh would hand out a new myid (a ghost
//! voter for every peer) or vote twice in an epoch.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::core::{Addr, PersistedMaster, PersistedState};

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "state file {path}:{line}: {message} (fix or remove the file; removing it gives this voter a new identity)"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads the state file; `Ok(None)` when it does not exist yet.
pub fn load(path: &Path) -> Result<Option<PersistedState>, StateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|(line, message)| StateFileError::Corrupt {
            path: path.to_owned(),
            line,
            message,
        })
}

/// Writes `state` atomically and durably. `quorums` gives each master's
/// quorum for the `monitor` line.
pub fn save(path: &Path, state: &PersistedState, quorums: &HashMap<String, u32>) -> io::Result<()> {
    let text = render(state, quorums);
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// A new random 40-hex-character run id, like Sentinel's.
pub fn new_myid() -> io::Result<String> {
    let mut bytes = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().fold(String::with_capacity(40), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn render(state: &PersistedState, quorums: &HashMap<String, u32>) -> String {
    let mut out = String::from(
        "# sentinel-proxy state: written atomically by sentinel-proxy; do not edit.\n",
    );
    let _ = writeln!(out, "sentinel myid {}", state.myid);
    let _ = writeln!(out, "sentinel current-epoch {}", state.current_epoch);
    for m in &state.masters {
        let quorum = quorums.get(&m.name).copied().unwrap_or(1);
        let _ = writeln!(
            out,
            "sentinel monitor {} {} {} {quorum}",
            m.name, m.addr.ip, m.addr.port
        );
        let _ = writeln!(out, "sentinel config-epoch {} {}", m.name, m.config_epoch);
        let _ = writeln!(out, "sentinel leader-epoch {} {}", m.name, m.leader_epoch);
        for r in &m.known_replicas {
            let _ = writeln!(out, "sentinel known-replica {} {} {}", m.name, r.ip, r.port);
        }
        for (runid, a) in &m.known_sentinels {
            let _ = writeln!(
                out,
                "sentinel known-sentinel {} {} {} {runid}",
                m.name, a.ip, a.port
            );
        }
    }
    out
}

fn parse(text: &str) -> Result<PersistedState, (usize, String)> {
    let mut state = PersistedState::default();
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| (n, format!("{what}: {line:?}"));
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad("not a number"));
        let port = |s: &str| s.parse::<u16>().map_err(|_| bad("not a port"));
        match words.as_slice() {
            ["sentinel", "myid", id]
                if id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                state.myid = (*id).to_owned();
            }
            ["sentinel", "myid", ..] => return Err(bad("myid must be 40 hex characters")),
            ["sentinel", "current-epoch", e] => state.current_epoch = num(e)?,
            ["sentinel", "monitor", name, ip, p, _quorum] => {
                if state.masters.iter().any(|m| m.name == *name) {
                    return Err(bad("master monitored twice"));
                }
                state.masters.push(PersistedMaster {
                    name: (*name).to_owned(),
                    addr: Addr::new(*ip, port(p)?),
                    ..PersistedMaster::default()
                });
            }
            ["sentinel", directive, name, rest @ ..] => {
                let Some(m) = state.masters.iter_mut().find(|m| m.name == *name) else {
                    return Err(bad(
                        "master not declared by an earlier `sentinel monitor` line",
                    ));
                };
                match (*directive, rest) {
                    ("config-epoch", [e]) => m.config_epoch = num(e)?,
                    ("leader-epoch", [e]) => m.leader_epoch = num(e)?,
                    ("known-replica", [ip, p]) => m.known_replicas.push(Addr::new(*ip, port(p)?)),
                    ("known-sentinel", [ip, p, runid]) => m
                        .known_sentinels
                        .push(((*runid).to_owned(), Addr::new(*ip, port(p)?))),
                    _ => return Err(bad("unknown directive")),
                }
            }
            _ => return Err(bad("unknown directive")),
        }
    }
    if state.myid.is_empty() {
        return Err((0, "no `sentinel myid` line".into()));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        PersistedState {
            myid: "a".repeat(40),
            current_epoch: 7,
            masters: vec![PersistedMaster {
                name: "mymaster".into(),
                addr: Addr::new("127.0.0.1", 6380),
                config_epoch: 6,
                leader: None,
                leader_epoch: 7,
                known_replicas: vec![Addr::new("127.0.0.1", 6379)],
                known_sentinels: vec![("b".repeat(40), Addr::new("127.0.0.1", 26380))],
            }],
        }
    }

    #[test]
    fn round_trips_in_sentinel_syntax() {
        let dir = std::env::temp_dir().join(format!("sp-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.state");
        let quorums = HashMap::from([("mymaster".to_owned(), 2)]);
        save(&path, &sample(), &quorums).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("sentinel monitor mymaster 127.0.0.1 6380 2\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "sentinel known-sentinel mymaster 127.0.0.1 26380 {}\n",
            "b".repeat(40)
        )));
        assert_eq!(load(&path).unwrap(), Some(sample()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_is_none_and_corrupt_is_an_error() {
        assert_eq!(load(Path::new("/nonexistent/sp.state")).unwrap(), None);
        let err = parse("sentinel myid abc\n").unwrap_err();
        assert_eq!(err.0, 1);
        let err = parse(&format!(
            "sentinel myid {}\nsentinel config-epoch other 3\n",
            "a".repeat(40)
        ))
        .unwrap_err();
        assert_eq!(err.0, 2);
        assert!(
            parse("").is_err(),
            "a file without myid is not a state file"
        );
    }

    #[test]
    fn myids_are_40_hex_and_distinct() {
        let (a, b) = (new_myid().unwrap(), new_myid().unwrap());
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
