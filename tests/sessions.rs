//! Every class of client command works through the proxy exactly as it does
//! against Redis directly: pipelining, transactions, blocking commands,
//! Pub/Sub, MONITOR, RESP3, large values, connection commands and inline
//! commands.
//!
//! Most tests run the same scenario twice, once straight against a fresh
//! redis-server and once through the proxy in front of another fresh one, and
//! compare the raw reply bytes; they also check the bytes against literals so
//! that a scenario that silently did nothing cannot pass.

mod support;

use redis_protocol::resp3::types::OwnedFrame;
use support::raw::{show, value_end};
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fresh redis-server, reached directly or through a proxy.
struct Target {
    // Dropped first: killing Redis ends the proxy's sessions at once, so the
    // proxy's shutdown does not wait for busy sessions to drain.
    redis: Redis,
    proxy: Option<Proxy>,
}

impl Target {
    fn direct() -> Target {
        Target {
            redis: Redis::start(),
            proxy: None,
        }
    }

    fn proxied() -> Target {
        let redis = Redis::start();
        let proxy = Some(Proxy::start(redis.addr));
        Target { redis, proxy }
    }

    /// A connection under test: through the proxy when there is one.
    fn client(&self) -> Client {
        match &self.proxy {
            Some(proxy) => proxy.client(),
            None => self.redis.client(),
        }
    }

    /// A direct connection to the same server, to act "from elsewhere".
    fn side(&self) -> Client {
        self.redis.client()
    }
}

/// Runs `scenario` against direct Redis and through the proxy, asserts the
/// transcripts (raw reply bytes) are identical, and returns the proxied one.
fn same_as_direct(scenario: impl Fn(&Target) -> Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    eprintln!("--- directly against redis-server");
    let direct = scenario(&Target::direct());
    eprintln!("--- through the proxy");
    let proxied = scenario(&Target::proxied());
    assert_eq!(
        show_all(&proxied),
        show_all(&direct),
        "replies through the proxy (left) differ from direct Redis (right)"
    );
    proxied
}

fn show_all(frames: &[Vec<u8>]) -> Vec<String> {
    frames.iter().map(|f| show(f)).collect()
}

/// Asserts two byte strings are equal, reporting the first difference with
/// some context instead of printing megabytes.
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(40);
    let ctx = |b: &[u8]| show(b.get(from..(at + 40).min(b.len())).unwrap_or(&[]));
    panic!(
        "{what}: bytes differ at offset {at} (got {} bytes, want {}):\n  got:  ...{}...\n  want: ...{}...",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want)
    );
}

/// A command as a RESP array of binary-safe bulk strings.
fn enc(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads exactly one reply frame and returns its raw bytes.
fn raw_frame(c: &mut Client) -> Vec<u8> {
    let mut raw = Vec::new();
    loop {
        raw.extend(c.read_exact_bytes(1));
        if raw.ends_with(b"\n")
            && let Some(end) = value_end(&raw, 0)
        {
            assert_eq!(end, raw.len(), "frame ended early in {}", show(&raw));
            return raw;
        }
    }
}

/// Sends one command and returns the raw bytes of its reply.
fn raw_cmd(c: &mut Client, args: &[&str]) -> Vec<u8> {
    c.send(&encode(args));
    raw_frame(c)
}

/// Sends one command and asserts its exact reply.
fn expect(c: &mut Client, args: &[&str], want: &[u8]) -> Vec<u8> {
    let got = raw_cmd(c, args);
    assert_bytes(&got, want, &format!("reply to {args:?}"));
    got
}

/// `HELLO 3`, with the connection id (which differs per server) blanked.
fn hello3(c: &mut Client) -> Vec<u8> {
    blank_id(&raw_cmd(c, &["HELLO", "3"]))
}

/// Replaces the value of the `id` entry of a HELLO reply in `raw` by `<id>`.
fn blank_id(raw: &[u8]) -> Vec<u8> {
    let marker = b"$2\r\nid\r\n:";
    let at = raw
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap_or_else(|| panic!("no id in HELLO reply {}", show(raw)))
        + marker.len();
    let end = at
        + raw[at..]
            .iter()
            .position(|&b| b == b'\r')
            .expect("id line ends");
    let mut out = raw[..at].to_vec();
    out.extend_from_slice(b"<id>");
    out.extend_from_slice(&raw[end..]);
    out
}

/// A request Redis rejects with a protocol error, closing the connection.
const MALFORMED: &[u8] = b"SET a \"unbalanced\r\n";
const PROTOCOL_ERROR: &[u8] = b"-ERR Protocol error: unbalanced quotes in request\r\n";

/// Reads until the peer closes the connection or [`PATIENCE`] passes without
/// a byte; returns what came and whether the connection was closed. Only for
/// clients with nothing left in the harness's read buffer.
fn read_until_closed(c: &mut Client) -> (Vec<u8>, bool) {
    use std::io::{ErrorKind, Read};
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, false);
            }
            Err(e) => panic!("read while waiting for close: {e}"),
        }
    }
}

