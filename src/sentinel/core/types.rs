//! Plain data crossing the core's boundary: addresses, events in, actions out.

use std::fmt;

use super::persist::PersistedState;

/// A host (IP or hostname, as Sentinel would print it) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub ip: String,
    pub port: u16,
}

impl Addr {
    pub fn new(ip: impl Into<String>, port: u16) -> Self {
        Addr {
            ip: ip.into(),
            port,
        }
    }

    /// Sentinel compares hostnames case-insensitively (`sentinelAddrEqualsHostname`).
    pub fn same_as(&self, ip: &str, port: u16) -> bool {
        self.port == port && self.ip.eq_ignore_ascii_case(ip)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// What an instance is to one monitored master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceKind {
    Master,
    Replica,
    Sentinel,
}

/// Names one link the shell owns: the instance at `addr` as known under
/// master `master`. Links are keyed by `(master, addr)`; `kind` tells the
/// shell whether a pubsub connection is also needed (masters and replicas).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LinkRef {
    pub master: String,
    pub kind: InstanceKind,
    pub addr: Addr,
}

/// A PING reply, classified the way `sentinelPingReplyCallback` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingReply {
    Pong,
    Loading,
    MasterDown,
    Busy,
    Other(String),
}

impl PingReply {
    /// Classify a raw status/error reply text by its prefix.
    pub fn classify(text: &str) -> PingReply {
        let t = text.trim_start_matches(['+', '-']);
        if t.starts_with("PONG") {
            PingReply::Pong
        } else if t.starts_with("LOADING") {
            PingReply::Loading
        } else if t.starts_with("MASTERDOWN") {
            PingReply::MasterDown
        } else if t.starts_with("BUSY") {
            PingReply::Busy
        } else {
            PingReply::Other(t.to_string())
        }
    }

    /// Only these count as "available" (3.3).
    pub fn is_acceptable(&self) -> bool {
        matches!(
            self,
            PingReply::Pong | PingReply::Loading | PingReply::MasterDown
        )
    }
}

/// Role reported by an instance in INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportedRole {
    Master,
    Slave,
}

impl ReportedRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportedRole::Master => "master",
            ReportedRole::Slave => "slave",
        }
    }
}

/// Input to [`super::Core::handle`]. Time is passed separately as `now`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The periodic timer (the shell fires it every ~50-100 ms, jittered).
    Tick,
    /// All connections the link needs are up (command + pubsub for Redis).
    LinkUp {
        link: LinkRef,
    },
    /// A connection dropped or a connect attempt failed.
    LinkDown {
        link: LinkRef,
    },
    PingReply {
        link: LinkRef,
        reply: PingReply,
    },
    InfoReply {
        link: LinkRef,
        info: super::info::InfoReport,
    },
    /// A hello payload from any pubsub link or a peer's direct PUBLISH.
    /// The raw 8-field string is passed so the core can apply the exact
    /// acceptance rules of 2.3/2.4 (own-id substring filter, token count).
    HelloReceived {
        payload: String,
    },
    /// A peer runs `SENTINEL is-master-down-by-addr`. `runid` is `None` for `*`.
    /// `request` is an opaque id the shell uses to route the reply.
    IsMasterDownRequest {
        request: u64,
        ip: String,
        port: u16,
        epoch: u64,
        runid: Option<String>,
    },
    /// A well-formed 3-element reply from the peer at `link`. `leader` is
    /// `None` for `*`. Malformed replies must be dropped by the shell.
    IsMasterDownReply {
        link: LinkRef,
        down: bool,
        leader: Option<String>,
        leader_epoch: u64,
    },
    /// Reply to a SLAVEOF transaction. Sentinel never acts on it (the
    /// result is observed through INFO); accepted for symmetry and logging.
    SlaveOfReply {
        link: LinkRef,
        ok: bool,
    },
    /// The (old) master's reply to [`Action::SendFailoverTo`]: `Ok` when
    /// the handover started, else Redis's error text (unknown command on
    /// Redis before 6.2 or when renamed away, target not an online replica,
    /// a failover already under way, ...).
    FailoverToReply {
        link: LinkRef,
        result: Result<(), String>,
    },
    /// `SENTINEL FAILOVER <master>`; answered by [`Action::ManualFailoverReply`].
    ManualFailover {
        request: u64,
        master: String,
    },
    /// A data-plane session got `-READONLY`, `-LOADING` or `-MASTERDOWN`
    /// from what it took for `master`'s master: its instances may have
    /// changed roles, so look now instead of at the next INFO period.
    Recheck {
        master: String,
    },
}

