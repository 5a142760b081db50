//! The Sentinel port: what peer Sentinels and operators send to a voter.
//!
//! Requests are framed by our own scanner (never by a recursive decoder);
//! anything that needs the control plane's state goes to it as an [`ApiCall`]
//! and the reply bytes come back on a oneshot channel.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::link::HELLO_CHANNEL;
use crate::resp::Direction;
use crate::resp::frames::FrameReader;
use crate::resp::reply;

/// A request the control plane answers.
#[derive(Debug)]
pub enum ApiCall {
    /// A hello PUBLISHed to us by a peer.
    Hello(String),
    /// `SENTINEL is-master-down-by-addr`: answered after any vote is on disk.
    IsMasterDown {
        ip: String,
        port: u16,
        epoch: u64,
        runid: Option<String>,
        reply: oneshot::Sender<Bytes>,
    },
    /// `SENTINEL FAILOVER <master>`: answered when the core accepts or refuses it.
    Failover {
        master: String,
        reply: oneshot::Sender<Bytes>,
    },
    /// Any other `SENTINEL <sub> ...` (and ROLE): rendered from the core's state.
    Sentinel {
        args: Vec<String>,
        reply: oneshot::Sender<Bytes>,
    },
}

/// Serves the Sentinel port until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    calls: mpsc::Sender<ApiCall>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let calls = calls.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = connection(stream, calls) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "sentinel port: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, calls: mpsc::Sender<ApiCall>) {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(Direction::Request);
    loop {
        let reply = match reader.next_request(&mut read).await {
            Ok(Some(Ok(args))) if args.is_empty() => continue,
            Ok(Some(Ok(args))) => dispatch(args, &calls).await,
            Ok(Some(Err(e))) => {
                let _ = write.write_all(&reply::protocol_error(&e)).await;
                return;
            }
            Ok(None) => return,
            Err(e) => {
                let _ = write.write_all(&reply::protocol_error(&e)).await;
                return;
            }
        };
        if write.write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn dispatch(args: Vec<Bytes>, calls: &mpsc::Sender<ApiCall>) -> Bytes {
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let Some((name, rest)) = words.split_first() else {
        return reply::error("ERR empty command");
    };
    let name = name.to_ascii_lowercase();
    match (name.as_str(), rest) {
        ("ping", []) => simple("PONG"),
        ("ping", [message]) => encode(&bulk(message)),
        ("auth", _) => reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        ("client", [_, ..]) => simple("OK"),
        ("publish", [channel, payload]) => {
            if channel != HELLO_CHANNEL {
                return reply::error("ERR Only HELLO messages are accepted by Sentinel instances.");
            }
            let _ = calls.send(ApiCall::Hello(payload.clone())).await;
            encode(&BytesFrame::Integer(1))
        }
        ("sentinel", [sub, args @ ..]) if sub.eq_ignore_ascii_case("is-master-down-by-addr") => {
            let [ip, port, epoch, runid] = args else {
                return arity_error("sentinel|is-master-down-by-addr");
            };
            let (Ok(port), Ok(epoch)) = (port.parse::<u16>(), epoch.parse::<u64>()) else {
                return reply::error("ERR value is not an integer or out of range");
            };
            let (tx, rx) = oneshot::channel();
            let call = ApiCall::IsMasterDown {
                ip: ip.clone(),
                port,
                epoch,
                runid: (runid != "*").then(|| runid.clone()),
                reply: tx,
            };
            ask(calls, call, rx).await
        }
        ("sentinel", [sub, master]) if sub.eq_ignore_ascii_case("failover") => {
            let (tx, rx) = oneshot::channel();
            let call = ApiCall::Failover {
                master: master.clone(),
                reply: tx,
            };
            ask(calls, call, rx).await
        }
        ("sentinel", [_, ..]) | ("role", []) => {
            let (tx, rx) = oneshot::channel();
            ask(
                calls,
                ApiCall::Sentinel {
                    args: words,
                    reply: tx,
                },
                rx,
            )
            .await
        }
        ("sentinel", []) => arity_error("sentinel"),
        ("ping", _) => arity_error("ping"),
        ("role", _) => arity_error("role"),
        _ => unknown_command(&words),
    }
}

/// Redis's wording, and its bounds: the name and the echoed arguments are
/// cut at 128 characters, so a huge request does not come back whole.
fn unknown_command(words: &[String]) -> Bytes {
    const ECHO: usize = 128;
    let (name, rest) = words
        .split_first()
        .map_or(("", &[][..]), |(n, r)| (n.as_str(), r));
    let mut args = String::new();
    for word in rest {
        if args.len() >= ECHO {
            break;
        }
        let room = ECHO - args.len();
        args.push('\'');
        args.extend(word.chars().take(room));
        args.push_str("' ");
    }
    let name: String = name.chars().take(ECHO).collect();
    reply::error(&format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ))
}

async fn ask(calls: &mpsc::Sender<ApiCall>, call: ApiCall, rx: oneshot::Receiver<Bytes>) -> Bytes {
    if calls.send(call).await.is_err() {
        return reply::error("ERR sentinel-proxy is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| reply::error("ERR sentinel-proxy is shutting down"))
}

pub fn arity_error(command: &str) -> Bytes {
    reply::error(&format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

pub fn simple(text: &str) -> Bytes {
    encode(&BytesFrame::SimpleString(Bytes::copy_from_slice(
        text.as_bytes(),
    )))
}

pub fn bulk(text: &str) -> BytesFrame {
    BytesFrame::BulkString(Bytes::copy_from_slice(text.as_bytes()))
}

/// Encodes a frame built by the control plane (small, well-formed).
pub fn encode(frame: &BytesFrame) -> Bytes {
    let mut out = BytesMut::new();
    match extend_encode(&mut out, frame, false) {
        Ok(_) => out.freeze(),
        Err(_) => reply::error("ERR internal error encoding a reply"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_commands_are_echoed_like_redis_and_bounded() {
        let words: Vec<String> = ["SET", "k", "v"].iter().map(|w| w.to_string()).collect();
        assert_eq!(
            &unknown_command(&words)[..],
            b"-ERR unknown command 'SET', with args beginning with: 'k' 'v' \r\n"
        );
        let huge = vec!["GET".to_string(), "x".repeat(10_000), "y".repeat(10_000)];
        assert!(unknown_command(&huge).len() < 300);
    }
}