/// Sends `pipeline` followed by a malformed request in one write and checks
/// that the replies to `pipeline` (`want`) come, then the protocol error,
/// then the close. The proxy holds the protocol error back until no request
/// is in flight, so this also proves its request/reply accounting is exact.
fn replies_then_protocol_error(c: &mut Client, pipeline: &[u8], want: &[u8]) -> Vec<u8> {
    let mut request = pipeline.to_vec();
    request.extend_from_slice(MALFORMED);
    c.send(&request);
    let (got, closed) = read_until_closed(c);
    let mut want = want.to_vec();
    want.extend_from_slice(PROTOCOL_ERROR);
    assert!(
        closed && got == want,
        "want {} then close; got {} and the connection {}",
        show(&want),
        show(&got),
        if closed {
            "was closed"
        } else {
            "stayed open (no close within the deadline)"
        }
    );
    got
}

/// The `db=` and `name=` fields of `CLIENT INFO`, as seen by the server.
fn db_and_name(c: &mut Client) -> Vec<u8> {
    let info = text(&c.cmd(&["CLIENT", "INFO"]));
    let field = |key: &str| {
        info.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in CLIENT INFO: {info}"))
            .to_string()
    };
    format!("db={} name={}", field("db="), field("name=")).into_bytes()
}

/// Waits until the server reports `n` clients blocked on a command.
fn wait_blocked(side: &mut Client, n: usize) {
    let want = format!("blocked_clients:{n}\r\n");
    wait_until(&format!("{n} blocked client(s)"), || {
        text(&side.cmd(&["INFO", "clients"])).contains(&want)
    });
}

/// SET/GET pairs for keys `0..n` and the exact replies Redis gives them.
/// Values contain CRLF, NUL and RESP-looking bytes and vary in length.
fn set_get_pipeline(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut request, mut replies) = (Vec::new(), Vec::new());
    for i in 0..n {
        let key = format!("key:{i}");
        let value = format!("v{i}\r\n*1\r\n$-1\0{}", "x".repeat(i % 61)).into_bytes();
        request.extend(enc(&[b"SET", key.as_bytes(), &value]));
        request.extend(enc(&[b"GET", key.as_bytes()]));
        replies.extend_from_slice(b"+OK\r\n");
        replies.extend(format!("${}\r\n", value.len()).into_bytes());
        replies.extend(&value);
        replies.extend_from_slice(b"\r\n");
    }
    (request, replies)
}

// ---------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------

#[test]
fn pipeline_of_1000_set_get_in_one_write() {
    let (request, replies) = set_get_pipeline(1000);
    same_as_direct(|t| {
        let mut c = t.client();
        c.send(&request);
        let got = c.read_exact_bytes(replies.len());
        assert_bytes(&got, &replies, "replies to 1000 pipelined SET/GET");
        // Nothing extra or missing: the next reply is the next command's.
        let pong = expect(&mut c, &["PING"], b"+PONG\r\n");
        vec![got, pong]
    });
}

#[test]
fn pipeline_split_at_awkward_byte_boundaries() {
    // Requests whose every byte boundary is tried as the end of one read.
    let tricky_value: &[u8] = b"a\r\nb$3\r\n*1\r\n\r\n";
    let commands: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (enc(&[b"SET", b"k", tricky_value]), b"+OK\r\n".to_vec()),
        (
            enc(&[b"GET", b"k"]),
            b"$14\r\na\r\nb$3\r\n*1\r\n\r\n\r\n".to_vec(),
        ),
        (enc(&[b"ECHO", b""]), b"$0\r\n\r\n".to_vec()),
        (b"ECHO \"x y\"\r\n".to_vec(), b"$3\r\nx y\r\n".to_vec()),
    ];
    let (pipeline, pipeline_replies) = set_get_pipeline(300);
    same_as_direct(|t| {
        let mut c = t.client();
        let mut transcript = Vec::new();
        for (command, reply) in &commands {
            for split in 1..command.len() {
                // The PING's reply proves the proxy has read (and acted on) the
                // first write before the rest of the command is sent.
                let mut first = encode(&["PING"]);
                first.extend_from_slice(&command[..split]);
                c.send(&first);
                let pong = raw_frame(&mut c);
                assert_bytes(&pong, b"+PONG\r\n", "PING before a split command");
                c.send(&command[split..]);
                let got = raw_frame(&mut c);
                assert_bytes(
                    &got,
                    reply,
                    &format!("reply to {} split at {split}", show(command)),
                );
                transcript.push(got);
            }
        }
        // A long pipeline dribbled in many small writes of odd sizes.
        let sizes = [1, 2, 3, 5, 7, 11, 13, 1, 1, 64, 4, 9];
        let mut rest = &pipeline[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            c.send(chunk);
            rest = tail;
        }
        let got = c.read_exact_bytes(pipeline_replies.len());
        assert_bytes(&got, &pipeline_replies, "replies to a dribbled pipeline");
        transcript.push(got);
        transcript.push(expect(&mut c, &["PING"], b"+PONG\r\n"));
        transcript
    });
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

