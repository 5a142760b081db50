//! Replies to `SENTINEL <subcommand>` and `ROLE`, rendered from the core's
//! state in Redis Sentinel's shapes (field names and order of its instance
//! maps, so tools that read them by position keep working).

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::api::{arity_error, bulk, encode, simple};
use super::core::{Core, Fields, QuorumCheck};
use crate::resp::reply;

/// Answers `args` (`SENTINEL <sub> ...` or `ROLE`) at time `now`.
pub fn sentinel_command(core: &Core, masters: &[String], args: &[String], now: u64) -> Bytes {
    let lower: Vec<String> = args.iter().map(|a| a.to_ascii_lowercase()).collect();
    let words: Vec<&str> = lower.iter().map(String::as_str).collect();
    let name = args.get(2).map_or("", String::as_str);
    let no_such = || reply::error("ERR No such master with that name");
    let list = |maps: Option<Vec<Fields>>| match maps {
        Some(maps) => encode(&BytesFrame::Array(maps.iter().map(fields).collect())),
        None => no_such(),
    };
    match words.as_slice() {
        ["role"] => {
            let names = masters.iter().map(|n| bulk(n)).collect();
            encode(&BytesFrame::Array(vec![
                bulk("sentinel"),
                BytesFrame::Array(names),
            ]))
        }
        ["sentinel", "myid"] => encode(&bulk(core.myid())),
        ["sentinel", "get-master-addr-by-name", _] => match core.master(name) {
            Some(m) => encode(&BytesFrame::Array(vec![
                bulk(&m.addr.ip),
                bulk(&m.addr.port.to_string()),
            ])),
            None => Bytes::from_static(b"*-1\r\n"),
        },
        ["sentinel", "masters"] => list(Some(
            masters
                .iter()
                .filter_map(|n| core.master_fields(n, now))
                .collect(),
        )),
        ["sentinel", "master", _] => match core.master_fields(name, now) {
            Some(f) => encode(&fields(&f)),
            None => no_such(),
        },
        ["sentinel", "replicas" | "slaves", _] => list(core.replica_fields(name, now)),
        ["sentinel", "sentinels", _] => list(core.sentinel_fields(name, now)),
        ["sentinel", "ckquorum", _] => match core.quorum_check(name) {
            Some(check) => ckquorum(check),
            None => no_such(),
        },
        [
            "sentinel",
            sub @ ("myid"
            | "masters"
            | "get-master-addr-by-name"
            | "master"
            | "replicas"
            | "slaves"
            | "sentinels"
            | "ckquorum"
            | "failover"),
            ..,
        ] => arity_error(&format!("sentinel|{sub}")),
        ["sentinel", _, ..] => reply::error(&format!(
            "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
            args.get(1).map_or("", String::as_str)
        )),
        _ => arity_error("sentinel"),
    }
}

/// A flat `[field, value, ...]` array of bulk strings (RESP2 instance map).
fn fields(pairs: &Fields) -> BytesFrame {
    BytesFrame::Array(pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
}

/// `SENTINEL CKQUORUM`: can this master reach quorum and a majority?
fn ckquorum(check: QuorumCheck) -> Bytes {
    let QuorumCheck {
        usable,
        voters,
        quorum,
    } = check;
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
