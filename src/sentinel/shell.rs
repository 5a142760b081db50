//! The control plane's I/O shell: owns the core, the clock, the links, the
//! state file and the route senders, and carries out the core's actions in
//! order (a `Persist` is finished before anything after it happens).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::api::{self, ApiCall};
use super::core::{self, Action, Addr, Core, Event, LinkRef, MasterConfig, Timing};
use super::link::{self, Access, LinkContext, LinkEvent, LinkHandle, LinkRequest};
use super::replies;
use super::state_file::{self, StateFileError};
use crate::config::Config;
use crate::route::{RecheckReceiver, Route, RouteSender};

/// The reply to a peer or operator while the state file cannot be written.
static STATE_FILE_ERROR: Bytes =
    Bytes::from_static(b"-ERR sentinel-proxy cannot write its state file\r\n");

/// Events and calls waiting for the control plane, at most: a flood (hellos
/// any Redis client can PUBLISH, pipelined requests on the Sentinel port)
/// slows its sender down instead of growing memory.
const QUEUE: usize = 1024;

/// Least time between attempts to write a state file that failed, in ms.
const PERSIST_RETRY_MS: u64 = 100;

/// How often the core's timer runs. Sentinel runs at `hz` 10, so each step
/// of a failover (ODOWN, election, replica selection, SLAVEOF, the new
/// hello) waits up to 100 ms for the next tick; every period the protocol
/// defines is measured in time, not ticks, so a faster tick only makes the
/// voter react sooner (about 0.4 s off a failover).
const TICK: Duration = Duration::from_millis(10);
/// How often peers are asked whether the master is down while we see it
/// down (Sentinel: once a second), so agreement starts as soon as a quorum
/// sees the master down.
const ASK_PERIOD: Duration = Duration::from_millis(100);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("cannot create a myid: {0}")]
    MyId(std::io::Error),
    #[error("sentinel: {0}")]
    Core(#[from] core::ConfigError),
    #[error("sentinel.listen is {0}: set sentinel.announce_ip to the address peers should use")]
    NoAnnounceAddress(SocketAddr),
    #[error("cannot start the control plane thread: {0}")]
    Thread(std::io::Error),
}

