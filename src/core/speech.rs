//! How a call's message is spoken: its language, the voice for it, and how often it is said.
//!
//! A request may ask for a language ("in Hindi", "say in Tamil: …", `lang=hi-IN`, the model's
//! `language` field); [`Voices`], built from the `[voices]` settings table, decides which
//! configured language that is and which voice speaks it, or refuses with the list of the
//! languages it has. The provider's text limit per spoken message depends on the voice's
//! family ([`say_limit`]).
//!
//! Language tags are BCP-47 as Twilio takes them (`hi-IN`); [`canonical_tag`] also reads the
//! environment's spelling (`CALLBOT_VOICES__HI_IN` arrives as `hi_in`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::policy::Refusal;
pub use super::question::{Answer, Question};

/// Language names people write ("in Hindi"), with the BCP-47 primary subtag each stands for.
/// A name resolves to whichever configured language has that subtag (see [`Voices::choose`]).
const NAMES: &[(&str, &str)] = &[
    ("english", "en"),
    ("hindi", "hi"),
    ("tamil", "ta"),
    ("telugu", "te"),
    ("bengali", "bn"),
    ("bangla", "bn"),
    ("marathi", "mr"),
    ("gujarati", "gu"),
    ("kannada", "kn"),
    ("malayalam", "ml"),
    ("punjabi", "pa"),
    ("urdu", "ur"),
    ("odia", "or"),
    ("spanish", "es"),
    ("french", "fr"),
    ("german", "de"),
    ("italian", "it"),
    ("portuguese", "pt"),
    ("dutch", "nl"),
    ("russian", "ru"),
    ("arabic", "ar"),
    ("japanese", "ja"),
    ("korean", "ko"),
    ("chinese", "zh"),
    ("mandarin", "zh"),
];

/// The subtag a language name stands for ("Hindi" → "hi"), case-insensitive.
pub fn subtag_of_name(name: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, tag)| *tag)
}

/// The English name of a tag's language ("hi-IN" → "Hindi"), when the table has it.
pub fn language_name(tag: &str) -> Option<String> {
    let primary = tag.split(['-', '_']).next()?;
    NAMES
        .iter()
        .find(|(_, t)| t.eq_ignore_ascii_case(primary))
        .map(|(name, _)| {
            let mut c = name.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
}

/// "Hindi (hi-IN)", or the tag alone when the table does not name it.
pub fn describe(tag: &str) -> String {
    match language_name(tag) {
        Some(name) => format!("{name} ({tag})"),
        None => tag.to_owned(),
    }
}

/// A BCP-47 tag in its usual case ("HI_in" → "hi-IN", "zh-hant-tw" → "zh-Hant-TW"), or
/// `None` when it is not shaped like one: a primary subtag of 2 to 8 letters, then subtags
/// of 1 to 8 letters or digits. `_` is read as `-` (environment variable names have no `-`).
pub fn canonical_tag(tag: &str) -> Option<String> {
    let mut out = Vec::new();
    for (i, part) in tag.trim().split(['-', '_']).enumerate() {
        let ok = if i == 0 {
            (2..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphabetic())
        } else {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !ok {
            return None;
        }
        let lower = part.to_ascii_lowercase();
        out.push(match (i, part.len()) {
            (0, _) => lower,
            // Region: two letters upper case ("IN"); script: four letters title case.
            (_, 2) if part.bytes().all(|b| b.is_ascii_alphabetic()) => part.to_ascii_uppercase(),
            (_, 4) if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                lower[..1].to_ascii_uppercase() + &lower[1..]
            }
            _ => lower,
        });
    }
    Some(out.join("-"))
}

/// Most characters of one `<Say>` for a voice (Twilio error 13521): Amazon Polly voices
/// 3,000, Google voices 5,000, the basic voices (`man`, `woman`, `alice`) 4,096.
pub fn say_limit(voice: &str) -> usize {
    let family = voice.split('.').next().unwrap_or_default();
    if family.eq_ignore_ascii_case("polly") && voice.contains('.') {
        3_000
    } else if family.eq_ignore_ascii_case("google") && voice.contains('.') {
        5_000
    } else {
        4_096
    }
}

/// How a request asks the message to be spoken; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speech {
    /// The language asked for, as written: a tag ("hi-IN", "hi") or a name ("Hindi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// "say it twice", "repeat": the message is said twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// "and ask: …": a question answered by key or voice (`<Gather>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
}

impl Speech {
    /// How many times `<Say>` plays the message.
    pub fn times(&self) -> u8 {
        if self.repeat { 2 } else { 1 }
    }
}

/// What [`Voices::choose`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoken {
    /// The configured language tag (`<Say language>`).
    pub language: String,
    /// Its voice (`<Say voice>`).
    pub voice: String,
    /// Whether this is not the default language (the replies then say which it is).
    pub chosen: bool,
}

