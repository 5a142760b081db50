//! Requests a demoted master (a replica now) received after refusing an
//! earlier one: the session re-sends only what the replica surely did not
//! run, and closes the connection when it may have run something (an
//! unknown outcome, as when a master dies), never answering with EXECABORT
//! or a re-run for work the replica did. Real processes: a master demoted
//! under a proxy that has not heard of it (no control plane).

mod support;

use support::cluster::Node;
use support::raw::{Conn, show};
use support::{PATIENCE, Proxy, encode, text, wait_until};

/// Demotes the master under a verified proxy session (as at a switchover
/// the proxy has not heard of), sends it a refused `SET` and `after` in one
/// write (so the replica gets all of it before its refusal comes back),
/// and expects the connection closed, unanswered.
fn expect_closed_after_a_refused_write(after: &[&[&str]], why: &str) {
    // In directories of their own: the replica's sync writes a dump.rdb.
    let (old, new) = (Node::master(), Node::master());
    let proxy = Proxy::start_with(old.addr(), "hold_timeout = \"30s\"");
    let mut session = Conn::connect(proxy.addr, "session");
    session.expect(&["PING"], b"+PONG\r\n");
    let mut direct = old.redis.client();
    direct.cmd(&["REPLICAOF", "127.0.0.1", &new.addr().port().to_string()]);
    wait_until("the old master to report role:slave", || {
        text(&direct.cmd(&["INFO", "replication"])).contains("role:slave")
    });
    let mut bytes = encode(&["SET", "k", "1"]);
    bytes.extend(after.iter().flat_map(|args| encode(args)));
    session.send_raw(&bytes);
    match session.closed_within(PATIENCE) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "{why}: expected the connection closed with no reply, got {}",
            show(&bytes)
        ),
        Err(e) => panic!("{why}: expected the connection closed (an unknown outcome): {e}"),
    }
}

#[test]
fn a_transaction_behind_a_refused_write_may_have_run_on_the_replica() {
    // The replica runs the transaction: it holds no write.
    expect_closed_after_a_refused_write(
        &[&["MULTI"], &["PUBLISH", "ch", "m"], &["EXEC"]],
        "a PUBLISH transaction pipelined after a refused SET",
    );
}

#[test]
fn a_script_behind_a_refused_write_may_have_run_on_the_replica() {
    // A script without a `#!` line runs on a replica until its first write.
    expect_closed_after_a_refused_write(
        &[&["EVAL", "return redis.call('PUBLISH', 'ch', 'x')", "0"]],
        "a publishing EVAL pipelined after a refused SET",
    );
}
