//! What a session knows about its client's connection state, and which
//! requests are waiting for replies.
//!
//! State changes are committed when the reply arrives and is not an error
//! (a failed `SELECT 99` changes nothing), so the state always describes what
//! the current upstream connection really has; this is what a later failover
//! replays on a new master. The FIFO of pending requests also tells the
//! session how many requests are in flight and whether one of them blocks.
//!
//! An error reply always completes the oldest pending request, whatever the
//! number of replies it still expected: Redis refuses a `SUBSCRIBE a b`
//! (`-NOPERM`, `-NOAUTH`) with one error, not one per channel.
//!
//! How many confirmations an argument-less UNSUBSCRIBE gets depends on
//! requests that may not be answered yet. Rather than keeping a second,
//! request-side copy of the subscriptions (which a failed SUBSCRIBE or a
//! discarded transaction would leave wrong), that count is predicted from
//! the confirmed subscriptions plus the Pub/Sub requests still in flight,
//! assuming they succeed: a request that fails leaves the queue and so
//! stops counting, and a SUBSCRIBE queued in MULTI counts only after its
//! EXEC.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use super::command::{Command, SubKind, is_message, is_subscription_reply};
use crate::resp::FrameInfo;
use crate::resp::request::Args;
use replay::Doom;

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
    // Boxed: every pending request carries an Effect, and these rare ones
    // would triple its size.
    Auth(Box<Credentials>),
    Hello(Box<HelloEffect>),
    SetName(Bytes),
    Tracking(Option<Vec<Bytes>>),
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Reset,
    Subscribe(SubKind, Vec<Bytes>),
    /// The confirmations after the first of the Pub/Sub commands an EXEC ran:
    /// they follow EXEC's array.
    Confirmations,
    /// An empty list means "all of this kind".
    Unsubscribe(SubKind, Vec<Bytes>),
    Monitor,
}

/// What a successful HELLO sets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HelloEffect {
    protocol: Option<u8>,
    auth: Option<Credentials>,
    name: Option<Bytes>,
}

/// A request sent upstream whose replies have not all arrived. Kept small
/// (32 bytes): one is queued and dequeued for every request, and nearly
/// every request has no effect and is the client's own.
#[derive(Debug)]
struct Pending {
    /// Replies still expected (SUBSCRIBE a b gets two).
    replies: usize,
    /// Bytes of the request: what its completion releases.
    len: usize,
    blocking: bool,
    /// Sent inside MULTI: its reply is `+QUEUED` and its effect waits for EXEC.
    queued: bool,
    /// Some of its replies have arrived.
    partly_answered: bool,
    /// Its effect and purpose, unless they are none and the client's.
    special: Option<Box<Special>>,
}

const _: () = assert!(std::mem::size_of::<Pending>() == 32);

#[derive(Debug)]
struct Special {
    effect: Effect,
    purpose: Purpose,
}

impl Pending {
    fn new(replies: usize, effect: Effect, purpose: Purpose, len: usize) -> Self {
        let special = (effect != Effect::None || purpose != Purpose::Client)
            .then(|| Box::new(Special { effect, purpose }));
        Pending {
            replies,
            special,
            ..Pending::plain(len)
        }
    }

    /// A request of the client's own, with no effect on the connection.
    fn plain(len: usize) -> Self {
        Pending {
            replies: 1,
            len,
            blocking: false,
            queued: false,
            partly_answered: false,
            special: None,
        }
    }

    fn effect(&self) -> &Effect {
        const NONE: &Effect = &Effect::None;
        self.special.as_ref().map_or(NONE, |s| &s.effect)
    }

    fn purpose(&self) -> &Purpose {
        const CLIENT: &Purpose = &Purpose::Client;
        self.special.as_ref().map_or(CLIENT, |s| &s.purpose)
    }
}

/// Who a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The client's own request: its replies go to the client.
    Client,
    /// The proxy restoring the connection's state on a new upstream: its
    /// replies are the proxy's.
    Replay,
    /// The proxy's `ROLE`, asked before any client request is sent.
    RoleCheck,
    /// A client request whose reply is replaced by this one (an `EXEC`
    /// that the proxy turned into `DISCARD`, see `replay`).
    Replace(Bytes),
}

/// How the client asked Redis to reply (`CLIENT REPLY ON|OFF|SKIP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    SkipNext,
}

