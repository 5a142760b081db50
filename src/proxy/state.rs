//! What a session knows about its client's connection state, and which
//! requests are waiting for replies.
//!
//! State changes are committed when the reply arrives and is not an error
//! (a failed `SELECT 99` changes nothing), so the state always describes what
//! the current upstream connection really has; this is what a later failover
//! replays on a new master. The FIFO of pending requests also tells the
//! session how many requests are in flight and whether one of them blocks.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use super::command::{Command, SubKind, is_message, is_subscription_reply};
use crate::resp::FrameInfo;
use crate::resp::request::Args;

/// Credentials the client authenticated with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `None` for the `default` user (one-argument AUTH).
    pub user: Option<Bytes>,
    pub pass: Bytes,
}

/// A state change that takes effect when its reply is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    None,
    Select(i64),
    Auth(Credentials),
    Hello {
        protocol: Option<u8>,
        auth: Option<Credentials>,
        name: Option<Bytes>,
    },
    SetName(Bytes),
    Tracking(Option<Vec<Bytes>>),
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Reset,
    Subscribe(SubKind, Vec<Bytes>),
    /// An empty list means "all of this kind".
    Unsubscribe(SubKind, Vec<Bytes>),
    Monitor,
}

#[derive(Debug)]
struct Pending {
    /// Replies still expected (SUBSCRIBE a b gets two).
    replies: usize,
    effect: Effect,
    blocking: bool,
    /// Sent inside MULTI: its reply is `+QUEUED` and its effect waits for EXEC.
    queued: bool,
}

/// How the client asked Redis to reply (`CLIENT REPLY ON|OFF|SKIP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    SkipNext,
}

/// Whether a reply answers a request or arrived on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyRole {
    /// Completes (part of) the oldest pending request.
    Answer,
    /// A push: a published message, an invalidation, a MONITOR line.
    OutOfBand,
}

/// The connection state of one client session.
#[derive(Debug)]
pub struct SessionState {
    pub db: i64,
    pub auth: Option<Credentials>,
    /// 2 or 3, as negotiated with HELLO.
    pub protocol: u8,
    pub name: Option<Bytes>,
    /// The CLIENT TRACKING arguments in force (after `TRACKING`), if on.
    pub tracking: Option<Vec<Bytes>>,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub shard_channels: HashSet<Bytes>,
    pub in_multi: bool,
    pub watching: bool,
    pub monitor: bool,
    pending: VecDeque<Pending>,
    /// Effects of commands queued in the open transaction.
    tx_effects: Vec<Effect>,
    /// Whether a MULTI has been sent and not yet closed (request-side view).
    tx_open: bool,
    /// Subscriptions as requested so far (request-side view): how many
    /// confirmations an UNSUBSCRIBE without arguments will get depends on
    /// requests that may not be answered yet.
    requested: [HashSet<Bytes>; 3],
    reply_mode: ReplyMode,
    blocking: usize,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            db: 0,
            auth: None,
            protocol: 2,
            name: None,
            tracking: None,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shard_channels: HashSet::new(),
            in_multi: false,
            watching: false,
            monitor: false,
            pending: VecDeque::new(),
            tx_effects: Vec::new(),
            tx_open: false,
            requested: Default::default(),
            reply_mode: ReplyMode::On,
            blocking: 0,
        }
    }
}

impl SessionState {
    /// Requests sent upstream whose replies have not all arrived.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether a blocking command (BLPOP, XREAD BLOCK, WAIT, ...) is in flight.
    pub fn blocking_in_flight(&self) -> bool {
        self.blocking > 0
    }

    /// Whether the connection is in Pub/Sub mode.
    pub fn subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    fn requested_subscriptions(&self, kind: SubKind) -> &HashSet<Bytes> {
        let [channels, patterns, shards] = &self.requested;
        match kind {
            SubKind::Channel => channels,
            SubKind::Pattern => patterns,
            SubKind::Shard => shards,
        }
    }

    fn requested_subscriptions_mut(&mut self, kind: SubKind) -> &mut HashSet<Bytes> {
        let [channels, patterns, shards] = &mut self.requested;
        match kind {
            SubKind::Channel => channels,
            SubKind::Pattern => patterns,
            SubKind::Shard => shards,
        }
    }

    fn subscriptions_mut(&mut self, kind: SubKind) -> &mut HashSet<Bytes> {
        match kind {
            SubKind::Channel => &mut self.channels,
            SubKind::Pattern => &mut self.patterns,
            SubKind::Shard => &mut self.shard_channels,
        }
    }

