//! The seam between the planes: per service, the verified master.
//!
//! The control plane is the only writer; sessions only read. A session reads
//! the route when it connects upstream.

use std::net::SocketAddr;

use tokio::sync::watch;

/// Where a service's clients are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub master: SocketAddr,
    /// The Sentinel config epoch that made this master (0 = from config).
    pub config_epoch: u64,
}

pub type RouteSender = watch::Sender<Route>;
pub type RouteReceiver = watch::Receiver<Route>;

/// A new route channel starting at `initial`.
pub fn channel(initial: Route) -> (RouteSender, RouteReceiver) {
    watch::channel(initial)
}