/// Whether a reply answers a request or arrived on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyRole {
    /// Completes (part of) the oldest pending request.
    Answer,
    /// A push: a published message, an invalidation, a MONITOR line.
    OutOfBand,
    /// Answers one of the proxy's replayed commands: not for the client.
    Replay,
    /// Answers the proxy's `ROLE` check: not for the client.
    RoleCheck,
    /// Answers a request whose reply the client gets replaced by this one.
    Replace(Bytes),
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
    /// Confirmed subscriptions, one set per [`SubKind`] (see [`of_kind`]).
    subscriptions: [HashSet<Bytes>; 3],
    pub in_multi: bool,
    pub watching: bool,
    pub monitor: bool,
    pending: VecDeque<Pending>,
    /// Effects of commands queued in the open transaction.
    tx_effects: Vec<Effect>,
    /// Whether a MULTI has been sent and not yet closed (request-side view):
    /// what is sent while it is set is queued by Redis.
    tx_open: bool,
    reply_mode: ReplyMode,
    blocking: usize,
    /// Request bytes whose replies have all arrived since the last
    /// [`SessionState::take_released`].
    released: usize,
    /// The transaction or WATCH that a failover broke (request-side view).
    doom: Option<Doom>,
    /// QUIT was sent: the upstream closing is the expected end.
    quit_sent: bool,
}

/// What [`SessionState::on_request`] made of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// It waits for its reply (or replies).
    Waits,
    /// Replies are off: it gets none.
    NoReply,
    /// These bytes are to be sent instead of it (and they may wait for a
    /// reply).
    SendInstead { bytes: &'static [u8], waits: bool },
}

/// What a doomed `EXEC` is sent as.
pub(super) const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            db: 0,
            auth: None,
            protocol: 2,
            name: None,
            tracking: None,
            subscriptions: Default::default(),
            in_multi: false,
            watching: false,
            monitor: false,
            pending: VecDeque::new(),
            tx_effects: Vec::new(),
            tx_open: false,
            reply_mode: ReplyMode::On,
            blocking: 0,
            released: 0,
            doom: None,
            quit_sent: false,
        }
    }
}

impl SessionState {
    /// Requests sent upstream whose replies have not all arrived.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether QUIT was sent (the upstream will close after answering).
    pub fn quit_sent(&self) -> bool {
        self.quit_sent
    }

    /// Whether the next reply that answers a request is for the client
    /// (not for one of the proxy's own requests).
    pub fn next_reply_is_clients(&self) -> bool {
        self.pending
            .front()
            .is_none_or(|p| *p.purpose() == Purpose::Client)
    }

    /// Whether a blocking command (BLPOP, XREAD BLOCK, WAIT, ...) is in flight.
    pub fn blocking_in_flight(&self) -> bool {
        self.blocking > 0
    }

    /// Whether the connection is in Pub/Sub mode.
    pub fn subscribed(&self) -> bool {
        self.subscriptions.iter().any(|set| !set.is_empty())
    }

    /// The confirmed subscriptions of one kind.
    pub fn subscriptions(&self, kind: SubKind) -> &HashSet<Bytes> {
        of_kind(&self.subscriptions, kind)
    }

    /// The subscriptions the connection will have once the first `before`
    /// pending requests succeed (the request-side view).
    fn predicted_subscriptions(&self, before: usize) -> [HashSet<Bytes>; 3] {
        let mut sets = self.subscriptions.clone();
        // Pub/Sub commands queued in the open transaction run at its EXEC.
        let mut tx: Vec<&Effect> = self.tx_effects.iter().collect();
        for p in self.pending.iter().take(before) {
            match p.effect() {
                Effect::Exec => {
                    for effect in tx.drain(..) {
                        update_subscriptions(&mut sets, effect);
                    }
                }
                Effect::Discard => tx.clear(),
                Effect::Reset => {
                    tx.clear();
                    sets = Default::default();
                }
                effect if p.queued => tx.push(effect),
                effect => update_subscriptions(&mut sets, effect),
            }
        }
        sets
    }

    /// Replies a request gets when sent after the first `before` pending
    /// requests (replies switched on).
    fn expected_replies(&self, effect: &Effect, queued: bool, before: usize) -> usize {
        match effect {
            // Inside MULTI, everything is answered with one `+QUEUED`.
            _ if queued => 1,
            Effect::Unsubscribe(_, channels) if channels.is_empty() => {
                confirmations(effect, &self.predicted_subscriptions(before))
            }
            _ => confirmations(effect, &self.subscriptions),
        }
    }

    /// Takes the count of request bytes answered since the last call: the
    /// session keeps sent requests until then, to re-send them on failover.
    pub fn take_released(&mut self) -> usize {
        std::mem::take(&mut self.released)
    }

