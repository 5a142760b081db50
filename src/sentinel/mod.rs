//! The control plane: Redis Sentinel's algorithm as a pure state machine
//! (`core`: events and `now` in, actions out) wrapped by a thin I/O shell
//! (`shell`: clock, links, state file, the Sentinel port in `api`).

pub mod api;
pub mod core;
pub mod link;
mod replies;
mod shell;
pub mod state_file;

pub use shell::{StartError, start};
