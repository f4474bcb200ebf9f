//! Every text a user reads, built by pure functions (no I/O), so each one is snapshot-tested:
//! a call's progress and outcome, the dialogue's answers (`crate::chat::dialogue` picks them,
//! every adapter shows the same words) and the wording of a [`Refusal`]. Adapters add their
//! own markup around these plain strings.

use chrono::Duration;

use super::call::{Answerer, Call, CallStatus, MachineDetection, Platform};
use super::command::ParseError;
use super::phone::PhoneError;
use super::phone::PhoneNumber;
use super::policy::Refusal;
use super::speech::{self, Answer};

/// "0:42", "12:05", "1:02:03".
pub fn duration(secs: u32) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The one-line status of a call: progress while it is live, the outcome once it ended.
pub fn status_line(call: &Call) -> String {
    let to = call.to.display();
    match call.status {
        CallStatus::Queued | CallStatus::Initiated => {
            format!("📞 Calling {to}{}…", spoken_note(call))
        }
        CallStatus::Ringing => format!("🔔 Ringing {to}…"),
        CallStatus::InProgress => match call.answerer() {
            Some(a) if a.is_machine() && call.machine_detection == MachineDetection::MessageEnd => {
                format!("📼 {to}: voicemail answered, waiting for the beep…")
            }
            Some(a) if a.is_machine() => {
                format!(
                    "📼 {to}: voicemail answered, speaking the message{}…",
                    spoken_note(call)
                )
            }
            _ => format!(
                "🗣️ {to} answered, speaking the message{}…",
                spoken_note(call)
            ),
        },
        _ => outcome(call),
    }
}

/// The final outcome of an ended call, and the answer to its question when one was taken.
pub fn outcome(call: &Call) -> String {
    let line = outcome_line(call);
    match answer_line(call) {
        Some(answer) => format!("{line}\n{answer}"),
        None => line,
    }
}

/// "📞 +91 98765 43210 answered the question: 1 — yes", when the callee's answer (or its
/// absence, after the question was asked twice) is recorded.
pub fn answer_line(call: &Call) -> Option<String> {
    let to = call.to.display();
    Some(match call.answer.as_deref()? {
        Answer::Key {
            digits,
            label: Some(label),
        } => format!("📞 {to} answered the question: {digits} — {label}"),
        Answer::Key {
            digits,
            label: None,
        } => format!("📞 {to} answered the question: {digits}"),
        Answer::Speech {
            text,
            confidence: Some(c),
        } => format!("📞 {to} answered the question: “{text}” (said, confidence {c:.2})"),
        Answer::Speech {
            text,
            confidence: None,
        } => format!("📞 {to} answered the question: “{text}” (said)"),
        Answer::Nothing => format!("📞 {to}: no answer to the question"),
    })
}

fn outcome_line(call: &Call) -> String {
    let to = call.to.display();
    match call.status {
        CallStatus::Completed => {
            let took = call
                .duration_secs
                .map(|secs| format!(", {}", duration(secs)))
                .unwrap_or_default();
            match (call.machine_detection.is_off(), call.answerer()) {
                (true, _) => format!("✅ Call to {to} completed{took}."),
                (false, Some(Answerer::Human)) => {
                    format!("✅ Call to {to} answered by a person{took}.")
                }
                (false, Some(Answerer::MachineEnd)) => {
                    format!("📼 Call to {to} reached voicemail, left the message{took}.")
                }
                (false, Some(Answerer::MachineStart)) => format!(
                    "📼 Call to {to} reached voicemail, the message played over its greeting{took}."
                ),
                (false, Some(Answerer::Fax)) => {
                    format!("📠 Call to {to} reached a fax machine{took}.")
                }
                (false, Some(Answerer::Unknown) | None) => {
                    format!("✅ Call to {to} completed{took}; who answered could not be told.")
                }
            }
        }
        CallStatus::Busy => format!("📵 {to} was busy."),
        CallStatus::NoAnswer => format!("⌛ No answer from {to}."),
        CallStatus::Failed => format!("❌ Call to {to} failed: {}.", failure_reason(call)),
        CallStatus::Canceled => format!("🚫 Call to {to} was canceled."),
        live => format!("Call to {to} is {live}."),
    }
}

/// The call's recording is ready: its duration and `link` (our own route to the audio,
/// never the provider's).
pub fn recording(call: &Call, link: &str) -> String {
    let took = call
        .recording
        .as_ref()
        .and_then(|r| r.duration_secs)
        .map(|secs| format!(" ({})", duration(secs)))
        .unwrap_or_default();
    format!(
        "🎙️ Recording of the call to {}{took}: {link}",
        call.to.display()
    )
}