    /// Records a reply of type `kind` that is one leaf (not an aggregate)
    /// if it completes the oldest request and that one has no effect or
    /// purpose of its own and expects this one reply (a plain request, see
    /// [`SessionState::on_request`], and some others: one queued in a
    /// transaction, a blocking one). An error is not taken: it may be a
    /// refusal to re-send. Returns false, recording nothing, otherwise.
    pub fn answer_plain(&mut self, kind: u8) -> bool {
        // A MONITOR line is a leaf that answers nothing.
        if kind == b'-' || kind == b'!' || self.monitor {
            return false;
        }
        let Some(&Pending {
            replies: 1,
            len,
            blocking,
            special: None,
            ..
        }) = self.pending.front()
        else {
            return false;
        };
        self.released += len;
        self.blocking -= usize::from(blocking);
        // `special`, its only field with a destructor, is None: forgetting
        // it saves the drop call on the hot path and leaks nothing.
        if let Some(answered) = self.pending.pop_front() {
            std::mem::forget(answered);
        }
        true
    }

    /// Records a request that is about to be sent upstream: `frame` is the
    /// complete RESP array and `name` its first argument.
    #[inline]
    pub fn on_request(&mut self, frame: &[u8], name: &[u8]) -> Recorded {
        let command = Command::from_name(name);
        if command == Command::Other
            && self.doom.is_none()
            && !self.tx_open
            && self.reply_mode == ReplyMode::On
        {
            // Nearly every request: one reply, no effect on the connection,
            // sent as it is.
            self.pending.push_back(Pending::plain(frame.len()));
            return Recorded::Waits;
        }
        self.on_special_request(frame, command)
    }

    /// Whether `frame`, a request named `name`, is `CLIENT REPLY OFF` or
    /// `SKIP`: nothing will answer it (or the next request), so nothing
    /// would tell whether it ran.
    pub fn silences_replies(frame: &[u8], name: &[u8]) -> bool {
        client_reply_mode(Command::from_name(name), frame).is_some_and(|mode| mode != ReplyMode::On)
    }

    /// [`SessionState::on_request`] for a request that may change the
    /// connection's state, be queued, get other than one reply or be sent
    /// as something else. Out of line: the plain case above stays small.
    #[inline(never)]
    fn on_special_request(&mut self, frame: &[u8], command: Command) -> Recorded {
        self.quit_sent |= command == Command::Quit;
        let (mut effect, blocking) = match command {
            Command::Other => (Effect::None, false),
            Command::Blocking => (Effect::None, true),
            Command::MaybeBlocking => {
                let blocks = Args::new(frame).any(|a| a.eq_ignore_ascii_case(b"block"));
                (Effect::None, blocks)
            }
            _ => (effect_of(command, frame), false),
        };
        let (mut purpose, mut len, mut recorded) = (Purpose::Client, frame.len(), Recorded::Waits);
        if let Some(doom) = self.doom {
            match effect {
                Effect::Exec if self.tx_open => {
                    // The transaction (or the WATCH) was lost with the old
                    // master: end it without running anything, and answer
                    // what Redis would have.
                    effect = Effect::Discard;
                    purpose = Purpose::Replace(doom.reply(self.protocol));
                    len = DISCARD.len();
                    recorded = Recorded::SendInstead {
                        bytes: DISCARD,
                        waits: true,
                    };
                    self.doom = None;
                }
                Effect::Discard if self.tx_open => self.doom = None,
                Effect::Reset => self.doom = None,
                Effect::Unwatch if !self.tx_open && doom == Doom::Null => self.doom = None,
                _ => {}
            }
        }
        let queued = self.tx_open
            && !matches!(
                effect,
                Effect::Exec | Effect::Discard | Effect::Multi | Effect::Reset
            );
        let mut replies = self.expected_replies(&effect, queued, self.pending.len());
        match self.reply_mode {
            // RESET turns replies back on and is answered, unless it is the
            // very command a `CLIENT REPLY SKIP` skips (as Redis 7 does).
            ReplyMode::Off if effect == Effect::Reset => self.reply_mode = ReplyMode::On,
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
            // Redis ignores SKIP while replies are off.
            if !(mode == ReplyMode::SkipNext && self.reply_mode == ReplyMode::Off) {
                self.reply_mode = mode;
            }
        }
        match &effect {
            Effect::Multi => self.tx_open = true,
            Effect::Exec | Effect::Discard | Effect::Reset => self.tx_open = false,
            _ => {}
        }
        if replies == 0 {
            // Nothing will say when it ran: the session sends it without
            // keeping it for a re-send.
            return match recorded {
                Recorded::SendInstead { bytes, .. } => Recorded::SendInstead {
                    bytes,
                    waits: false,
                },
                _ => Recorded::NoReply,
            };
        }
        self.blocking += usize::from(blocking);
        self.pending.push_back(Pending {
            blocking,
            queued,
            ..Pending::new(replies, effect, purpose, len)
        });
        recorded
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
        let error = info.is_error();
        let role = match front.purpose() {
            Purpose::Client => ReplyRole::Answer,
            Purpose::Replay => ReplyRole::Replay,
            Purpose::RoleCheck => ReplyRole::RoleCheck,
            Purpose::Replace(reply) => ReplyRole::Replace(reply.clone()),
        };
        // An error is the only reply to its request, however many it expected.
        if !error {
            front.replies -= 1;
            if front.replies > 0 {
                front.partly_answered = true;
                return role;
            }
        }
        let Some(done) = self.pending.pop_front() else {
            return role;
        };
        self.released += done.len;
        self.blocking -= usize::from(done.blocking);
        let Some(special) = done.special else {
            return role;
        };
        let effect = special.effect;
        if done.queued {
            if !error && effect != Effect::None {
                self.tx_effects.push(effect);
            }
            return role;
        }
        match effect {
            Effect::None => {}
            // EXEC and DISCARD close the transaction whatever their reply.
            Effect::Exec | Effect::Discard => self.close_transaction(info),
            Effect::Multi if error => self.multi_failed(),
            _ if error => {}
            effect => self.apply(effect),
        }
        role
    }

