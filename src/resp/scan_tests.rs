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
