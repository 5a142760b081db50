//! Re-checks asked for by the data plane (not in Sentinel).
//!
//! A session that gets `-READONLY`, `-LOADING` or `-MASTERDOWN` from the
//! instance it took for the master has first-hand news that roles changed
//! (a promotion or a demotion). Sentinel would only learn it at the next
//! INFO poll, up to `info_period` (10 s) later; here the session's report
//! sends INFO at once to the master and every known replica, so the leader
//! confirms a promotion, and every voter sees a demotion, without waiting.

use super::types::{Action, InstanceKind};
use super::{Core, elapsed};

impl Core {
    /// [`super::Event::Recheck`]: INFO now to `name`'s master and replicas,
    /// at most once per `recheck_period` per master, however many sessions ask.
    pub(super) fn recheck(&mut self, name: &str, now: u64, out: &mut Vec<Action>) {
        let period = self.g.timing.recheck_period;
        let Some(m) = self.masters.iter_mut().find(|m| m.name == name) else {
            return;
        };
        if m.last_recheck.is_some_and(|at| elapsed(now, at) < period) {
            return;
        }
        m.last_recheck = Some(now);
        let targets = std::iter::once((&mut m.c, InstanceKind::Master)).chain(
            m.replicas
                .iter_mut()
                .map(|r| (&mut r.c, InstanceKind::Replica)),
        );
        for (c, kind) in targets {
            // A link that is down has nothing to ask; its reconnection
            // already polls INFO as soon as it is up.
            if c.link.connected {
                // Counts as the periodic INFO, so the next one is not sent
                // on top of this while it is in flight.
                c.last_info_sent = Some(now);
                out.push(Action::SendInfo {
                    link: c.link(&m.name, kind),
                });
            }
        }
    }
}