    /// The reply to EXEC or DISCARD. Redis discards the transaction and
    /// forgets the WATCHed keys whatever the outcome (`-EXECABORT`, a null
    /// reply after a WATCHed key changed, ...); only an EXEC or DISCARD
    /// sent with no transaction open fails without touching anything
    /// (`-ERR EXEC without MULTI` keeps the WATCH). The queued effects take
    /// effect only when EXEC returns the (non-empty) array of results.
    fn close_transaction(&mut self, info: &FrameInfo) {
        let was_open = std::mem::take(&mut self.in_multi);
        let effects = std::mem::take(&mut self.tx_effects);
        if !was_open && info.is_error() {
            return;
        }
        self.watching = false;
        if info.kind == b'*' && info.len > 0 {
            // EXEC's array holds one reply per command, but Redis writes all
            // the confirmations of a Pub/Sub command: the ones after the
            // first follow the array.
            let mut extra = 0;
            for effect in effects {
                extra += confirmations(&effect, &self.subscriptions) - 1;
                self.apply(effect);
            }
            if extra > 0 {
                self.pending.push_front(Pending::new(
                    extra,
                    Effect::Confirmations,
                    Purpose::Client,
                    0,
                ));
            }
        }
    }

    /// A MULTI answered with an error. Inside a transaction (nested MULTI)
    /// the transaction goes on. Otherwise (`-NOAUTH`, `-NOPERM`, ...) none
    /// was opened: the requests pipelined after this MULTI, up to the next
    /// MULTI, EXEC, DISCARD or RESET, run as ordinary commands rather than
    /// being queued, and if there is no such boundary the request side is
    /// no longer in a transaction.
    fn multi_failed(&mut self) {
        if self.in_multi {
            return;
        }
        for at in 0..self.pending.len() {
            let Some(p) = self.pending.get(at) else {
                break;
            };
            if matches!(
                p.effect(),
                Effect::Multi | Effect::Exec | Effect::Discard | Effect::Reset
            ) {
                return;
            }
            if p.queued {
                let replies = self.expected_replies(p.effect(), false, at);
                if let Some(p) = self.pending.get_mut(at) {
                    p.queued = false;
                    p.replies = replies;
                }
            }
        }
        self.tx_open = false;
    }