/// Output of [`super::Core::handle`].
///
/// **Ordering contract**: the shell executes actions strictly in the order
/// returned. [`Action::Persist`] is a barrier: the shell must finish the
/// durable write (temp file, fsync, rename) before executing any later action
/// in the same batch, and if the write fails it must drop the rest of the
/// batch (and should stop voting, e.g. exit). This is what makes a vote reply
/// (`ReplyIsMasterDown`) or an epoch in a hello never get ahead of the disk.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open the link if not already connecting; answer with LinkUp/LinkDown.
    Connect {
        link: LinkRef,
    },
    /// Close the link (reset after a switch, or a stale link).
    Disconnect {
        link: LinkRef,
    },
    SendPing {
        link: LinkRef,
    },
    SendInfo {
        link: LinkRef,
    },
    /// `PUBLISH __sentinel__:hello <payload>` on the command link.
    PublishHello {
        link: LinkRef,
        payload: String,
    },
    /// `SENTINEL is-master-down-by-addr <ip> <port> <epoch> <runid>`; runid is `*` or our id.
    AskIsMasterDown {
        link: LinkRef,
        ip: String,
        port: u16,
        epoch: u64,
        runid: String,
    },
    /// Reply `*3 :<down> $<leader> :<leader_epoch>` to request `request`.
    ReplyIsMasterDown {
        request: u64,
        down: bool,
        leader: String,
        leader_epoch: u64,
    },
    /// Durably write this state before executing the following actions.
    Persist {
        state: PersistedState,
    },
    /// MULTI / SLAVEOF NO ONE / CONFIG REWRITE / CLIENT KILL x2 / EXEC.
    SendSlaveOfNoOne {
        link: LinkRef,
    },
    /// MULTI / SLAVEOF `master` / CONFIG REWRITE / CLIENT KILL x2 / EXEC.
    SendReconfigure {
        link: LinkRef,
        master: Addr,
    },
    /// `FAILOVER TO <target ip> <target port> TIMEOUT <timeout_ms>` on the
    /// master's command link (Redis 6.2+): the master pauses writes, waits
    /// until `target` has its whole replication stream, then makes it
    /// master and itself its replica. Answer with [`Event::FailoverToReply`].
    SendFailoverTo {
        link: LinkRef,
        target: Addr,
        timeout_ms: u64,
    },
    /// `CONFIG REWRITE`, reply ignored: persists a role that changed
    /// without our SLAVEOF transaction (which rewrites the config itself).
    SendConfigRewrite {
        link: LinkRef,
    },
    /// A Sentinel Pub/Sub event: channel `name`, message `text`.
    PublishEvent {
        name: String,
        text: String,
    },
    /// The seam: the address clients should use for `master`, and its epoch.
    RouteChanged {
        master: String,
        addr: Addr,
        config_epoch: u64,
    },
    ManualFailoverReply {
        request: u64,
        result: Result<(), FailoverRefused>,
    },
}

/// Why `SENTINEL FAILOVER` was refused; Display gives the exact wire error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverRefused {
    NoSuchMaster,
    InProgress,
    NoGoodSlave,
}

impl fmt::Display for FailoverRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailoverRefused::NoSuchMaster => "ERR No such master with that name",
            FailoverRefused::InProgress => "INPROG Failover already in progress",
            FailoverRefused::NoGoodSlave => "NOGOODSLAVE No suitable replica to promote",
        })
    }
}

/// Failover states, in order; `Ord` is used for "state >= reconf_slaves".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailoverState {
    None,
    WaitStart,
    SelectSlave,
    SendSlaveOfNoOne,
    WaitPromotion,
    ReconfSlaves,
    UpdateConfig,
}

impl FailoverState {
    /// Wire name as shown in `SENTINEL MASTER` `failover-state`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverState::None => "none",
            FailoverState::WaitStart => "wait_start",
            FailoverState::SelectSlave => "select_slave",
            FailoverState::SendSlaveOfNoOne => "send_slaveof_noone",
            FailoverState::WaitPromotion => "wait_promotion",
            FailoverState::ReconfSlaves => "reconf_slaves",
            FailoverState::UpdateConfig => "update_config",
        }
    }
}

/// Errors building a [`super::Core`] from configuration or persisted state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    BadMyId(String),
    BadMasterName(String),
    BadQuorum(String),
    DuplicateMaster(String),
    MyIdMismatch { config: String, persisted: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadMyId(id) => write!(f, "myid must be 40 hex characters, got {id:?}"),
            ConfigError::BadMasterName(n) => {
                write!(
                    f,
                    "master name {n:?} must be non-empty and contain no commas or spaces"
                )
            }
            ConfigError::BadQuorum(n) => write!(f, "master {n:?}: quorum must be 1 or greater"),
            ConfigError::DuplicateMaster(n) => write!(f, "duplicate master name {n:?}"),
            ConfigError::MyIdMismatch { config, persisted } => write!(
                f,
                "state file myid {persisted} differs from configured myid {config}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
