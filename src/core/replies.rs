//! Every text a user reads about a call, built by pure functions (no I/O), so each one is
//! snapshot-tested. Adapters add their own markup around these plain strings.

use super::call::{Call, CallStatus};

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
        CallStatus::Queued | CallStatus::Initiated => format!("📞 Calling {to}…"),
        CallStatus::Ringing => format!("🔔 Ringing {to}…"),
        CallStatus::InProgress => format!("🗣️ {to} answered, speaking the message…"),
        _ => outcome(call),
    }
}

/// The final outcome of an ended call.
pub fn outcome(call: &Call) -> String {
    let to = call.to.display();
    match call.status {
        CallStatus::Completed => match call.duration_secs {
            Some(secs) => format!("✅ Call to {to} completed, {}.", duration(secs)),
            None => format!("✅ Call to {to} completed."),
        },
        CallStatus::Busy => format!("📵 {to} was busy."),
        CallStatus::NoAnswer => format!("⌛ No answer from {to}."),
        CallStatus::Failed => format!("❌ Call to {to} failed: {}.", failure_reason(call)),
        CallStatus::Canceled => format!("🚫 Call to {to} was canceled."),
        live => format!("Call to {to} is {live}."),
    }
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
    }
}
