//! sentinel-proxy: a Redis high-availability sidecar.
//!
//! Clients connect to a service's listener as if it were Redis; the data
//! plane ([`proxy`]) forwards their RESP traffic to the master the seam
//! ([`route`]) names. See `DESIGN.md` for the planes and the failover contract.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod config;
pub mod proxy;
pub mod resp;
pub mod route;
pub mod sentinel;
#[cfg(test)]
mod test_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Config, Role};
use proxy::session::ServiceContext;
use proxy::workers::Workers;
use resp::Limits;
use route::{Recheck, Route};

/// The sockets a configuration needs, bound before [`run`] so that callers
/// (tests especially) can bind port 0 and learn the address.
pub struct Listeners {
    /// One per `[[service]]`, in configuration order.
    pub services: Vec<TcpListener>,
    /// The Sentinel port, for voters.
    pub sentinel: Option<TcpListener>,
}

/// Why the proxy could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sentinel(#[from] sentinel::StartError),
    #[error("cannot start the session threads ([proxy] worker_threads): {0}")]
    Workers(std::io::Error),
}

/// Pending connections the kernel queues per listener, like Redis's default
/// `tcp-backlog`: after a failover every client reconnects at once, and a
/// short queue makes the kernel drop SYNs that clients retry only after 1 s.
const BACKLOG: u32 = 511;

impl Listeners {
    /// Binds every service's `listen` address, and the Sentinel port for voters.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let mut services = Vec::with_capacity(config.services.len());
        for service in &config.services {
            let what = format!("service \"{}\"", service.name);
            services.push(bind_listener(service.listen, &what)?);
        }
        let sentinel = match config.sentinel.role {
            Role::Voter => Some(bind_listener(config.sentinel.listen, "sentinel port")?),
            Role::Observer => None,
        };
        Ok(Listeners { services, sentinel })
    }
}

fn bind_listener(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    bind()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what}: cannot listen on {addr}: {e}")))
}

/// Serves every service until `shutdown` is cancelled, then lets sessions
/// finish for up to the configured drain timeout. Voters also run the
/// Sentinel control plane, which moves each service's route on failover.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let tasks = TaskTracker::new();
    let workers = Arc::new(Workers::start(config.proxy.worker_threads).map_err(RunError::Workers)?);
    let mut senders = HashMap::new();
    let mut receivers = Vec::new();
    for service in &config.services {
        let (route_tx, route_rx) = route::channel(Route {
            master: service.master,
            config_epoch: 0,
        });
        senders.insert(service.name.clone(), route_tx);
        receivers.push(route_rx);
    }
    let (rechecks, recheck_rx) = route::recheck_channel();
    // The control plane starts first: after a restart its state file may
    // know a newer master than config.toml, and no session may see the old one.
    let control_plane = match listeners.sentinel {
        Some(listener) => Some(sentinel::start(
            &config,
            listener,
            senders,
            recheck_rx,
            shutdown.clone(),
        )?),
        // Observers keep the configured route (following voters is to come);
        // a route receiver keeps its last value after its sender is gone.
        None => None,
    };
    for ((service, listener), route) in config
        .services
        .iter()
        .zip(listeners.services)
        .zip(receivers)
    {
        let context = Arc::new(ServiceContext {
            name: service.name.clone(),
            route,
            limits: Limits {
                max_bulk_len: service.proto_max_bulk_len.0,
                ..Limits::default()
            },
            connect_timeout: service.connect_timeout.0,
            keepalive: service.tcp_keepalive.non_zero(),
            idle_timeout: service.client_idle_timeout.non_zero(),
            hold_timeout: service.hold_timeout.0,
            recheck: match control_plane {
                Some(_) => rechecks.handle(&service.name),
                None => Recheck::none(&service.name),
            },
            commands: Default::default(),
        });
        // Which commands may be re-sent after a failover, from the master itself.
        tokio::spawn(proxy::command_table::keep_loaded(
            context.commands.clone(),
            context.route.clone(),
            service
                .auth_pass
                .clone()
                .map(|pass| (service.auth_user.clone(), pass)),
            service.connect_timeout.0,
            shutdown.clone(),
        ));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(service = %service.name, listen = %addr, master = %context.route.borrow().master, "serving");
        }
        tokio::spawn(proxy::listener::serve(
            listener,
            context,
            service.max_clients,
            shutdown.clone(),
            tasks.clone(),
            workers.clone(),
        ));
    }
    shutdown.cancelled().await;
    tasks.close();
    let drain = config.proxy.drain_timeout.0;
    tracing::info!(
        sessions = tasks.len(),
        ?drain,
        "shutting down: draining sessions"
    );
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!(
            sessions = tasks.len(),
            "drain timeout: closing remaining sessions"
        );
    }
    if let Some(control_plane) = control_plane {
        let _ = control_plane.await;
    }
    Ok(())
}