/// Builds the core from the configuration and the state file, and starts
/// the control plane task and the Sentinel port.
pub fn start(
    config: &Config,
    listener: TcpListener,
    routes: HashMap<String, RouteSender>,
    rechecks: RecheckReceiver,
    shutdown: CancellationToken,
) -> Result<oneshot::Receiver<()>, StartError> {
    let path = config.sentinel.state_file.clone();
    let persisted = state_file::load(&path)?;
    let myid = match &persisted {
        Some(state) => state.myid.clone(),
        None => state_file::new_myid().map_err(StartError::MyId)?,
    };
    let listen = listener.local_addr().unwrap_or(config.sentinel.listen);
    let announce_ip = match &config.sentinel.announce_ip {
        Some(ip) => ip.clone(),
        None if listen.ip().is_unspecified() => return Err(StartError::NoAnnounceAddress(listen)),
        None => listen.ip().to_string(),
    };
    let core_config = core::Config {
        myid: myid.clone(),
        announce: Addr::new(
            announce_ip,
            config.sentinel.announce_port.unwrap_or(listen.port()),
        ),
        masters: config
            .services
            .iter()
            .map(|s| MasterConfig {
                name: s.name.clone(),
                addr: Addr::new(s.master.ip().to_string(), s.master.port()),
                quorum: s.quorum,
                down_after: millis(s.down_after.0),
                failover_timeout: millis(s.failover_timeout.0),
                parallel_syncs: s.parallel_syncs,
                known_replicas: Vec::new(),
                known_sentinels: Vec::new(),
            })
            .collect(),
        timing: Timing {
            ask_period: millis(ASK_PERIOD),
            ..Timing::default()
        },
        seed: u64::from_str_radix(myid.get(..16).unwrap_or("0"), 16).unwrap_or(0),
    };
    let core = match &persisted {
        Some(state) => Core::restore(core_config, state, 0)?,
        None => Core::new(core_config, 0)?,
    };
    // The data plane is already accepting, with config.toml's `master` on
    // the seam; after a restart the state file knows better (a failover may
    // have happened since). Publish it before anything else runs.
    for name in routes.keys() {
        if let Some(brief) = core.master_brief(name) {
            publish_route(&routes, name, brief.addr, brief.config_epoch);
        }
    }
    let quorums: HashMap<String, u32> = config
        .services
        .iter()
        .map(|s| (s.name.clone(), s.quorum))
        .collect();
    if persisted.is_none() {
        // Sentinel flushes its config as soon as it has generated its id.
        state_file::save(&path, &core.persisted_state(), &quorums).map_err(|source| {
            StateFileError::Io {
                path: path.clone(),
                source,
            }
        })?;
    }
    tracing::info!(myid = core.myid(), epoch = core.current_epoch(), sentinel = %listen, "sentinel control plane starting");
    let (events_tx, events) = mpsc::channel(QUEUE);
    let (calls_tx, calls) = mpsc::channel(QUEUE);
    let access = config
        .services
        .iter()
        .map(|s| {
            let auth = s.auth_pass.clone().map(|pass| (s.auth_user.clone(), pass));
            let access = Access {
                auth,
                connect_timeout: s.connect_timeout.0,
            };
            (s.name.clone(), access)
        })
        .collect();
    let mut shell = Shell {
        start: Instant::now(),
        links: HashMap::new(),
        link_context: Arc::new(LinkContext { myid, access }),
        events_tx,
        next_generation: 0,
        routes,
        state_path: path,
        quorums,
        masters: config.services.iter().map(|s| s.name.clone()).collect(),
        votes: HashMap::new(),
        persist_failed: false,
        last_persist_retry: 0,
        next_request: 0,
        core,
    };
    // Its own thread: a state-file fsync (votes, epochs) must never stall
    // client traffic, and client traffic must never delay a vote.
    let listener = listener.into_std().map_err(StartError::Thread)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Thread)?;
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        tokio::spawn(api::serve(listener, calls_tx, shutdown.clone()));
                        shell.run(events, calls, rechecks, shutdown).await;
                    }
                    Err(e) => tracing::error!(error = %e, "sentinel port unusable"),
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(StartError::Thread)?;
    Ok(done)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Shell {
    start: Instant,
    core: Core,
    links: HashMap<LinkRef, LinkHandle>,
    link_context: Arc<LinkContext>,
    events_tx: mpsc::Sender<LinkEvent>,
    next_generation: u64,
    routes: HashMap<String, RouteSender>,
    state_path: PathBuf,
    quorums: HashMap<String, u32>,
    /// Service (master) names in configuration order.
    masters: Vec<String>,
    /// Peers waiting for our is-master-down-by-addr answer, and operators
    /// waiting for SENTINEL FAILOVER's, by request id.
    votes: HashMap<u64, oneshot::Sender<Bytes>>,
    /// The last state-file write failed: no vote until one succeeds.
    persist_failed: bool,
    last_persist_retry: u64,
    next_request: u64,
}

