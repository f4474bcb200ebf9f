//! TwiML for an outbound call: `<Response><Say voice=… language=… [loop=…]>message</Say></Response>`.
//! The message is XML-escaped text (quick-xml), and characters XML 1.0 forbids are dropped,
//! so a user's `<`, `&` or quotes can neither break nor inject TwiML.

use quick_xml::escape::escape;

use crate::core::call::Call;

fn xml_text(s: &str) -> String {
    let allowed: String = s
        .chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || (('\u{20}'..='\u{D7FF}').contains(&c))
                || (('\u{E000}'..='\u{FFFD}').contains(&c))
                || c >= '\u{10000}'
        })
        .collect();
    escape(allowed.as_str()).into_owned()
}

pub fn render(message: &str, voice: &str, language: &str) -> String {
    render_say(message, voice, language, 1)
}

/// The message said `times` times (`<Say loop>`, written only when more than once).
pub fn render_say(message: &str, voice: &str, language: &str, times: u8) -> String {
    let looped = if times > 1 {
        format!(" loop=\"{times}\"")
    } else {
        String::new()
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Say voice=\"{}\" language=\"{}\"{looped}>{}</Say></Response>",
        xml_text(voice),
        xml_text(language),
        xml_text(message)
    )
}

/// Holds the call while answering-machine detection runs (async AMD: Twilio runs our TwiML
/// at once): a short `<Pause>`, then `<Redirect>` back to `url`, where the next TwiML is
/// served once the result is stored.
pub fn wait_and_redirect(url: &str, pause_secs: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Pause length=\"{pause_secs}\"/><Redirect method=\"POST\">{}</Redirect></Response>",
        xml_text(url)
    )
}

/// `twiml` with `<Say>announcement</Say>` first (a recorded call says so before anything).
pub fn with_announcement(twiml: &str, announcement: &str, voice: &str, language: &str) -> String {
    let say = format!(
        "<Response><Say voice=\"{}\" language=\"{}\">{}</Say>",
        xml_text(voice),
        xml_text(language),
        xml_text(announcement)
    );
    twiml.replacen("<Response>", &say, 1)
}

/// The TwiML of a stored call. With a question, the message (if any) is followed by the
/// question in a `<Gather>` posting to `gather_action`, asked a second time when nothing
/// came; the second `<Gather>` posts even an empty result (`actionOnEmptyResult`), which
/// records that the question went unanswered.
pub fn for_call(call: &Call, gather_action: &str) -> String {
    let times = call.say_loop.unwrap_or(1);
    let Some(question) = &call.question else {
        return render_say(&call.message, &call.voice, &call.language, times);
    };
    let say = |text: &str, times: u8| {
        let looped = if times > 1 {
            format!(" loop=\"{times}\"")
        } else {
            String::new()
        };
        format!(
            "<Say voice=\"{}\" language=\"{}\"{looped}>{}</Say>",
            xml_text(&call.voice),
            xml_text(&call.language),
            xml_text(text)
        )
    };
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>");
    if !call.message.trim().is_empty() {
        xml.push_str(&say(&call.message, times));
    }
    let spoken = question.spoken();
    for last in [false, true] {
        xml.push_str(&format!(
            "<Gather input=\"dtmf speech\" numDigits=\"1\" timeout=\"{GATHER_TIMEOUT_SECS}\" language=\"{}\" action=\"{}\" method=\"POST\"{}>{}</Gather>",
            xml_text(&call.language),
            xml_text(gather_action),
            if last { " actionOnEmptyResult=\"true\"" } else { "" },
            say(&spoken, 1)
        ));
    }
    xml.push_str("</Response>");
    xml
}

/// Seconds `<Gather>` waits for a key or words after the question.
pub const GATHER_TIMEOUT_SECS: u32 = 6;

/// What the callee hears once the answer is taken: thanks, in the call's voice, then the
/// call ends.
pub fn after_answer(call: &Call) -> String {
    let thanks = if call.language_chosen {
        "" // No canned text in another language: the call simply ends.
    } else {
        "Thank you. Goodbye."
    };
    if thanks.is_empty() {
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Hangup/></Response>"
            .to_owned();
    }
    render_say(thanks, &call.voice, &call.language, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message() {
        insta::assert_snapshot!(render("Your table is ready", "alice", "en-US"), @r#"
        <?xml version="1.0" encoding="UTF-8"?>
        <Response><Say voice="alice" language="en-US">Your table is ready</Say></Response>
        "#);
    }

    #[test]
    fn waiting_and_announcing() {
        insta::assert_snapshot!(wait_and_redirect("https://x.example/twiml/abc?wait=2&a=b", 1), @r#"
        <?xml version="1.0" encoding="UTF-8"?>
        <Response><Pause length="1"/><Redirect method="POST">https://x.example/twiml/abc?wait=2&amp;a=b</Redirect></Response>
        "#);
        let xml = with_announcement(
            &render("Hi", "alice", "en-US"),
            "Recorded <here>",
            "alice",
            "en-US",
        );
        assert!(xml.contains("<Response><Say voice=\"alice\" language=\"en-US\">Recorded &lt;here&gt;</Say><Say voice=\"alice\" language=\"en-US\">Hi</Say></Response>"), "{xml}");
    }

    #[test]
    fn a_repeated_message_loops() {
        insta::assert_snapshot!(render_say("नमस्ते", "Polly.Aditi", "hi-IN", 2), @r#"
        <?xml version="1.0" encoding="UTF-8"?>
        <Response><Say voice="Polly.Aditi" language="hi-IN" loop="2">नमस्ते</Say></Response>
        "#);
    }

    #[test]
    fn markup_in_the_message_is_text() {
        let xml = render(
            "</Say><Dial>+1900</Dial> & \"quotes\" 'x'\u{0}",
            "alice",
            "en-US",
        );
        assert!(xml.contains("&lt;/Say&gt;&lt;Dial&gt;+1900&lt;/Dial&gt; &amp; &quot;quotes&quot; &apos;x&apos;</Say>"), "{xml}");
        assert_eq!(xml.matches("<Say").count(), 1);
        assert!(!xml.contains('\u{0}'));
    }
}
