//! Recognising the commands whose effect the session must track.
//!
//! Only the command name is looked at for most requests; arguments are read
//! only for the handful of state-changing commands.

/// Which subscription namespace a Pub/Sub command works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubKind {
    Channel,
    Pattern,
    Shard,
}

/// The commands the session treats specially; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Auth,
    Hello,
    Select,
    Client,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Reset,
    Subscribe(SubKind),
    Unsubscribe(SubKind),
    Monitor,
    /// Redis answers, then closes the connection.
    Quit,
    /// Blocks until data arrives or its timeout passes (BLPOP, WAIT, ...).
    Blocking,
    /// Blocks only when it carries a `BLOCK` option (XREAD, XREADGROUP).
    MaybeBlocking,
    Other,
}

impl Command {
    /// Classifies a command by name, case-insensitively.
    #[inline]
    pub fn from_name(name: &[u8]) -> Command {
        // The names below are 4 to 12 bytes long: GET, SET, DEL... are
        // rejected here, inline, before any comparison.
        if !(4..=12).contains(&name.len()) {
            return Command::Other;
        }
        Command::from_long_name(name)
    }

    #[inline(never)]
    fn from_long_name(name: &[u8]) -> Command {
        let mut lower = [0u8; 16];
        let Some(dst) = lower.get_mut(..name.len()) else {
            return Command::Other;
        };
        dst.copy_from_slice(name);
        dst.make_ascii_lowercase();
        match &*dst {
            b"auth" => Command::Auth,
            b"hello" => Command::Hello,
            b"select" => Command::Select,
            b"client" => Command::Client,
            b"multi" => Command::Multi,
            b"exec" => Command::Exec,
            b"discard" => Command::Discard,
            b"watch" => Command::Watch,
            b"unwatch" => Command::Unwatch,
            b"reset" => Command::Reset,
            b"subscribe" => Command::Subscribe(SubKind::Channel),
            b"psubscribe" => Command::Subscribe(SubKind::Pattern),
            b"ssubscribe" => Command::Subscribe(SubKind::Shard),
            b"unsubscribe" => Command::Unsubscribe(SubKind::Channel),
            b"punsubscribe" => Command::Unsubscribe(SubKind::Pattern),
            b"sunsubscribe" => Command::Unsubscribe(SubKind::Shard),
            b"monitor" => Command::Monitor,
            b"quit" => Command::Quit,
            b"blpop" | b"brpop" | b"brpoplpush" | b"blmove" | b"blmpop" | b"bzpopmin"
            | b"bzpopmax" | b"bzmpop" | b"wait" | b"waitaof" => Command::Blocking,
            b"xread" | b"xreadgroup" => Command::MaybeBlocking,
            _ => Command::Other,
        }
    }
}

/// Whether a reply head names a Pub/Sub confirmation (subscribe, unsubscribe, ...).
pub fn is_subscription_reply(head: &[u8]) -> bool {
    matches!(
        head,
        b"subscribe"
            | b"unsubscribe"
            | b"psubscribe"
            | b"punsubscribe"
            | b"ssubscribe"
            | b"sunsubscribe"
    )
}

/// Whether a reply head names a published message rather than a reply.
pub fn is_message(head: &[u8]) -> bool {
    matches!(head, b"message" | b"pmessage" | b"smessage")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Command::from_name(b"SeLeCt"), Command::Select);
        assert_eq!(
            Command::from_name(b"PSUBSCRIBE"),
            Command::Subscribe(SubKind::Pattern)
        );
        assert_eq!(Command::from_name(b"blpop"), Command::Blocking);
        assert_eq!(Command::from_name(b"get"), Command::Other);
        assert_eq!(
            Command::from_name(b"averyveryverylongcommandname"),
            Command::Other
        );
    }
}