#[test]
fn multi_exec_queues_and_returns_the_results_array() {
    let exec_reply: &[u8] = b"*5\r\n+OK\r\n:2\r\n$1\r\n2\r\n:1\r\n\
        -WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    same_as_direct(|t| {
        let mut c = t.client();
        let mut transcript = vec![
            expect(&mut c, &["MULTI"], b"+OK\r\n"),
            expect(&mut c, &["SET", "tx:a", "1"], b"+QUEUED\r\n"),
            expect(&mut c, &["INCR", "tx:a"], b"+QUEUED\r\n"),
            expect(&mut c, &["GET", "tx:a"], b"+QUEUED\r\n"),
            expect(&mut c, &["LPUSH", "tx:l", "x"], b"+QUEUED\r\n"),
            expect(&mut c, &["INCR", "tx:l"], b"+QUEUED\r\n"),
            expect(&mut c, &["EXEC"], exec_reply),
        ];
        // The same transaction pipelined in one write.
        let mut request = Vec::new();
        for args in [
            &["MULTI"][..],
            &["INCR", "tx:a"],
            &["GET", "tx:a"],
            &["EXEC"],
        ] {
            request.extend(encode(args));
        }
        c.send(&request);
        let want: &[u8] = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:3\r\n$1\r\n3\r\n";
        let got = c.read_exact_bytes(want.len());
        assert_bytes(&got, want, "pipelined transaction");
        transcript.push(got);
        // A command rejected while queuing aborts the transaction.
        transcript.push(expect(&mut c, &["MULTI"], b"+OK\r\n"));
        transcript.push(expect(
            &mut c,
            &["NOSUCHCOMMAND"],
            b"-ERR unknown command 'NOSUCHCOMMAND', with args beginning with: \r\n",
        ));
        transcript.push(expect(
            &mut c,
            &["EXEC"],
            b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        ));
        transcript.push(expect(&mut c, &["GET", "tx:a"], b"$1\r\n3\r\n"));
        transcript
    });
}

#[test]
fn discard_drops_the_queued_commands() {
    same_as_direct(|t| {
        let mut c = t.client();
        vec![
            expect(&mut c, &["MULTI"], b"+OK\r\n"),
            expect(&mut c, &["SET", "d", "1"], b"+QUEUED\r\n"),
            expect(&mut c, &["DISCARD"], b"+OK\r\n"),
            expect(&mut c, &["GET", "d"], b"$-1\r\n"),
            expect(&mut c, &["EXEC"], b"-ERR EXEC without MULTI\r\n"),
            expect(&mut c, &["DISCARD"], b"-ERR DISCARD without MULTI\r\n"),
        ]
    });
}

#[test]
fn watch_makes_exec_fail_when_another_connection_modifies_the_key() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        let mut transcript = vec![
            expect(&mut side, &["SET", "w", "0"], b"+OK\r\n"),
            expect(&mut c, &["WATCH", "w"], b"+OK\r\n"),
            expect(&mut side, &["SET", "w", "theirs"], b"+OK\r\n"),
            expect(&mut c, &["MULTI"], b"+OK\r\n"),
            expect(&mut c, &["SET", "w", "mine"], b"+QUEUED\r\n"),
            expect(&mut c, &["EXEC"], b"*-1\r\n"),
            expect(&mut c, &["GET", "w"], b"$6\r\ntheirs\r\n"),
        ];
        // Without interference the watched transaction runs.
        transcript.extend([
            expect(&mut c, &["WATCH", "w"], b"+OK\r\n"),
            expect(&mut c, &["MULTI"], b"+OK\r\n"),
            expect(&mut c, &["SET", "w", "mine"], b"+QUEUED\r\n"),
            expect(&mut c, &["EXEC"], b"*1\r\n+OK\r\n"),
            expect(&mut side, &["GET", "w"], b"$4\r\nmine\r\n"),
        ]);
        transcript
    });
}

