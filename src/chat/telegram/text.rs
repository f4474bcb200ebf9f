//! Pure pieces of the Telegram adapter: which messages are for us, and the inline buttons'
//! callback data (Telegram allows at most 64 bytes).

use crate::core::call::CallId;

/// Our slash commands (`/call@thisbot` included); any other command is another bot's.
const COMMANDS: &[&str] = &["call", "start", "help", "status", "calls", "cancel"];

/// What a chat message means to the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Where {
    /// A private chat: every message is for us.
    Private,
    /// A group or supergroup: only commands, mentions and replies to the bot.
    Group { reply_to_bot: bool },
}

/// The text to interpret if the message is addressed to the bot (`None`: ordinary chat).
/// A mention of the bot is removed from the text.
pub(super) fn addressed(place: Where, text: &str, username: &str) -> Option<String> {
    let text = text.trim();
    if let Some(command) = text.strip_prefix('/') {
        let word = command.split_whitespace().next().unwrap_or_default();
        let (name, bot) = match word.split_once('@') {
            Some((name, bot)) => (name, Some(bot)),
            None => (word, None),
        };
        if bot.is_some_and(|b| !b.eq_ignore_ascii_case(username)) {
            return None; // "/call@otherbot": not for us, wherever it is written
        }
        if COMMANDS.contains(&name.to_ascii_lowercase().as_str()) || place == Where::Private {
            return Some(text.to_owned());
        }
        return None;
    }
    match place {
        Where::Private => Some(text.to_owned()),
        Where::Group { reply_to_bot } => {
            let without = remove_mention(text, username);
            if without.len() != text.len() || reply_to_bot {
                Some(without)
            } else {
                None
            }
        }
    }
}

/// Removes every "@username" (case-insensitive, as a whole word) from `text`.
fn remove_mention(text: &str, username: &str) -> String {
    if username.is_empty() {
        return text.to_owned();
    }
    let mention = format!("@{}", username.to_ascii_lowercase());
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&mention) {
        let start = from + pos;
        let end = start + mention.len();
        let whole = lower[end..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if whole {
            out.push_str(&text[rest..start]);
            rest = end;
        }
        from = end;
    }
    out.push_str(&text[rest..]);
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches([',', ':'])
        .trim()
        .to_owned()
}

/// What an inline button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Button {
    /// Confirm the pending request with this nonce.
    Confirm(String),
    /// Drop the pending request with this nonce.
    Decline(String),
    /// Cancel (hang up) this call.
    Cancel(CallId),
}

impl Button {
    /// The callback_data (≤ 64 bytes: ids and nonces are at most 22 characters).
    pub(super) fn data(&self) -> String {
        match self {
            Self::Confirm(nonce) => format!("ok:{nonce}"),
            Self::Decline(nonce) => format!("no:{nonce}"),
            Self::Cancel(id) => format!("x:{id}"),
        }
    }

    pub(super) fn parse(data: &str) -> Option<Self> {
        let (kind, value) = data.split_once(':')?;
        let valid = !value.is_empty()
            && value.len() <= 60
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return None;
        }
        match kind {
            "ok" => Some(Self::Confirm(value.to_owned())),
            "no" => Some(Self::Decline(value.to_owned())),
            "x" => CallId::parse(value).map(Self::Cancel),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::dialogue::nonce;

    const BOT: &str = "callbot_test_bot";
    const GROUP: Where = Where::Group {
        reply_to_bot: false,
    };

    #[test]
    fn private_chats_hear_everything() {
        assert_eq!(
            addressed(Where::Private, " call +91 98765 43210 ", BOT).as_deref(),
            Some("call +91 98765 43210")
        );
        assert_eq!(
            addressed(Where::Private, "/cancel", BOT).as_deref(),
            Some("/cancel")
        );
    }

    #[test]
    fn groups_hear_only_commands_mentions_and_replies() {
        assert_eq!(addressed(GROUP, "call +91 98765 43210", BOT), None);
        assert_eq!(
            addressed(GROUP, "/call@otherbot +91 98765 43210", BOT),
            None
        );
        assert_eq!(addressed(GROUP, "/weather", BOT), None);
        assert_eq!(
            addressed(GROUP, "/call@CallBot_Test_Bot +91 98765 43210", BOT).as_deref(),
            Some("/call@CallBot_Test_Bot +91 98765 43210")
        );
        assert_eq!(addressed(GROUP, "/status", BOT).as_deref(), Some("/status"));
        assert_eq!(
            addressed(GROUP, "@callbot_test_bot, call +91 98765 43210", BOT).as_deref(),
            Some("call +91 98765 43210")
        );
        assert_eq!(
            addressed(GROUP, "please @CALLBOT_TEST_BOT call +91 98765 43210", BOT).as_deref(),
            Some("please call +91 98765 43210")
        );
        assert_eq!(
            addressed(GROUP, "ask @callbot_test_bot2 about it", BOT),
            None
        );
        assert_eq!(
            addressed(
                Where::Group { reply_to_bot: true },
                "call +91 98765 43210",
                BOT
            )
            .as_deref(),
            Some("call +91 98765 43210")
        );
    }

    #[test]
    fn button_data_round_trips_within_64_bytes() {
        let id = CallId::generate();
        for b in [
            Button::Confirm(nonce()),
            Button::Decline(nonce()),
            Button::Cancel(id),
        ] {
            let data = b.data();
            assert!(data.len() <= 64, "{data}");
            assert_eq!(Button::parse(&data), Some(b));
        }
        assert_eq!(Button::parse("x:../etc"), None);
        assert_eq!(Button::parse("zz:abc"), None);
        assert_eq!(Button::parse("ok:"), None);
        assert_ne!(nonce(), nonce());
    }
}
