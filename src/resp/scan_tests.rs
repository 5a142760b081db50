//! Unit tests of the scanner: boundaries, resumption, RESP3 shapes, heads, limits.

use super::*;

fn reply() -> Scanner {
    Scanner::new(Direction::Reply, Limits::default())
}

fn request() -> Scanner {
    Scanner::new(Direction::Request, Limits::default())
}

/// Feeds `input` in chunks of `step` bytes the way the session does and
/// returns the frame end offsets.
fn boundaries(
    scanner: &mut Scanner,
    input: &[u8],
    step: usize,
) -> Result<Vec<usize>, ProtocolError> {
    let mut ends = Vec::new();
    let mut resume = 0;
    let mut avail = 0;
    while avail < input.len() {
        avail = (avail + step).min(input.len());
        loop {
            match scanner.scan(&input[resume..avail])? {
                Progress::Frame(n) => {
                    resume += n;
                    ends.push(resume);
                }
                Progress::NeedMore(n) => {
                    resume += n;
                    break;
                }
            }
        }
    }
    Ok(ends)
}

#[test]
fn finds_every_frame_in_a_pipeline_at_any_split() {
    let input: &[u8] = b"+OK\r\n$5\r\nhello\r\n*2\r\n:1\r\n$-1\r\n-ERR no\r\n*-1\r\n$0\r\n\r\n";
    let want = vec![5, 16, 29, 38, 43, 49];
    for step in 1..=input.len() {
        assert_eq!(
            boundaries(&mut reply(), input, step).unwrap(),
            want,
            "step {step}"
        );
    }
}

#[test]
fn resp3_types_streams_attributes_and_pushes() {
    let cases: &[&[u8]] = &[
        b"%2\r\n+a\r\n:1\r\n+b\r\n,1.5\r\n",
        b"~2\r\n#t\r\n_\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n",
        b"*?\r\n:1\r\n*?\r\n:2\r\n.\r\n.\r\n",
        b"%?\r\n+a\r\n:1\r\n.\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"*1\r\n|1\r\n+k\r\n+v\r\n:5\r\n",
    ];
    for case in cases {
        for step in 1..=case.len() {
            let ends = boundaries(&mut reply(), case, step).unwrap();
            assert_eq!(
                ends,
                vec![case.len()],
                "{:?} step {step}",
                String::from_utf8_lossy(case)
            );
        }
    }
}

