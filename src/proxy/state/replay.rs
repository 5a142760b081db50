//! Moving a connection's state to a new upstream (failover).
//!
//! When the upstream connection is lost, the session asks which requests
//! were unanswered ([`SessionState::unanswered`]), decides whether it can
//! re-send them, and then builds a handshake for the next upstream
//! ([`SessionState::handshake`]): the commands that give the new connection
//! this one's state (AUTH or HELLO, CLIENT SETNAME, SELECT, subscriptions,
//! MONITOR, an open MULTI) and a `ROLE` check. Their replies are the
//! proxy's, never the client's. What cannot be carried over is turned, from
//! the moment the old connection is lost ([`SessionState::upstream_lost`]),
//! into the failure Redis itself would report: a transaction that was open
//! fails with `EXECABORT` at its `EXEC`, and a `WATCH` makes the next `EXEC`
//! return a null reply ([`Doom`]).

use bytes::{Bytes, BytesMut};

use super::{DISCARD, Effect, Pending, Purpose, ReplyMode, SessionState, of_kind};
use crate::proxy::command::SubKind;
use crate::resp::request::encode_command;

/// How a transaction broken by a failover ends at its `EXEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Doom {
    /// A transaction was open: its queued commands are gone.
    Abort,
    /// Keys were WATCHed on the old master: the new one cannot tell
    /// whether they changed.
    Null,
}

impl Doom {
    /// The reply the client gets for its `EXEC`.
    pub(super) fn reply(self, protocol: u8) -> Bytes {
        match self {
            Doom::Abort => Bytes::from_static(
                b"-EXECABORT Transaction discarded because the master failed over while it was open.\r\n",
            ),
            Doom::Null if protocol == 3 => Bytes::from_static(b"_\r\n"),
            Doom::Null => Bytes::from_static(b"*-1\r\n"),
        }
    }
}

/// An unanswered request, as failover sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unanswered {
    /// Its bytes (with those of unanswered requests sent right after it).
    pub len: usize,
    /// Sent by the proxy (handshake): never re-sent as such.
    pub internal: bool,
    /// Re-running it cannot be judged from the command alone: a blocking
    /// command, an EXEC, one whose replies already began, or queued in a
    /// transaction (never run, so always safe).
    pub kind: Rerun,
}

/// What the state alone says about re-running a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// Queued inside MULTI: it did not run.
    Queued,
    /// A blocking command (BLPOP, XREAD BLOCK, WAIT): on a dead master the
    /// contract closes the connection. A replica refuses the writes among
    /// them, answers WAIT with an error, and keeps a blocking read waiting.
    Blocking,
    /// An EXEC: it may have run the transaction.
    Exec,
    /// It cannot be re-run: replies already reached the client.
    Never,
    /// Ask the server's command table.
    ByCommand,
}

/// Why a connection's state cannot be moved to another master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unmovable {
    #[error("client-side caching (CLIENT TRACKING) would miss invalidations")]
    Tracking,
    #[error("replies are switched off (CLIENT REPLY), so nothing can tell what ran")]
    RepliesOff,
    #[error("an EXEC of a transaction or WATCH lost with the old master is already waiting")]
    ExecWaiting,
}

