//! What each fuzz target checks, shared by the libFuzzer targets (fuzz/fuzz_targets/) and the
//! corpus replay that `cargo test` runs on stable (tests/it/fuzz_replay.rs). Every check runs
//! one input through the code a route runs and panics only when a promise is broken.

use callbot::core::command::{self, Command};
use callbot::core::phone::{PhoneNumber, Region};
use callbot::telephony::twilio::signature::{SignatureVerifier, sign};
use callbot::telephony::twilio::twiml;
use callbot::telephony::twilio::webhook::{TwilioRequest, parse_status};
use quick_xml::events::Event;

pub const TARGETS: [&str; 5] = ["grammar", "twilio_form", "slack", "telegram", "twiml"];

pub fn run(target: &str, data: &[u8]) {
    match target {
        "grammar" => grammar(data),
        "twilio_form" => twilio_form(data),
        "slack" => callbot::chat::slack::fuzz_inbound(data),
        "telegram" => callbot::chat::telegram::fuzz_update(data),
        "twiml" => twiml_is_well_formed(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Any text: no panic; an accepted call has a valid E.164 number.
pub fn grammar(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let region = Region::parse("IN").expect("IN is a region");
    if let Ok(Some(Command::Call { to, .. })) = command::parse(&text, region) {
        assert!(to.e164().starts_with('+'), "{to}");
        assert_eq!(PhoneNumber::from_e164(to.e164()).as_ref(), Ok(&to));
    }
}

/// Any form body: parsing the status callback never panics, a signature made with the token
/// verifies, and the same signature fails for another URL or with a field changed.
pub fn twilio_form(data: &[u8]) {
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data) else {
        return;
    };
    let req = TwilioRequest {
        params: params
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
        query: vec![],
    };
    let _ = parse_status(&req);
    let token = "fuzz-token";
    let verifier = SignatureVerifier::new(token.to_owned().into(), "https://callbot.example.com");
    let path = "/webhooks/status?call_id=x";
    let sig = sign(
        token,
        &format!("https://callbot.example.com{path}"),
        &params,
    );
    assert!(verifier.verify(path, &params, &sig));
    assert!(!verifier.verify("/webhooks/status?call_id=y", &params, &sig));
    let mut changed = params;
    changed.push(("Extra".into(), "1".into()));
    assert!(!verifier.verify(path, &changed, &sig));
    let _ = verifier.verify(path, &changed, &String::from_utf8_lossy(data));
}

/// Any message (and voice/language): the TwiML is well-formed XML with exactly a Response
/// holding one Say, whose text is the message minus the characters XML cannot carry.
pub fn twiml_is_well_formed(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{1}');
    let message = parts.next().unwrap_or_default();
    let voice = parts.next().unwrap_or("alice");
    let language = parts.next().unwrap_or("en-US");
    let xml = twiml::render(message, voice, language);
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut elements, mut said, mut depth) = (Vec::new(), String::new(), 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                elements.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                for attr in e.attributes() {
                    let attr = attr.expect("well-formed attribute");
                    attr.unescape_value().expect("attribute value unescapes");
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Text(t)) => {
                let t = t.unescape().expect("text unescapes");
                if depth == 2 {
                    said.push_str(&t);
                } else {
                    assert!(t.trim().is_empty(), "text outside <Say>: {t:?}");
                }
            }
            Ok(Event::Empty(e)) => panic!("unexpected element {:?} in {xml}", e.name()),
            Ok(Event::Decl(_)) => {}
            Ok(Event::Eof) => break,
            Ok(other) => panic!("unexpected {other:?} in {xml}"),
            Err(e) => panic!("not well-formed ({e}): {xml}"),
        }
    }
    assert_eq!(depth, 0, "{xml}");
    assert_eq!(elements, ["Response", "Say"], "{xml}");
    let expected: String = message
        .chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || ('\u{20}'..='\u{D7FF}').contains(&c)
                || ('\u{E000}'..='\u{FFFD}').contains(&c)
                || c >= '\u{10000}'
        })
        .collect();
    // XML parsers normalize line ends; compare without carriage returns.
    assert_eq!(said.replace('\r', ""), expected.replace('\r', ""), "{xml}");
}