// ---------------------------------------------------------------------------
// Blocking commands
// ---------------------------------------------------------------------------

#[test]
fn blpop_times_out_with_a_null_reply() {
    same_as_direct(|t| {
        let mut c = t.client();
        vec![
            expect(&mut c, &["BLPOP", "empty", "0.3"], b"*-1\r\n"),
            expect(&mut c, &["PING"], b"+PONG\r\n"),
        ]
    });
}

#[test]
fn blpop_is_woken_by_lpush_from_another_connection() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        c.send(&encode(&["BLPOP", "q", "0"]));
        wait_blocked(&mut side, 1);
        let pushed = expect(&mut side, &["LPUSH", "q", "hello"], b":1\r\n");
        let popped = raw_frame(&mut c);
        assert_bytes(
            &popped,
            b"*2\r\n$1\r\nq\r\n$5\r\nhello\r\n",
            "BLPOP woken by LPUSH",
        );
        vec![pushed, popped, expect(&mut c, &["LLEN", "q"], b":0\r\n")]
    });
}

// ---------------------------------------------------------------------------
// Pub/Sub
// ---------------------------------------------------------------------------

#[test]
fn subscribe_receives_published_messages_until_unsubscribed() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        c.send(&encode(&["SUBSCRIBE", "ch1", "ch2"]));
        let mut transcript = vec![raw_frame(&mut c), raw_frame(&mut c)];
        assert_bytes(
            &transcript[0],
            b"*3\r\n$9\r\nsubscribe\r\n$3\r\nch1\r\n:1\r\n",
            "first confirmation",
        );
        assert_bytes(
            &transcript[1],
            b"*3\r\n$9\r\nsubscribe\r\n$3\r\nch2\r\n:2\r\n",
            "second confirmation",
        );
        transcript.push(expect(&mut side, &["PUBLISH", "ch1", "hello"], b":1\r\n"));
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            &transcript[3],
            b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n",
            "message on ch1",
        );
        transcript.push(expect(&mut side, &["PUBLISH", "ch2", "world"], b":1\r\n"));
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            &transcript[5],
            b"*3\r\n$7\r\nmessage\r\n$3\r\nch2\r\n$5\r\nworld\r\n",
            "message on ch2",
        );
        transcript.push(expect(
            &mut c,
            &["UNSUBSCRIBE", "ch1"],
            b"*3\r\n$11\r\nunsubscribe\r\n$3\r\nch1\r\n:1\r\n",
        ));
        transcript.push(expect(&mut side, &["PUBLISH", "ch1", "lost"], b":0\r\n"));
        transcript.push(expect(&mut side, &["PUBLISH", "ch2", "again"], b":1\r\n"));
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            transcript.last().unwrap(),
            b"*3\r\n$7\r\nmessage\r\n$3\r\nch2\r\n$5\r\nagain\r\n",
            "only ch2 still delivers",
        );
        transcript.push(expect(
            &mut c,
            &["UNSUBSCRIBE"],
            b"*3\r\n$11\r\nunsubscribe\r\n$3\r\nch2\r\n:0\r\n",
        ));
        // Out of Pub/Sub mode: ordinary replies again.
        transcript.push(expect(&mut c, &["PING"], b"+PONG\r\n"));
        transcript
    });
}

#[test]
fn psubscribe_receives_messages_matching_the_pattern() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        let mut transcript = vec![
            expect(
                &mut c,
                &["PSUBSCRIBE", "news.*"],
                b"*3\r\n$10\r\npsubscribe\r\n$6\r\nnews.*\r\n:1\r\n",
            ),
            expect(&mut side, &["PUBLISH", "news.tech", "hi"], b":1\r\n"),
        ];
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            &transcript[2],
            b"*4\r\n$8\r\npmessage\r\n$6\r\nnews.*\r\n$9\r\nnews.tech\r\n$2\r\nhi\r\n",
            "pattern message",
        );
        transcript.push(expect(&mut side, &["PUBLISH", "sport", "no"], b":0\r\n"));
        transcript.push(expect(
            &mut c,
            &["PUNSUBSCRIBE", "news.*"],
            b"*3\r\n$12\r\npunsubscribe\r\n$6\r\nnews.*\r\n:0\r\n",
        ));
        transcript.push(expect(
            &mut side,
            &["PUBLISH", "news.tech", "gone"],
            b":0\r\n",
        ));
        transcript.push(expect(&mut c, &["PING"], b"+PONG\r\n"));
        transcript
    });
}

