//! Malformed requests: each gets Redis's exact protocol error, then only that
//! connection is closed; the proxy and its other clients carry on.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::*;

/// A proxy in front of a fresh Redis, with a bystander client that has
/// already been served once (so it is a live session during the bad input).
struct Setup {
    redis: Redis,
    proxy: Proxy,
    bystander: Client,
}

fn setup(service_extra: &str) -> Setup {
    let redis = Redis::start();
    let proxy = Proxy::start_with(redis.addr, service_extra);
    let mut bystander = proxy.client();
    assert_eq!(text(&bystander.cmd(&["PING"])), "PONG");
    Setup {
        redis,
        proxy,
        bystander,
    }
}

/// Sends `bytes` on a new connection from a separate thread (a proxy that
/// stops reading must not deadlock the test) and returns everything received
/// until the proxy closes the connection. Panics if it is not closed within
/// the harness's patience.
fn send_until_closed(addr: std::net::SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
    let mut client = Client::connect(addr);
    let mut writer = client.stream.try_clone().expect("clone stream");
    let sender = std::thread::spawn(move || {
        // The proxy may close while we are still writing: that is fine.
        let _ = writer.write_all(&bytes);
    });
    let got = client.read_to_close();
    sender.join().expect("writer thread");
    got
}

/// Asserts the exact bytes received, showing both sides escaped on failure.
fn assert_bytes(got: &[u8], expected: &[u8], case: &str) {
    assert!(
        got == expected,
        "{case}: expected {:?}, got {:?}",
        expected.escape_ascii().to_string(),
        got.escape_ascii().to_string()
    );
}

fn protocol_error(what: &str) -> Vec<u8> {
    format!("-ERR Protocol error: {what}\r\n").into_bytes()
}

/// PING, SET and GET work on `client` (keys are unique per call).
fn still_works(client: &mut Client, who: &str) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let key = format!("still-works-{}", N.fetch_add(1, Ordering::Relaxed));
    assert_eq!(text(&client.cmd(&["PING"])), "PONG", "{who}: PING");
    assert_eq!(text(&client.cmd(&["SET", &key, who])), "OK", "{who}: SET");
    assert_eq!(text(&client.cmd(&["GET", &key])), who, "{who}: GET");
}

/// The whole check: `bytes` on its own connection get exactly `expected` and
/// a close; the bystander and a brand-new client still work.
fn assert_rejected_with(setup: &mut Setup, bytes: Vec<u8>, expected: &[u8], case: &str) {
    let got = send_until_closed(setup.proxy.addr, bytes);
    assert_bytes(&got, expected, case);
    still_works(&mut setup.bystander, "bystander");
    still_works(&mut setup.proxy.client(), "new client");
}

fn assert_rejected(bytes: Vec<u8>, what: &str) {
    let mut s = setup("");
    assert_rejected_with(&mut s, bytes, &protocol_error(what), what);
}

#[test]
fn bad_type_byte_in_a_request() {
    assert_rejected(b"*1\r\n:1\r\n".to_vec(), "expected '$', got ':'");
}

#[test]
fn non_bulk_command_arguments() {
    assert_rejected(
        b"*2\r\n$4\r\nPING\r\n+hi\r\n".to_vec(),
        "expected '$', got '+'",
    );
}

#[test]
fn negative_bulk_length() {
    let mut s = setup("");
    let bytes = b"*3\r\n$3\r\nSET\r\n$7\r\nneg-key\r\n$-1\r\n".to_vec();
    assert_rejected_with(
        &mut s,
        bytes,
        &protocol_error("invalid bulk length"),
        "negative bulk length",
    );
    // The half-parsed SET never reached Redis.
    assert_eq!(text(&s.redis.client().cmd(&["EXISTS", "neg-key"])), "0");
}

#[test]
fn huge_bulk_length_over_the_default_limit() {
    // Default proto_max_bulk_len is 512mb, like Redis.
    assert_rejected(
        b"*2\r\n$3\r\nGET\r\n$536870913\r\n".to_vec(),
        "invalid bulk length",
    );
}

