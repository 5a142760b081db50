//! Throughput of the resumable RESP scanner against redis-protocol 6.
//!
//! "16k reads" feeds the buffer the way `proxy::session` sees it: revealed
//! 16 KiB at a time, every complete frame taken, then the scan resumed where
//! the scanner said once the next read arrives. redis-protocol's
//! `decode_range` is measured on the same complete buffers, frame after frame,
//! and also fed 16 KiB at a time, where it must re-parse an unfinished frame
//! from its start after every read (quadratic on a large array).
//!
//! Run with `cargo bench --bench scanner`; criterion prints the throughput.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redis_protocol::resp2::decode::decode_range;
use sentinel_proxy::resp::{Direction, Limits, Progress, Scanner};

/// Bytes the session asks of the kernel per read.
const READ: usize = 16 * 1024;

fn bulk(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        bulk(out, a);
    }
}

/// 16-command pipelines alternating `SET key:NNN value` and `GET key:NNN`, about 1 MiB.
fn set_get_requests() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < 1 << 20 {
        for j in 0..16 {
            let key = format!("key:{:03}", (i + j) % 1000);
            if j % 2 == 0 {
                command(&mut out, &[b"SET", key.as_bytes(), b"value"]);
            } else {
                command(&mut out, &[b"GET", key.as_bytes()]);
            }
        }
        i += 16;
    }
    out
}

/// The replies to those pipelines: `+OK` and `$5 value`, about 1 MiB.
fn ok_bulk_replies() -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < 1 << 20 {
        out.extend_from_slice(b"+OK\r\n");
        bulk(&mut out, b"value");
    }
    out
}

/// `redis-benchmark -t get`-style pipelines: `GET key:__rand_int__`
/// (a 16-byte key), about 1 MiB.
fn get_requests() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < 1 << 20 {
        command(
            &mut out,
            &[b"GET", format!("key:{:012}", i % 100_000).as_bytes()],
        );
        i += 1;
    }
    out
}

/// Small replies as Redis sends them to GET, INCR and friends: `$3 xxx`,
/// `$-1`, `:1` and an `-ERR` line, about 1 MiB.
fn small_replies() -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < 1 << 20 {
        bulk(&mut out, b"xxx");
        bulk(&mut out, b"xxx");
        out.extend_from_slice(b"$-1\r\n:1\r\n");
        out.extend_from_slice(b"-ERR wrong number of arguments for 'get' command\r\n");
    }
    out
}

fn big_bulk(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    bulk(&mut out, &payload);
    out
}

/// An `LRANGE`-style reply: an array of `n` bulk strings `item:N`.
fn array_reply(n: usize) -> Vec<u8> {
    let mut out = format!("*{n}\r\n").into_bytes();
    for i in 0..n {
        bulk(&mut out, format!("item:{i}").as_bytes());
    }
    out
}

/// The scanner, fed `read` bytes at a time as the session is. Returns the frame count.
fn scan_reads(dir: Direction, data: &[u8], read: usize) -> usize {
    let mut scanner = Scanner::new(dir, Limits::default());
    let (mut resume, mut avail, mut frames) = (0, 0, 0);
    while avail < data.len() {
        avail = (avail + read).min(data.len());
        loop {
            match scanner.scan(&data[resume..avail]) {
                Ok(Progress::Frame(n)) => {
                    resume += n;
                    frames += 1;
                }
                Ok(Progress::NeedMore(n)) => {
                    resume += n;
                    break;
                }
                Err(e) => panic!("scanner rejected bench input: {e}"),
            }
        }
    }
    frames
}

/// redis-protocol's `decode_range`, fed `read` bytes at a time: an
/// incomplete frame is decoded again from its start after every read.
fn decode_reads(data: &[u8], read: usize) -> usize {
    let (mut start, mut avail, mut frames) = (0, 0, 0);
    while avail < data.len() {
        avail = (avail + read).min(data.len());
        while let Some((_, n)) = decode_range(&data[start..avail]).expect("valid RESP2") {
            start += n;
            frames += 1;
        }
    }
    frames
}

/// Both, frame by frame on the complete buffer.
fn scan_whole(dir: Direction, data: &[u8]) -> usize {
    scan_reads(dir, data, data.len())
}

fn decode_whole(data: &[u8]) -> usize {
    decode_reads(data, data.len())
}

fn group(c: &mut Criterion, name: &str, dir: Direction, data: &[u8], incremental_baseline: bool) {
    let frames = scan_whole(dir, data);
    assert_eq!(frames, decode_whole(data), "{name}: frame counts differ");
    assert_eq!(frames, scan_reads(dir, data, READ));

    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("scanner/16k-reads", |b| {
        b.iter(|| scan_reads(dir, black_box(data), READ))
    });
    g.bench_function("scanner/whole", |b| {
        b.iter(|| scan_whole(dir, black_box(data)))
    });
    g.bench_function("redis-protocol/whole", |b| {
        b.iter(|| decode_whole(black_box(data)))
    });
    if incremental_baseline {
        g.bench_function("redis-protocol/16k-reads", |b| {
            b.iter(|| decode_reads(black_box(data), READ))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    group(
        c,
        "a-set-get-requests",
        Direction::Request,
        &set_get_requests(),
        true,
    );
    group(
        c,
        "b-ok-bulk-replies",
        Direction::Reply,
        &ok_bulk_replies(),
        true,
    );
    group(
        c,
        "b-get-requests",
        Direction::Request,
        &get_requests(),
        false,
    );
    group(
        c,
        "b-small-replies",
        Direction::Reply,
        &small_replies(),
        false,
    );
    group(c, "c-bulk-1MiB", Direction::Reply, &big_bulk(1 << 20), true);
    group(
        c,
        "c-bulk-64MiB",
        Direction::Reply,
        &big_bulk(64 << 20),
        true,
    );
    group(
        c,
        "d-array-1M",
        Direction::Reply,
        &array_reply(1_000_000),
        false,
    );

    // redis-protocol re-parses an unfinished array after every read; at 1M
    // elements that takes seconds per pass, so show the growth on smaller
    // arrays, against the scanner on the same input.
    let mut g = c.benchmark_group("d-array-16k-reads");
    for n in [10_000, 30_000, 100_000] {
        let data = array_reply(n);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("scanner", n), &data, |b, d| {
            b.iter(|| scan_reads(Direction::Reply, black_box(d), READ))
        });
        g.bench_with_input(BenchmarkId::new("redis-protocol", n), &data, |b, d| {
            b.iter(|| decode_reads(black_box(d), READ))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = scanner;
    config = config();
    targets = benches
}
criterion_main!(scanner);
