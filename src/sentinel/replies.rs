//! Replies to `SENTINEL <subcommand>` and `ROLE`, rendered from the core's
//! state in Redis Sentinel's shapes (field names and order of its instance
//! maps, so tools that read them by position keep working).

use std::collections::HashMap;

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::api::{arity_error, bulk, encode, simple};
use super::core::{Core, FailoverState, MasterView};
use crate::resp::reply;

/// Answers `args` (`SENTINEL <sub> ...` or `ROLE`).
pub fn sentinel_command(core: &Core, quorums: &HashMap<String, u32>, args: &[String]) -> Bytes {
    let lower: Vec<String> = args.iter().map(|a| a.to_ascii_lowercase()).collect();
    let names: Vec<&str> = lower.iter().map(String::as_str).collect();
    let master = |name: &str| core.master(name);
    let no_such = || reply::error("ERR No such master with that name");
    match names.as_slice() {
        ["role"] => {
            let masters = quorums.keys().map(|n| bulk(n)).collect();
            encode(&BytesFrame::Array(vec![
                bulk("sentinel"),
                BytesFrame::Array(masters),
            ]))
        }
        ["sentinel", "myid"] => encode(&bulk(core.myid())),
        ["sentinel", "get-master-addr-by-name", _] => match args.get(2).and_then(|n| master(n)) {
            Some(m) => encode(&BytesFrame::Array(vec![
                bulk(&m.addr.ip),
                bulk(&m.addr.port.to_string()),
            ])),
            None => Bytes::from_static(b"*-1\r\n"),
        },
        ["sentinel", "masters"] => {
            let mut names: Vec<&String> = quorums.keys().collect();
            names.sort();
            let maps = names
                .into_iter()
                .filter_map(|n| master(n))
                .map(|m| master_map(&m, quorums))
                .collect();
            encode(&BytesFrame::Array(maps))
        }
        ["sentinel", "master", _] => match args.get(2).and_then(|n| master(n)) {
            Some(m) => encode(&master_map(&m, quorums)),
            None => no_such(),
        },
        ["sentinel", "replicas" | "slaves", _] => match args.get(2).and_then(|n| master(n)) {
            Some(m) => {
                let maps = m
                    .replicas
                    .iter()
                    .map(|r| {
                        fields(&[
                            ("name", format!("{}:{}", r.ip, r.port)),
                            ("ip", r.ip.clone()),
                            ("port", r.port.to_string()),
                            ("flags", "slave".into()),
                            ("master-host", m.addr.ip.clone()),
                            ("master-port", m.addr.port.to_string()),
                        ])
                    })
                    .collect();
                encode(&BytesFrame::Array(maps))
            }
            None => no_such(),
        },
        ["sentinel", "sentinels", _] => match args.get(2).and_then(|n| master(n)) {
            Some(m) => {
                let maps = m
                    .peers
                    .iter()
                    .map(|(runid, a)| {
                        fields(&[
                            ("name", runid.clone()),
                            ("ip", a.ip.clone()),
                            ("port", a.port.to_string()),
                            ("runid", runid.clone()),
                            ("flags", "sentinel".into()),
                        ])
                    })
                    .collect();
                encode(&BytesFrame::Array(maps))
            }
            None => no_such(),
        },
        ["sentinel", "ckquorum", _] => match args.get(2).and_then(|n| master(n)) {
            Some(m) => ckquorum(&m, quorums.get(&m.name).copied().unwrap_or(1)),
            None => no_such(),
        },
        ["sentinel", sub @ ("myid" | "masters"), ..]
        | [
            "sentinel",
            sub @ ("get-master-addr-by-name"
            | "master"
            | "replicas"
            | "slaves"
            | "sentinels"
            | "ckquorum"
            | "failover"),
            ..,
        ] => arity_error(&format!("sentinel|{sub}")),
        ["sentinel", sub, ..] => reply::error(&format!(
            "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
            args.get(1).map_or(*sub, String::as_str)
        )),
        _ => arity_error("sentinel"),
    }
}

/// A flat `[field, value, ...]` array of bulk strings (RESP2 instance map).
fn fields(pairs: &[(&str, String)]) -> BytesFrame {
    BytesFrame::Array(pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
}

fn master_map(m: &MasterView, quorums: &HashMap<String, u32>) -> BytesFrame {
    let mut flags = Vec::new();
    if m.s_down {
        flags.push("s_down");
    }
    if m.o_down {
        flags.push("o_down");
    }
    flags.push("master");
    if m.failover_state != FailoverState::None {
        flags.push("failover_in_progress");
    }
    let mut pairs = vec![
        ("name", m.name.clone()),
        ("ip", m.addr.ip.clone()),
        ("port", m.addr.port.to_string()),
        ("flags", flags.join(",")),
    ];
    if m.failover_state != FailoverState::None {
        pairs.push(("failover-state", m.failover_state.as_str().into()));
    }
    pairs.extend([
        ("config-epoch", m.config_epoch.to_string()),
        ("num-slaves", m.replicas.len().to_string()),
        ("num-other-sentinels", m.peers.len().to_string()),
        (
            "quorum",
            quorums.get(&m.name).copied().unwrap_or(1).to_string(),
        ),
        ("leader", m.leader.clone().unwrap_or_else(|| "?".into())),
        ("leader-epoch", m.leader_epoch.to_string()),
    ]);
    fields(&pairs)
}

/// `SENTINEL CKQUORUM`: can this master reach quorum and a majority?
fn ckquorum(m: &MasterView, quorum: u32) -> Bytes {
    // Peers are counted as usable here; per-peer SDOWN is not in the view.
    let voters = m.peers.len() + 1;
    let usable = voters;
    let quorum_ok = usable >= quorum as usize;
    let majority_ok = usable > voters / 2;
    if quorum_ok && majority_ok {
        return simple(&format!(
            "OK {usable} usable Sentinels. Quorum and failover authorization can be reached"
        ));
    }
    let mut text = format!("NOQUORUM {usable} usable Sentinels. ");
    if !quorum_ok {
        text.push_str(
            "Not enough available Sentinels to reach the specified quorum for this master",
        );
    }
    if !quorum_ok && !majority_ok {
        text.push_str(". ");
    }
    if !majority_ok {
        text.push_str(
            "Not enough available Sentinels to reach the majority and authorize a failover",
        );
    }
    reply::error(&text)
}
