//! What Slack sends us, reduced to the fields callbot uses: slash commands (form bodies),
//! Events API envelopes (JSON) and interaction payloads (a form field `payload` holding JSON).
//!
//! Our own small models rather than slack-morphism's full ones: they parse whatever Slack
//! adds, and Socket Mode's typed events are turned into these by re-serializing them, so both
//! transports share one set of handlers.

use serde::Deserialize;

/// A slash command, as posted to the command's Request URL.
#[derive(Debug, Clone, Deserialize)]
pub struct SlashCommand {
    pub team_id: String,
    pub channel_id: String,
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub response_url: Option<String>,
    /// The person's own team when it is not the one the command came through (Slack Connect).
    #[serde(default)]
    pub user_team: Option<String>,
}

/// The Events API envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Envelope {
    UrlVerification {
        challenge: String,
    },
    EventCallback(Box<EventCallback>),
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventCallback {
    pub team_id: String,
    pub event_id: String,
    pub event: Event,
    /// The installation the event is for; its `user_id` is our bot user.
    #[serde(default)]
    pub authorizations: Vec<Authorization>,
}

impl EventCallback {
    /// Our bot's user id in this workspace, if Slack said.
    pub fn bot_user(&self) -> Option<&str> {
        self.authorizations
            .iter()
            .find(|a| a.is_bot.unwrap_or(true))
            .and_then(|a| a.user_id.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Authorization {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub is_bot: Option<bool>,
}

/// `app_mention` and `message` events share these fields.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
    /// Present on edited messages.
    #[serde(default)]
    pub edited: Option<serde_json::Value>,
    /// The writer's own team (Slack Connect: differs from the envelope's `team_id` for a
    /// member of another workspace in a shared channel).
    #[serde(default)]
    pub user_team: Option<String>,
}

/// An interaction payload (the `payload` form field).
#[derive(Debug, Clone, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: InteractionUser,
    #[serde(default)]
    pub team: Option<IdOnly>,
    #[serde(default)]
    pub channel: Option<IdOnly>,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InteractionUser {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    /// The clicker's own team.
    #[serde(default)]
    pub team_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    pub action_id: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// What an event asks of us, after the loop and edit filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    pub user: String,
    pub channel: String,
    /// The triggering message's ts.
    pub ts: String,
    /// Where to reply: the message's thread, or a new thread under it.
    pub thread_ts: String,
    /// The text without the bot mention.
    pub text: String,
}

impl EventCallback {
    /// `app_mention` anywhere and `message` in a DM with the bot, written by a person;
    /// `None` for bots (ourselves included), edits, deletions and everything else.
    pub fn said(&self) -> Option<Said> {
        let e = &self.event;
        let wanted = match e.kind.as_str() {
            "app_mention" => true,
            "message" => e.channel_type.as_deref() == Some("im"),
            _ => false,
        };
        if !wanted || e.subtype.is_some() || e.bot_id.is_some() || e.edited.is_some() {
            return None;
        }
        let user = e.user.clone()?;
        if self.bot_user() == Some(user.as_str()) {
            return None;
        }
        let ts = e.ts.clone()?;
        Some(Said {
            user,
            channel: e.channel.clone()?,
            thread_ts: e.thread_ts.clone().unwrap_or_else(|| ts.clone()),
            ts,
            text: strip_mention(e.text.as_deref().unwrap_or_default(), self.bot_user()),
        })
    }
}

/// Removes the bot's mention (`<@U123>` or `<@U123|name>`): every one of them when we know
/// our id, else a leading one.
pub fn strip_mention(text: &str, bot: Option<&str>) -> String {
    let text = text.trim();
    let out = match bot {
        Some(bot) => {
            let mut out = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(start) = rest.find("<@") {
                let Some(len) = rest[start..].find('>') else {
                    break;
                };
                let inner = &rest[start + 2..start + len];
                let id = inner.split('|').next().unwrap_or_default();
                out.push_str(&rest[..start]);
                if id != bot {
                    out.push_str(&rest[start..=start + len]);
                }
                rest = &rest[start + len + 1..];
            }
            out.push_str(rest);
            out
        }
        None => match text.strip_prefix("<@").and_then(|r| r.split_once('>')) {
            Some((_, after)) => after.to_owned(),
            None => text.to_owned(),
        },
    };
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Slack escapes `&`, `<` and `>` in message text; the grammar wants them back.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn callback(event: serde_json::Value) -> EventCallback {
        let env: Envelope = serde_json::from_value(json!({
            "token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event_id": "Ev1", "event_time": 1, "event": event,
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": true}],
        }))
        .unwrap();
        match env {
            Envelope::EventCallback(cb) => *cb,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mention_is_stripped_and_thread_is_the_message() {
        let cb = callback(json!({
            "type": "app_mention", "user": "U1", "text": "<@UBOT> call +91 98765 43210",
            "ts": "1.1", "channel": "C1", "event_ts": "1.1",
        }));
        let said = cb.said().unwrap();
        assert_eq!(said.text, "call +91 98765 43210");
        assert_eq!(said.thread_ts, "1.1");
    }

    #[test]
    fn replies_inside_a_thread_stay_in_it() {
        let cb = callback(json!({
            "type": "app_mention", "user": "U1", "text": "hey <@UBOT|callbot> call 98765 43210 and say hi <@U2>",
            "ts": "2.2", "thread_ts": "1.1", "channel": "C1",
        }));
        let said = cb.said().unwrap();
        assert_eq!(said.text, "hey call 98765 43210 and say hi <@U2>");
        assert_eq!(said.thread_ts, "1.1");
    }

    #[test]
    fn bots_edits_channel_messages_and_ourselves_are_ignored() {
        let base = json!({"type": "message", "channel_type": "im", "user": "U1", "text": "call 1", "ts": "1.1", "channel": "D1"});
        assert!(callback(base.clone()).said().is_some());
        let with = |k: &str, v: serde_json::Value| {
            let mut e = base.clone();
            e[k] = v;
            callback(e).said()
        };
        assert!(with("bot_id", json!("B1")).is_none());
        assert!(with("subtype", json!("message_changed")).is_none());
        assert!(with("edited", json!({"user": "U1", "ts": "1.2"})).is_none());
        assert!(with("user", json!("UBOT")).is_none());
        assert!(with("channel_type", json!("channel")).is_none());
    }

    #[test]
    fn unknown_envelopes_and_events_parse() {
        let env: Envelope =
            serde_json::from_value(json!({"type": "app_rate_limited", "team_id": "T1"})).unwrap();
        assert!(matches!(env, Envelope::Other));
        let cb = callback(json!({"type": "reaction_added", "user": "U1", "item": {}}));
        assert!(cb.said().is_none());
    }

    #[test]
    fn leading_mention_is_stripped_when_our_id_is_unknown() {
        assert_eq!(strip_mention("<@UX> status", None), "status");
        assert_eq!(unescape("say &lt;3 &amp; more"), "say <3 & more");
    }
}
