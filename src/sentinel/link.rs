//! Links: the connections a voter keeps to each instance it watches.
//!
//! Masters and replicas get a command connection and a Pub/Sub connection
//! subscribed to `__sentinel__:hello`; peer Sentinels get a command
//! connection only (as Redis Sentinel does). A link task lives for one
//! connection lifetime: it reports `LinkUp`, turns the replies to what the
//! control plane asks into events, and reports `LinkDown` when either
//! connection fails; the core decides when to connect again.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::core::{Addr, Event, InfoReport, InstanceKind, LinkRef, PingReply};
use crate::resp::Direction;
use crate::resp::frames::{FrameReader, frame_text};
use crate::resp::request::encode_command;

/// A Pub/Sub connection is reopened at most once per this period.
const PUBSUB_REOPEN_PERIOD: Duration = Duration::from_secs(1);

/// The hello channel every Sentinel publishes and subscribes to.
pub const HELLO_CHANNEL: &str = "__sentinel__:hello";

/// What the control plane asks a link to send.
#[derive(Debug)]
pub enum LinkRequest {
    Ping,
    Info,
    PublishHello(String),
    AskIsMasterDown {
        ip: String,
        port: u16,
        epoch: u64,
        runid: String,
    },
    SlaveOfNoOne,
    Reconfigure(Addr),
    FailoverTo {
        target: Addr,
        timeout_ms: u64,
    },
    ConfigRewrite,
}

/// What every link shares.
#[derive(Debug)]
pub struct LinkContext {
    pub myid: String,
    /// How to reach each monitored master's instances, by master name.
    pub access: HashMap<String, Access>,
}

/// Credentials and timeout for one master's instances (its `[[service]]`).
#[derive(Debug)]
pub struct Access {
    /// `(user, pass)` sent with AUTH to the master and its replicas.
    pub auth: Option<(Option<String>, String)>,
    pub connect_timeout: Duration,
}

/// For links whose master is not configured (cannot happen; be safe).
const DEFAULT_ACCESS: Access = Access {
    auth: None,
    connect_timeout: Duration::from_secs(1),
};

/// The control plane's handle on a running link task.
pub struct LinkHandle {
    pub requests: mpsc::UnboundedSender<LinkRequest>,
    /// Tags this task's events: one queued by a task that was since
    /// replaced must not be taken for its replacement's.
    pub generation: u64,
    task: JoinHandle<()>,
}

/// An event from the link task of one generation.
#[derive(Debug)]
pub struct LinkEvent {
    pub generation: u64,
    pub event: Event,
}

/// Sends a link task's events, tagged with its generation.
struct Events {
    generation: u64,
    tx: mpsc::Sender<LinkEvent>,
}

impl Events {
    async fn send(&self, event: Event) {
        let generation = self.generation;
        let _ = self.tx.send(LinkEvent { generation, event }).await;
    }
}

impl LinkHandle {
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the link task for `link`.
pub fn spawn(
    link: LinkRef,
    generation: u64,
    context: Arc<LinkContext>,
    tx: mpsc::Sender<LinkEvent>,
) -> LinkHandle {
    let (requests, rx) = mpsc::unbounded_channel();
    let events = Events { generation, tx };
    let task = tokio::spawn(async move {
        if let Err(e) = serve(&link, &context, rx, &events).await {
            tracing::debug!(addr = %link.addr, master = %link.master, error = %e, "link down");
        }
        events.send(Event::LinkDown { link }).await;
    });
    LinkHandle {
        requests,
        generation,
        task,
    }
}

/// How to read the reply to one command sent on the command connection.
#[derive(Debug)]
enum Expect {
    Ignore,
    Ping,
    Info,
    IsMasterDown,
    SlaveOfExec,
    FailoverTo,
}

async fn serve(
    link: &LinkRef,
    context: &LinkContext,
    mut requests: mpsc::UnboundedReceiver<LinkRequest>,
    events: &Events,
) -> std::io::Result<()> {
    let addr = resolve(&link.addr).await?;
    let short_id = context.myid.get(..8).unwrap_or(&context.myid);
    let access = context.access.get(&link.master).unwrap_or(&DEFAULT_ACCESS);
    // The instances' credentials are not the Sentinels' (12.1).
    let auth = if link.kind == InstanceKind::Sentinel {
        None
    } else {
        access.auth.as_ref()
    };

    let (mut cmd_read, mut cmd_write) = connect(addr, access.connect_timeout).await?.into_split();
    let mut pending = VecDeque::new();
    let mut out = BytesMut::new();
    handshake(
        &mut out,
        &mut pending,
        auth,
        &format!("sentinel-{short_id}-cmd"),
    );

    let pubsub_name = format!("sentinel-{short_id}-pubsub");
    let mut pubsub = None;
    if link.kind != InstanceKind::Sentinel {
        pubsub = Some(open_pubsub(addr, access, auth, &pubsub_name).await?);
    }
    cmd_write.write_all(&out).await?;
    events.send(Event::LinkUp { link: link.clone() }).await;

    let mut replies = FrameReader::new(Direction::Reply);
    let mut last_reopen: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { return Ok(()) };
                let mut out = BytesMut::new();
                encode_request(request, &mut out, &mut pending);
                cmd_write.write_all(&out).await?;
            }
            frame = replies.next_frame(&mut cmd_read) => {
                let Some(frame) = frame? else { return Ok(()) };
                let expect = pending.pop_front().unwrap_or(Expect::Ignore);
                if let Some(event) = reply_event(link, expect, &frame) {
                    events.send(event).await;
                }
            }
            message = next_hello(&mut pubsub), if pubsub.is_some() => match message {
                Ok(Some(payload)) => {
                    events.send(Event::HelloReceived { payload }).await;
                }
                // The failover transaction's CLIENT KILL TYPE pubsub closes it
                // on the promoted replica: reopen it and keep the command
                // connection, whose EXEC reply confirms the promotion.
                // A connection that closes again at once (an instance at
                // maxclients, say) means the link is down.
                Ok(None) | Err(_) => {
                    if last_reopen.is_some_and(|at| at.elapsed() < PUBSUB_REOPEN_PERIOD) {
                        return Err(std::io::Error::other("pubsub connection keeps closing"));
                    }
                    last_reopen = Some(tokio::time::Instant::now());
                    pubsub = Some(open_pubsub(addr, access, auth, &pubsub_name).await?);
                }
            },
        }
    }
}