impl Shell {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        mut calls: mpsc::Receiver<ApiCall>,
        mut rechecks: RecheckReceiver,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.handle(Event::Tick),
                Some(event) = events.recv() => self.on_link_event(event),
                Some(call) = calls.recv() => self.on_call(call),
                // A session saw its master refuse a command (`-READONLY`, ...).
                Some(master) = rechecks.recv() => self.handle(Event::Recheck { master }),
            }
        }
    }

    fn now(&self) -> u64 {
        millis(self.start.elapsed())
    }

    /// Events of a link task that was replaced or closed since are stale.
    fn on_link_event(&mut self, LinkEvent { generation, event }: LinkEvent) {
        let link = match &event {
            Event::LinkUp { link }
            | Event::LinkDown { link }
            | Event::PingReply { link, .. }
            | Event::InfoReply { link, .. }
            | Event::IsMasterDownReply { link, .. }
            | Event::SlaveOfReply { link, .. }
            | Event::FailoverToReply { link, .. } => Some(link),
            _ => None,
        };
        let current = link.is_none_or(|link| {
            self.links
                .get(link)
                .is_some_and(|h| h.generation == generation)
        });
        if current {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        let actions = self.core.handle(event, now);
        self.execute(actions);
    }

    /// Writes the current state again; on success every route is re-sent,
    /// since the route changes of the failed batch were dropped.
    fn retry_persist(&mut self) -> bool {
        let now = self.now();
        if now.saturating_sub(self.last_persist_retry) < PERSIST_RETRY_MS {
            return false;
        }
        self.last_persist_retry = now;
        if state_file::save(
            &self.state_path,
            &self.core.persisted_state(),
            &self.quorums,
        )
        .is_err()
        {
            return false;
        }
        tracing::info!(path = %self.state_path.display(), "state file written again: voting resumes");
        self.persist_failed = false;
        for name in &self.masters {
            if let Some(brief) = self.core.master_brief(name) {
                publish_route(&self.routes, name, brief.addr, brief.config_epoch);
            }
        }
        true
    }

    /// Drops the actions after a failed write, answering the peers and
    /// operators that wait for one of them with an error instead of silence.
    fn refuse(&mut self, dropped: impl Iterator<Item = Action>) {
        for action in dropped {
            let request = match action {
                Action::ReplyIsMasterDown { request, .. }
                | Action::ManualFailoverReply { request, .. } => request,
                _ => continue,
            };
            if let Some(reply) = self.votes.remove(&request) {
                let _ = reply.send(STATE_FILE_ERROR.clone());
            }
        }
    }

    fn on_call(&mut self, call: ApiCall) {
        match call {
            ApiCall::Hello(payload) => self.handle(Event::HelloReceived { payload }),
            ApiCall::IsMasterDown {
                ip,
                port,
                epoch,
                runid,
                reply,
            } => {
                if self.persist_failed && !self.retry_persist() {
                    let _ = reply.send(STATE_FILE_ERROR.clone());
                    return;
                }
                let request = self.next_request;
                self.next_request += 1;
                self.votes.insert(request, reply);
                self.handle(Event::IsMasterDownRequest {
                    request,
                    ip,
                    port,
                    epoch,
                    runid,
                });
            }
            ApiCall::Failover { master, reply } => {
                let request = self.next_request;
                self.next_request += 1;
                self.votes.insert(request, reply);
                self.handle(Event::ManualFailover { request, master });
            }
            ApiCall::Sentinel { args, reply } => {
                let now = self.now();
                let answer = replies::sentinel_command(&self.core, &self.masters, &args, now);
                let _ = reply.send(answer);
            }
        }
    }

    fn execute(&mut self, actions: Vec<Action>) {
        if self.persist_failed && !self.retry_persist() {
            // Memory may be ahead of the disk: nothing leaves this voter
            // (no vote, no hello, no route) until the state is written.
            self.refuse(actions.into_iter());
            return;
        }
        let mut actions = actions.into_iter();
        while let Some(action) = actions.next() {
            match action {
                Action::Persist { state } => {
                    if let Err(e) = state_file::save(&self.state_path, &state, &self.quorums) {
                        tracing::error!(path = %self.state_path.display(), error = %e, "cannot write the state file: not voting until it can be written");
                        self.persist_failed = true;
                        self.refuse(actions);
                        return;
                    }
                }
                Action::Connect { link } => {
                    let alive = self.links.get(&link).is_some_and(LinkHandle::is_alive);
                    if !alive {
                        self.next_generation += 1;
                        let handle = link::spawn(
                            link.clone(),
                            self.next_generation,
                            self.link_context.clone(),
                            self.events_tx.clone(),
                        );
                        self.links.insert(link, handle);
                    }
                }
                Action::Disconnect { link } => {
                    self.links.remove(&link);
                }
                Action::SendPing { link } => self.send(&link, LinkRequest::Ping),
                Action::SendInfo { link } => self.send(&link, LinkRequest::Info),
                Action::PublishHello { link, payload } => {
                    self.send(&link, LinkRequest::PublishHello(payload))
                }
                Action::AskIsMasterDown {
                    link,
                    ip,
                    port,
                    epoch,
                    runid,
                } => self.send(
                    &link,
                    LinkRequest::AskIsMasterDown {
                        ip,
                        port,
                        epoch,
                        runid,
                    },
                ),
                Action::SendSlaveOfNoOne { link } => self.send(&link, LinkRequest::SlaveOfNoOne),
                Action::SendReconfigure { link, master } => {
                    self.send(&link, LinkRequest::Reconfigure(master))
                }
                Action::SendFailoverTo {
                    link,
                    target,
                    timeout_ms,
                } => {
                    tokio::spawn(link::hurry_replica(
                        target.clone(),
                        self.link_context.clone(),
                        link.master.clone(),
                        timeout_ms,
                    ));
                    self.send(&link, LinkRequest::FailoverTo { target, timeout_ms });
                }
                Action::SendConfigRewrite { link } => self.send(&link, LinkRequest::ConfigRewrite),
                Action::ReplyIsMasterDown {
                    request,
                    down,
                    leader,
                    leader_epoch,
                } => {
                    if let Some(reply) = self.votes.remove(&request) {
                        let frame = BytesFrame::Array(vec![
                            BytesFrame::Integer(i64::from(down)),
                            api::bulk(&leader),
                            BytesFrame::Integer(i64::try_from(leader_epoch).unwrap_or(i64::MAX)),
                        ]);
                        let _ = reply.send(api::encode(&frame));
                    }
                }
                Action::ManualFailoverReply { request, result } => {
                    if let Some(reply) = self.votes.remove(&request) {
                        let _ = reply.send(match result {
                            Ok(()) => api::simple("OK"),
                            Err(refused) => crate::resp::reply::error(&refused.to_string()),
                        });
                    }
                }
                // A failover step that failed (an abort, a fallback) is
                // what an operator must notice; the rest is the normal story.
                Action::PublishEvent { name, text } if name.starts_with("-failover") => {
                    tracing::warn!(event = %name, "{text}")
                }
                Action::PublishEvent { name, text } => tracing::info!(event = %name, "{text}"),
                Action::RouteChanged {
                    master,
                    addr,
                    config_epoch,
                } => self.route(&master, &addr, config_epoch),
            }
        }
    }

    fn send(&self, link: &LinkRef, request: LinkRequest) {
        if let Some(handle) = self.links.get(link) {
            let _ = handle.requests.send(request);
        }
    }

    /// Publishes a verified master on the seam the data plane reads.
    fn route(&self, master: &str, addr: &Addr, config_epoch: u64) {
        publish_route(&self.routes, master, addr, config_epoch);
    }
}

/// Sets `master`'s route to `addr` (if it changed).
fn publish_route(
    routes: &HashMap<String, RouteSender>,
    master: &str,
    addr: &Addr,
    config_epoch: u64,
) {
    let Some(sender) = routes.get(master) else {
        return;
    };
    let Ok(ip) = addr.ip.parse::<std::net::IpAddr>() else {
        tracing::error!(service = master, addr = %addr, "cannot route to a hostname yet");
        return;
    };
    let route = Route {
        master: SocketAddr::new(ip, addr.port),
        config_epoch,
    };
    if *sender.borrow() != route {
        tracing::info!(service = master, master = %route.master, config_epoch, "route changed");
        sender.send_replace(route);
    }
}
