//! Static configuration of a voter and its monitored masters.

use super::types::Addr;

/// Sentinel's process-wide timing constants (3.1). Defaults are Redis's;
/// tests may shrink them like `SENTINEL DEBUG` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub info_period: u64,
    pub ping_period: u64,
    pub ask_period: u64,
    pub publish_period: u64,
    pub tilt_trigger: u64,
    pub tilt_period: u64,
    pub slave_reconf_timeout: u64,
    pub min_link_reconnect_period: u64,
    pub election_timeout: u64,
    /// Least time between two re-checks of one master asked for by the
    /// data plane ([`super::Event::Recheck`]): every session that hits a
    /// demoted master asks, and one round of INFO answers them all.
    pub recheck_period: u64,
    /// INFO period of the replica we are promoting, while we wait for it
    /// to report `role:master` (`wait_promotion`). Deviation: Sentinel polls
    /// it every second like any replica during a failover; seeing the
    /// promotion is what moves every route (ours at once, the peers' with
    /// the hello that follows), and this costs one INFO per period to one
    /// replica for the short time a promotion takes. Like every INFO
    /// period it is measured from the last reply, so 15 ms on the shell's
    /// 10 ms timer means one INFO every 20 ms.
    pub promotion_info_period: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            info_period: 10_000,
            ping_period: 1_000,
            ask_period: 1_000,
            publish_period: 2_000,
            tilt_trigger: 2_000,
            tilt_period: 30_000,
            slave_reconf_timeout: 10_000,
            min_link_reconnect_period: 15_000,
            election_timeout: 10_000,
            recheck_period: 100,
            promotion_info_period: 15,
        }
    }
}

/// One `[[service]]`: a monitored master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterConfig {
    pub name: String,
    pub addr: Addr,
    pub quorum: u32,
    pub down_after: u64,
    pub failover_timeout: u64,
    pub parallel_syncs: u32,
    /// Pre-seeded replicas (`known-replica`).
    pub known_replicas: Vec<Addr>,
    /// Pre-seeded peers `(runid, addr)` (`known-sentinel`).
    pub known_sentinels: Vec<(String, Addr)>,
}

impl MasterConfig {
    /// Sentinel's defaults for everything but name, address and quorum.
    pub fn new(name: impl Into<String>, addr: Addr, quorum: u32) -> Self {
        MasterConfig {
            name: name.into(),
            addr,
            quorum,
            down_after: 30_000,
            failover_timeout: 180_000,
            parallel_syncs: 1,
            known_replicas: Vec::new(),
            known_sentinels: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// 40 hex chars, stable across restarts.
    pub myid: String,
    /// The address peers reach us at (announce-ip/port, or the listen address).
    pub announce: Addr,
    pub masters: Vec<MasterConfig>,
    pub timing: Timing,
    /// Seed for the failover-start jitter.
    pub seed: u64,
}
