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
    /// `runtimes[0]` is the runtime `start` was called on.
    runtimes: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count - 1` session threads (`count` 0 means one per CPU).
    /// Must be called from within a tokio runtime, which serves as the first.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut workers = Workers {
            runtimes: vec![Handle::current()],
            next: AtomicUsize::new(0),
            stop: stop.clone(),
            threads: Vec::with_capacity(count - 1),
        };
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.runtimes.push(runtime.handle().clone());
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
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        let Some(runtime) = self.runtimes.get(index).filter(|_| index > 0) else {
            tasks.spawn(serve(client));
            return;
        };
        // The socket is registered with this thread's epoll; it moves to the
        // other thread's, where every later wake-up happens.
        match client.into_std() {
            Ok(client) => {
                tasks.spawn_on(
                    async move {
                        match TcpStream::from_std(client) {
                            Ok(client) => serve(client).await,
                            Err(e) => tracing::warn!(error = %e, "cannot move a client connection to its session thread"),
                        }
                    },
                    runtime,
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot move a client connection to its session thread")
            }
        }
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