impl SessionState {
    /// The unanswered requests, oldest first.
    pub fn unanswered(&self) -> impl Iterator<Item = Unanswered> + '_ {
        self.pending.iter().map(|p| Unanswered {
            len: p.len,
            internal: matches!(p.purpose(), Purpose::Replay | Purpose::RoleCheck),
            kind: if p.partly_answered || *p.effect() == Effect::Confirmations {
                Rerun::Never
            } else if *p.effect() == Effect::Exec {
                Rerun::Exec
            } else if p.blocking {
                Rerun::Blocking
            } else if p.queued {
                Rerun::Queued
            } else {
                Rerun::ByCommand
            },
        })
    }

    /// The upstream connection is gone: forgets the proxy's own requests
    /// (the next handshake redoes them) and keeps the client's, which the
    /// session re-sends. A transaction or WATCH open on it is lost: the
    /// client's next EXEC will fail as Redis would report it, unless that
    /// EXEC is already among the kept requests (too late to turn it into an
    /// abort: the connection cannot move).
    pub fn upstream_lost(&mut self) -> Result<(), Unmovable> {
        self.pending
            .retain(|p| !matches!(p.purpose(), Purpose::Replay | Purpose::RoleCheck));
        let doom = if self.in_multi {
            Doom::Abort
        } else if self.watching {
            Doom::Null
        } else {
            return Ok(());
        };
        if self.pending.iter().any(|p| *p.effect() == Effect::Exec) {
            return Err(Unmovable::ExecWaiting);
        }
        // An EXEC already turned into a DISCARD ends the transaction:
        // nothing is left for a later EXEC to fail.
        if self
            .pending
            .iter()
            .any(|p| matches!(p.purpose(), Purpose::Replace(_)))
        {
            return Ok(());
        }
        if self.doom != Some(Doom::Abort) {
            self.doom = Some(doom);
        }
        Ok(())
    }

    /// Whether the oldest unanswered request is the client's own and not
    /// yet partly answered: one that can be sent again if its server
    /// refused it (`-READONLY`, ...). Queued in a transaction too: the
    /// session then moves, and the transaction ends as a failover's does.
    pub fn oldest_is_resendable(&self) -> bool {
        self.pending.front().is_some_and(|p| {
            *p.purpose() == Purpose::Client
                && !p.partly_answered
                && *p.effect() != Effect::Confirmations
        })
    }

    /// The oldest request was refused (`-READONLY`, `-LOADING`, ...). If
    /// it was queued in a transaction, Redis aborts that transaction at its
    /// EXEC; if it was the EXEC, that did not run either. Either way the
    /// EXEC, still unanswered, ran nothing: it is to be re-sent as a
    /// `DISCARD` and answered as a transaction lost with the old master
    /// (see [`Doom`]). Returns the bytes to send instead, or `None`
    /// (changing nothing) when the refused request is not in the EXEC's
    /// transaction: whatever else ran on the refusing server is unknown.
    pub fn discard_refused_exec(&mut self) -> Option<&'static [u8]> {
        let mut requests = self
            .pending
            .iter_mut()
            .filter(|p| !matches!(p.purpose(), Purpose::Replay | Purpose::RoleCheck));
        let refused = requests.next()?;
        let exec = if *refused.effect() == Effect::Exec {
            refused
        } else if refused.queued {
            // Where its transaction ends.
            let end = requests.find(|p| {
                matches!(
                    p.effect(),
                    Effect::Exec | Effect::Discard | Effect::Multi | Effect::Reset
                )
            })?;
            if *end.effect() != Effect::Exec {
                return None;
            }
            end
        } else {
            return None;
        };
        *exec = Pending::new(
            exec.replies,
            Effect::Discard,
            Purpose::Replace(Doom::Abort.reply(self.protocol)),
            DISCARD.len(),
        );
        Some(DISCARD)
    }

    /// The commands that give a new upstream connection this one's state,
    /// and a `ROLE` check, placed before every unanswered request. Returns
    /// their bytes, to be sent before anything else.
    pub fn handshake(&mut self) -> Result<BytesMut, Unmovable> {
        if self.tracking.is_some() {
            return Err(Unmovable::Tracking);
        }
        if self.reply_mode != ReplyMode::On {
            return Err(Unmovable::RepliesOff);
        }
        let mut steps: Vec<(Vec<Bytes>, usize, Effect, Purpose)> = Vec::new();
        let replay = |args: Vec<Bytes>| (args, 1, Effect::None, Purpose::Replay);
        let auth_args = self.auth.as_ref().map(|c| {
            let user = c.user.clone();
            (user, c.pass.clone())
        });
        if self.protocol == 3 {
            let mut args = vec![word("HELLO"), word("3")];
            if let Some((user, pass)) = auth_args {
                args.extend([word("AUTH"), user.unwrap_or_else(|| word("default")), pass]);
            }
            steps.push(replay(args));
        } else if let Some((user, pass)) = auth_args {
            let mut args = vec![word("AUTH")];
            args.extend(user);
            args.push(pass);
            steps.push(replay(args));
        }
        // After AUTH, so that a password-protected server answers it.
        steps.push((vec![word("ROLE")], 1, Effect::None, Purpose::RoleCheck));
        if let Some(name) = &self.name {
            steps.push(replay(vec![word("CLIENT"), word("SETNAME"), name.clone()]));
        }
        if self.db != 0 {
            steps.push(replay(vec![
                word("SELECT"),
                Bytes::from(self.db.to_string()),
            ]));
        }
        for (kind, command) in [
            (SubKind::Channel, "SUBSCRIBE"),
            (SubKind::Pattern, "PSUBSCRIBE"),
            (SubKind::Shard, "SSUBSCRIBE"),
        ] {
            let set = of_kind(&self.subscriptions, kind);
            if set.is_empty() {
                continue;
            }
            let channels: Vec<Bytes> = set.iter().cloned().collect();
            let mut args = vec![word(command)];
            args.extend(channels.iter().cloned());
            // The effect marks the replies as confirmations (RESP3 pushes).
            let effect = Effect::Subscribe(kind, channels);
            steps.push((args, set.len(), effect, Purpose::Replay));
        }
        if self.monitor {
            steps.push(replay(vec![word("MONITOR")]));
        }
        if self.in_multi {
            // Later commands must be queued, not run (EXEC fails: see
            // `upstream_lost`).
            steps.push(replay(vec![word("MULTI")]));
        }
        let frames: Vec<BytesMut> = steps
            .iter()
            .map(|(args, ..)| encode_command(args))
            .collect();
        let mut bytes = BytesMut::new();
        for frame in &frames {
            bytes.extend_from_slice(frame);
        }
        for ((_, replies, effect, purpose), frame) in steps.into_iter().zip(frames).rev() {
            self.pending
                .push_front(Pending::new(replies, effect, purpose, frame.len()));
        }
        Ok(bytes)
    }
}

fn word(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}
