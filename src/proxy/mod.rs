//! The data plane: listeners, client sessions and their upstream connections,
//! and the threads sessions run on.

pub mod command;
pub mod command_table;
pub mod listener;
pub mod session;
pub mod state;
pub mod upstream;
pub mod workers;
