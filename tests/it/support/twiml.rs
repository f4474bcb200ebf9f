//! TwiML as Twilio reads it: parsed with quick-xml, so a test checks elements, attributes
//! and unescaped text rather than bytes.

use quick_xml::events::Event;

/// An element: its name and its attributes, unescaped.
pub type Element = (String, Vec<(String, String)>);

/// One `<Say>` as Twilio reads it: its attributes and its text, unescaped.
#[derive(Debug, PartialEq)]
pub struct Say {
    pub attrs: Vec<(String, String)>,
    pub text: String,
}

/// The elements of a TwiML document in order (name, attributes), and its `<Say>`s. Panics
/// on anything that is not well-formed XML.
pub fn parse_twiml(xml: &str) -> (Vec<Element>, Vec<Say>) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut elements = Vec::new();
    let mut says = Vec::new();
    let mut in_say: Option<Say> = None;
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("{e}: {xml}")) {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attrs: Vec<(String, String)> = e
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        (
                            String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                            a.unescape_value().unwrap().into_owned(),
                        )
                    })
                    .collect();
                if name == "Say" {
                    in_say = Some(Say {
                        attrs: attrs.clone(),
                        text: String::new(),
                    });
                }
                elements.push((name, attrs));
            }
            Event::Text(t) => {
                if let Some(say) = in_say.as_mut() {
                    say.text.push_str(&t.unescape().unwrap());
                }
            }
            Event::End(e) if e.name().as_ref() == b"Say" => {
                says.extend(in_say.take());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (elements, says)
}

pub fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
