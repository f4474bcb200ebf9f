//! A question asked after the message (`<Gather>`) and the callee's answer to it. Apart from
//! [`super::speech`] so that the call record can hold them without depending on the policy.

use serde::{Deserialize, Serialize};

/// A question the callee answers by key or by voice: its text and the keys' labels
/// ("1 yes 2 no" → 1 = yes, 2 = no).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<(u8, String)>,
}

impl Question {
    /// "Can you come tomorrow? 1 yes 2 no", "Can you come? (yes/no)", "Coming? 1 for yes,
    /// 2 for no": the question and its options. `None` when nothing is left to ask.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        for yes_no in ["(yes/no)", "(yes or no)", "yes/no", "(y/n)"] {
            if let Some(before) = lower.strip_suffix(yes_no) {
                let question = text[..before.len()].trim().to_owned();
                return (!question.is_empty()).then(|| Self {
                    text: question,
                    options: vec![(1, "yes".to_owned()), (2, "no".to_owned())],
                });
            }
        }
        // Options follow the last '?' (or the whole text has none): "1 yes 2 no".
        let (question, tail) = match text.rfind('?') {
            Some(q) => (&text[..=q], &text[q + 1..]),
            None => (text, ""),
        };
        let options = parse_options(tail);
        let question = match (&options, tail.trim().is_empty()) {
            (Some(_), _) | (None, true) => question.trim(),
            (None, false) => text,
        };
        (!question.is_empty()).then(|| Self {
            text: question.to_owned(),
            options: options.unwrap_or_default(),
        })
    }

    /// What the callee hears: the question, then how to answer.
    pub fn spoken(&self) -> String {
        if self.options.is_empty() {
            return format!("{} Press a key or say your answer.", self.text);
        }
        let keys: Vec<String> = self
            .options
            .iter()
            .map(|(digit, label)| format!("{digit} for {label}"))
            .collect();
        format!("{} Press {}.", self.text, keys.join(", "))
    }

    /// The label of `digit`, if the question gave it one.
    pub fn label(&self, digit: &str) -> Option<&str> {
        let d: u8 = digit.parse().ok()?;
        self.options
            .iter()
            .find(|(k, _)| *k == d)
            .map(|(_, l)| l.as_str())
    }
}

/// "1 yes 2 no", "1 for yes, 2 for no", "1 = yes; 2 = no": each digit 1–9 with its label.
fn parse_options(tail: &str) -> Option<Vec<(u8, String)>> {
    let mut options: Vec<(u8, String)> = Vec::new();
    let mut rest = tail.trim();
    while !rest.is_empty() {
        let mut chars = rest.chars();
        let digit = chars.next()?.to_digit(10).filter(|d| *d >= 1)?;
        rest = chars
            .as_str()
            .trim_start_matches([' ', '=', ':', '-', ')', '.']);
        if let Some(after) = rest.strip_prefix("for ") {
            rest = after;
        }
        let end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let label = rest[..end]
            .trim()
            .trim_end_matches([',', ';', '.', ' '])
            .trim_end_matches(" or")
            .trim();
        if label.is_empty() || options.iter().any(|(d, _)| u32::from(*d) == digit) {
            return None;
        }
        options.push((digit as u8, label.to_owned()));
        rest = rest[end..].trim_start();
    }
    (!options.is_empty()).then_some(options)
}

/// How the callee answered a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// A key, with its label when the question gave one.
    Key {
        digits: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// Words, with the recognizer's confidence (0–1) when it gave one.
    Speech {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confidence: Option<f32>,
    },
    /// Asked twice, answered neither time.
    Nothing,
}

#[cfg(test)]
mod question_tests {
    use super::*;

    fn q(text: &str, options: &[(u8, &str)]) -> Option<Question> {
        Some(Question {
            text: text.to_owned(),
            options: options.iter().map(|(d, l)| (*d, (*l).to_owned())).collect(),
        })
    }

    #[test]
    fn questions_and_their_options_are_read() {
        let cases = [
            (
                "Can you come tomorrow? 1 yes 2 no",
                q("Can you come tomorrow?", &[(1, "yes"), (2, "no")]),
            ),
            (
                "Can you come tomorrow? 1 for yes, 2 for no",
                q("Can you come tomorrow?", &[(1, "yes"), (2, "no")]),
            ),
            (
                "Which day? 1 = Monday; 2 = Tuesday or 3 = next week",
                q(
                    "Which day?",
                    &[(1, "Monday"), (2, "Tuesday"), (3, "next week")],
                ),
            ),
            (
                "Can you come tomorrow (yes/no)",
                q("Can you come tomorrow", &[(1, "yes"), (2, "no")]),
            ),
            ("Can you come?", q("Can you come?", &[])),
            // Digits that are no option list stay in the question.
            ("Is 5 pm fine? 5 pm or 6", q("Is 5 pm fine? 5 pm or 6", &[])),
            ("", None),
            ("(yes/no)", None),
        ];
        for (text, want) in cases {
            assert_eq!(Question::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_callee_hears_how_to_answer() {
        let question = Question::parse("Can you come? 1 yes 2 no").unwrap();
        assert_eq!(
            question.spoken(),
            "Can you come? Press 1 for yes, 2 for no."
        );
        assert_eq!(question.label("1"), Some("yes"));
        assert_eq!(question.label("7"), None);
    }
}