/// Why a call failed, in the provider's words where we have them.
pub fn failure_reason(call: &Call) -> String {
    match (&call.error, call.sip_response_code) {
        (Some(e), _) => match e.code {
            Some(code) => format!("{} (error {code})", e.message.trim_end_matches('.')),
            None => e.message.trim_end_matches('.').to_owned(),
        },
        (None, Some(sip)) => format!("the network answered SIP {sip}"),
        (None, None) => "no reason given".to_owned(),
    }
}

/// A line per call for "list" and "status".
pub fn summary(call: &Call) -> String {
    let mut line = format!(
        "{} · {} · {}",
        call.id,
        call.to.display(),
        call.status.as_str()
    );
    if let Some(secs) = call.duration_secs {
        line.push_str(&format!(" · {}", duration(secs)));
    }
    if call.status == CallStatus::Failed {
        line.push_str(&format!(" · {}", failure_reason(call)));
    }
    line
}

pub fn list(calls: &[Call]) -> String {
    if calls.is_empty() {
        return "No calls yet.".to_owned();
    }
    calls.iter().map(summary).collect::<Vec<_>>().join("\n")
}

/// `help` in a chat: the usage and the asker's id on that platform (what the allow-list
/// takes).
pub fn help_with_id(platform: Platform, id: &str) -> String {
    format!(
        "{}\n\nYour {} {id} (an admin adds it to the allow-list).",
        help(),
        id_name(platform)
    )
}

/// What a platform's person id is called.
fn id_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Telegram => "Telegram id:",
        Platform::Slack => "Slack user id:",
        Platform::Web | Platform::Cli | Platform::Other(_) => "id:",
    }
}

/// A text that is neither a command nor a call request.
pub fn not_understood() -> String {
    format!("I couldn't understand that.\n{}", help())
}

/// How a call is spoken when not the default way: " in Hindi (hi-IN)", " twice",
/// " in Hindi (hi-IN), twice", or nothing. `language` only when it is not the default.
pub fn spoken_as(language: Option<&str>, times: u8) -> String {
    let mut out = String::new();
    if let Some(tag) = language {
        out.push_str(" in ");
        out.push_str(&speech::describe(tag));
    }
    if times > 1 {
        if !out.is_empty() {
            out.push(',');
        }
        if times == 2 {
            out.push_str(" twice");
        } else {
            out.push_str(&format!(" {times} times"));
        }
    }
    out
}

/// [`spoken_as`] for a call.
pub fn spoken_note(call: &Call) -> String {
    spoken_as(
        call.language_chosen.then_some(call.language.as_str()),
        call.say_loop.unwrap_or(1),
    )
}

/// A call was requested; its progress follows.
pub fn placed(call: &Call) -> String {
    format!(
        "Placing the call to {}{}… (call {})",
        call.to.display(),
        spoken_note(call),
        call.id
    )
}

/// The question asked before dialing when `calls.confirm` is on; `spoken` is
/// [`spoken_as`]'s note, when there is one.
pub fn confirm_question(to: &PhoneNumber, message: Option<&str>, spoken: Option<&str>) -> String {
    let spoken = spoken.unwrap_or_default();
    match message {
        Some(m) => format!("Call {} and say “{m}”{spoken}?", to.display()),
        None => format!("Call {}{spoken}?", to.display()),
    }
}

/// The confirmation was answered "don't call".
pub fn declined() -> String {
    "✖️ Call not placed.".to_owned()
}

/// The confirmation was pressed after its time.
pub fn expired() -> String {
    "⌛ This request expired. Send it again to place the call.".to_owned()
}

/// The confirmation was already answered (or forgotten long ago).
pub fn already_answered() -> String {
    "This request was already answered.".to_owned()
}

/// Someone else pressed or asked: `who` is the requester as the platform shows them.
pub fn only_requester(who: Option<&str>, confirm: bool) -> String {
    let who = who.unwrap_or("the person who asked for it");
    if confirm {
        format!("Only {who} can confirm this call.")
    } else {
        format!("Only {who} can cancel this call.")
    }
}

/// `status <id>` / `cancel <id>` for a call this conversation cannot see (or no such call).
pub fn unknown_call(id: &str) -> String {
    format!("I don't know a call with id {id} here.")
}

