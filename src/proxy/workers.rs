//! The threads that run client sessions: one single-threaded runtime per
//! thread, each with its own epoll and timers (thread-per-core, as HAProxy
//! and nginx do). A session lives on one thread from accept to close, so its
//! wake-ups never cross threads; tokio's work-stealing runtime measured more
//! CPU per request here for that reason.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Session threads: the caller's runtime plus `count - 1` threads of their own.
pub struct Workers {
    /// The runtimes of the threads started here (the caller's is not listed:
    /// sessions dealt to it are spawned where the accept loop runs).
    others: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

/// Logged when a connection cannot change threads (it is then closed).
const MOVE_FAILED: &str = "cannot move a client connection to its session thread";

impl Workers {
    /// Starts `count - 1` session threads (`count` 0 means one per CPU).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut workers = Workers {
            others: Vec::with_capacity(count - 1),
            next: AtomicUsize::new(0),
            stop: stop.clone(),
            threads: Vec::with_capacity(count - 1),
        };
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.others.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sessions-{index}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Runs `serve(client)` on the next thread in turn, tracked by `tasks`.
    pub fn spawn<F, Fut>(&self, tasks: &TaskTracker, client: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % (self.others.len() + 1);
        let Some(runtime) = turn.checked_sub(1).and_then(|i| self.others.get(i)) else {
            tasks.spawn(serve(client));
            return;
        };
        // The socket is registered with this thread's epoll; it moves to the
        // other thread's, where every later wake-up happens.
        let client = match client.into_std() {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "{MOVE_FAILED}");
                return;
            }
        };
        tasks.spawn_on(
            async move {
                match TcpStream::from_std(client) {
                    Ok(client) => serve(client).await,
                    Err(e) => tracing::warn!(error = %e, "{MOVE_FAILED}"),
                }
            },
            runtime,
        );
    }
}

impl Drop for Workers {
    /// Stops the session threads; sessions still running on them are dropped
    /// (their connections closed), as on the caller's runtime when it ends.
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
