//! What must survive a restart (10.4): identity, epochs, our votes, the
//! current master address, and the replicas and peers we know.

use super::types::Addr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistedState {
    pub myid: String,
    pub current_epoch: u64,
    pub masters: Vec<PersistedMaster>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistedMaster {
    pub name: String,
    /// The current master address (the promoted one from `reconf_slaves` on).
    pub addr: Addr,
    pub config_epoch: u64,
    /// Our vote. Sentinel persists only `leader_epoch`; keeping the runid too
    /// lets a restarted voter report the same vote it gave.
    pub leader: Option<String>,
    pub leader_epoch: u64,
    pub known_replicas: Vec<Addr>,
    /// `(runid, addr)` of every peer seen.
    pub known_sentinels: Vec<(String, Addr)>,
}

impl Default for Addr {
    fn default() -> Self {
        Addr::new("", 0)
    }
}
