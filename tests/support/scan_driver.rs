//! Drives the RESP scanner the way `proxy::session` does (offer everything
//! from the resume point; after `Frame(n)` or `NeedMore(n)` resume n bytes
//! further), checking every reported length. Shared by the property tests
//! and the fuzz target (`fuzz/fuzz_targets/scanner.rs`).

use sentinel_proxy::resp::{Direction, FrameInfo, Limits, Progress, ProtocolError, Scanner};

/// What the scanner made of a whole input.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Absolute end offset of every complete frame, in order.
    pub bounds: Vec<usize>,
    /// The scanner's summary of each of those frames.
    pub infos: Vec<FrameInfo>,
    /// The error that stopped scanning, if any.
    pub error: Option<ProtocolError>,
    /// Where the scanner would resume (all bytes before it consumed); only
    /// meaningful without an error (after one it depends on the split).
    pub resume: usize,
}

/// Feeds `data` to a fresh scanner, revealing it up to each of `cuts` in turn
/// (and finally all of it), the way the session sees successive reads.
pub fn scan_chunked(dir: Direction, limits: Limits, data: &[u8], cuts: &[usize]) -> Scanned {
    let mut scanner = Scanner::new(dir, limits);
    let mut resume = 0;
    let mut bounds = Vec::new();
    let mut infos = Vec::new();
    let ends = cuts
        .iter()
        .copied()
        .filter(|&c| c < data.len())
        .chain([data.len()]);
    for avail in ends {
        if avail < resume {
            continue;
        }
        loop {
            let slice = &data[resume..avail];
            match scanner.scan(slice) {
                Ok(Progress::Frame(n)) => {
                    assert!(
                        n <= slice.len(),
                        "Frame({n}) past the {} bytes offered",
                        slice.len()
                    );
                    assert!(n > 0, "Frame(0) at offset {resume}");
                    resume += n;
                    bounds.push(resume);
                    infos.push(*scanner.info());
                }
                Ok(Progress::NeedMore(n)) => {
                    assert!(
                        n <= slice.len(),
                        "NeedMore({n}) past the {} bytes offered",
                        slice.len()
                    );
                    resume += n;
                    break;
                }
                Err(error) => {
                    return Scanned {
                        bounds,
                        infos,
                        error: Some(error),
                        resume: usize::MAX,
                    };
                }
            }
        }
    }
    Scanned {
        bounds,
        infos,
        error: None,
        resume,
    }
}
