//! Unit tests of session state tracking, driven by real RESP bytes through
//! the scanners exactly as the session drives them.

use super::*;
use crate::resp::request::encode_command;
use crate::resp::{Direction, Limits, Progress, Scanner};

/// Feeds one request (given as arguments) to the state as the session
/// does: a plain one in one step, any other after a full scan.
fn request(state: &mut SessionState, args: &[&str]) -> Recorded {
    feed_request(state, args, true)
}

/// Feeds reply bytes (one or more frames) as the session does and returns
/// each frame's role: a plain answer in one step, any other after a full
/// scan.
fn replies(state: &mut SessionState, bytes: &[u8]) -> Vec<ReplyRole> {
    feed_replies(state, bytes, true)
}

/// [`request`], trying the one-step path first or not.
fn feed_request(state: &mut SessionState, args: &[&str], one_step: bool) -> Recorded {
    let frame = encode_command(args);
    let mut scanner = Scanner::new(Direction::Request, Limits::default());
    if one_step && let Some((n, name)) = scanner.whole_request(&frame) {
        assert_eq!(n, frame.len());
        return state.on_request(&frame, name);
    }
    assert_eq!(scanner.scan(&frame), Ok(Progress::Frame(frame.len())));
    state.on_request(&frame, scanner.info().head())
}

/// [`replies`], trying the one-step path first or not.
fn feed_replies(state: &mut SessionState, bytes: &[u8], one_step: bool) -> Vec<ReplyRole> {
    let mut scanner = Scanner::new(Direction::Reply, Limits::default());
    let mut roles = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if one_step
            && let Some((n, kind)) = scanner.whole_leaf(&bytes[at..])
            && state.answer_plain(kind)
        {
            at += n;
            roles.push(ReplyRole::Answer);
            continue;
        }
        match scanner.scan(&bytes[at..]).expect("valid reply") {
            Progress::Frame(n) => {
                at += n;
                roles.push(state.on_reply(scanner.info()));
            }
            Progress::NeedMore(_) => panic!("incomplete reply in test input"),
        }
    }
    roles
}

#[test]
fn select_commits_only_on_success() {
    let mut s = SessionState::default();
    request(&mut s, &["SELECT", "5"]);
    assert_eq!(s.in_flight(), 1);
    assert_eq!(s.db, 0, "not committed before the reply");
    replies(&mut s, b"+OK\r\n");
    assert_eq!((s.db, s.in_flight()), (5, 0));
    request(&mut s, &["select", "99"]);
    replies(&mut s, b"-ERR DB index is out of range\r\n");
    assert_eq!(s.db, 5, "a failed SELECT changes nothing");
}

#[test]
fn auth_hello_and_setname_are_remembered() {
    let mut s = SessionState::default();
    request(&mut s, &["AUTH", "secret"]);
    request(&mut s, &["CLIENT", "SETNAME", "worker-1"]);
    replies(&mut s, b"+OK\r\n+OK\r\n");
    assert_eq!(
        s.auth,
        Some(Credentials {
            user: None,
            pass: Bytes::from_static(b"secret")
        })
    );
    assert_eq!(s.name.as_deref(), Some(&b"worker-1"[..]));

    request(
        &mut s,
        &["HELLO", "3", "AUTH", "alice", "pw", "SETNAME", "w2"],
    );
    replies(&mut s, b"%1\r\n+server\r\n+redis\r\n");
    assert_eq!(s.protocol, 3);
    assert_eq!(
        s.auth.as_ref().and_then(|a| a.user.as_deref()),
        Some(&b"alice"[..])
    );
    assert_eq!(s.name.as_deref(), Some(&b"w2"[..]));

    request(&mut s, &["CLIENT", "SETNAME", ""]);
    replies(&mut s, b"+OK\r\n");
    assert_eq!(s.name, None, "an empty name clears it");
}

#[test]
fn pipelined_requests_are_counted_in_flight() {
    let mut s = SessionState::default();
    for _ in 0..3 {
        request(&mut s, &["GET", "k"]);
    }
    assert_eq!(s.in_flight(), 3);
    assert_eq!(
        replies(&mut s, b"$-1\r\n$1\r\nv\r\n"),
        vec![ReplyRole::Answer; 2]
    );
    assert_eq!(s.in_flight(), 1);
}

