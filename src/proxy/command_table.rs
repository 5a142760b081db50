//! Placeholder until the COMMAND-based table lands: nothing is known, so
//! every request that may have run counts as unsafe to re-run.

use std::sync::{Arc, RwLock};

/// What re-running a request that may already have run would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    Harmless,
    Write,
    Unsafe,
}

pub struct CommandTable;

impl CommandTable {
    pub fn rerun(&self, _request: &[u8]) -> Rerun {
        Rerun::Unsafe
    }
}

/// The table a service shares among its sessions; empty until first loaded.
#[derive(Default, Debug)]
pub struct SharedTable(RwLock<Option<Arc<CommandTable>>>);

impl std::fmt::Debug for CommandTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandTable")
    }
}

impl SharedTable {
    pub fn get(&self) -> Option<Arc<CommandTable>> {
        self.0.read().ok().and_then(|t| t.clone())
    }
}
