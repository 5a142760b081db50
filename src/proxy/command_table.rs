//! Which requests are safe to run again on another master, learned from the
//! server's own `COMMAND` reply rather than from a hand-written list.
//!
//! When the master dies with requests in flight, the session re-sends the
//! [`Rerun::Harmless`] ones to the new master and closes the client
//! connection if any other is in flight. A request is classified by the flags
//! of its command (of `container|sub` for a Redis 7 subcommand):
//!
//! * **Unsafe**: the request is not a RESP array; the command, or the
//!   subcommand of a container that lists subcommands, is unknown; its flags
//!   include `admin` or `blocking` (this wins over `write`: BLPOP and
//!   XREADGROUP are Unsafe); it is not `readonly` but has `may_replicate`
//!   (Redis 6) or the `@scripting` ACL category (EVAL, FCALL, SCRIPT LOAD,
//!   SCRIPT KILL, FUNCTION LOAD); or it is one of [`HIDDEN_SIDE_EFFECTS`].
//! * **Write**: otherwise, flags include `write` (a replica would have refused
//!   it with `-READONLY`).
//! * **Harmless**: everything else (GET, PING, SELECT, AUTH, SUBSCRIBE,
//!   CLIENT SETNAME, EVAL_RO, ...).
//!
//! Redis 7.0 hides `may_replicate` from `COMMAND` on purpose, so EVAL and
//! PUBLISH carry no flag that gives them away: the `@scripting` category
//! catches the first, [`HIDDEN_SIDE_EFFECTS`] the second. Redis 7 lists a
//! container's subcommands (element 10 of its entry) with their own flags;
//! Redis 6 has none, and then the container's flags apply. A container named
//! without a subcommand (`COMMAND`) uses its own flags too.
//!
//! The reply is framed by our own [`Scanner`] with a depth limit before
//! redis-protocol decodes it. Replies are RESP2 only (the fetch speaks RESP2).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::upstream::{self, ConnectError};
use crate::resp::request::{Args, encode_command};
use crate::resp::{Direction, Limits, Progress, ProtocolError, Scanner};
use crate::route::RouteReceiver;

/// Commands whose effect no flag in Redis 7's `COMMAND` reply shows: EXEC
/// runs the queued writes; PUBLISH and SPUBLISH deliver the message again
/// (their `may_replicate` is hidden); WAIT and WAITAOF, sent to a master that
/// never saw this connection's writes, would vouch for writes it may have lost.
pub const HIDDEN_SIDE_EFFECTS: &[&str] = &["exec", "publish", "spublish", "wait", "waitaof"];

/// Nesting allowed in a `COMMAND` reply (Redis 7.0's deepest is 8).
const REPLY_DEPTH: usize = 16;
/// Longest string in a `COMMAND` reply.
const REPLY_BULK: usize = 1 << 20;
/// Largest `COMMAND` reply accepted (Redis 7.0's is about 90 KiB).
const MAX_REPLY: usize = 16 << 20;
/// Longest `name|sub` looked up; longer names are unknown.
const KEY_CAP: usize = 128;
/// How often [`keep_loaded`] retries a master that did not answer.
const RETRY: Duration = Duration::from_secs(1);

fn reply_limits() -> Limits {
    Limits {
        max_bulk_len: REPLY_BULK,
        max_depth: REPLY_DEPTH,
        ..Limits::default()
    }
}

/// What re-running a request that may already have run would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// Nothing a client could notice: re-send it to the new master.
    Harmless,
    /// A plain write: its outcome is unknown.
    Write,
    /// Anything else: blocking, admin, scripts, side effects, or unknown.
    Unsafe,
}

/// The flags of one command that matter here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags(u8);

impl Flags {
    const WRITE: u8 = 1;
    const READONLY: u8 = 1 << 1;
    const ADMIN: u8 = 1 << 2;
    const BLOCKING: u8 = 1 << 3;
    const MAY_REPLICATE: u8 = 1 << 4;
    /// In the `@scripting` ACL category.
    const SCRIPTING: u8 = 1 << 5;
    /// One of [`HIDDEN_SIDE_EFFECTS`].
    const HIDDEN: u8 = 1 << 6;
    /// A container whose subcommands have entries of their own.
    const CONTAINER: u8 = 1 << 7;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    fn rerun(self) -> Rerun {
        let side_effects = self.has(Self::MAY_REPLICATE) || self.has(Self::SCRIPTING);
        if self.has(Self::ADMIN)
            || self.has(Self::BLOCKING)
            || self.has(Self::HIDDEN)
            || (side_effects && !self.has(Self::READONLY))
        {
            Rerun::Unsafe
        } else if self.has(Self::WRITE) {
            Rerun::Write
        } else {
            Rerun::Harmless
        }
    }
}