/// `status` where no call was placed yet.
pub fn no_calls() -> String {
    "No calls yet.".to_owned()
}

/// `cancel` with nothing of the asker's in progress here.
pub fn no_live_call() -> String {
    "There is no call in progress to cancel.".to_owned()
}

/// `status`: how the call goes, then its summary line.
pub fn status(call: &Call) -> String {
    format!("{}\n{}", status_line(call), summary(call))
}

/// Canceled before it was dialed.
pub fn canceled(call: &Call) -> String {
    format!("Canceled the call to {}.", call.to.display())
}

/// The hang-up was sent; the final status follows.
pub fn hanging_up(call: &Call) -> String {
    format!("Hanging up the call to {}…", call.to.display())
}

/// A button whose data we cannot read (or whose message is gone).
pub fn button_invalid() -> String {
    "This button is no longer valid.".to_owned()
}

/// A slash command's answer while its work takes longer than Slack waits.
pub fn working() -> String {
    "Working on it…".to_owned()
}

/// A call request could not be recorded (the call store is down): nothing was placed.
pub fn not_recorded() -> String {
    "Not placed: callbot cannot record calls right now (its call store is unreachable), so nothing will be dialed. Please try again in a minute.".to_owned()
}

/// Our store or another inside part failed.
pub fn sorry() -> String {
    "Something went wrong on our side; please try again.".to_owned()
}

/// "12 minutes", "1 hour 5 minutes", "under a minute".
fn wait(d: Duration) -> String {
    let mins = (d.num_seconds() + 59) / 60;
    match mins {
        ..=0 => "under a minute".to_owned(),
        1 => "1 minute".to_owned(),
        2..60 => format!("{mins} minutes"),
        _ => {
            let (h, m) = (mins / 60, mins % 60);
            let hours = if h == 1 {
                "1 hour".to_owned()
            } else {
                format!("{h} hours")
            };
            if m == 0 {
                hours
            } else {
                format!("{hours} {m} min")
            }
        }
    }
}

impl std::fmt::Display for PhoneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhoneError::NoNumber(text) => write!(f, "I couldn't find a phone number in “{text}”."),
            PhoneError::Invalid { written, country } => {
                write!(f, "{written} is not a valid number for {country}.")
            }
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Number(e) => e.fmt(f),
            ParseError::TrailingText { number, rest } => write!(
                f,
                "I found the number {number} but not what “{rest}” means. Write: call {number} and say <message>"
            ),
            ParseError::NotUnderstood => f.write_str(&not_understood()),
            ParseError::TooManyRequests => f.write_str(
                "I couldn't understand that, and you have sent too many messages I'd need the language model for in the last minute. Please wait a minute, or write it as: call <number> and say <message>",
            ),
            ParseError::Unverified { number } => write!(
                f,
                "I understood you want to call {number}, but I can't find that number in your message, so I won't dial it. Please write the number in digits."
            ),
        }
    }
}

/// The dial queue is full: the request was not taken.
pub fn queue_full(waiting: usize) -> String {
    format!(
        "callbot is busy: {waiting} calls are waiting to be dialed. Please try again in a minute."
    )
}

/// callbot is stopping: the request was not taken.
pub fn stopping() -> String {
    "callbot is shutting down and is not placing new calls.".to_owned()
}

/// `cancel` of a call that already ended.
pub fn already_ended(status: CallStatus) -> String {
    format!("That call already ended ({status}).")
}

/// `Refusal`'s Display is its reply. It lives here, beside the wording, so that the rules
/// (`policy`) do not depend on the texts.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&refusal(self))
    }
}