#[test]
fn bulk_length_over_configured_proto_max_bulk_len() {
    let mut s = setup("proto_max_bulk_len = 1024");
    // Exactly at the limit is accepted...
    let value = "x".repeat(1024);
    assert_eq!(text(&s.bystander.cmd(&["SET", "at-limit", &value])), "OK");
    assert_eq!(text(&s.bystander.cmd(&["GET", "at-limit"])), value);
    // ...one byte more is not, even before the payload arrives.
    assert_rejected_with(
        &mut s,
        b"*3\r\n$3\r\nSET\r\n$4\r\nover\r\n$1025\r\n".to_vec(),
        &protocol_error("invalid bulk length"),
        "bulk over proto_max_bulk_len",
    );
    assert_eq!(text(&s.redis.client().cmd(&["EXISTS", "over"])), "0");
}

#[test]
fn invalid_multibulk_length() {
    assert_rejected(b"*abc\r\n".to_vec(), "invalid multibulk length");
}

#[test]
fn multibulk_length_over_int_max() {
    assert_rejected(b"*3000000000\r\n".to_vec(), "invalid multibulk length");
}

#[test]
fn depth_bomb() {
    // Requests are flat: the second `*1` is an argument that is not a bulk.
    assert_rejected(b"*1\r\n".repeat(100_000), "expected '$', got '*'");
}

#[test]
fn unterminated_inline_line_longer_than_64k() {
    assert_rejected(vec![b'a'; 64 * 1024 + 100], "too big inline request");
}

#[test]
fn unterminated_multibulk_count_longer_than_64k() {
    let mut bytes = b"*".to_vec();
    bytes.extend(std::iter::repeat_n(b'9', 64 * 1024 + 100));
    assert_rejected(bytes, "too big mbulk count string");
}

/// Redis 7 answers an over-long `$` header with "too big bulk count string".
#[test]
fn unterminated_bulk_count_longer_than_64k() {
    let mut bytes = b"*1\r\n$".to_vec();
    bytes.extend(std::iter::repeat_n(b'9', 64 * 1024 + 100));
    assert_rejected(bytes, "too big bulk count string");
}

/// Redis 7 answers `*1\r\n\r\n` with "expected '$', got ' '" (the `\r` it
/// found, with CR/LF blanked out of the error text).
#[test]
fn empty_line_instead_of_a_bulk_header() {
    assert_rejected(b"*1\r\n\r\n".to_vec(), "expected '$', got ' '");
}

/// Deterministic pseudo-random bytes without `\n` or NUL.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (seed >> 56) as u8 {
                b'\n' | 0 => 0xfe,
                b => b,
            }
        })
        .collect()
}

#[test]
fn binary_garbage() {
    let mut bytes = b"*".to_vec();
    bytes.extend(garbage(300, 7));
    bytes.extend_from_slice(b"\r\n");
    assert_rejected(bytes, "invalid multibulk length");
}

#[test]
fn binary_garbage_after_a_valid_header() {
    // A bulk header whose length is garbage.
    let mut bytes = b"*2\r\n$3\r\nGET\r\n$".to_vec();
    bytes.extend(
        garbage(50, 11)
            .into_iter()
            .map(|b| if b.is_ascii_digit() { b'x' } else { b }),
    );
    bytes.extend_from_slice(b"\r\n");
    assert_rejected(bytes, "invalid bulk length");
}

#[test]
fn unbalanced_quotes_inline() {
    assert_rejected(b"SET k \"abc\r\n".to_vec(), "unbalanced quotes in request");
}

#[test]
fn closing_quote_followed_by_text_inline() {
    assert_rejected(b"SET k \"a\"b\r\n".to_vec(), "unbalanced quotes in request");
}

#[test]
fn client_closing_mid_pipeline() {
    let mut s = setup("");
    {
        let mut c = s.proxy.client();
        assert_eq!(text(&c.cmd(&["PING"])), "PONG");
        // One whole request and half of the next, then the client goes away.
        let mut bytes = encode(&["SET", "whole", "1"]);
        bytes.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$1");
        c.send(&bytes);
        c.stream.shutdown(std::net::Shutdown::Both).expect("close");
    }
    let mut direct = s.redis.client();
    wait_until("the whole request to reach Redis", || {
        text(&direct.cmd(&["EXISTS", "whole"])) == "1"
    });
    // The half request is never executed.
    assert_eq!(text(&direct.cmd(&["EXISTS", "half"])), "0");
    still_works(&mut s.bystander, "bystander");
    still_works(&mut s.proxy.client(), "new client");
    // And the abandoned session ends: Redis sees only the bystander, the
    // direct connection and the new client's session drop back out.
    wait_until("the abandoned session's upstream to close", || {
        let list = text(&direct.cmd(&["CLIENT", "LIST"]));
        list.lines().count() == 2
    });
}