/// The configured languages and their voices: the `[voices]` table plus the default
/// language (`calls.language`) with the default voice (`calls.voice`) unless the table
/// names another for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voices {
    default_language: String,
    /// Canonical tag → voice, the default language included.
    table: BTreeMap<String, String>,
}

impl Voices {
    /// `table` keys are canonicalized ([`canonical_tag`]); ones that are not tags are left
    /// out (the settings validation refuses them before this is built).
    pub fn new(
        default_language: &str,
        default_voice: &str,
        table: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let default_language =
            canonical_tag(default_language).unwrap_or_else(|| default_language.to_owned());
        let mut map: BTreeMap<String, String> = table
            .into_iter()
            .filter_map(|(k, v)| canonical_tag(&k).map(|k| (k, v.trim().to_owned())))
            .collect();
        map.entry(default_language.clone())
            .or_insert_with(|| default_voice.to_owned());
        Self {
            default_language,
            table: map,
        }
    }

    pub fn default_language(&self) -> &str {
        &self.default_language
    }

    /// Every configured language with its voice, sorted by tag.
    pub fn table(&self) -> impl Iterator<Item = (&str, &str)> {
        self.table.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The configured language `asked` means: the same tag (any case, `_` for `-`); for a
    /// bare language ("hi", "Hindi") the default language when it is one, else the first
    /// configured tag of that language. Then checks `texts` (each one `<Say>`) against the
    /// voice's limit.
    pub fn choose(&self, speech: &Speech, texts: &[&str]) -> Result<Spoken, Refusal> {
        let language = match speech.language.as_deref().map(str::trim) {
            None | Some("") => self.default_language.clone(),
            Some(asked) => self
                .resolve(asked)
                .ok_or_else(|| Refusal::UnknownLanguage {
                    asked: asked.to_owned(),
                    known: self.table.keys().map(|t| describe(t)).collect(),
                })?,
        };
        let voice = self.table[&language].clone();
        let max = say_limit(&voice);
        if let Some(len) = texts
            .iter()
            .map(|t| t.chars().count())
            .find(|&len| len > max)
        {
            return Err(Refusal::SayTooLong { len, max, voice });
        }
        Ok(Spoken {
            chosen: language != self.default_language,
            language,
            voice,
        })
    }

    fn resolve(&self, asked: &str) -> Option<String> {
        let tag = match subtag_of_name(asked) {
            Some(subtag) => subtag.to_owned(),
            None => canonical_tag(asked)?,
        };
        if self.table.contains_key(&tag) {
            return Some(tag);
        }
        if tag.contains('-') {
            return None;
        }
        let primary = |t: &str| t.split('-').next().map(str::to_owned);
        if primary(&self.default_language).as_deref() == Some(tag.as_str()) {
            return Some(self.default_language.clone());
        }
        self.table
            .keys()
            .find(|k| primary(k).as_deref() == Some(tag.as_str()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voices() -> Voices {
        Voices::new(
            "en-US",
            "alice",
            [
                ("hi_in".to_owned(), "Polly.Aditi".to_owned()),
                ("en-IN".to_owned(), "Polly.Raveena".to_owned()),
                ("ta-IN".to_owned(), "Google.ta-IN-Standard-A".to_owned()),
            ],
        )
    }

    fn asked(language: &str) -> Speech {
        Speech {
            language: Some(language.to_owned()),
            repeat: false,
            question: None,
        }
    }

    #[test]
    fn tags_are_canonicalized() {
        assert_eq!(canonical_tag("hi_in").as_deref(), Some("hi-IN"));
        assert_eq!(canonical_tag("HI-in").as_deref(), Some("hi-IN"));
        assert_eq!(canonical_tag("zh_hant_tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(canonical_tag("es-419").as_deref(), Some("es-419"));
        assert_eq!(canonical_tag("h"), None);
        assert_eq!(canonical_tag("hi-IN!"), None);
        assert_eq!(canonical_tag(""), None);
    }

    #[test]
    fn names_tags_and_bare_languages_resolve_to_configured_ones() {
        let v = voices();
        let pick = |s: &str| v.choose(&asked(s), &["hi"]).map(|s| (s.language, s.voice));
        assert_eq!(pick("Hindi"), Ok(("hi-IN".into(), "Polly.Aditi".into())));
        assert_eq!(pick("hi-IN"), Ok(("hi-IN".into(), "Polly.Aditi".into())));
        assert_eq!(pick("HI_in"), Ok(("hi-IN".into(), "Polly.Aditi".into())));
        assert_eq!(pick("hi"), Ok(("hi-IN".into(), "Polly.Aditi".into())));
        assert_eq!(
            pick("tamil"),
            Ok(("ta-IN".into(), "Google.ta-IN-Standard-A".into()))
        );
        // A bare "English" is the default language, not the first English in the table.
        assert_eq!(pick("English"), Ok(("en-US".into(), "alice".into())));
        assert_eq!(pick("en-IN"), Ok(("en-IN".into(), "Polly.Raveena".into())));
        let default = v.choose(&Speech::default(), &["hi"]).unwrap();
        assert_eq!(
            (default.language.as_str(), default.chosen),
            ("en-US", false)
        );
        assert!(v.choose(&asked("hindi"), &["x"]).unwrap().chosen);
    }

    #[test]
    fn an_unknown_language_is_refused_with_the_configured_ones() {
        let v = voices();
        for unknown in ["Klingon", "fr", "hi-PK", "Telugu"] {
            let refusal = v.choose(&asked(unknown), &["hi"]).unwrap_err();
            assert_eq!(
                refusal,
                Refusal::UnknownLanguage {
                    asked: unknown.to_owned(),
                    known: vec![
                        "English (en-IN)".to_owned(),
                        "English (en-US)".to_owned(),
                        "Hindi (hi-IN)".to_owned(),
                        "Tamil (ta-IN)".to_owned()
                    ],
                },
                "{unknown}"
            );
        }
    }

    #[test]
    fn each_voice_family_has_its_limit() {
        assert_eq!(say_limit("Polly.Aditi"), 3_000);
        assert_eq!(say_limit("polly.Aditi-Neural"), 3_000);
        assert_eq!(say_limit("Google.hi-IN-Wavenet-A"), 5_000);
        assert_eq!(say_limit("alice"), 4_096);
        assert_eq!(say_limit("woman"), 4_096);
        let v = voices();
        let at_limit = "a".repeat(3_000);
        assert!(v.choose(&asked("hi-IN"), &[&at_limit]).is_ok());
        let over = "a".repeat(3_001);
        assert_eq!(
            v.choose(&asked("hi-IN"), &["short", &over]),
            Err(Refusal::SayTooLong {
                len: 3_001,
                max: 3_000,
                voice: "Polly.Aditi".into()
            })
        );
        // The same text is fine for a basic voice (4,096) and a Google one (5,000).
        assert!(v.choose(&Speech::default(), &[&over]).is_ok());
        assert!(v.choose(&asked("ta-IN"), &[&"a".repeat(5_000)]).is_ok());
        assert!(v.choose(&asked("ta-IN"), &[&"a".repeat(5_001)]).is_err());
    }
}