/// Why a `COMMAND` reply could not be turned into a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("COMMAND reply is not RESP: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("COMMAND reply is incomplete")]
    Incomplete,
    #[error("COMMAND reply is followed by {0} more bytes")]
    Trailing(usize),
    #[error("COMMAND reply could not be decoded: {0}")]
    Decode(String),
    #[error("COMMAND reply is an error: {0}")]
    ErrorReply(String),
    #[error("COMMAND reply is not an array")]
    NotArray,
    #[error("COMMAND reply lists no commands")]
    Empty,
    #[error("COMMAND reply {at}: {what}")]
    BadEntry { at: String, what: &'static str },
}

/// Why [`fetch`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: ConnectError,
    },
    #[error("{addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("{addr} closed the connection before replying")]
    Closed { addr: SocketAddr },
    #[error("{addr} did not send the command table within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} sent a reply that is not RESP: {source}")]
    Protocol {
        addr: SocketAddr,
        source: ProtocolError,
    },
    #[error("{addr} sent a reply larger than {limit} bytes")]
    TooBig { addr: SocketAddr, limit: usize },
    #[error("AUTH at {addr} failed: {message}")]
    Auth { addr: SocketAddr, message: String },
    #[error("{addr} answered COMMAND with an error: {message}")]
    Refused { addr: SocketAddr, message: String },
    #[error("{addr}: {source}")]
    Table {
        addr: SocketAddr,
        source: TableError,
    },
}

/// The flags of every command a server knows, by lowercase name, with
/// `container|sub` entries for Redis 7 subcommands.
#[derive(Clone, Debug, Default)]
pub struct CommandTable {
    commands: HashMap<Box<[u8]>, Flags>,
}

impl CommandTable {
    /// Parses the reply to `COMMAND` (RESP2 bytes, as Redis 7.0 / 6.x sends
    /// it). The bytes must be exactly one frame.
    pub fn parse(reply: &[u8]) -> Result<CommandTable, TableError> {
        let mut scanner = Scanner::new(Direction::Reply, reply_limits());
        match scanner.scan(reply)? {
            Progress::Frame(n) if n == reply.len() => {}
            Progress::Frame(n) => return Err(TableError::Trailing(reply.len() - n)),
            Progress::NeedMore(_) => return Err(TableError::Incomplete),
        }
        let frame = match decode_range(reply) {
            Ok(Some((frame, _))) => frame,
            Ok(None) => return Err(TableError::Incomplete),
            Err(e) => return Err(TableError::Decode(e.details().to_owned())),
        };
        let entries = match &frame {
            RangeFrame::Array(entries) => entries,
            RangeFrame::Error(range) => {
                let text = reply.get(range.0..range.1).unwrap_or_default();
                return Err(TableError::ErrorReply(
                    String::from_utf8_lossy(text).into_owned(),
                ));
            }
            _ => return Err(TableError::NotArray),
        };
        let mut table = CommandTable::default();
        for (i, entry) in entries.iter().enumerate() {
            // COMMAND INFO answers null for unknown names; harmless to skip.
            if *entry != RangeFrame::Null {
                table.add(reply, entry, &format!("entry {i}"), true)?;
            }
        }
        if table.commands.is_empty() {
            return Err(TableError::Empty);
        }
        Ok(table)
    }