    /// Records a request that is about to be sent upstream. `frame` is the
    /// complete RESP array and `info` its scanner summary.
    pub fn on_request(&mut self, frame: &[u8], info: &FrameInfo) {
        let command = Command::from_name(info.head());
        let (effect, mut replies, blocking) = match command {
            Command::Other => (Effect::None, 1, false),
            Command::Blocking => (Effect::None, 1, true),
            Command::MaybeBlocking => {
                let blocks = Args::new(frame).any(|a| a.eq_ignore_ascii_case(b"block"));
                (Effect::None, 1, blocks)
            }
            _ => self.effect_of(command, frame),
        };
        match self.reply_mode {
            ReplyMode::On => {}
            ReplyMode::Off => replies = 0,
            ReplyMode::SkipNext => {
                replies = 0;
                self.reply_mode = ReplyMode::On;
            }
        }
        // CLIENT REPLY itself decides whether it is answered.
        if let Some(mode) = client_reply_mode(command, frame) {
            replies = usize::from(mode == ReplyMode::On);
            self.reply_mode = mode;
        }
        let queued = self.tx_open
            && !matches!(
                effect,
                Effect::Exec | Effect::Discard | Effect::Multi | Effect::Reset
            );
        match &effect {
            Effect::Multi => self.tx_open = true,
            Effect::Exec | Effect::Discard => self.tx_open = false,
            Effect::Reset => {
                self.tx_open = false;
                self.requested = Default::default();
            }
            Effect::Subscribe(kind, channels) => self
                .requested_subscriptions_mut(*kind)
                .extend(channels.iter().cloned()),
            Effect::Unsubscribe(kind, channels) if channels.is_empty() => {
                self.requested_subscriptions_mut(*kind).clear()
            }
            Effect::Unsubscribe(kind, channels) => {
                let set = self.requested_subscriptions_mut(*kind);
                for channel in channels {
                    set.remove(channel);
                }
            }
            _ => {}
        }
        if replies == 0 {
            return;
        }
        self.blocking += usize::from(blocking);
        self.pending.push_back(Pending {
            replies,
            effect,
            blocking,
            queued,
        });
    }

    fn effect_of(&self, command: Command, frame: &[u8]) -> (Effect, usize, bool) {
        let mut args = Args::new(frame);
        args.next();
        let arg = |a: Option<&[u8]>| a.map(Bytes::copy_from_slice);
        let effect = match command {
            Command::Select => match args.next().and_then(parse_i64) {
                Some(db) => Effect::Select(db),
                None => Effect::None,
            },
            Command::Auth => {
                let (first, second) = (args.next(), args.next());
                match (first, second) {
                    (Some(pass), None) => Effect::Auth(Credentials {
                        user: None,
                        pass: Bytes::copy_from_slice(pass),
                    }),
                    (Some(user), Some(pass)) => Effect::Auth(Credentials {
                        user: Some(Bytes::copy_from_slice(user)),
                        pass: Bytes::copy_from_slice(pass),
                    }),
                    _ => Effect::None,
                }
            }
            Command::Hello => {
                let protocol = args
                    .next()
                    .and_then(parse_i64)
                    .and_then(|p| u8::try_from(p).ok());
                let (mut auth, mut name) = (None, None);
                while let Some(option) = args.next() {
                    if option.eq_ignore_ascii_case(b"auth") {
                        let (user, pass) = (args.next(), args.next());
                        if let (Some(user), Some(pass)) = (user, pass) {
                            auth = Some(Credentials {
                                user: Some(Bytes::copy_from_slice(user)),
                                pass: Bytes::copy_from_slice(pass),
                            });
                        }
                    } else if option.eq_ignore_ascii_case(b"setname") {
                        name = arg(args.next());
                    }
                }
                Effect::Hello {
                    protocol,
                    auth,
                    name,
                }
            }
            Command::Client => {
                let sub = args.next().unwrap_or_default();
                if sub.eq_ignore_ascii_case(b"setname") {
                    arg(args.next()).map_or(Effect::None, Effect::SetName)
                } else if sub.eq_ignore_ascii_case(b"tracking") {
                    let rest: Vec<Bytes> = args.map(Bytes::copy_from_slice).collect();
                    let on = rest.first().is_some_and(|a| a.eq_ignore_ascii_case(b"on"));
                    Effect::Tracking(on.then_some(rest))
                } else {
                    Effect::None
                }
            }
            Command::Multi => Effect::Multi,
            Command::Exec => Effect::Exec,
            Command::Discard => Effect::Discard,
            Command::Watch => Effect::Watch,
            Command::Unwatch => Effect::Unwatch,
            Command::Reset => Effect::Reset,
            Command::Monitor => Effect::Monitor,
            Command::Subscribe(kind) => {
                Effect::Subscribe(kind, args.map(Bytes::copy_from_slice).collect())
            }
            Command::Unsubscribe(kind) => {
                Effect::Unsubscribe(kind, args.map(Bytes::copy_from_slice).collect())
            }
            Command::Other | Command::Blocking | Command::MaybeBlocking => Effect::None,
        };
        let replies = match &effect {
            // One confirmation per channel; "all" gets one per current
            // subscription, or a single one when there is none.
            Effect::Subscribe(_, channels) => channels.len().max(1),
            Effect::Unsubscribe(kind, channels) if channels.is_empty() => {
                self.requested_subscriptions(*kind).len().max(1)
            }
            Effect::Unsubscribe(_, channels) => channels.len(),
            _ => 1,
        };
        (effect, replies, false)
    }