#[test]
fn ssubscribe_receives_shard_channel_messages() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        let mut transcript = vec![
            expect(
                &mut c,
                &["SSUBSCRIBE", "sch"],
                b"*3\r\n$10\r\nssubscribe\r\n$3\r\nsch\r\n:1\r\n",
            ),
            expect(&mut side, &["SPUBLISH", "sch", "m"], b":1\r\n"),
        ];
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            &transcript[2],
            b"*3\r\n$8\r\nsmessage\r\n$3\r\nsch\r\n$1\r\nm\r\n",
            "shard message",
        );
        transcript.push(expect(
            &mut c,
            &["SUNSUBSCRIBE", "sch"],
            b"*3\r\n$12\r\nsunsubscribe\r\n$3\r\nsch\r\n:0\r\n",
        ));
        transcript.push(expect(&mut side, &["SPUBLISH", "sch", "gone"], b":0\r\n"));
        transcript.push(expect(&mut c, &["PING"], b"+PONG\r\n"));
        transcript
    });
}

#[test]
fn resp3_subscribe_delivers_push_frames_between_replies() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        let mut transcript = vec![
            hello3(&mut c),
            expect(
                &mut c,
                &["SUBSCRIBE", "c"],
                b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
            ),
            // RESP3 allows ordinary commands while subscribed.
            expect(&mut c, &["GET", "nokey"], b"_\r\n"),
            expect(&mut side, &["PUBLISH", "c", "hi"], b":1\r\n"),
        ];
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            &transcript[4],
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n",
            "pushed message",
        );
        transcript.push(expect(
            &mut c,
            &["UNSUBSCRIBE", "c"],
            b">3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n",
        ));
        transcript.push(expect(&mut c, &["PING"], b"+PONG\r\n"));
        transcript
    });
}

#[test]
fn pipelined_unsubscribes_keep_replies_in_step() {
    same_as_direct(|t| {
        let mut c = t.client();
        c.send(&encode(&["SUBSCRIBE", "a", "b"]));
        let mut transcript = vec![raw_frame(&mut c), raw_frame(&mut c)];
        assert_bytes(
            &transcript[1],
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
            "confirmations",
        );
        // The second UNSUBSCRIBE ("all") is sent before the first is
        // answered, so it only has one channel left to confirm.
        let pipeline = [
            encode(&["UNSUBSCRIBE", "a"]),
            encode(&["UNSUBSCRIBE"]),
            encode(&["PING"]),
        ]
        .concat();
        transcript.push(replies_then_protocol_error(
            &mut c,
            &pipeline,
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n\
              *3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n\
              +PONG\r\n",
        ));
        transcript
    });
}

#[test]
fn resp3_subscriber_reading_a_list_that_starts_with_message() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        expect(&mut side, &["RPUSH", "l", "message", "x"], b":2\r\n");
        let mut transcript = vec![hello3(&mut c)];
        // A RESP3 subscriber may run ordinary commands; this reply is an
        // array, not a push, even though its first element is "message".
        let pipeline = [
            encode(&["SUBSCRIBE", "c"]),
            encode(&["LRANGE", "l", "0", "-1"]),
            encode(&["PING"]),
        ]
        .concat();
        transcript.push(replies_then_protocol_error(
            &mut c,
            &pipeline,
            b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n\
              *2\r\n$7\r\nmessage\r\n$1\r\nx\r\n\
              +PONG\r\n",
        ));
        transcript
    });
}

// ---------------------------------------------------------------------------
// MONITOR
// ---------------------------------------------------------------------------

#[test]
fn monitor_shows_commands_from_another_proxied_connection() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.addr);
    let mut monitor = proxy.client();
    assert_bytes(&raw_cmd(&mut monitor, &["MONITOR"]), b"+OK\r\n", "MONITOR");
    let mut other = proxy.client();
    assert_eq!(
        text(&other.cmd(&["SET", "monitored-key", "some value"])),
        "OK"
    );
    // Other lines (there should be none) may come first; the read timeout
    // bounds the loop.
    let wanted = br#""SET" "monitored-key" "some value""#;
    let line = (0..100)
        .map(|_| raw_frame(&mut monitor))
        .find(|line| line.windows(wanted.len()).any(|w| w == wanted))
        .expect("the SET never showed up on the monitor");
    assert!(
        line.starts_with(b"+") && line.ends_with(b"\"\r\n"),
        "monitor line {}",
        show(&line)
    );
    // The monitoring connection keeps streaming.
    assert_eq!(text(&other.cmd(&["GET", "monitored-key"])), "some value");
    let wanted = br#""GET" "monitored-key""#;
    let line = raw_frame(&mut monitor);
    assert!(
        line.windows(wanted.len()).any(|w| w == wanted),
        "monitor line {}",
        show(&line)
    );
}