/// Why a request was refused, as the requester reads it (`Refusal`'s Display).
pub fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::NotAllowed { platform, id } => {
            let what = match platform {
                Platform::Telegram => "Telegram id",
                Platform::Slack => "Slack user id",
                Platform::Web | Platform::Cli | Platform::Other(_) => "id",
            };
            format!("You're not allowed to place calls yet. Ask the admin to add your {what} {id}.")
        }
        Refusal::Denied { number } => format!("Calling {number} is not allowed here."),
        Refusal::Country {
            number,
            country,
            allowed,
        } => format!(
            "{number} is in {country}; calls are allowed only to {}.",
            allowed.join(", ")
        ),
        Refusal::NumberType { number, kind } => {
            format!("{number} is {kind}; callbot does not call those.")
        }
        Refusal::MessageTooLong { len, max } => {
            format!("Your message has {len} characters; the limit is {max}. Please shorten it.")
        }
        Refusal::InstructionsTooLong { len, max } => format!(
            "This call's instructions would have {len} characters, and without a public URL they travel with the call, where the limit is {max}. Shorten the message by at least {} characters, or ask the admin to set CALLBOT_PUBLIC_URL.",
            len - max
        ),
        Refusal::NeedsCallbacks { feature } => format!(
            "{} needs the phone provider to call callbot back, and this callbot has no public URL (it follows calls by polling). Ask without it, or ask the admin to set CALLBOT_PUBLIC_URL.",
            capitalized(feature)
        ),
        Refusal::UnknownLanguage { asked, known } => format!(
            "I have no voice for “{asked}”. The languages set up are: {}.",
            known.join(", ")
        ),
        Refusal::SayTooLong { len, max, voice } => format!(
            "That is {len} characters to speak; the voice {voice} speaks at most {max} at a time. Please shorten it."
        ),
        Refusal::UserHour { limit, retry_in } => format!(
            "You have placed {limit} calls in the last hour, the limit. Try again in {}.",
            wait(*retry_in)
        ),
        Refusal::UserDay { limit, retry_in } => format!(
            "You have placed {limit} calls in the last 24 hours, the limit. Try again in {}.",
            wait(*retry_in)
        ),
        Refusal::Destination {
            number,
            limit,
            retry_in,
        } => format!(
            "{number} has already been called {limit} times in the last hour. Try again in {}.",
            wait(*retry_in)
        ),
        Refusal::Concurrent { max } => format!(
            "{max} calls are already in progress, the most at once. Try again when one ends."
        ),
        Refusal::GlobalHour { limit, retry_in } => format!(
            "callbot has placed {limit} calls in the last hour, the most it places for everyone together. Try again in {}.",
            wait(*retry_in)
        ),
        Refusal::GlobalDay { limit, retry_in } => format!(
            "callbot has placed {limit} calls in the last 24 hours, the most it places for everyone together. Try again in {}.",
            wait(*retry_in)
        ),
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Why a call followed by polling ends with its outcome unknown: its status requests ran out.
pub fn polls_ran_out(requests: u32) -> String {
    format!(
        "its outcome is unknown: callbot stopped asking the phone provider after {requests} status requests (twilio.poll_max_requests), and the provider's call log has the outcome"
    )
}