    /// Records a complete reply frame from upstream and says whether it
    /// answered a request.
    pub fn on_reply(&mut self, info: &FrameInfo) -> ReplyRole {
        if self.out_of_band(info) {
            return ReplyRole::OutOfBand;
        }
        let Some(front) = self.pending.front_mut() else {
            // Nothing was asked: treat it like a push rather than lose count.
            return ReplyRole::OutOfBand;
        };
        front.replies -= 1;
        if front.replies > 0 {
            return ReplyRole::Answer;
        }
        let Some(done) = self.pending.pop_front() else {
            return ReplyRole::Answer;
        };
        self.blocking -= usize::from(done.blocking);
        if info.is_error() {
            return ReplyRole::Answer;
        }
        if done.queued {
            if done.effect != Effect::None {
                self.tx_effects.push(done.effect);
            }
        } else {
            self.apply(done.effect, info);
        }
        ReplyRole::Answer
    }

    fn out_of_band(&self, info: &FrameInfo) -> bool {
        if self.monitor && info.kind == b'+' && info.head().first().is_some_and(u8::is_ascii_digit)
        {
            // A MONITOR line ("+1700000000.123456 [0 ...] ..."); replies to
            // the monitoring client's own commands (PING, RESET) are answers.
            return true;
        }
        let confirmation_expected = self
            .pending
            .front()
            .is_some_and(|p| matches!(p.effect, Effect::Subscribe(..) | Effect::Unsubscribe(..)));
        match info.kind {
            // RESP3 pushes carry both messages and subscription confirmations.
            b'>' => !(confirmation_expected && is_subscription_reply(info.head())),
            // In RESP3, messages are pushes, and a subscribed client may run
            // ordinary commands whose array replies start with anything.
            b'*' => {
                self.protocol == 2
                    && (self.subscribed() || confirmation_expected)
                    && is_message(info.head())
            }
            _ => false,
        }
    }

    fn apply(&mut self, effect: Effect, info: &FrameInfo) {
        match effect {
            Effect::None => {}
            Effect::Select(db) => self.db = db,
            Effect::Auth(credentials) => self.auth = Some(credentials),
            Effect::Hello {
                protocol,
                auth,
                name,
            } => {
                if let Some(protocol) = protocol {
                    self.protocol = protocol;
                }
                if auth.is_some() {
                    self.auth = auth;
                }
                if name.is_some() {
                    self.name = name;
                }
            }
            Effect::SetName(name) => self.name = (!name.is_empty()).then_some(name),
            Effect::Tracking(args) => self.tracking = args,
            Effect::Multi => self.in_multi = true,
            Effect::Exec => {
                self.in_multi = false;
                self.watching = false;
                let effects = std::mem::take(&mut self.tx_effects);
                // A null or empty array means the transaction did not run.
                if info.kind == b'*' && info.len > 0 {
                    for effect in effects {
                        self.apply(effect, info);
                    }
                }
            }
            Effect::Discard => {
                self.in_multi = false;
                self.watching = false;
                self.tx_effects.clear();
            }
            Effect::Watch => self.watching = true,
            Effect::Unwatch => self.watching = false,
            Effect::Reset => {
                // The request-side views already account for RESET and for
                // whatever was pipelined after it; keep them.
                let fresh = SessionState {
                    pending: std::mem::take(&mut self.pending),
                    tx_open: self.tx_open,
                    requested: std::mem::take(&mut self.requested),
                    reply_mode: self.reply_mode,
                    blocking: self.blocking,
                    ..SessionState::default()
                };
                *self = fresh;
            }
            Effect::Subscribe(kind, channels) => self.subscriptions_mut(kind).extend(channels),
            Effect::Unsubscribe(kind, channels) => {
                let set = self.subscriptions_mut(kind);
                if channels.is_empty() {
                    set.clear();
                } else {
                    for channel in &channels {
                        set.remove(channel);
                    }
                }
            }
            Effect::Monitor => self.monitor = true,
        }
    }
}

/// The reply mode a `CLIENT REPLY ...` request switches to, if it is one.
fn client_reply_mode(command: Command, frame: &[u8]) -> Option<ReplyMode> {
    if command != Command::Client {
        return None;
    }
    let mut args = Args::new(frame).skip(1);
    if !args.next()?.eq_ignore_ascii_case(b"reply") {
        return None;
    }
    let mode = args.next()?;
    [
        (&b"on"[..], ReplyMode::On),
        (b"off", ReplyMode::Off),
        (b"skip", ReplyMode::SkipNext),
    ]
    .into_iter()
    .find(|(name, _)| mode.eq_ignore_ascii_case(name))
    .map(|(_, mode)| mode)
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