#[test]
fn multi_exec_applies_queued_effects_only_when_the_transaction_runs() {
    let mut s = SessionState::default();
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SELECT", "3"]);
    request(&mut s, &["SET", "k", "v"]);
    replies(&mut s, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    assert!(s.in_multi);
    assert_eq!(s.db, 0, "queued SELECT waits for EXEC");
    request(&mut s, &["EXEC"]);
    replies(&mut s, b"*2\r\n+OK\r\n+OK\r\n");
    assert!(!s.in_multi);
    assert_eq!(s.db, 3);

    request(&mut s, &["WATCH", "k"]);
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SELECT", "7"]);
    replies(&mut s, b"+OK\r\n+OK\r\n+QUEUED\r\n");
    assert!(s.watching && s.in_multi);
    request(&mut s, &["EXEC"]);
    replies(&mut s, b"*-1\r\n");
    assert_eq!(s.db, 3, "an aborted EXEC applies nothing");
    assert!(!s.watching && !s.in_multi);

    request(&mut s, &["MULTI"]);
    request(&mut s, &["DISCARD"]);
    replies(&mut s, b"+OK\r\n+OK\r\n");
    assert!(!s.in_multi);
}

#[test]
fn blocking_commands_are_flagged_until_answered() {
    let mut s = SessionState::default();
    request(&mut s, &["BLPOP", "q", "0"]);
    assert!(s.blocking_in_flight());
    replies(&mut s, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    assert!(!s.blocking_in_flight());
    request(&mut s, &["XREAD", "COUNT", "1", "STREAMS", "s", "0"]);
    assert!(
        !s.blocking_in_flight(),
        "XREAD without BLOCK does not block"
    );
    request(&mut s, &["XREAD", "BLOCK", "100", "STREAMS", "s", "$"]);
    assert!(s.blocking_in_flight());
}

#[test]
fn subscriptions_in_resp2_separate_messages_from_replies() {
    let mut s = SessionState::default();
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    assert_eq!(s.in_flight(), 1);
    let roles = replies(
        &mut s,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    assert_eq!(roles, vec![ReplyRole::Answer; 2]);
    assert_eq!(s.in_flight(), 0);
    assert!(s.subscribed() && s.subscriptions(SubKind::Channel).contains(&b"a"[..]));
    let roles = replies(&mut s, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    assert_eq!(roles, vec![ReplyRole::OutOfBand]);
    request(&mut s, &["PSUBSCRIBE", "n*"]);
    replies(&mut s, b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n");
    assert!(s.subscriptions(SubKind::Pattern).contains(&b"n*"[..]));

    request(&mut s, &["UNSUBSCRIBE"]);
    assert_eq!(s.in_flight(), 1);
    replies(
        &mut s,
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n",
    );
    assert_eq!(s.in_flight(), 0, "one confirmation per channel");
    assert!(
        s.subscriptions(SubKind::Channel).is_empty()
            && !s.subscriptions(SubKind::Pattern).is_empty()
    );
}

#[test]
fn resp3_pushes_are_out_of_band_except_confirmations() {
    let mut s = SessionState::default();
    request(&mut s, &["HELLO", "3"]);
    replies(&mut s, b"%0\r\n");
    request(&mut s, &["SSUBSCRIBE", "shard"]);
    assert_eq!(
        replies(&mut s, b">3\r\n$10\r\nssubscribe\r\n$5\r\nshard\r\n:1\r\n"),
        vec![ReplyRole::Answer]
    );
    assert!(s.subscriptions(SubKind::Shard).contains(&b"shard"[..]));
    request(&mut s, &["GET", "k"]);
    // An invalidation push arrives before the GET reply: it must not answer it.
    let roles = replies(
        &mut s,
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nv\r\n",
    );
    assert_eq!(roles, vec![ReplyRole::OutOfBand, ReplyRole::Answer]);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn monitor_turns_everything_after_into_pushes() {
    let mut s = SessionState::default();
    request(&mut s, &["MONITOR"]);
    replies(&mut s, b"+OK\r\n");
    assert!(s.monitor);
    assert_eq!(
        replies(&mut s, b"+1700000000.1 [0 127.0.0.1:1] \"GET\" \"k\"\r\n"),
        vec![ReplyRole::OutOfBand]
    );
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn client_reply_off_and_skip_expect_no_replies() {
    let mut s = SessionState::default();
    request(&mut s, &["CLIENT", "REPLY", "OFF"]);
    request(&mut s, &["SET", "a", "1"]);
    assert_eq!(s.in_flight(), 0);
    request(&mut s, &["CLIENT", "REPLY", "ON"]);
    assert_eq!(s.in_flight(), 1);
    replies(&mut s, b"+OK\r\n");
    request(&mut s, &["CLIENT", "REPLY", "SKIP"]);
    request(&mut s, &["SET", "b", "1"]);
    request(&mut s, &["GET", "b"]);
    assert_eq!(
        s.in_flight(),
        1,
        "only the GET after the skipped SET is answered"
    );
}

#[test]
fn only_client_reply_off_and_skip_silence_replies() {
    let silences = |args: &[&str]| {
        let frame = encode_command(args);
        SessionState::silences_replies(&frame, args[0].as_bytes())
    };
    assert!(silences(&["CLIENT", "REPLY", "OFF"]));
    assert!(silences(&["client", "reply", "skip"]));
    assert!(!silences(&["CLIENT", "REPLY", "ON"]));
    assert!(!silences(&["CLIENT", "SETNAME", "off"]));
    assert!(!silences(&["ECHO", "REPLY", "OFF"]));
}

#[test]
fn reset_returns_to_a_fresh_connection() {
    let mut s = SessionState::default();
    request(&mut s, &["SELECT", "2"]);
    request(&mut s, &["CLIENT", "SETNAME", "n"]);
    request(&mut s, &["SUBSCRIBE", "c"]);
    replies(
        &mut s,
        b"+OK\r\n+OK\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
    );
    request(&mut s, &["RESET"]);
    replies(&mut s, b"+RESET\r\n");
    assert_eq!(
        (s.db, s.name.clone(), s.subscribed(), s.in_flight()),
        (0, None, false, 0)
    );
}

#[test]
fn client_tracking_arguments_are_kept_for_replay() {
    let mut s = SessionState::default();
    request(
        &mut s,
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:"],
    );
    replies(&mut s, b"+OK\r\n");
    let args = s.tracking.clone().expect("tracking on");
    assert_eq!(args.len(), 4);
    request(&mut s, &["CLIENT", "TRACKING", "off"]);
    replies(&mut s, b"+OK\r\n");
    assert_eq!(s.tracking, None);
}

#[test]
fn a_monitoring_client_still_gets_answers() {
    let mut s = SessionState::default();
    request(&mut s, &["MONITOR"]);
    request(&mut s, &["PING"]);
    replies(&mut s, b"+OK\r\n");
    assert_eq!(
        replies(
            &mut s,
            b"+1700000000.1 [0 127.0.0.1:1] \"GET\" \"k\"\r\n+PONG\r\n"
        ),
        vec![ReplyRole::OutOfBand, ReplyRole::Answer]
    );
    request(&mut s, &["RESET"]);
    replies(&mut s, b"+RESET\r\n");
    assert!(!s.monitor && s.in_flight() == 0);
}

#[test]
fn unsubscribe_all_counts_requested_subscriptions() {
    let mut s = SessionState::default();
    // Confirmed a and b, then pipelined: UNSUBSCRIBE a, UNSUBSCRIBE, PING.
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    replies(
        &mut s,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    request(&mut s, &["UNSUBSCRIBE", "a"]);
    request(&mut s, &["UNSUBSCRIBE"]);
    request(&mut s, &["PING"]);
    replies(&mut s, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n+PONG\r\n");
    assert_eq!(s.in_flight(), 0);
    // Subscribed but not yet confirmed, then UNSUBSCRIBE: one confirmation.
    request(&mut s, &["SUBSCRIBE", "c"]);
    request(&mut s, &["UNSUBSCRIBE"]);
    request(&mut s, &["SELECT", "9"]);
    replies(&mut s, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n-ERR nope\r\n");
    assert_eq!((s.in_flight(), s.db), (0, 0));
}

#[test]
fn resp3_arrays_starting_with_message_are_replies() {
    let mut s = SessionState::default();
    request(&mut s, &["HELLO", "3"]);
    replies(&mut s, b"%0\r\n");
    request(&mut s, &["SUBSCRIBE", "c"]);
    replies(&mut s, b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
    request(&mut s, &["LRANGE", "l", "0", "-1"]);
    assert_eq!(
        replies(&mut s, b"*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n"),
        vec![ReplyRole::Answer]
    );
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn an_error_completes_a_request_expecting_several_replies() {
    let mut s = SessionState::default();
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    request(&mut s, &["GET", "k"]);
    let roles = replies(
        &mut s,
        b"-NOPERM User has no permissions to access the 'a' channel\r\n$1\r\nv\r\n",
    );
    assert_eq!(roles, vec![ReplyRole::Answer; 2]);
    assert_eq!(s.in_flight(), 0, "the GET reply is not a 2nd confirmation");
    assert!(!s.subscribed(), "a refused SUBSCRIBE subscribes to nothing");
}

#[test]
fn a_subscribe_queued_in_multi_expects_one_queued() {
    let mut s = SessionState::default();
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    request(&mut s, &["EXEC"]);
    replies(&mut s, b"+OK\r\n+QUEUED\r\n");
    assert_eq!(s.in_flight(), 1, "only EXEC is left");
    assert!(!s.subscribed(), "not before EXEC");
    request(&mut s, &["MULTI"]);
    request(&mut s, &["UNSUBSCRIBE"]);
    request(&mut s, &["DISCARD"]);
    request(&mut s, &["PING"]);
    // EXEC ran a queued SUBSCRIBE a b: `*1` holds the first confirmation,
    // the second follows it.
    replies(
        &mut s,
        b"*1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    assert_eq!(s.subscriptions(SubKind::Channel).len(), 2);
    assert_eq!(s.in_flight(), 4, "the 2nd confirmation answered no request");
    assert!(!s.in_multi);
    replies(
        &mut s,
        b"+OK\r\n+QUEUED\r\n+OK\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
    );
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.subscriptions(SubKind::Channel).len(), 2, "discarded");
}

#[test]
fn a_refused_or_discarded_subscribe_does_not_count_for_unsubscribe_all() {
    let mut s = SessionState::default();
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    replies(&mut s, b"-NOPERM no permissions\r\n");
    request(&mut s, &["UNSUBSCRIBE"]);
    request(&mut s, &["PING"]);
    assert_eq!(s.in_flight(), 2);
    // Not subscribed: one confirmation with a null channel.
    replies(
        &mut s,
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+PONG\r\n",
    );
    assert_eq!(s.in_flight(), 0);

    request(&mut s, &["MULTI"]);
    request(&mut s, &["PSUBSCRIBE", "x*", "y*"]);
    request(&mut s, &["DISCARD"]);
    request(&mut s, &["PUNSUBSCRIBE"]);
    request(&mut s, &["PING"]);
    replies(
        &mut s,
        b"+OK\r\n+QUEUED\r\n+OK\r\n*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n+PONG\r\n",
    );
    assert_eq!(s.in_flight(), 0);
    assert!(!s.subscribed());

    // Queued then run by EXEC, all pipelined: counted after the EXEC.
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SUBSCRIBE", "c"]);
    request(&mut s, &["EXEC"]);
    request(&mut s, &["UNSUBSCRIBE"]);
    request(&mut s, &["PING"]);
    replies(
        &mut s,
        b"+OK\r\n+QUEUED\r\n*1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
    );
    assert!(s.subscribed());
    replies(
        &mut s,
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n+PONG\r\n",
    );
    assert_eq!(s.in_flight(), 0);
    assert!(!s.subscribed());
}

#[test]
fn execabort_closes_the_transaction_and_drops_its_effects() {
    let mut s = SessionState::default();
    request(&mut s, &["WATCH", "k"]);
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SELECT", "3"]);
    request(&mut s, &["SET", "k"]);
    request(&mut s, &["EXEC"]);
    replies(
        &mut s,
        b"+OK\r\n+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'set' command\r\n\
          -EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert!(!s.in_multi && !s.watching);
    // The aborted transaction's SELECT must not ride along with the next one.
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SET", "k", "v"]);
    request(&mut s, &["EXEC"]);
    replies(&mut s, b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    assert_eq!((s.db, s.in_flight()), (0, 0));

    // EXEC or DISCARD with no transaction open changes nothing, WATCH included.
    request(&mut s, &["WATCH", "k"]);
    request(&mut s, &["EXEC"]);
    request(&mut s, &["DISCARD"]);
    replies(
        &mut s,
        b"+OK\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n",
    );
    assert!(s.watching && !s.in_multi);
    // A DISCARD that fails... cannot, inside MULTI; one that succeeds unwatches.
    request(&mut s, &["MULTI"]);
    request(&mut s, &["DISCARD"]);
    replies(&mut s, b"+OK\r\n+OK\r\n");
    assert!(!s.watching && !s.in_multi);
}

#[test]
fn a_failed_multi_does_not_queue_what_follows() {
    let mut s = SessionState::default();
    // Refused MULTI: what was pipelined after it runs normally.
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SELECT", "4"]);
    request(&mut s, &["EXEC"]);
    replies(
        &mut s,
        b"-NOAUTH Authentication required.\r\n+OK\r\n-ERR EXEC without MULTI\r\n",
    );
    assert_eq!((s.db, s.in_flight(), s.in_multi), (4, 0, false));

    // No EXEC sent yet: the request side leaves the transaction too, and a
    // SUBSCRIBE pipelined after the MULTI expects its two confirmations.
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    replies(&mut s, b"-NOPERM this user has no permissions\r\n");
    assert_eq!(s.in_flight(), 1);
    replies(
        &mut s,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.subscriptions(SubKind::Channel).len(), 2);
    request(&mut s, &["UNSUBSCRIBE"]);
    request(&mut s, &["SELECT", "6"]);
    replies(
        &mut s,
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n+OK\r\n",
    );
    assert_eq!((s.db, s.in_flight()), (6, 0), "SELECT was not queued");

    // A nested MULTI fails but the open transaction goes on.
    request(&mut s, &["MULTI"]);
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SELECT", "5"]);
    request(&mut s, &["EXEC"]);
    replies(
        &mut s,
        b"+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n",
    );
    assert_eq!(s.db, 6, "SELECT 5 is queued");
    replies(&mut s, b"*1\r\n+OK\r\n");
    assert_eq!((s.db, s.in_flight(), s.in_multi), (5, 0, false));
}

#[test]
fn reset_turns_replies_back_on() {
    let mut s = SessionState::default();
    request(&mut s, &["CLIENT", "REPLY", "OFF"]);
    request(&mut s, &["SET", "a", "1"]);
    request(&mut s, &["RESET"]);
    request(&mut s, &["GET", "a"]);
    assert_eq!(s.in_flight(), 2, "RESET and GET are answered");
    replies(&mut s, b"+RESET\r\n$1\r\n1\r\n");
    assert_eq!(s.in_flight(), 0);

    // The command a SKIP skips gets no reply, even RESET (as in Redis 7).
    request(&mut s, &["CLIENT", "REPLY", "SKIP"]);
    request(&mut s, &["RESET"]);
    request(&mut s, &["PING"]);
    assert_eq!(s.in_flight(), 1);
    replies(&mut s, b"+PONG\r\n");

    // SKIP while replies are off leaves them off.
    request(&mut s, &["CLIENT", "REPLY", "OFF"]);
    request(&mut s, &["CLIENT", "REPLY", "SKIP"]);
    request(&mut s, &["SET", "a", "1"]);
    request(&mut s, &["PING"]);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn resp3_exec_of_a_queued_subscribe_counts_the_trailing_confirmations() {
    let mut s = SessionState::default();
    request(&mut s, &["HELLO", "3"]);
    replies(&mut s, b"%0\r\n");
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SUBSCRIBE", "a", "b"]);
    request(&mut s, &["EXEC"]);
    request(&mut s, &["PING"]);
    let roles = replies(
        &mut s,
        b"+OK\r\n+QUEUED\r\n*1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
          >3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n+PONG\r\n",
    );
    assert_eq!(roles, vec![ReplyRole::Answer; 5]);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.subscriptions(SubKind::Channel).len(), 2);
}

// ---------------------------------------------------------------- failover

/// The commands in a handshake, as argument lists.
fn commands(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut scanner = Scanner::new(Direction::Request, Limits::default());
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Ok(Progress::Frame(n)) = scanner.scan(&bytes[at..]) else {
            panic!("handshake is not whole frames");
        };
        out.push(
            crate::resp::request::Args::new(&bytes[at..at + n])
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        );
        at += n;
    }
    out
}

#[test]
fn a_fresh_connection_only_checks_the_role() {
    let mut s = SessionState::default();
    let handshake = s.handshake().unwrap();
    assert_eq!(commands(&handshake), vec![vec!["ROLE"]]);
    assert_eq!(s.in_flight(), 1);
    assert!(!s.next_reply_is_clients());
    assert_eq!(
        replies(&mut s, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"),
        vec![ReplyRole::RoleCheck]
    );
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.take_released(), handshake.len());
}

#[test]
fn the_handshake_restores_auth_name_db_and_subscriptions_before_client_requests() {
    let mut s = SessionState::default();
    for (args, reply) in [
        (&["AUTH", "app", "secret"][..], &b"+OK\r\n"[..]),
        (&["CLIENT", "SETNAME", "worker-1"], b"+OK\r\n"),
        (&["SELECT", "5"], b"+OK\r\n"),
        (
            &["SUBSCRIBE", "news"],
            b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
        ),
        (
            &["PSUBSCRIBE", "p*"],
            b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n",
        ),
    ] {
        request(&mut s, args);
        replies(&mut s, reply);
    }
    // A request of the client's still unanswered: it stays behind the handshake.
    request(&mut s, &["PING"]);
    let handshake = s.handshake().unwrap();
    assert_eq!(
        commands(&handshake),
        vec![
            vec!["AUTH", "app", "secret"],
            vec!["ROLE"],
            vec!["CLIENT", "SETNAME", "worker-1"],
            vec!["SELECT", "5"],
            vec!["SUBSCRIBE", "news"],
            vec!["PSUBSCRIBE", "p*"],
        ]
    );
    let roles = replies(
        &mut s,
        b"+OK\r\n*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n+OK\r\n+OK\r\n\
          *3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n\
          *3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n\
          *3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n\
          *2\r\n$4\r\npong\r\n$0\r\n\r\n",
    );
    use ReplyRole::*;
    assert_eq!(
        roles,
        vec![
            Replay, RoleCheck, Replay, Replay, Replay, Replay, OutOfBand, Answer
        ]
    );
    assert_eq!((s.db, s.in_flight()), (5, 0));
    assert!(s.subscriptions(SubKind::Channel).contains(&b"news"[..]));
}

#[test]
fn resp3_connections_are_restored_with_hello_3_and_auth() {
    let mut s = SessionState::default();
    request(&mut s, &["HELLO", "3", "AUTH", "app", "secret"]);
    replies(&mut s, b"%1\r\n+proto\r\n:3\r\n");
    assert_eq!(
        commands(&s.handshake().unwrap()),
        vec![vec!["HELLO", "3", "AUTH", "app", "secret"], vec!["ROLE"]]
    );
}

#[test]
fn a_transaction_open_at_the_failover_fails_with_execabort_at_exec() {
    let mut s = SessionState::default();
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SET", "k", "1"]);
    replies(&mut s, b"+OK\r\n+QUEUED\r\n");
    s.upstream_lost().unwrap();
    let handshake = s.handshake().unwrap();
    assert_eq!(commands(&handshake), vec![vec!["ROLE"], vec!["MULTI"]]);
    replies(&mut s, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n+OK\r\n");
    // Commands after the failover are queued on the new master; EXEC is
    // sent as DISCARD and its reply replaced.
    assert_eq!(request(&mut s, &["INCR", "n"]), Recorded::Waits);
    assert_eq!(
        request(&mut s, &["EXEC"]),
        Recorded::SendInstead {
            bytes: b"*1\r\n$7\r\nDISCARD\r\n",
            waits: true
        }
    );
    let roles = replies(&mut s, b"+QUEUED\r\n+OK\r\n");
    let ReplyRole::Replace(reply) = &roles[1] else {
        panic!("{roles:?}");
    };
    assert!(reply.starts_with(b"-EXECABORT "), "{reply:?}");
    assert!(!s.in_multi);
    // The next transaction is a normal one again.
    request(&mut s, &["MULTI"]);
    assert_eq!(request(&mut s, &["EXEC"]), Recorded::Waits);
}

#[test]
fn a_watch_active_at_the_failover_makes_the_next_exec_null() {
    for (protocol, null) in [(2, &b"*-1\r\n"[..]), (3, b"_\r\n")] {
        let mut s = SessionState {
            protocol,
            ..SessionState::default()
        };
        request(&mut s, &["WATCH", "k"]);
        replies(&mut s, b"+OK\r\n");
        s.upstream_lost().unwrap();
        let handshake = commands(&s.handshake().unwrap());
        assert_eq!(handshake.last(), Some(&vec!["ROLE".to_owned()]));
        if protocol == 3 {
            replies(&mut s, b"%1\r\n+proto\r\n:3\r\n");
        }
        replies(&mut s, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
        request(&mut s, &["MULTI"]);
        request(&mut s, &["SET", "k", "1"]);
        assert!(matches!(
            request(&mut s, &["EXEC"]),
            Recorded::SendInstead { waits: true, .. }
        ));
        let roles = replies(&mut s, b"+OK\r\n+QUEUED\r\n+OK\r\n");
        assert_eq!(roles[2], ReplyRole::Replace(Bytes::from_static(null)));
        assert!(!s.watching);
    }
}

#[test]
fn unwatch_before_the_next_transaction_lifts_the_null_exec() {
    let mut s = SessionState::default();
    request(&mut s, &["WATCH", "k"]);
    replies(&mut s, b"+OK\r\n");
    s.upstream_lost().unwrap();
    request(&mut s, &["UNWATCH"]);
    request(&mut s, &["MULTI"]);
    assert_eq!(request(&mut s, &["EXEC"]), Recorded::Waits);
}

#[test]
fn tracking_and_replies_off_cannot_move() {
    let mut s = SessionState::default();
    request(&mut s, &["CLIENT", "TRACKING", "on"]);
    replies(&mut s, b"+OK\r\n");
    assert_eq!(s.handshake(), Err(Unmovable::Tracking));
    let mut s = SessionState::default();
    request(&mut s, &["CLIENT", "REPLY", "OFF"]);
    assert_eq!(s.handshake(), Err(Unmovable::RepliesOff));
}

#[test]
fn unanswered_requests_say_what_a_rerun_would_need() {
    let mut s = SessionState::default();
    s.handshake().unwrap();
    request(&mut s, &["GET", "k"]);
    request(&mut s, &["BLPOP", "q", "0"]);
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SET", "k", "v"]);
    request(&mut s, &["EXEC"]);
    request(&mut s, &["WAIT", "1", "0"]);
    let kinds: Vec<(bool, Rerun)> = s.unanswered().map(|u| (u.internal, u.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (true, Rerun::ByCommand),
            (false, Rerun::ByCommand),
            (false, Rerun::Blocking),
            (false, Rerun::ByCommand),
            (false, Rerun::Queued),
            (false, Rerun::Exec),
            (false, Rerun::Blocking),
        ]
    );
    let lens: Vec<usize> = s.unanswered().map(|u| u.len).collect();
    assert_eq!(lens[1], encode_command(&["GET", "k"]).len());
    s.upstream_lost().unwrap();
    assert_eq!(s.in_flight(), 6);
    assert!(s.oldest_is_resendable());
}

#[test]
fn requests_without_replies_release_nothing() {
    let mut s = SessionState::default();
    request(&mut s, &["PING"]);
    assert_eq!(
        request(&mut s, &["CLIENT", "REPLY", "SKIP"]),
        Recorded::NoReply
    );
    assert_eq!(request(&mut s, &["SET", "k", "v"]), Recorded::NoReply);
    replies(&mut s, b"+PONG\r\n");
    assert_eq!(s.take_released(), encode_command(&["PING"]).len());
}

#[test]
fn an_exec_sent_while_no_master_is_verified_is_doomed_too() {
    let mut s = SessionState::default();
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SET", "a", "1"]);
    replies(&mut s, b"+OK\r\n+QUEUED\r\n");
    // The master dies; the client goes on before a new one is verified.
    s.upstream_lost().unwrap();
    request(&mut s, &["SET", "b", "2"]);
    assert!(matches!(
        request(&mut s, &["EXEC"]),
        Recorded::SendInstead { waits: true, .. }
    ));
    // And the doom is spent: the next transaction runs.
    request(&mut s, &["MULTI"]);
    assert_eq!(request(&mut s, &["EXEC"]), Recorded::Waits);
}

#[test]
fn an_exec_already_waiting_when_its_transaction_is_lost_cannot_move() {
    let mut s = SessionState::default();
    request(&mut s, &["WATCH", "k"]);
    replies(&mut s, b"+OK\r\n");
    request(&mut s, &["MULTI"]);
    request(&mut s, &["SET", "k", "1"]);
    request(&mut s, &["EXEC"]);
    assert_eq!(s.upstream_lost(), Err(Unmovable::ExecWaiting));
}

#[test]
fn an_exec_waiting_behind_a_replicas_refusal_is_sent_as_discard_and_fails_like_a_lost_one() {
    let mut s = SessionState::default();
    request(&mut s, &["MULTI"]);
    replies(&mut s, b"+OK\r\n");
    // A replica refused the INCR: the transaction ran nothing.
    request(&mut s, &["INCR", "n"]);
    request(&mut s, &["EXEC"]);
    let exec = encode_command(&["EXEC"]).len();
    assert_eq!(
        s.unanswered().map(|u| u.len).collect::<Vec<_>>(),
        [encode_command(&["INCR", "n"]).len(), exec]
    );
    assert_eq!(
        s.discard_refused_exec(),
        Some(&b"*1\r\n$7\r\nDISCARD\r\n"[..])
    );
    s.upstream_lost().unwrap();
    assert_eq!(
        commands(&s.handshake().unwrap()),
        vec![vec!["ROLE"], vec!["MULTI"]]
    );
    let roles = replies(
        &mut s,
        b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n+OK\r\n+QUEUED\r\n+OK\r\n",
    );
    let Some(ReplyRole::Replace(reply)) = roles.last() else {
        panic!("{roles:?}");
    };
    assert!(reply.starts_with(b"-EXECABORT "), "{reply:?}");
    assert!(!s.in_multi);
    // Nothing is left to doom the next transaction.
    request(&mut s, &["MULTI"]);
    assert_eq!(request(&mut s, &["EXEC"]), Recorded::Waits);
    // A refused request outside the EXEC's transaction: that transaction
    // may have run on the refusing server.
    let mut s = SessionState::default();
    for request_args in [
        &["SET", "k", "1"][..],
        &["MULTI"],
        &["PUBLISH", "c", "m"],
        &["EXEC"],
    ] {
        request(&mut s, request_args);
    }
    assert_eq!(s.discard_refused_exec(), None);
    // A refused queued command whose transaction ends in DISCARD.
    let mut s = SessionState::default();
    request(&mut s, &["MULTI"]);
    replies(&mut s, b"+OK\r\n");
    for request_args in [&["INCR", "n"][..], &["DISCARD"], &["MULTI"], &["EXEC"]] {
        request(&mut s, request_args);
    }
    assert_eq!(s.discard_refused_exec(), None);
}

/// Only what needs no tracking takes the one-step path: a leaf that is not
/// an error, answering a plain request.
#[test]
fn only_answers_to_plain_requests_take_the_one_step_path() {
    let mut s = SessionState::default();
    request(&mut s, &["GET", "k"]);
    assert!(!s.answer_plain(b'-'), "an error may be a refusal");
    assert!(!s.answer_plain(b'!'), "a RESP3 error too");
    assert!(s.answer_plain(b'$'));
    let get = encode_command(&["GET", "k"]).len();
    assert_eq!((s.in_flight(), s.take_released()), (0, get));
    assert!(!s.answer_plain(b'+'), "nothing was asked");

    request(&mut s, &["SELECT", "1"]);
    assert!(
        !s.answer_plain(b'+'),
        "the answer to a request with an effect"
    );
    replies(&mut s, b"+OK\r\n");
    assert_eq!(s.db, 1);

    request(&mut s, &["CLIENT", "REPLY", "OFF"]);
    request(&mut s, &["GET", "k"]);
    assert!(!s.answer_plain(b'$'), "replies are off: nothing waits");
    request(&mut s, &["CLIENT", "REPLY", "ON"]);
    replies(&mut s, b"+OK\r\n");

    request(&mut s, &["MONITOR"]);
    replies(&mut s, b"+OK\r\n");
    request(&mut s, &["PING"]);
    assert!(!s.answer_plain(b'+'), "a monitor's line answers nothing");
    assert_eq!(s.in_flight(), 1);
}

/// Random sequences of requests, replies, upstream losses and handshakes
/// leave two states alike, one fed with the one-step path first (as the
/// session does), one through `on_request`/`on_reply` only.
mod one_step_vs_full {
    use proptest::prelude::*;

    use super::*;

    const COMMANDS: &[&[&str]] = &[
        &["GET", "k"],
        &["SET", "k", "v"],
        &["PING"],
        &["SELECT", "2"],
        &["MULTI"],
        &["EXEC"],
        &["DISCARD"],
        &["SUBSCRIBE", "a", "b"],
        &["UNSUBSCRIBE"],
        &["PSUBSCRIBE", "p*"],
        &["CLIENT", "REPLY", "OFF"],
        &["CLIENT", "REPLY", "ON"],
        &["CLIENT", "REPLY", "SKIP"],
        &["MONITOR"],
        &["BLPOP", "l", "0"],
        &["RESET"],
        &["HELLO", "3"],
        &["HELLO", "2"],
        &["WATCH", "k"],
        &["UNWATCH"],
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        &["CLIENT", "TRACKING", "ON"],
        &["AUTH", "pw"],
        &["averyveryverylongcommandname", "x"],
    ];
    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"$3\r\nabc\r\n",
        b":1\r\n",
        b"_\r\n",
        b"$-1\r\n",
        b"-ERR x\r\n",
        b"-READONLY You can't write against a read only replica.\r\n",
        b"!3\r\nerr\r\n",
        b"+QUEUED\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*1\r\n+OK\r\n",
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
        b"+1700000000.1 [0 1] \"get\"\r\n",
        b"+PONG\r\n",
        b"#t\r\n",
        b",1.5\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%1\r\n+a\r\n+b\r\n",
        b"|1\r\n+a\r\n+b\r\n+OK\r\n",
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
    ];

    #[derive(Debug, Clone)]
    enum Step {
        Request(usize),
        Reply(usize),
        Lost,
        Handshake,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..COMMANDS.len()).prop_map(Step::Request),
            6 => (0..REPLIES.len()).prop_map(Step::Reply),
            1 => Just(Step::Lost),
            1 => Just(Step::Handshake),
        ]
    }

    /// Everything a state holds, in a comparable form.
    fn snapshot(s: &SessionState) -> String {
        let sorted = |set: &HashSet<Bytes>| {
            let mut v: Vec<Bytes> = set.iter().cloned().collect();
            v.sort();
            v
        };
        let effect = |e: &Effect| match e {
            Effect::Subscribe(kind, channels) => {
                let mut channels = channels.clone();
                channels.sort();
                format!("Subscribe({kind:?}, {channels:?})")
            }
            e => format!("{e:?}"),
        };
        let pending: Vec<String> = (s.pending.iter())
            .map(|p| {
                format!(
                    "{} {} {} {} {} {} {:?}",
                    p.replies,
                    p.len,
                    p.blocking,
                    p.queued,
                    p.partly_answered,
                    effect(p.effect()),
                    p.purpose()
                )
            })
            .collect();
        let subscriptions: Vec<Vec<Bytes>> = s.subscriptions.iter().map(sorted).collect();
        let tx: Vec<String> = s.tx_effects.iter().map(effect).collect();
        format!(
            "{} {:?} {} {:?} {:?} {subscriptions:?} {} {} {} {pending:?} {tx:?} {} {:?} {} {:?} {}",
            s.db,
            s.auth,
            s.protocol,
            s.name,
            s.tracking,
            s.in_multi,
            s.watching,
            s.monitor,
            s.tx_open,
            s.reply_mode,
            s.blocking,
            s.doom,
            s.quit_sent
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn one_step_path_matches_full_path(steps in prop::collection::vec(step(), 1..40)) {
            let (mut a, mut b) = (SessionState::default(), SessionState::default());
            for step in &steps {
                match step {
                    Step::Request(i) => prop_assert_eq!(
                        feed_request(&mut a, COMMANDS[*i], true),
                        feed_request(&mut b, COMMANDS[*i], false)
                    ),
                    Step::Reply(i) => prop_assert_eq!(
                        feed_replies(&mut a, REPLIES[*i], true),
                        feed_replies(&mut b, REPLIES[*i], false)
                    ),
                    Step::Lost => prop_assert_eq!(a.upstream_lost(), b.upstream_lost()),
                    Step::Handshake => prop_assert_eq!(
                        a.handshake().map(|bytes| bytes.len()),
                        b.handshake().map(|bytes| bytes.len())
                    ),
                }
                prop_assert_eq!(a.take_released(), b.take_released());
                prop_assert_eq!(a.blocking_in_flight(), b.blocking_in_flight());
                prop_assert_eq!(a.next_reply_is_clients(), b.next_reply_is_clients());
                prop_assert_eq!(a.oldest_is_resendable(), b.oldest_is_resendable());
                prop_assert_eq!(snapshot(&a), snapshot(&b));
                prop_assert!(a.unanswered().eq(b.unanswered()));
            }
        }
    }
}