type PubSub = (OwnedReadHalf, OwnedWriteHalf, FrameReader);

/// The Pub/Sub connection, subscribed to the hello channel.
async fn open_pubsub(
    addr: SocketAddr,
    access: &Access,
    auth: Option<&(Option<String>, String)>,
    name: &str,
) -> std::io::Result<PubSub> {
    let (read, mut write) = connect(addr, access.connect_timeout).await?.into_split();
    let mut hello = BytesMut::new();
    handshake(&mut hello, &mut VecDeque::new(), auth, name);
    hello.extend_from_slice(&encode_command(&["SUBSCRIBE", HELLO_CHANNEL]));
    write.write_all(&hello).await?;
    Ok((read, write, FrameReader::new(Direction::Reply)))
}

/// AUTH (if configured) and CLIENT SETNAME, pipelined; replies ignored.
fn handshake(
    out: &mut BytesMut,
    pending: &mut VecDeque<Expect>,
    auth: Option<&(Option<String>, String)>,
    name: &str,
) {
    match auth {
        Some((Some(user), pass)) => out.extend_from_slice(&encode_command(&["AUTH", user, pass])),
        Some((None, pass)) => out.extend_from_slice(&encode_command(&["AUTH", pass])),
        None => {}
    }
    if auth.is_some() {
        pending.push_back(Expect::Ignore);
    }
    out.extend_from_slice(&encode_command(&["CLIENT", "SETNAME", name]));
    pending.push_back(Expect::Ignore);
}

fn encode_request(request: LinkRequest, out: &mut BytesMut, pending: &mut VecDeque<Expect>) {
    let mut command = |args: &[&str], expect: Expect| {
        out.extend_from_slice(&encode_command(args));
        pending.push_back(expect);
    };
    match request {
        LinkRequest::Ping => command(&["PING"], Expect::Ping),
        LinkRequest::Info => command(&["INFO"], Expect::Info),
        LinkRequest::PublishHello(payload) => {
            command(&["PUBLISH", HELLO_CHANNEL, &payload], Expect::Ignore)
        }
        LinkRequest::AskIsMasterDown {
            ip,
            port,
            epoch,
            runid,
        } => command(
            &[
                "SENTINEL",
                "is-master-down-by-addr",
                &ip,
                &port.to_string(),
                &epoch.to_string(),
                &runid,
            ],
            Expect::IsMasterDown,
        ),
        LinkRequest::FailoverTo { target, timeout_ms } => command(
            &[
                "FAILOVER",
                "TO",
                &target.ip,
                &target.port.to_string(),
                "TIMEOUT",
                &timeout_ms.to_string(),
            ],
            Expect::FailoverTo,
        ),
        LinkRequest::ConfigRewrite => command(&["CONFIG", "REWRITE"], Expect::Ignore),
        LinkRequest::SlaveOfNoOne | LinkRequest::Reconfigure(_) => {
            // The transaction of Sentinel's sentinelSendSlaveOf, replies discarded
            // except EXEC's.
            let target = match &request {
                LinkRequest::Reconfigure(master) => vec![
                    "SLAVEOF".to_owned(),
                    master.ip.clone(),
                    master.port.to_string(),
                ],
                _ => vec!["SLAVEOF".to_owned(), "NO".to_owned(), "ONE".to_owned()],
            };
            command(&["MULTI"], Expect::Ignore);
            let target: Vec<&str> = target.iter().map(String::as_str).collect();
            command(&target, Expect::Ignore);
            command(&["CONFIG", "REWRITE"], Expect::Ignore);
            command(&["CLIENT", "KILL", "TYPE", "normal"], Expect::Ignore);
            command(&["CLIENT", "KILL", "TYPE", "pubsub"], Expect::Ignore);
            command(&["EXEC"], Expect::SlaveOfExec);
        }
    }
}