#[test]
fn heads_and_kinds_classify_frames() {
    let mut s = reply();
    assert_eq!(
        s.scan(b"-READONLY You can't write\r\n"),
        Ok(Progress::Frame(27))
    );
    assert!(s.info().is_error());
    assert_eq!(s.info().head(), b"READONLY You can");
    assert_eq!(
        s.scan(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
        Ok(Progress::Frame(31))
    );
    assert_eq!(
        (s.info().kind, s.info().head(), s.info().len),
        (b'>', &b"message"[..], 3)
    );
    assert_eq!(
        s.scan(b"|1\r\n+k\r\n+v\r\n+OK\r\n"),
        Ok(Progress::Frame(17))
    );
    assert_eq!(
        (s.info().kind, s.info().head()),
        (b'+', &b"OK"[..]),
        "attributes are not the head"
    );

    let mut r = request();
    assert_eq!(
        r.scan(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        Ok(Progress::Frame(20))
    );
    assert_eq!(
        (r.info().kind, r.info().head(), r.info().len),
        (b'*', &b"GET"[..], 2)
    );
    assert_eq!(r.scan(b"PING\r\n"), Ok(Progress::Frame(6)));
    assert_eq!((r.info().kind, r.info().head()), (b'i', &b"PING"[..]));
    assert_eq!(r.scan(b"*0\r\n"), Ok(Progress::Frame(4)));
    assert_eq!(
        r.info().len,
        0,
        "empty multibulks are reported so they can be dropped"
    );
}

#[test]
fn head_survives_a_split_payload() {
    let input = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n";
    let mut s = reply();
    assert_eq!(boundaries(&mut s, input, 1).unwrap(), vec![input.len()]);
    assert_eq!(s.info().head(), b"message");
}

#[test]
fn large_payloads_are_skipped_not_buffered() {
    let mut s = reply();
    assert_eq!(s.scan(b"$1000000\r\nabc"), Ok(Progress::NeedMore(13)));
    assert!(!s.is_idle());
    let middle = vec![b'x'; 999_997];
    assert_eq!(s.scan(&middle), Ok(Progress::NeedMore(middle.len())));
    assert_eq!(s.scan(b"\r\n+OK\r\n"), Ok(Progress::Frame(2)));
    assert!(s.is_idle());
}

#[test]
fn requests_follow_the_redis_grammar() {
    let err = |input: &[u8]| boundaries(&mut request(), input, input.len()).unwrap_err();
    assert_eq!(err(b"*1\r\n:1\r\n"), ProtocolError::ExpectedBulk(b':'));
    assert_eq!(err(b"*1\r\n*1\r\n"), ProtocolError::ExpectedBulk(b'*'));
    assert_eq!(err(b"*abc\r\n"), ProtocolError::InvalidMultibulkLength);
    assert_eq!(err(b"*03\r\n"), ProtocolError::InvalidMultibulkLength);
    assert_eq!(err(b"*1\r\n$-0\r\n"), ProtocolError::InvalidBulkLength);
    assert_eq!(err(b"*1\r\n$-5\r\n"), ProtocolError::InvalidBulkLength);
    assert_eq!(
        err(b"*1\r\n$536870913\r\n"),
        ProtocolError::InvalidBulkLength
    );
    assert_eq!(err(b"*1\r\n$3\r\nGETxx"), ProtocolError::MissingCrlf);
    assert_eq!(err(&[b'x'; 70_000]), ProtocolError::TooBigInline);
    // Redis finds an inline line's end with strchr: a NUL hides it, and
    // every line after, until the buffer is too big.
    let mut nul_line = b"PING\0\r\nPING\r\n".to_vec();
    let mut s = request();
    assert!(
        matches!(s.scan(&nul_line), Ok(Progress::NeedMore(_))),
        "no frame ends after a NUL in an inline line"
    );
    nul_line.extend(b"PING\r\n".repeat(12_000));
    assert_eq!(err(&nul_line), ProtocolError::TooBigInline);
    // In RESP, a NUL is just a byte.
    assert_eq!(
        boundaries(&mut request(), b"*1\r\n$2\r\na\0\r\n", 3),
        Ok(vec![12])
    );
    let mut big_count = b"*".to_vec();
    big_count.extend(std::iter::repeat_n(b'1', 70_000));
    assert_eq!(err(&big_count), ProtocolError::TooBigCountLine);
}

#[test]
fn reply_limits_hold() {
    let limits = Limits {
        max_bulk_len: 10,
        max_depth: 3,
        max_inline_len: 64,
    };
    let mut s = Scanner::new(Direction::Reply, limits);
    assert_eq!(s.scan(b"$11\r\n"), Err(ProtocolError::InvalidBulkLength));
    let mut s = Scanner::new(Direction::Reply, limits);
    assert_eq!(
        s.scan(b"*1\r\n*1\r\n*1\r\n*1\r\n"),
        Err(ProtocolError::TooDeep(3))
    );
    let mut s = Scanner::new(Direction::Reply, limits);
    assert_eq!(s.scan(b"@oops\r\n"), Err(ProtocolError::BadType(b'@')));
    let mut s = Scanner::new(Direction::Reply, limits);
    assert_eq!(s.scan(&[b'+'; 100]), Err(ProtocolError::BadLength(b'+')));
    let mut s = Scanner::new(Direction::Reply, limits);
    assert_eq!(s.scan(b".\r\n"), Err(ProtocolError::UnexpectedEnd));
}

#[test]
fn a_long_line_is_searched_once() {
    // A 60 KiB simple string delivered one byte at a time: each call looks
    // only at the new byte (resumed search), so this stays linear.
    let mut line = b"+".to_vec();
    line.extend(std::iter::repeat_n(b'a', 60_000));
    line.extend_from_slice(b"\r\n");
    let mut s = reply();
    assert_eq!(boundaries(&mut s, &line, 1).unwrap(), vec![line.len()]);
}

// ---------------------------------------------------------------------------
// The fast path against the line-by-line scan
// ---------------------------------------------------------------------------

type Step = Result<(Progress, FrameInfo), ProtocolError>;

/// Drives a fresh scanner with `scan` the way the session does, revealing
/// `data` up to each of `cuts` and then whole; records every call's result
/// and the frame summary after it, up to the first error.
fn trace(
    dir: Direction,
    limits: Limits,
    data: &[u8],
    cuts: &[usize],
    scan: fn(&mut Scanner, &[u8]) -> Result<Progress, ProtocolError>,
) -> Vec<Step> {
    let mut scanner = Scanner::new(dir, limits);
    let mut steps = Vec::new();
    let mut resume = 0;
    let ends = cuts.iter().copied().filter(|&c| c < data.len());
    for avail in ends.chain([data.len()]) {
        while resume <= avail {
            let result = scan(&mut scanner, &data[resume..avail]);
            let stop = match result {
                Ok(Progress::Frame(n)) => {
                    resume += n;
                    false
                }
                Ok(Progress::NeedMore(n)) => {
                    resume += n;
                    true
                }
                Err(_) => true,
            };
            steps.push(result.map(|p| (p, *scanner.info())));
            if stop {
                break;
            }
        }
    }
    steps
}

/// Asserts that `scan` (fast path first) and `scan_lines` alone agree on
/// every call's result and frame summary, and that whatever the one-step
/// readers accept is what the slow path finds.
fn assert_fast_matches_slow(dir: Direction, limits: Limits, data: &[u8], cuts: &[usize]) {
    let slow = trace(dir, limits, data, cuts, Scanner::scan_lines);
    assert_eq!(
        trace(dir, limits, data, cuts, Scanner::scan),
        slow,
        "{dir} {:?} cuts {cuts:?} {limits:?}",
        String::from_utf8_lossy(data),
    );
    assert_eq!(trace(dir, limits, data, cuts, scan_checking_whole), slow);
}

/// `scan_lines`, after checking that [`Scanner::whole_request`] or
/// [`Scanner::whole_leaf`], when they accept the bytes, report the frame
/// that it finds: its length, kind and command name.
fn scan_checking_whole(s: &mut Scanner, buf: &[u8]) -> Result<Progress, ProtocolError> {
    let whole = match s.dir {
        Direction::Request => s.whole_request(buf).map(|(n, name)| (n, b'*', name)),
        Direction::Reply => s.whole_leaf(buf).map(|(n, kind)| (n, kind, &[][..])),
    };
    let result = s.scan_lines(buf);
    if let Some((n, kind, name)) = whole {
        let what = String::from_utf8_lossy(buf);
        assert_eq!(result, Ok(Progress::Frame(n)), "{what:?}");
        assert_eq!(s.info().kind, kind, "{what:?}");
        match s.dir {
            Direction::Request => {
                assert_eq!(
                    s.info().head(),
                    &name[..name.len().min(HEAD_CAP)],
                    "{what:?}"
                )
            }
            Direction::Reply => assert_eq!(s.info().len, 0, "{what:?}"),
        }
    }
    result
}

fn tight(max_bulk_len: usize, max_depth: usize) -> Limits {
    Limits {
        max_bulk_len,
        max_depth,
        max_inline_len: 8,
    }
}

/// The frames of a GET/SET benchmark and their replies are read by the fast
/// path (so the comparisons with the slow path below are not vacuous).
#[test]
fn fast_path_reads_common_frames() {
    let requests: &[&[u8]] = &[
        b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n",
        b"*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n",
    ];
    let replies: &[&[u8]] = &[
        b"+OK\r\n",
        b"$3\r\nxxx\r\n",
        b"$-1\r\n",
        b":1\r\n",
        b"-ERR unknown command\r\n",
        b"*-1\r\n",
        b"*2\r\n$-1\r\n$1\r\nv\r\n",
        b"%1\r\n+k\r\n:1\r\n",
        b">2\r\n$7\r\nmessage\r\n_\r\n",
    ];
    let cases = (requests.iter().map(|r| (Direction::Request, r)))
        .chain(replies.iter().map(|r| (Direction::Reply, r)));
    for (dir, input) in cases {
        let end = fast::frame(input, dir, &Limits::default()).map(|(end, _)| end);
        assert_eq!(
            end,
            Some(input.len()),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        let scanner = Scanner::new(dir, Limits::default());
        // The one-step readers take requests and leaves, not aggregates.
        let (whole, expected) = match dir {
            Direction::Request => (
                scanner.whole_request(input).map(|(n, _)| n),
                Some(input.len()),
            ),
            Direction::Reply => {
                let aggregate = b"*~>%".contains(&input[0]);
                (
                    scanner.whole_leaf(input).map(|(n, _)| n),
                    (!aggregate).then_some(input.len()),
                )
            }
        };
        assert_eq!(whole, expected, "{:?}", String::from_utf8_lossy(input));
        assert_fast_matches_slow(dir, Limits::default(), input, &[]);
    }
}

/// Inputs the fast path must leave to the slow path (or read exactly as it
/// does), each just on either side of a check or a limit.
#[test]
fn fast_path_edge_cases_match_slow_path() {
    let inputs: &[&[u8]] = &[
        b"*1\r\n$0\r\n\r\n",
        b"*1\r\n$3\r\nabc\r\n",
        b"*1\r\n$4\r\nabcd\r\n",
        b"*1\r\n$03\r\nabc\r\n",
        b"*1\r\n$00\r\n\r\n",
        b"*1\r\n$10\r\n0123456789\r\n",
        b"*1\r\n$100\r\n",
        b"*01\r\n$1\r\na\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$3\r\nabcd\r\n",
        b"*1\r\n$3\r\nabc\n\r",
        b"*1\r\n$3\r\nabc\r",
        b"*1\r\n$3\r\r\nabc\r\n",
        b"*1\n$3\r\nabc\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*1\r\n:1\r\n",
        b"*2\r\n*1\r\n:1\r\n:2\r\n",
        b"*1\r\n$999999999\r\n",
        b"*1\r\n$1000000000\r\n",
        b"*999999999\r\n$1\r\na\r\n",
        b"*1000000000\r\n",
        b"*2147483648\r\n",
        b"$3\r\nabc\r\n+OK\r\n",
        b"$0\r\n\r\n",
        b"$-0\r\n",
        b"$-1\r",
        b"$-2\r\n",
        b"+\r\n",
        b"+\n",
        b"+OK\n",
        b"+a\rb\r\n",
        b"-ERR this message is longer than the head\r\n",
        b"_\r\n",
        b"_x\r\n",
        b"%0\r\n",
        b"%1\r\n+k\r\n",
        b"|1\r\n+k\r\n+v\r\n+OK\r\n",
        b"*1\r\n|1\r\n+k\r\n+v\r\n:5\r\n",
        b"*?\r\n:1\r\n.\r\n",
        b"$?\r\n;1\r\na\r\n;0\r\n",
        b"*3\r\n:1\r\n$-1\r\n",
        b"GET k\r\n",
        b"\r\n",
        b"",
    ];
    let limits = [
        Limits::default(),
        tight(3, 1),
        tight(2, 1),
        tight(0, 0),
        tight(16, 2),
    ];
    for input in inputs {
        for limits in limits {
            for dir in [Direction::Request, Direction::Reply] {
                assert_fast_matches_slow(dir, limits, input, &[]);
                assert_fast_matches_slow(dir, limits, input, &[1]);
                assert_fast_matches_slow(dir, limits, input, &[input.len() / 2]);
            }
        }
    }
}

mod fast_vs_slow {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(b"ab\r\n$*0".to_vec()), 0..10)
    }

    fn bulk(kind: u8, p: &[u8]) -> Vec<u8> {
        [
            &[kind][..],
            p.len().to_string().as_bytes(),
            b"\r\n",
            p,
            b"\r\n",
        ]
        .concat()
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(payload(), 0..4).prop_map(|args| {
            let mut v = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                v.extend(bulk(b'$', a));
            }
            v
        })
    }

    fn leaf() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (prop::sample::select(b"+-:,#(_".to_vec()), "[ -~]{0,20}").prop_map(|(k, t)| [
                &[k][..],
                t.as_bytes(),
                b"\r\n"
            ]
            .concat()),
            (prop::sample::select(b"$!=".to_vec()), payload()).prop_map(|(k, p)| bulk(k, &p)),
            prop::sample::select(vec!["$-1\r\n", "!-1\r\n", "*-1\r\n", "*?\r\n:1\r\n.\r\n"])
                .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    fn reply() -> impl Strategy<Value = Vec<u8>> {
        let aggregate = (
            prop::sample::select(b"*~>%|".to_vec()),
            prop::collection::vec(leaf(), 0..5),
        )
            .prop_map(|(k, items)| {
                let n = if k == b'%' || k == b'|' {
                    items.len() / 2
                } else {
                    items.len()
                };
                let mut v = format!("{}{n}\r\n", char::from(k)).into_bytes();
                v.extend(items.concat());
                v
            });
        prop_oneof![leaf(), aggregate]
    }

    /// Replaces, inserts or removes a byte, favouring ones the syntax hinges on.
    fn mutate(mut data: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
        for &(at, op, byte) in edits {
            let i = at.index(data.len() + 1);
            match op % 3 {
                0 if i < data.len() => data[i] = byte,
                1 => data.insert(i, byte),
                _ if i < data.len() => {
                    data.remove(i);
                }
                _ => {}
            }
        }
        data
    }

    fn limits() -> impl Strategy<Value = Limits> {
        prop_oneof![
            Just(Limits::default()),
            (0usize..10, 0usize..3).prop_map(|(bulk, depth)| tight(bulk, depth)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Near-valid pipelines (valid frames with a few bytes edited) under
        /// default and tight limits: `scan` returns exactly what the slow
        /// path alone returns, call by call, however the input is split.
        #[test]
        fn fast_path_agrees_with_slow_path(
            frames in prop::collection::vec(prop_oneof![request(), reply()], 1..5),
            edits in prop::collection::vec(
                (any::<Index>(), any::<u8>(), prop::sample::select(b"0123456789-?$*+:\r\n".to_vec())),
                0..3,
            ),
            limits in limits(),
            cuts in prop::collection::vec(any::<Index>(), 0..3),
        ) {
            let data = mutate(frames.concat(), &edits);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.sort_unstable();
            for dir in [Direction::Request, Direction::Reply] {
                assert_fast_matches_slow(dir, limits, &data, &[]);
                assert_fast_matches_slow(dir, limits, &data, &cuts);
            }
        }
    }
}
