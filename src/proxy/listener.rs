//! The accept loop of one service: admission control and session spawning.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::{self, ServiceContext};
use super::workers::Workers;

/// Redis's own reply when `maxclients` is reached.
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";
/// Pause after a failed accept (for example out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts clients until `shutdown`, each served by its own task in `tasks`
/// on one of the `workers` threads.
pub async fn serve(
    listener: TcpListener,
    service: Arc<ServiceContext>,
    max_clients: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    workers: Arc<Workers>,
) {
    let slots = Arc::new(Semaphore::new(max_clients));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let service = service.clone();
                    let shutdown = shutdown.clone();
                    workers.spawn(&tasks, client, move |client| async move {
                        session::run(client, service, shutdown).await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    tracing::warn!(service = %service.name, max_clients, "max number of clients reached");
                    tasks.spawn(session::reject(client, MAX_CLIENTS_REPLY));
                }
            },
            Err(e) => {
                tracing::warn!(service = %service.name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