fn reply_event(link: &LinkRef, expect: Expect, frame: &BytesFrame) -> Option<Event> {
    let link = link.clone();
    match expect {
        Expect::Ignore => None,
        Expect::Ping => {
            let reply = match frame {
                BytesFrame::SimpleString(_) | BytesFrame::Error(_) => {
                    PingReply::classify(&frame_text(frame)?)
                }
                _ => PingReply::Other("unexpected reply type".into()),
            };
            Some(Event::PingReply { link, reply })
        }
        Expect::Info => match frame {
            BytesFrame::BulkString(_) => Some(Event::InfoReply {
                link,
                info: InfoReport::parse(&frame_text(frame)?),
            }),
            _ => None,
        },
        Expect::IsMasterDown => match frame {
            BytesFrame::Array(items) => match items.as_slice() {
                [
                    BytesFrame::Integer(down),
                    BytesFrame::BulkString(leader),
                    BytesFrame::Integer(epoch),
                ] => {
                    let leader = String::from_utf8_lossy(leader).into_owned();
                    Some(Event::IsMasterDownReply {
                        link,
                        down: *down == 1,
                        leader: (leader != "*").then_some(leader),
                        leader_epoch: u64::try_from(*epoch).ok()?,
                    })
                }
                _ => None,
            },
            _ => None,
        },
        Expect::SlaveOfExec => Some(Event::SlaveOfReply {
            link,
            ok: matches!(frame, BytesFrame::Array(_)),
        }),
        Expect::FailoverTo => {
            let result = match frame {
                BytesFrame::SimpleString(_) => Ok(()),
                BytesFrame::Error(_) => Err(frame_text(frame).unwrap_or_default()),
                _ => Err("unexpected reply type".to_owned()),
            };
            Some(Event::FailoverToReply { link, result })
        }
    }
}

/// The next hello payload on the Pub/Sub connection; `None` when it closed.
async fn next_hello(pubsub: &mut Option<PubSub>) -> std::io::Result<Option<String>> {
    let Some((read, _write, reader)) = pubsub else {
        return std::future::pending().await;
    };
    loop {
        let Some(frame) = reader.next_frame(read).await? else {
            return Ok(None);
        };
        if let BytesFrame::Array(items) = &frame
            && let [
                BytesFrame::BulkString(kind),
                BytesFrame::BulkString(_),
                BytesFrame::BulkString(payload),
            ] = items.as_slice()
            && &kind[..] == b"message"
        {
            return Ok(Some(String::from_utf8_lossy(payload).into_owned()));
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    crate::proxy::upstream::connect(addr, timeout, None)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// An instance address as a socket address (IP literals, or a DNS lookup).
pub async fn resolve(addr: &Addr) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = addr.ip.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, addr.port));
    }
    tokio::net::lookup_host((addr.ip.as_str(), addr.port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {}", addr.ip)))
}

/// How often [`hurry_replica`] asks.
const HURRY_PERIOD: Duration = Duration::from_millis(20);

/// Makes the replica a `FAILOVER TO` hands over to acknowledge its
/// replication offset now, until it reports `role:master` or `for_ms` pass.
///
/// The old master pauses writes and waits for that acknowledgement, which a
/// replica sends only once a second by itself (and a paused master does
/// not ask for one): without this, a planned switchover stalls writes for
/// up to a second. `REPLCONF GETACK` from any client makes the replica send
/// it at once; it has no reply, so each is followed by a `ROLE`, which also
/// says when the hand-over is done. Best effort: errors only end it.
pub async fn hurry_replica(target: Addr, context: Arc<LinkContext>, master: String, for_ms: u64) {
    let access = context.access.get(&master).unwrap_or(&DEFAULT_ACCESS);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    let result = tokio::time::timeout_at(deadline, async {
        let addr = resolve(&target).await?;
        let (mut read, mut write) = connect(addr, access.connect_timeout).await?.into_split();
        let mut out = BytesMut::new();
        let mut pending = VecDeque::new();
        handshake(
            &mut out,
            &mut pending,
            access.auth.as_ref(),
            "sentinel-proxy-hurry",
        );
        let mut reader = FrameReader::new(Direction::Reply);
        loop {
            out.extend_from_slice(&encode_command(&["REPLCONF", "GETACK", "*"]));
            out.extend_from_slice(&encode_command(&["ROLE"]));
            write.write_all(&out).await?;
            out.clear();
            // The handshake's replies, then ROLE's.
            for _ in 0..=pending.len() {
                let Some(frame) = reader.next_frame(&mut read).await? else {
                    return Ok::<(), std::io::Error>(());
                };
                if let BytesFrame::Array(items) = &frame
                    && let Some(BytesFrame::BulkString(role)) = items.first()
                    && &role[..] == b"master"
                {
                    return Ok(());
                }
            }
            pending.clear();
            tokio::time::sleep(HURRY_PERIOD).await;
        }
    })
    .await;
    if let Ok(Err(e)) = result {
        tracing::debug!(replica = %target, error = %e, "could not hurry the replica's acknowledgement");
    }
}