/// Usage, shown for "help" and when a text could not be understood.
pub fn help() -> String {
    "I place phone calls for you.\n\
     • call +91 98765 43210 — rings the number and says the default greeting\n\
     • call +91 98765 43210 and say Your table is ready — speaks your message\n\
     • status [id] — the latest call, or that one\n\
     • list — your recent calls\n\
     • cancel [id] — hang up the latest call, or that one\n\
     Numbers without + use the default country. Also understood: dial, ring, phone, /call, \
     “say: …”, “with message …”, quoted text."
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::call::{CallError, Origin, Platform, StatusUpdate};
    use crate::core::phone::PhoneNumber;
    use chrono::Utc;

    fn call_with(status: CallStatus, update: impl FnOnce(&mut StatusUpdate)) -> Call {
        let mut c = Call::new(
            PhoneNumber::from_e164("+919876543210").unwrap(),
            "+15005550006",
            "hi".into(),
            "alice",
            "en-US",
            Origin::new(Platform::Web, "web"),
            Utc::now(),
        );
        let mut u = StatusUpdate {
            status: Some(status),
            ..StatusUpdate::default()
        };
        update(&mut u);
        c.apply(&u, Utc::now());
        c
    }

    #[test]
    fn dialogue_texts() {
        assert_eq!(
            only_requester(Some("@alice"), true),
            "Only @alice can confirm this call."
        );
        assert_eq!(
            only_requester(None, false),
            "Only the person who asked for it can cancel this call."
        );
        assert_eq!(unknown_call("abc"), "I don't know a call with id abc here.");
        insta::assert_snapshot!(not_recorded(), @"Not placed: callbot cannot record calls right now (its call store is unreachable), so nothing will be dialed. Please try again in a minute.");
        assert!(not_understood().starts_with("I couldn't understand that.\nI place phone calls"));
        assert!(
            help_with_id(Platform::Slack, "U1")
                .ends_with("\n\nYour Slack user id: U1 (an admin adds it to the allow-list).")
        );
        let to = PhoneNumber::from_e164("+919876543210").unwrap();
        assert_eq!(
            confirm_question(&to, Some("hi"), None),
            "Call +91 98765 43210 and say “hi”?"
        );
        assert_eq!(wait(Duration::seconds(3700)), "1 hour 2 min");
        assert_eq!(wait(Duration::seconds(30)), "1 minute");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0:00");
        assert_eq!(duration(42), "0:42");
        assert_eq!(duration(725), "12:05");
        assert_eq!(duration(3723), "1:02:03");
    }

    #[test]
    fn status_lines() {
        let line = |s| status_line(&call_with(s, |_| {}));
        insta::assert_snapshot!(line(CallStatus::Initiated), @"📞 Calling +91 98765 43210…");
        insta::assert_snapshot!(line(CallStatus::Ringing), @"🔔 Ringing +91 98765 43210…");
        insta::assert_snapshot!(line(CallStatus::InProgress), @"🗣️ +91 98765 43210 answered, speaking the message…");
        insta::assert_snapshot!(line(CallStatus::Busy), @"📵 +91 98765 43210 was busy.");
        insta::assert_snapshot!(line(CallStatus::NoAnswer), @"⌛ No answer from +91 98765 43210.");
        insta::assert_snapshot!(line(CallStatus::Canceled), @"🚫 Call to +91 98765 43210 was canceled.");
    }

    #[test]
    fn outcomes_carry_duration_and_reason() {
        let done = call_with(CallStatus::Completed, |u| u.duration_secs = Some(42));
        insta::assert_snapshot!(outcome(&done), @"✅ Call to +91 98765 43210 completed, 0:42.");
        let failed = call_with(CallStatus::Failed, |u| {
            u.error = Some(CallError {
                code: Some(21211),
                message: "Invalid 'To' Phone Number".into(),
            })
        });
        insta::assert_snapshot!(outcome(&failed), @"❌ Call to +91 98765 43210 failed: Invalid 'To' Phone Number (error 21211).");
        let sip = call_with(CallStatus::Failed, |u| u.sip_response_code = Some(404));
        insta::assert_snapshot!(outcome(&sip), @"❌ Call to +91 98765 43210 failed: the network answered SIP 404.");
        let unknown = call_with(CallStatus::Failed, |u| {
            u.error = Some(CallError {
                code: None,
                message: polls_ran_out(300),
            })
        });
        insta::assert_snapshot!(outcome(&unknown), @"❌ Call to +91 98765 43210 failed: its outcome is unknown: callbot stopped asking the phone provider after 300 status requests (twilio.poll_max_requests), and the provider's call log has the outcome.");
    }

    #[test]
    fn refusals_without_a_public_url() {
        insta::assert_snapshot!(refusal(&Refusal::InstructionsTooLong { len: 4213, max: 4000 }), @"This call's instructions would have 4213 characters, and without a public URL they travel with the call, where the limit is 4000. Shorten the message by at least 213 characters, or ask the admin to set CALLBOT_PUBLIC_URL.");
        insta::assert_snapshot!(refusal(&Refusal::NeedsCallbacks { feature: "a question" }), @"A question needs the phone provider to call callbot back, and this callbot has no public URL (it follows calls by polling). Ask without it, or ask the admin to set CALLBOT_PUBLIC_URL.");
    }

    #[test]
    fn outcomes_say_who_answered_when_detection_is_on() {
        let answered = |by: Option<&str>| {
            let mut c = call_with(CallStatus::Completed, |u| u.duration_secs = Some(42));
            c.machine_detection = MachineDetection::MessageEnd;
            c.answered_by = by.map(str::to_owned);
            outcome(&c)
        };
        insta::assert_snapshot!(answered(Some("human")), @"✅ Call to +91 98765 43210 answered by a person, 0:42.");
        insta::assert_snapshot!(answered(Some("machine_end_beep")), @"📼 Call to +91 98765 43210 reached voicemail, left the message, 0:42.");
        insta::assert_snapshot!(answered(Some("machine_start")), @"📼 Call to +91 98765 43210 reached voicemail, the message played over its greeting, 0:42.");
        insta::assert_snapshot!(answered(None), @"✅ Call to +91 98765 43210 completed, 0:42; who answered could not be told.");
        let mut recorded = call_with(CallStatus::Completed, |_| {});
        recorded.recording = Some(Box::new(crate::core::call::Recording {
            sid: "RE00".into(),
            duration_secs: Some(7),
        }));
        insta::assert_snapshot!(recording(&recorded, "https://cb.example/api/calls/x/recording"), @"🎙️ Recording of the call to +91 98765 43210 (0:07): https://cb.example/api/calls/x/recording");
    }
}