    /// Adds one entry (and, for a top-level Redis 7 entry, its subcommands).
    fn add(
        &mut self,
        reply: &[u8],
        entry: &RangeFrame,
        at: &str,
        top: bool,
    ) -> Result<(), TableError> {
        let bad = |what| TableError::BadEntry {
            at: at.to_owned(),
            what,
        };
        let RangeFrame::Array(fields) = entry else {
            return Err(bad("is not an array"));
        };
        let name = fields
            .first()
            .and_then(|f| text(reply, f))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("has no name"))?
            .to_ascii_lowercase();
        let mut flags = Flags::default();
        for flag in strings(reply, fields.get(2)).ok_or_else(|| bad("flags are not an array"))? {
            flags.0 |= match flag.to_ascii_lowercase().as_slice() {
                b"write" => Flags::WRITE,
                b"readonly" => Flags::READONLY,
                b"admin" => Flags::ADMIN,
                b"blocking" => Flags::BLOCKING,
                b"may_replicate" => Flags::MAY_REPLICATE,
                _ => 0,
            };
        }
        // ACL categories: Redis 6.0 and later.
        if let Some(field) = fields.get(6) {
            let categories = strings(reply, Some(field))
                .ok_or_else(|| bad("ACL categories are not an array"))?;
            if categories
                .iter()
                .any(|c| c.eq_ignore_ascii_case(b"@scripting"))
            {
                flags.0 |= Flags::SCRIPTING;
            }
        }
        if top && HIDDEN_SIDE_EFFECTS.iter().any(|h| h.as_bytes() == name) {
            flags.0 |= Flags::HIDDEN;
        }
        // Subcommands: Redis 7.0 and later.
        if let (true, Some(field)) = (top, fields.get(9)) {
            let RangeFrame::Array(subs) = field else {
                return Err(bad("subcommands are not an array"));
            };
            for (i, sub) in subs.iter().enumerate() {
                self.add(reply, sub, &format!("{at} subcommand {i}"), false)?;
            }
            if !subs.is_empty() {
                flags.0 |= Flags::CONTAINER;
            }
        }
        self.commands.insert(name.into_boxed_slice(), flags);
        Ok(())
    }

    /// Classifies a complete RESP request array (the raw frame bytes).
    pub fn rerun(&self, request: &[u8]) -> Rerun {
        if !is_request_array(request) {
            return Rerun::Unsafe;
        }
        let mut args = Args::new(request);
        let Some(name) = args.next() else {
            return Rerun::Unsafe;
        };
        let mut buf = [0u8; KEY_CAP];
        let Some(flags) = lower_key(&mut buf, name, None).and_then(|k| self.commands.get(k)) else {
            return Rerun::Unsafe;
        };
        if !flags.has(Flags::CONTAINER) {
            return flags.rerun();
        }
        let Some(sub) = args.next() else {
            return flags.rerun();
        };
        match lower_key(&mut buf, name, Some(sub)).and_then(|k| self.commands.get(k)) {
            Some(flags) => flags.rerun(),
            None => Rerun::Unsafe,
        }
    }

    /// Number of entries (commands and subcommands).
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// The bytes of a simple or bulk string.
fn text<'a>(reply: &'a [u8], frame: &RangeFrame) -> Option<&'a [u8]> {
    match frame {
        RangeFrame::SimpleString((start, end)) | RangeFrame::BulkString((start, end)) => {
            reply.get(*start..*end)
        }
        _ => None,
    }
}

/// The strings of an array of strings (`None` if it is anything else).
fn strings<'a>(reply: &'a [u8], frame: Option<&RangeFrame>) -> Option<Vec<&'a [u8]>> {
    match frame? {
        RangeFrame::Array(items) => items.iter().map(|f| text(reply, f)).collect(),
        _ => None,
    }
}

/// `name`, or `name|sub`, lowercased into `buf`; `None` if it does not fit.
fn lower_key<'b>(buf: &'b mut [u8; KEY_CAP], name: &[u8], sub: Option<&[u8]>) -> Option<&'b [u8]> {
    let bar: &[u8] = if sub.is_some() { b"|" } else { b"" };
    let mut len = 0;
    for &b in name.iter().chain(bar).chain(sub.unwrap_or_default()) {
        *buf.get_mut(len)? = b.to_ascii_lowercase();
        len += 1;
    }
    buf.get(..len)
}

/// Whether `request` is exactly one non-empty RESP array of bulk strings.
fn is_request_array(request: &[u8]) -> bool {
    let mut scanner = Scanner::new(Direction::Request, Limits::default());
    matches!(scanner.scan(request), Ok(Progress::Frame(n)) if n == request.len())
        && scanner.info().kind == b'*'
        && scanner.info().len > 0
}

/// Connects to `addr`, AUTHs if `auth` is given (`(user, password)`), sends
/// `COMMAND` and parses the reply, all within `timeout`.
pub async fn fetch(
    addr: SocketAddr,
    auth: Option<(Option<String>, String)>,
    timeout: Duration,
) -> Result<CommandTable, FetchError> {
    tokio::time::timeout(timeout, fetch_within(addr, auth, timeout))
        .await
        .unwrap_or(Err(FetchError::Timeout { addr, timeout }))
}