#[test]
fn monitor_connection_still_gets_its_own_replies_and_can_reset() {
    same_as_direct(|t| {
        let mut c = t.client();
        // Redis answers commands from a MONITOR connection (PING, RESET,
        // QUIT); after RESET it is an ordinary connection again.
        let pipeline = [encode(&["MONITOR"]), encode(&["RESET"]), encode(&["PING"])].concat();
        vec![replies_then_protocol_error(
            &mut c,
            &pipeline,
            b"+OK\r\n+RESET\r\n+PONG\r\n",
        )]
    });
}

// ---------------------------------------------------------------------------
// RESP3
// ---------------------------------------------------------------------------

#[test]
fn hello_3_replies_with_a_map_and_switches_to_resp3() {
    let transcript = same_as_direct(|t| {
        let mut c = t.client();
        vec![
            hello3(&mut c),
            expect(&mut c, &["GET", "nokey"], b"_\r\n"),
            expect(&mut c, &["HGETALL", "nokey"], b"%0\r\n"),
        ]
    });
    let hello = &transcript[0];
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "HELLO 3 reply {}",
        show(hello)
    );
    assert!(
        hello.windows(15).any(|w| w == b"$5\r\nproto\r\n:3\r\n"),
        "HELLO 3 reply {}",
        show(hello)
    );
    // The decoded reply is a map with proto = 3.
    let t = Target::proxied();
    let mut c = t.client();
    match c.cmd(&["HELLO", "3"]) {
        OwnedFrame::Map { data, .. } => {
            let proto = data
                .iter()
                .find(|(k, _)| text(k) == "proto")
                .map(|(_, v)| text(v))
                .expect("proto in HELLO map");
            assert_eq!(proto, "3");
        }
        other => panic!("HELLO 3 is not a map: {other:?}"),
    }
}

#[test]
fn client_tracking_delivers_an_invalidation_push() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        let mut transcript = vec![
            expect(&mut side, &["SET", "tk", "v"], b"+OK\r\n"),
            hello3(&mut c),
            expect(&mut c, &["CLIENT", "TRACKING", "ON"], b"+OK\r\n"),
            expect(&mut c, &["GET", "tk"], b"$1\r\nv\r\n"),
            expect(&mut side, &["SET", "tk", "v2"], b"+OK\r\n"),
        ];
        transcript.push(raw_frame(&mut c));
        assert_bytes(
            &transcript[5],
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\ntk\r\n",
            "invalidation push",
        );
        // Replies still line up after the push.
        transcript.push(expect(&mut c, &["GET", "tk"], b"$2\r\nv2\r\n"));
        transcript.push(expect(&mut c, &["PING"], b"+PONG\r\n"));
        transcript
    });
}