    fn out_of_band(&self, info: &FrameInfo) -> bool {
        if self.monitor && info.kind == b'+' && info.head().first().is_some_and(u8::is_ascii_digit)
        {
            // A MONITOR line ("+1700000000.123456 [0 ...] ..."); replies to
            // the monitoring client's own commands (PING, RESET) are answers.
            return true;
        }
        if info.kind != b'>' && info.kind != b'*' {
            return false;
        }
        let confirmation_expected = self.pending.front().is_some_and(|p| {
            !p.queued
                && matches!(
                    p.effect(),
                    Effect::Subscribe(..) | Effect::Unsubscribe(..) | Effect::Confirmations
                )
        });
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

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None | Effect::Confirmations => {}
            Effect::Select(db) => self.db = db,
            Effect::Auth(credentials) => self.auth = Some(*credentials),
            Effect::Hello(hello) => {
                let HelloEffect {
                    protocol,
                    auth,
                    name,
                } = *hello;
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
            // Handled by `close_transaction`; never queued.
            Effect::Exec | Effect::Discard => {}
            Effect::Watch => self.watching = true,
            Effect::Unwatch => self.watching = false,
            Effect::Reset => {
                // The request-side views already account for RESET and for
                // whatever was pipelined after it; keep them.
                let fresh = SessionState {
                    pending: std::mem::take(&mut self.pending),
                    tx_open: self.tx_open,
                    reply_mode: self.reply_mode,
                    blocking: self.blocking,
                    released: self.released,
                    doom: self.doom,
                    quit_sent: self.quit_sent,
                    ..SessionState::default()
                };
                *self = fresh;
            }
            effect @ (Effect::Subscribe(..) | Effect::Unsubscribe(..)) => {
                update_subscriptions(&mut self.subscriptions, &effect)
            }
            Effect::Monitor => self.monitor = true,
        }
    }
}

/// One kind's set in per-kind subscription sets.
fn of_kind(sets: &[HashSet<Bytes>; 3], kind: SubKind) -> &HashSet<Bytes> {
    let [channels, patterns, shards] = sets;
    match kind {
        SubKind::Channel => channels,
        SubKind::Pattern => patterns,
        SubKind::Shard => shards,
    }
}

/// One kind's set in per-kind subscription sets, to change.
fn of_kind_mut(sets: &mut [HashSet<Bytes>; 3], kind: SubKind) -> &mut HashSet<Bytes> {
    let [channels, patterns, shards] = sets;
    match kind {
        SubKind::Channel => channels,
        SubKind::Pattern => patterns,
        SubKind::Shard => shards,
    }
}

/// How many replies (confirmations) a request gets, given the subscriptions
/// in force when it runs: one per channel; "all" gets one per current
/// subscription, or a single one when there is none.
fn confirmations(effect: &Effect, sets: &[HashSet<Bytes>; 3]) -> usize {
    match effect {
        Effect::Subscribe(_, channels) => channels.len().max(1),
        Effect::Unsubscribe(kind, channels) if channels.is_empty() => {
            of_kind(sets, *kind).len().max(1)
        }
        Effect::Unsubscribe(_, channels) => channels.len(),
        _ => 1,
    }
}

/// Applies a SUBSCRIBE or UNSUBSCRIBE to per-kind subscription sets; other
/// effects change nothing.
fn update_subscriptions(sets: &mut [HashSet<Bytes>; 3], effect: &Effect) {
    match effect {
        Effect::Subscribe(kind, channels) => {
            of_kind_mut(sets, *kind).extend(channels.iter().cloned())
        }
        Effect::Unsubscribe(kind, channels) if channels.is_empty() => {
            of_kind_mut(sets, *kind).clear()
        }
        Effect::Unsubscribe(kind, channels) => {
            let set = of_kind_mut(sets, *kind);
            for channel in channels {
                set.remove(channel);
            }
        }
        _ => {}
    }
}

/// The state change a tracked command asks for.
fn effect_of(command: Command, frame: &[u8]) -> Effect {
    let mut args = Args::new(frame);
    args.next();
    let arg = |a: Option<&[u8]>| a.map(Bytes::copy_from_slice);
    match command {
        Command::Select => match args.next().and_then(parse_i64) {
            Some(db) => Effect::Select(db),
            None => Effect::None,
        },
        Command::Auth => {
            let (first, second) = (args.next(), args.next());
            match (first, second) {
                (Some(pass), None) => Effect::Auth(Box::new(Credentials {
                    user: None,
                    pass: Bytes::copy_from_slice(pass),
                })),
                (Some(user), Some(pass)) => Effect::Auth(Box::new(Credentials {
                    user: Some(Bytes::copy_from_slice(user)),
                    pass: Bytes::copy_from_slice(pass),
                })),
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
            Effect::Hello(Box::new(HelloEffect {
                protocol,
                auth,
                name,
            }))
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
        Command::Other | Command::Blocking | Command::MaybeBlocking | Command::Quit => Effect::None,
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

mod replay;
pub use replay::{Rerun, Unanswered, Unmovable};

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