async fn fetch_within(
    addr: SocketAddr,
    auth: Option<(Option<String>, String)>,
    timeout: Duration,
) -> Result<CommandTable, FetchError> {
    let mut stream = upstream::connect(addr, timeout, None)
        .await
        .map_err(|source| FetchError::Connect { addr, source })?;
    let mut out = BytesMut::new();
    if let Some((user, password)) = &auth {
        out.extend_from_slice(&match user {
            Some(user) => encode_command(&["AUTH", user, password]),
            None => encode_command(&["AUTH", password]),
        });
    }
    out.extend_from_slice(&encode_command(&["COMMAND"]));
    stream
        .write_all(&out)
        .await
        .map_err(|source| FetchError::Io { addr, source })?;

    let mut reader = ReplyReader::new(addr);
    if auth.is_some() {
        let reply = reader.next(&mut stream).await?;
        if let Some(message) = error_text(&reply) {
            return Err(FetchError::Auth { addr, message });
        }
    }
    let reply = reader.next(&mut stream).await?;
    if let Some(message) = error_text(&reply) {
        return Err(FetchError::Refused { addr, message });
    }
    CommandTable::parse(&reply).map_err(|source| FetchError::Table { addr, source })
}

/// The text of an error reply (`-ERR ...`), `None` for any other reply.
fn error_text(reply: &[u8]) -> Option<String> {
    let line = reply.strip_prefix(b"-")?;
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    Some(String::from_utf8_lossy(line).into_owned())
}

/// Reads whole replies from the connection, framed by our scanner.
struct ReplyReader {
    addr: SocketAddr,
    buf: BytesMut,
    scanner: Scanner,
    scanned: usize,
}

impl ReplyReader {
    fn new(addr: SocketAddr) -> Self {
        ReplyReader {
            addr,
            buf: BytesMut::new(),
            scanner: Scanner::new(Direction::Reply, reply_limits()),
            scanned: 0,
        }
    }

    async fn next<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> Result<BytesMut, FetchError> {
        let addr = self.addr;
        loop {
            let rest = self.buf.get(self.scanned..).unwrap_or_default();
            match self.scanner.scan(rest) {
                Ok(Progress::Frame(n)) => {
                    let end = self.scanned + n;
                    if end > self.buf.len() {
                        return Err(FetchError::Closed { addr });
                    }
                    self.scanned = 0;
                    return Ok(self.buf.split_to(end));
                }
                Ok(Progress::NeedMore(n)) => self.scanned += n,
                Err(source) => return Err(FetchError::Protocol { addr, source }),
            }
            if self.buf.len() >= MAX_REPLY {
                return Err(FetchError::TooBig {
                    addr,
                    limit: MAX_REPLY,
                });
            }
            self.buf.reserve(64 * 1024);
            let read = stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| FetchError::Io { addr, source })?;
            if read == 0 {
                return Err(FetchError::Closed { addr });
            }
        }
    }
}

/// The table a service shares among its sessions; empty until first loaded.
#[derive(Debug, Default)]
pub struct SharedTable(RwLock<Option<Arc<CommandTable>>>);

impl SharedTable {
    pub fn get(&self) -> Option<Arc<CommandTable>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, table: CommandTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(table));
    }
}

/// Keeps `table` loaded from `route`'s current master: fetches until it
/// succeeds (retrying every second, with a warning per distinct error), and
/// again after every route change, since the new master may run another
/// version. Until a new master answers, the previous table stays. Ends when
/// `shutdown` is cancelled.
pub async fn keep_loaded(
    table: Arc<SharedTable>,
    mut route: RouteReceiver,
    auth: Option<(Option<String>, String)>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    'route: loop {
        let master = route.borrow_and_update().master;
        let mut last_error: Option<String> = None;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = route_changed(&mut route) => continue 'route,
                result = fetch(master, auth.clone(), timeout) => result,
            };
            match result {
                Ok(loaded) => {
                    tracing::info!(%master, commands = loaded.len(), "command table loaded");
                    table.set(loaded);
                    break;
                }
                Err(e) => {
                    let error = e.to_string();
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(%master, %error, "command table not loaded; retrying every second");
                        last_error = Some(error);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = route_changed(&mut route) => continue 'route,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = route_changed(&mut route) => {}
        }
    }
}

/// Resolves when the route changes; never, once no sender is left.
async fn route_changed(route: &mut RouteReceiver) {
    if route.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
#[path = "command_table_tests.rs"]
mod tests;
