//! The seam between the planes: per service, the verified master.
//!
//! The control plane is the only writer; sessions only read. A session reads
//! the route when it connects upstream. The only message the other way is a
//! [`Recheck`]: a session that got `-READONLY`, `-LOADING` or `-MASTERDOWN`
//! asks the control plane to look at the service's instances again now.

use std::net::SocketAddr;

use tokio::sync::{mpsc, watch};

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

/// Requests for a re-check, by service name, as the control plane receives them.
pub type RecheckReceiver = mpsc::Receiver<String>;

/// Rechecks waiting for the control plane at most; more are dropped, since
/// one pending re-check of a service answers them all.
const RECHECK_QUEUE: usize = 64;

/// A session's handle for asking the control plane to re-check its service.
#[derive(Clone, Debug)]
pub struct Recheck {
    service: String,
    /// `None` when no control plane runs (an observer).
    tx: Option<mpsc::Sender<String>>,
}

impl Recheck {
    /// A handle that asks nobody (no control plane).
    pub fn none(service: &str) -> Recheck {
        Recheck {
            service: service.to_owned(),
            tx: None,
        }
    }

    /// Asks for a re-check without waiting; a full queue already has one.
    pub fn request(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(self.service.clone());
        }
    }
}

/// The channel sessions use to ask for re-checks: one handle per service
/// from `handle`, and the receiver for the control plane.
pub fn recheck_channel() -> (RecheckHandles, RecheckReceiver) {
    let (tx, rx) = mpsc::channel(RECHECK_QUEUE);
    (RecheckHandles { tx }, rx)
}

/// Makes [`Recheck`] handles for services.
pub struct RecheckHandles {
    tx: mpsc::Sender<String>,
}

impl RecheckHandles {
    pub fn handle(&self, service: &str) -> Recheck {
        Recheck {
            service: service.to_owned(),
            tx: Some(self.tx.clone()),
        }
    }
}