#[test]
fn resp3_value_types_pass_through_unchanged() {
    let cases: Vec<(Vec<&str>, &[u8])> = vec![
        (vec!["ZADD", "z", "1.5", "m"], b":1\r\n"),
        (vec!["ZSCORE", "z", "m"], b",1.5\r\n"),
        (vec!["HSET", "h", "f", "v"], b":1\r\n"),
        (vec!["HGETALL", "h"], b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        (vec!["SADD", "s", "a"], b":1\r\n"),
        (vec!["SMEMBERS", "s"], b"~1\r\n$1\r\na\r\n"),
        (vec!["GET", "nokey"], b"_\r\n"),
        (
            vec![
                "EVAL",
                "redis.setresp(3); return {big_number='1234567890123456789012'}",
                "0",
            ],
            b"(1234567890123456789012\r\n",
        ),
        (
            vec!["EVAL", "redis.setresp(3); return true", "0"],
            b"#t\r\n",
        ),
        (
            vec!["EVAL", "redis.setresp(3); return false", "0"],
            b"#f\r\n",
        ),
        (
            vec![
                "EVAL",
                "redis.setresp(3); return {verbatim_string={format='txt', string='hi'}}",
                "0",
            ],
            b"=6\r\ntxt:hi\r\n",
        ),
        (
            vec![
                "EVAL",
                "redis.setresp(3); return {map={a={1, {double=2.5}, {map={}}}}}",
                "0",
            ],
            b"%1\r\n$1\r\na\r\n*3\r\n:1\r\n,2.5\r\n%0\r\n",
        ),
    ];
    same_as_direct(|t| {
        let mut c = t.client();
        let mut transcript = vec![hello3(&mut c)];
        for (args, want) in &cases {
            transcript.push(expect(&mut c, args, want));
        }
        // All of it again, pipelined in one write (the scanner sees the
        // frames back to back).
        let mut request = Vec::new();
        let mut want = Vec::new();
        for (args, reply) in cases.iter().skip(1) {
            if args[0] != "ZADD" && args[0] != "HSET" && args[0] != "SADD" {
                request.extend(encode(args));
                want.extend_from_slice(reply);
            }
        }
        c.send(&request);
        let got = c.read_exact_bytes(want.len());
        assert_bytes(&got, &want, "pipelined RESP3 replies");
        transcript.push(got);
        transcript
    });
}

// ---------------------------------------------------------------------------
// Large values
// ---------------------------------------------------------------------------

#[test]
fn a_64_mib_value_round_trips() {
    const SIZE: usize = 64 * 1024 * 1024;
    let value: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8)
        .collect();
    let redis = Redis::start();
    let proxy = Proxy::start(redis.addr);
    let mut c = proxy.client();
    c.send(&enc(&[b"SET", b"big", &value]));
    assert_bytes(&raw_frame(&mut c), b"+OK\r\n", "SET of 64 MiB");
    expect(
        &mut c,
        &["STRLEN", "big"],
        format!(":{SIZE}\r\n").as_bytes(),
    );
    // A direct connection sees the same bytes (spot checks).
    let mut side = redis.client();
    expect(&mut side, &["GETRANGE", "big", "1000000", "1000007"], &{
        let mut want = b"$8\r\n".to_vec();
        want.extend_from_slice(&value[1_000_000..1_000_008]);
        want.extend_from_slice(b"\r\n");
        want
    });
    c.send(&encode(&["GET", "big"]));
    let header = format!("${SIZE}\r\n");
    assert_bytes(
        &c.read_exact_bytes(header.len()),
        header.as_bytes(),
        "GET header",
    );
    let body = c.read_exact_bytes(SIZE);
    assert_bytes(&body, &value, "GET of 64 MiB");
    assert_bytes(&c.read_exact_bytes(2), b"\r\n", "GET trailer");
    // Framing is intact afterwards.
    expect(&mut c, &["PING"], b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// Connection commands
// ---------------------------------------------------------------------------

#[test]
fn quit_replies_ok_then_closes_the_connection() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut transcript = vec![expect(&mut c, &["SET", "q", "1"], b"+OK\r\n")];
        c.send(&encode(&["QUIT"]));
        let got = c.read_to_close();
        assert_bytes(&got, b"+OK\r\n", "QUIT then close");
        transcript.push(got);
        // Commands pipelined after QUIT are not executed.
        let mut c = t.client();
        let mut request = encode(&["QUIT"]);
        request.extend(encode(&["SET", "q", "2"]));
        c.send(&request);
        let got = c.read_to_close();
        assert_bytes(&got, b"+OK\r\n", "pipelined QUIT then close");
        transcript.push(got);
        // New connections still work.
        transcript.push(expect(&mut t.client(), &["GET", "q"], b"$1\r\n1\r\n"));
        transcript
    });
}

#[test]
fn reset_restores_the_default_connection_state() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut transcript = vec![
            expect(&mut c, &["SELECT", "5"], b"+OK\r\n"),
            expect(&mut c, &["CLIENT", "SETNAME", "app"], b"+OK\r\n"),
        ];
        let before = db_and_name(&mut c);
        assert_bytes(&before, b"db=5 name=app", "CLIENT INFO before RESET");
        transcript.push(before);
        transcript.push(expect(&mut c, &["MULTI"], b"+OK\r\n"));
        transcript.push(expect(&mut c, &["SET", "r", "1"], b"+QUEUED\r\n"));
        transcript.push(expect(&mut c, &["RESET"], b"+RESET\r\n"));
        let after = db_and_name(&mut c);
        assert_bytes(&after, b"db=0 name=", "CLIENT INFO after RESET");
        transcript.push(after);
        // The transaction was discarded.
        transcript.push(expect(&mut c, &["EXEC"], b"-ERR EXEC without MULTI\r\n"));
        transcript.push(expect(&mut c, &["SELECT", "5"], b"+OK\r\n"));
        transcript.push(expect(&mut c, &["EXISTS", "r"], b":0\r\n"));
        // RESET also leaves Pub/Sub mode.
        transcript.push(expect(
            &mut c,
            &["SUBSCRIBE", "x"],
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n",
        ));
        transcript.push(expect(&mut c, &["RESET"], b"+RESET\r\n"));
        transcript.push(expect(&mut c, &["GET", "r"], b"$-1\r\n"));
        transcript
    });
}

