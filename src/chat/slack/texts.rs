//! Slack markup around the plain reply texts of [`crate::core::replies`]: mrkdwn escaping,
//! mentions, and the Block Kit of the status message (with its Cancel button) and of the
//! confirmation prompt. Pure functions, snapshot-tested below.

use slack_morphism::prelude::*;

use crate::core::call::{Call, CallStatus};
use crate::core::replies;

/// action_id of the Cancel button on a live call's status message (value: the call id).
pub const CANCEL_CALL: &str = "cancel_call";
/// action_id of "Call" on a confirmation prompt (value: the dialogue's one-time nonce).
pub const CONFIRM_CALL: &str = "confirm_call";
/// action_id of "Don't call" on a confirmation prompt (value: the pending request's id).
pub const DECLINE_CALL: &str = "decline_call";

/// Escapes the three characters mrkdwn gives meaning to.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn mention(user: &str) -> String {
    format!("<@{user}>")
}

/// The status message's line: who is calling whom, then how it goes.
pub fn status_text(call: &Call) -> String {
    match call.status {
        CallStatus::Queued | CallStatus::Initiated => format!(
            "📞 {} is calling {}{}…",
            mention(&call.origin.requester),
            escape(&call.to.display()),
            escape(&replies::spoken_note(call))
        ),
        _ => escape(&replies::status_line(call)),
    }
}

/// The final reply in the thread, mentioning the requester.
pub fn outcome_text(call: &Call) -> String {
    format!(
        "{} {}",
        mention(&call.origin.requester),
        escape(&replies::outcome(call))
    )
}

/// The recording is ready, in the thread, mentioning the requester.
pub fn recording_text(call: &Call, link: &str) -> String {
    format!(
        "{} {}",
        mention(&call.origin.requester),
        escape(&replies::recording(call, link))
    )
}

/// The status message: the line, the call id and message, and Cancel while it is live.
pub fn status_blocks(call: &Call) -> Vec<SlackBlock> {
    let mut blocks = vec![
        section(&status_text(call)),
        SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
            SlackBlockMarkDownText::new(format!(
                "call `{}` · “{}”",
                call.id,
                escape(&call.message)
            )),
        )])
        .into(),
    ];
    if !call.status.is_terminal() {
        blocks.push(
            SlackActionsBlock::new(vec![button(
                "Cancel call",
                CANCEL_CALL,
                call.id.as_str(),
                SlackBlockButtonStyle::Danger,
            )])
            .into(),
        );
    }
    blocks
}

/// The confirmation prompt: the (escaped) question and "Call" / "Don't call".
pub fn confirm_blocks(text: &str, nonce: &str) -> Vec<SlackBlock> {
    vec![
        section(text),
        SlackActionsBlock::new(vec![
            button("Call", CONFIRM_CALL, nonce, SlackBlockButtonStyle::Primary),
            button(
                "Don't call",
                DECLINE_CALL,
                nonce,
                SlackBlockButtonStyle::Danger,
            ),
        ])
        .into(),
    ]
}

pub fn section(text: &str) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(
            text.to_owned(),
        )))
        .into()
}

fn button(
    label: &str,
    action_id: &str,
    value: &str,
    style: SlackBlockButtonStyle,
) -> SlackActionBlockElement {
    SlackActionBlockElement::Button(
        SlackBlockButtonElement::new(label.into())
            .with_action_id(action_id.to_owned().into())
            .with_value(value.to_owned())
            .with_style(style),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::call::{Origin, Platform, StatusUpdate};
    use crate::core::phone::PhoneNumber;
    use chrono::Utc;

    fn call(status: CallStatus) -> Call {
        let mut c = Call::new(
            PhoneNumber::from_e164("+919876543210").unwrap(),
            "+15005550006",
            "deploy <done> & dusted".into(),
            "alice",
            "en-US",
            Origin::new(Platform::Slack, "U1"),
            Utc::now(),
        )
        .with_id(crate::core::call::CallId::parse("abc").unwrap());
        c.apply(
            &StatusUpdate {
                status: Some(status),
                duration_secs: Some(42),
                ..StatusUpdate::default()
            },
            Utc::now(),
        );
        c
    }

    #[test]
    fn texts() {
        insta::assert_snapshot!(status_text(&call(CallStatus::Queued)), @"📞 <@U1> is calling +91 98765 43210…");
        insta::assert_snapshot!(status_text(&call(CallStatus::Ringing)), @"🔔 Ringing +91 98765 43210…");
        insta::assert_snapshot!(outcome_text(&call(CallStatus::Completed)), @"<@U1> ✅ Call to +91 98765 43210 completed, 0:42.");
        insta::assert_snapshot!(escape("a <b> & c"), @"a &lt;b&gt; &amp; c");
    }

    #[test]
    fn live_calls_have_a_cancel_button_and_ended_ones_do_not() {
        let live = serde_json::to_value(status_blocks(&call(CallStatus::Ringing))).unwrap();
        assert_eq!(live[2]["elements"][0]["action_id"], CANCEL_CALL);
        assert_eq!(live[2]["elements"][0]["value"], "abc");
        assert_eq!(
            live[1]["elements"][0]["text"],
            "call `abc` · “deploy &lt;done&gt; &amp; dusted”"
        );
        let ended = status_blocks(&call(CallStatus::Completed));
        assert_eq!(ended.len(), 2);
    }
}