#[test]
fn good_requests_before_the_bad_one_get_their_replies_first() {
    let mut s = setup("");
    let mut bytes = encode(&["PING"]);
    bytes.extend(encode(&["SET", "before", "v"]));
    bytes.extend_from_slice(b"GET before\r\n"); // inline
    bytes.extend(encode(&["GET", "before"]));
    bytes.extend_from_slice(b"*1\r\n:1\r\n");
    bytes.extend(encode(&["SET", "after", "x"]));
    let mut expected = b"+PONG\r\n+OK\r\n$1\r\nv\r\n$1\r\nv\r\n".to_vec();
    expected.extend(protocol_error("expected '$', got ':'"));
    assert_rejected_with(&mut s, bytes, &expected, "good then bad");
    // Nothing after the bad request was executed.
    assert_eq!(text(&s.redis.client().cmd(&["EXISTS", "after"])), "0");
}

#[test]
fn good_inline_requests_before_unbalanced_quotes() {
    let mut s = setup("");
    let bytes = b"PING\r\nSET inl 'a b'\r\nGET inl\r\nSET x \"oops\r\nSET after 1\r\n".to_vec();
    let mut expected = b"+PONG\r\n+OK\r\n$3\r\na b\r\n".to_vec();
    expected.extend(protocol_error("unbalanced quotes in request"));
    assert_rejected_with(&mut s, bytes, &expected, "good inline then bad");
    assert_eq!(text(&s.redis.client().cmd(&["EXISTS", "after"])), "0");
}

#[test]
fn bad_request_while_a_slow_reply_is_in_flight() {
    let mut s = setup("");
    // The BLPOP is answered (by a push from elsewhere) before the error.
    let mut c = s.proxy.client();
    let mut bytes = encode(&["BLPOP", "slow-list", "0"]);
    bytes.extend_from_slice(b"*abc\r\n");
    c.send(&bytes);
    let mut direct = s.redis.client();
    wait_until("BLPOP to block in Redis", || {
        text(&direct.cmd(&["CLIENT", "LIST"])).contains("cmd=blpop")
    });
    assert_eq!(text(&direct.cmd(&["RPUSH", "slow-list", "v"])), "1");
    let mut expected = b"*2\r\n$9\r\nslow-list\r\n$1\r\nv\r\n".to_vec();
    expected.extend(protocol_error("invalid multibulk length"));
    assert_bytes(&c.read_to_close(), &expected, "BLPOP then bad");
    still_works(&mut s.bystander, "bystander");
}

#[test]
fn empty_and_negative_multibulks_are_ignored_like_redis() {
    let mut s = setup("");
    let mut c = s.proxy.client();
    c.send(b"*0\r\n*-5\r\n\r\n   \r\n");
    c.send(&encode(&["PING"]));
    assert_eq!(text(&c.read_frame()), "PONG");
    still_works(&mut c, "after empty requests");
    still_works(&mut s.bystander, "bystander");
}

#[test]
fn large_valid_requests_are_not_mistaken_for_bad_ones() {
    let mut s = setup("");
    let big = "v".repeat(3 * 1024 * 1024);
    assert_eq!(text(&s.bystander.cmd(&["SET", "big", &big])), "OK");
    assert_eq!(
        text(&s.bystander.cmd(&["STRLEN", "big"])),
        big.len().to_string()
    );
    let mut args = vec!["RPUSH", "many"];
    args.extend(std::iter::repeat_n("x", 100_000));
    assert_eq!(text(&s.bystander.cmd(&args)), "100000");
    still_works(&mut s.bystander, "bystander");
}

/// The expectations above are Redis's own replies: check them against a real
/// redis-server, so the tests cannot drift from what Redis does.
#[test]
fn redis_itself_gives_the_same_errors() {
    let redis = Redis::start();
    let cases: [(&[u8], &str); 8] = [
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*2\r\n$4\r\nPING\r\n+hi\r\n", "expected '$', got '+'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*2\r\n$3\r\nGET\r\n$536870913\r\n", "invalid bulk length"),
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*3000000000\r\n", "invalid multibulk length"),
        (b"*1\r\n\r\n", "expected '$', got ' '"),
        (b"SET k \"abc\r\n", "unbalanced quotes in request"),
    ];
    for (bytes, what) in cases {
        let got = send_until_closed(redis.addr, bytes.to_vec());
        assert_bytes(
            &got,
            &protocol_error(what),
            &format!("redis-server on {:?}", bytes.escape_ascii().to_string()),
        );
    }
}