#[test]
fn inline_commands_work() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut transcript = Vec::new();
        for (line, want) in [
            (&b"PING\r\n"[..], &b"+PONG\r\n"[..]),
            (b"SET a \"x y\"\r\n", b"+OK\r\n"),
            (b"set b '\\'q\\'' \r\n", b"+OK\r\n"),
            (b"SET c \"\\x41\\r\\n\"\r\n", b"+OK\r\n"),
            (b"PING\n", b"+PONG\r\n"),
            (b"  \r\nECHO   hello  \r\n", b"$5\r\nhello\r\n"),
            // A quote inside a word opens a quoted part (sdssplitargs).
            (b"ECHO a\"b c\"\r\n", b"$4\r\nab c\r\n"),
            (b"ECHO x'y z'\r\n", b"$4\r\nxy z\r\n"),
        ] {
            c.send(line);
            let got = raw_frame(&mut c);
            assert_bytes(&got, want, &format!("reply to inline {}", show(line)));
            transcript.push(got);
        }
        transcript.push(expect(&mut c, &["GET", "a"], b"$3\r\nx y\r\n"));
        transcript.push(expect(&mut c, &["GET", "b"], b"$3\r\n'q'\r\n"));
        transcript.push(expect(&mut c, &["GET", "c"], b"$3\r\nA\r\n\r\n"));
        // Inline and RESP requests mixed in one pipeline.
        c.send(b"EXISTS a nokey\r\n*1\r\n$4\r\nPING\r\nGET a\r\n*2\r\n$4\r\nECHO\r\n$2\r\nok\r\n");
        let want: &[u8] = b":1\r\n+PONG\r\n$3\r\nx y\r\n$2\r\nok\r\n";
        let got = c.read_exact_bytes(want.len());
        assert_bytes(&got, want, "mixed inline/RESP pipeline");
        transcript.push(got);
        transcript
    });
}

#[test]
fn malformed_inline_command_gets_the_protocol_error_and_a_close() {
    same_as_direct(|t| {
        let mut c = t.client();
        let got = replies_then_protocol_error(&mut c, b"PING\r\n", b"+PONG\r\n");
        // A quote opened inside a word and never closed.
        let mut mid_word = t.client();
        mid_word.send(b"ECHO a\"b\r\n");
        let (unclosed, closed) = read_until_closed(&mut mid_word);
        assert!(
            closed && unclosed == PROTOCOL_ERROR,
            "ECHO a\"b: want {} then close, got {} (closed: {closed})",
            show(PROTOCOL_ERROR),
            show(&unclosed)
        );
        // A NUL hides the line's end (Redis uses strchr): nothing runs
        // until the unended line is too big.
        let mut nul = t.client();
        let mut stuck = b"PING\0\r\n".to_vec();
        stuck.extend(b"PING\r\n".repeat(12_000));
        nul.send(&stuck);
        let (too_big, closed) = read_until_closed(&mut nul);
        let want: &[u8] = b"-ERR Protocol error: too big inline request\r\n";
        assert!(
            closed && too_big == want,
            "PING\\0 then 12,000 PINGs: want {} then close, got {} (closed: {closed})",
            show(want),
            show(&too_big)
        );
        vec![
            got,
            unclosed,
            too_big,
            expect(&mut t.client(), &["EXISTS", "a"], b":0\r\n"),
        ]
    });
}

#[test]
fn select_and_client_setname_are_seen_by_the_server() {
    same_as_direct(|t| {
        let mut c = t.client();
        let mut side = t.side();
        let mut transcript = vec![
            expect(&mut c, &["SELECT", "5"], b"+OK\r\n"),
            expect(&mut c, &["CLIENT", "SETNAME", "sessions-test"], b"+OK\r\n"),
            expect(&mut c, &["CLIENT", "GETNAME"], b"$13\r\nsessions-test\r\n"),
        ];
        let info = db_and_name(&mut c);
        assert_bytes(&info, b"db=5 name=sessions-test", "CLIENT INFO");
        transcript.push(info);
        // The server's own list shows the named connection in db 5.
        let list = text(&side.cmd(&["CLIENT", "LIST"]));
        let line = list
            .lines()
            .find(|l| l.contains(" name=sessions-test "))
            .unwrap_or_else(|| panic!("no named client in CLIENT LIST:\n{list}"));
        assert!(line.contains(" db=5 "), "CLIENT LIST line: {line}");
        // Writes land in db 5.
        transcript.push(expect(&mut c, &["SET", "k", "five"], b"+OK\r\n"));
        transcript.push(expect(&mut side, &["GET", "k"], b"$-1\r\n"));
        transcript.push(expect(&mut side, &["SELECT", "5"], b"+OK\r\n"));
        transcript.push(expect(&mut side, &["GET", "k"], b"$4\r\nfive\r\n"));
        // A failed SELECT changes nothing.
        transcript.push(expect(
            &mut c,
            &["SELECT", "99"],
            b"-ERR DB index is out of range\r\n",
        ));
        transcript.push(db_and_name(&mut c));
        transcript
    });
}
