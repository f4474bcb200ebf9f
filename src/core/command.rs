//! The chat grammar: what people write to callbot.
//!
//! ```text
//! request  := polite* (call | status | list | cancel | help) polite*
//! call     := ("/call" | "call" | "dial" | "ring" | "phone" | "place a call to" | "make a call to")
//!             lead? lead? NUMBER option* [message]
//! option   := "in" LANGUAGE ["language"] | ("lang=" | "language=") TAG | "repeat" | "repeated"
//! lead     := "to" | "up" | "on" | "at" | "the number" | "number" | "no."   ("call to the number …")
//! message  := ("and say" | "say" | "say:" | "saying" | "and tell them" | "with message" | "message:" | ",")
//!             ["in" LANGUAGE (":" | ",")] TEXT [sep repeat]  [("lang=" | "language=") TAG]
//!             |  "quoted text"  |  “quoted text”
//! repeat   := "say it twice" | "repeat it" | "repeat" | …  after ", " "; " ". " " - " " and ",
//!             or "(repeat)" | "(twice)" | "(say it twice)" after a space
//! status   := "/status" | "status" [ID]        list   := "/calls" | "calls" | "list" | "history"
//! cancel   := "/cancel" | "cancel" | "hang up" [ID]   help := "/help" | "/start" | "help" | "?"
//! polite   := "please" | "pls" | "can you" | "could you" | "would you" | "kindly" | "hey" | "now" | …
//! ```
//!
//! Case-insensitive. `parse` returns `Ok(None)` when the text is not for us (ordinary chat),
//! `Err(reason)` when it is a call request we cannot accept (the reason is shown to the user),
//! and numbers are normalized to E.164 with [`PhoneNumber::parse`]. The language is taken
//! as written ("Hindi", "hi-IN"): which configured language and voice it means, and whether
//! there is one, is [`super::speech::Voices`]' answer when the call is requested.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::phone::{PhoneError, PhoneNumber, Region};
use super::speech::{Question, Speech, canonical_tag, subtag_of_name};

/// What a message asks callbot to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Call {
        to: PhoneNumber,
        message: Option<String>,
        /// Language and repetition, as asked.
        speech: Speech,
    },
    /// Status of one call, or of the latest when `id` is `None`.
    Status {
        id: Option<String>,
    },
    List,
    Cancel {
        id: Option<String>,
    },
    Help,
}

/// A call request that cannot be accepted. Its Display, the user-facing reason, is worded in
/// [`super::replies`] with every other text a user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Number(PhoneError),
    TrailingText {
        number: String,
        rest: String,
    },
    /// Neither the grammar nor the language model could make sense of it.
    NotUnderstood,
    /// The grammar could not read it and this requester has had its language-model
    /// requests for the minute (`limits.llm_per_user_minute`).
    TooManyRequests,
    /// The language model named a number that is not in the text: never dialed.
    Unverified {
        number: String,
    },
}

impl std::error::Error for ParseError {}

impl From<PhoneError> for ParseError {
    fn from(e: PhoneError) -> Self {
        Self::Number(e)
    }
}

/// Verbs that start a call request; longest first so "place a call to" wins over "call".
const CALL_VERBS: &[&str] = &[
    "place a call to",
    "make a call to",
    "give a call to",
    "place a call",
    "make a call",
    "/call",
    "call",
    "dial",
    "ring",
    "phone",
];

/// Words people put around a request that change nothing.
const POLITE_PREFIXES: &[&str] = &[
    "please",
    "pls",
    "plz",
    "can you",
    "could you",
    "would you",
    "will you",
    "can u",
    "kindly",
    "hey",
    "hi",
    "hello",
    "ok",
    "okay",
    "callbot",
    "bot",
];

const POLITE_SUFFIXES: &[&str] = &[
    "please",
    "pls",
    "now",
    "right now",
    "asap",
    "thanks",
    "thank you",
    "for me",
];

/// Words between the verb and the number.
const NUMBER_LEADS: &[&str] = &["to", "up", "on", "at", "the number", "number", "no."];

/// Markers that start the spoken message, earliest occurrence wins (the longest there).
const MESSAGE_MARKERS: &[&str] = &[
    " and say that ",
    " and say: ",
    " and say ",
    " and tell them that ",
    " and tell them ",
    " and tell him ",
    " and tell her ",
    " and tell ",
    " saying that ",
    " saying: ",
    " saying ",
    " say: ",
    " say ",
    " with the message: ",
    " with the message ",
    " with message: ",
    " with message ",
    " with text ",
    " message: ",
    " msg: ",
    ": ",
    ", ",
];

/// Markers that start a question ("and ask: Can you come? 1 yes 2 no").
const ASK_MARKERS: &[&str] = &[
    " and ask them: ",
    " and ask: ",
    " and ask ",
    " ask: ",
    " ask ",
    " asking ",
];

/// Punctuation trimmed around a request, with the polite words.
const PUNCTUATION: &str = "!?.,; ";

/// The tables above, each compiled once into one pattern (the `regex` crate; LazyLock, so
/// the first parse compiles them). Words compare ASCII case-insensitively, `(?i-u)`: Unicode
/// case folding would let "o\u{212A}ay" (Kelvin sign) be "okay". A word ends at a space,
/// comma or colon, or at the end of the text.
///
/// Speed (BENCHMARKS.md, parsing): every pattern but the marker search is anchored at one end
/// of the text, none asks for capture groups, and the two polite runs and the verb are
/// skipped without a search when the text's first (last) byte cannot start (end) one.
struct Grammar {
    /// `^(punctuation | polite word)*`: everything a request may start with before its verb
    /// or keyword; always matches, maybe empty.
    polite_prefixes: Regex,
    /// `(punctuation | polite word)*$`, each word after a space, a comma or the start.
    polite_suffixes: Regex,
    /// `^verb lead? lead?`, or Telegram's group form `/call@bot_name lead? lead?`.
    call_verb: Regex,
    /// The earliest message marker, the longest at that place; a marker's leading space may
    /// be the start of the text.
    marker: Regex,
    /// A message marker, trimmed, at the end of the text (before an opening quote).
    marker_tail: Regex,
    /// The earliest question marker, the longest at that place.
    ask: Regex,
    /// The number candidate: digits and the separators people write (`+ ( ) - . /`,
    /// spaces), up to the last digit.
    number: Regex,
    /// Bytes a polite prefix run / a call verb can start with, a polite suffix run end with.
    prefix_first: ByteSet,
    verb_first: ByteSet,
    suffix_last: ByteSet,
}

/// A set of bytes, ASCII letters in both cases: the cheap prefilter before a search.
struct ByteSet([bool; 256]);

impl ByteSet {
    fn new(bytes: impl IntoIterator<Item = u8>) -> Self {
        let mut set = [false; 256];
        for b in bytes {
            set[usize::from(b.to_ascii_lowercase())] = true;
            set[usize::from(b.to_ascii_uppercase())] = true;
        }
        Self(set)
    }

    fn contains(&self, b: Option<&u8>) -> bool {
        b.is_some_and(|&b| self.0[usize::from(b)])
    }
}

static GRAMMAR: LazyLock<Grammar> = LazyLock::new(Grammar::compile);

impl Grammar {
    fn compile() -> Self {
        // A word of the tables is followed by a boundary: one or more of " ,:" or the end.
        const AFTER_WORD: &str = r"(?:[ ,:]+|\z)";
        let words = |list: &[&str]| {
            list.iter()
                .map(|w| regex::escape(w))
                .collect::<Vec<_>>()
                .join("|")
        };
        let punctuation = format!("[{}]", regex::escape(PUNCTUATION));
        let build = |pattern: String| {
            Regex::new(&pattern).unwrap_or_else(|e| panic!("grammar pattern {pattern}: {e}"))
        };
        // Longest first, so that at the earliest place the longest marker wins.
        let mut markers = MESSAGE_MARKERS.to_vec();
        markers.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let marker_search = markers
            .iter()
            .map(|m| match m.strip_prefix(' ') {
                Some(rest) => format!(r"(?:\A| ){}", regex::escape(rest)),
                None => regex::escape(m),
            })
            .collect::<Vec<_>>()
            .join("|");
        let trimmed_markers: Vec<&str> = MESSAGE_MARKERS.iter().map(|m| m.trim()).collect();
        let firsts = |list: &[&str]| {
            list.iter()
                .filter_map(|w| w.bytes().next())
                .collect::<Vec<_>>()
        };
        let leads = format!(r"(?:(?i-u:{}){AFTER_WORD}){{0,2}}", words(NUMBER_LEADS));
        Self {
            polite_prefixes: build(format!(
                r"\A(?:{punctuation}|(?i-u:{}){AFTER_WORD})*",
                words(POLITE_PREFIXES)
            )),
            polite_suffixes: build(format!(
                r"(?:{punctuation}|(?:\A|[ ,])(?i-u:{}))*\z",
                words(POLITE_SUFFIXES)
            )),
            call_verb: build(format!(
                r"\A(?:(?i-u:/call@)[^ ]* *|(?i-u:{}){AFTER_WORD}){leads}",
                words(CALL_VERBS)
            )),
            marker: build(format!("(?i-u:{marker_search})")),
            marker_tail: build(format!(r"(?i-u:{})\z", words(&trimmed_markers))),
            ask: build({
                let mut asks = ASK_MARKERS.to_vec();
                asks.sort_by_key(|m| std::cmp::Reverse(m.len()));
                let alternatives = asks
                    .iter()
                    .map(|m| format!(r"(?:\A| ){}", regex::escape(m.trim_start())))
                    .collect::<Vec<_>>()
                    .join("|");
                format!("(?i-u:{alternatives})")
            }),
            number: build(r"\A[0-9+()./ \-]*[0-9]".to_owned()),
            prefix_first: ByteSet::new(
                firsts(POLITE_PREFIXES)
                    .into_iter()
                    .chain(PUNCTUATION.bytes()),
            ),
            verb_first: ByteSet::new(firsts(CALL_VERBS)),
            suffix_last: ByteSet::new(
                POLITE_SUFFIXES
                    .iter()
                    .filter_map(|w| w.bytes().last())
                    .chain(PUNCTUATION.bytes()),
            ),
        }
    }

    /// `s` without its leading punctuation and polite words.
    fn strip_polite_prefixes<'a>(&self, s: &'a str) -> &'a str {
        if !self.prefix_first.contains(s.as_bytes().first()) {
            return s;
        }
        let end = self.polite_prefixes.find(s).map_or(0, |m| m.end());
        &s[end..]
    }

    /// `s` without its trailing punctuation and polite words.
    fn strip_polite_suffixes<'a>(&self, s: &'a str) -> &'a str {
        if !self.suffix_last.contains(s.as_bytes().last()) {
            return s;
        }
        let start = self.polite_suffixes.find(s).map_or(s.len(), |m| m.start());
        &s[..start]
    }
}

/// Parses one chat message. See the module docs for the grammar.
///
/// Every step borrows from the text; the only allocations are a space-normalized copy when
/// the text needs one and the parts of the answer (BENCHMARKS.md: parsing).
pub fn parse(text: &str, region: Region) -> Result<Option<Command>, ParseError> {
    let grammar = &*GRAMMAR;
    let text = normalize_spaces(text);
    // Polite words at the end may belong to the message ("… and say thank you"): a call is
    // found after the leading ones only, and parse_call strips trailing ones off the number.
    let lead = strip_polite(grammar, &text, false);
    if lead.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = strip_call_verb(grammar, lead) {
        return parse_call(grammar, rest, region).map(Some);
    }
    let core = strip_polite(grammar, lead, true);
    if core.is_empty() {
        return Ok(None);
    }
    Ok(parse_other(core))
}

/// status / list / cancel / help. Ids keep their case (they are case-sensitive tokens).
fn parse_other(core: &str) -> Option<Command> {
    let (word, arg) = match core.split_once(' ') {
        Some((w, a)) => (w, Some(a.trim())),
        None => (core, None),
    };
    let word = strip_bot_suffix(word.trim_start_matches('/')).to_ascii_lowercase();
    let arg_lower = arg.map(str::to_ascii_lowercase);
    let id = || arg.filter(|a| is_call_id(a)).map(str::to_owned);
    match (word.as_str(), arg_lower.as_deref()) {
        ("help" | "start" | "?" | "commands" | "usage", None) => Some(Command::Help),
        ("status", None) => Some(Command::Status { id: None }),
        ("status", Some(_)) => id().map(|id| Command::Status { id: Some(id) }),
        ("calls" | "list" | "history" | "log", None) => Some(Command::List),
        ("list", Some("calls")) => Some(Command::List),
        ("cancel" | "hangup", None) => Some(Command::Cancel { id: None }),
        ("cancel" | "hangup", Some(_)) => id().map(|id| Command::Cancel { id: Some(id) }),
        ("hang", Some("up")) => Some(Command::Cancel { id: None }),
        ("hang", Some(_)) => arg
            .and_then(|a| strip_word_prefix(a, "up"))
            .filter(|a| is_call_id(a))
            .map(|id| Command::Cancel {
                id: Some(id.to_owned()),
            }),
        _ => None,
    }
}

/// Call ids are URL-safe tokens; accept any short word of those characters.
fn is_call_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// "/call@my_bot" → "call" (Telegram's command form in groups).
fn strip_bot_suffix(word: &str) -> &str {
    word.split_once('@').map_or(word, |(w, _)| w)
}

/// Collapses runs of whitespace to one space and trims; borrows when there is nothing to do
/// (the usual chat line).
fn normalize_spaces(text: &str) -> Cow<'_, str> {
    let mut previous_space = true;
    let clean = text.chars().all(|c| {
        let ok = !c.is_whitespace() || (c == ' ' && !previous_space);
        previous_space = c.is_whitespace();
        ok
    }) && !previous_space;
    if clean || text.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

/// Strips polite words (and punctuation) from the start, and with `suffixes` from the end.
fn strip_polite<'a>(grammar: &Grammar, text: &'a str, suffixes: bool) -> &'a str {
    let mut s = grammar.strip_polite_prefixes(text.trim());
    if !suffixes {
        // The prefix pattern takes the whole run at once.
        return s;
    }
    // Both ends: again until neither strips anything ("now please" is left of "please" by
    // the suffix pattern, then stripped by the prefix one).
    loop {
        let before = s.len();
        s = grammar.strip_polite_prefixes(grammar.strip_polite_suffixes(s));
        if s.len() == before {
            return s;
        }
    }
}

/// Strips `word` (case-insensitive) from the start of `s` when followed by a word boundary.
fn strip_word_prefix<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &s[word.len()..];
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if c == ' ' || c == ',' || c == ':' => {
            Some(rest.trim_start_matches([' ', ',', ':']))
        }
        Some(_) => None,
    }
}

/// Returns the text after a call verb and its number leads ("call to the number …"), in its
/// original case, or `None` if it is not a call request. A verb without a number ("call me
/// later") is still a request; `parse_call` explains what is missing.
fn strip_call_verb<'a>(grammar: &Grammar, core: &'a str) -> Option<&'a str> {
    if !grammar.verb_first.contains(core.as_bytes().first()) {
        return None;
    }
    grammar.call_verb.find(core).map(|m| &core[m.end()..])
}

fn parse_call(grammar: &Grammar, rest: &str, region: Region) -> Result<Command, ParseError> {
    // "… and ask: QUESTION" ends the request: cut it off first, unless a message marker or
    // a quote comes before it (then the question is cut off the message).
    let ask = grammar.ask.find(rest).map(|m| (m.start(), m.end()));
    let first_marker = find_marker(grammar, rest).map(|(at, _)| at);
    let first_quote = rest.find(['"', '“', '«']);
    let (rest, mut question) = match ask {
        Some((at, end))
            if first_marker.is_none_or(|m| at <= m) && first_quote.is_none_or(|q| at < q) =>
        {
            (&rest[..at], Question::parse(&rest[end..]))
        }
        _ => (rest, None),
    };
    let (number_part, message) = split_message(grammar, rest);
    let message = match message {
        // A quoted message is the message, whatever it says.
        Some(m) if question.is_none() && first_quote.is_none() => match grammar.ask.find(&m) {
            Some(found) => {
                question = Question::parse(&m[found.end()..]);
                clean_message(&m[..found.start()])
            }
            None => Some(m),
        },
        other => other,
    };
    let number_text = grammar.strip_polite_suffixes(number_part.trim());

    let (number_span, trailing) = take_number(grammar, number_text);
    if number_span.chars().filter(char::is_ascii_digit).count() < 3 {
        let shown = if rest.trim().is_empty() {
            "your message".to_owned()
        } else {
            rest.trim().to_owned()
        };
        return Err(PhoneError::NoNumber(shown).into());
    }
    let to = PhoneNumber::parse(number_span, region)?;
    let trailing = trailing.trim();
    let mut speech = Speech::default();
    if !take_options(trailing, &mut speech) {
        return Err(ParseError::TrailingText {
            number: to.display(),
            rest: trailing.to_owned(),
        });
    }
    let message = match message {
        Some(m) => message_options(&m, &mut speech),
        None => None,
    };
    speech.question = question;
    Ok(Command::Call {
        to,
        message,
        speech,
    })
}

/// Reads the options between the number and the message ("in Hindi", "lang=hi-IN",
/// "repeat") into `speech`; false when anything else is there (nothing is taken then).
fn take_options(trailing: &str, speech: &mut Speech) -> bool {
    let mut found = Speech::default();
    let mut words = trailing
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .peekable();
    while let Some(word) = words.next() {
        if word.eq_ignore_ascii_case("in") {
            let Some(language) = words.next().filter(|w| is_language_word(w)) else {
                return false;
            };
            found.language = Some(language.to_owned());
            words.next_if(|w| w.eq_ignore_ascii_case("language"));
        } else if let Some(tag) = language_option(word) {
            found.language = Some(tag.to_owned());
        } else if word.eq_ignore_ascii_case("repeat") || word.eq_ignore_ascii_case("repeated") {
            found.repeat = true;
        } else {
            return false;
        }
    }
    *speech = found;
    true
}

/// A word that may name a language after "in": letters ("Hindi", "Klingon": the voices
/// table decides whether it is one) or a tag ("hi-IN").
fn is_language_word(word: &str) -> bool {
    word.bytes().all(|b| b.is_ascii_alphabetic()) || canonical_tag(word).is_some()
}

/// The tag of `lang=hi-IN` / `language=hi-IN`.
fn language_option(word: &str) -> Option<&str> {
    let (key, value) = word.split_once('=')?;
    let key_ok = key.eq_ignore_ascii_case("lang") || key.eq_ignore_ascii_case("language");
    (key_ok && canonical_tag(value).is_some()).then_some(value)
}

/// Endings of a message that ask for it to be said twice, lower case.
const REPEAT_ENDINGS: &[&str] = &[
    "say it twice",
    "say it two times",
    "repeat it twice",
    "repeat twice",
    "repeat it",
    "repeat",
];
/// What separates a repeat ending from the message.
const REPEAT_SEPARATORS: &[&str] = &[", ", "; ", ". ", " - ", " — ", " and "];
/// Repeat endings in brackets, after a space.
const REPEAT_BRACKETED: &[&str] = &["(repeat)", "(twice)", "(say it twice)", "[repeat]"];

/// The options a message carries: a leading "in Hindi:", a trailing "lang=hi-IN", a
/// trailing ", say it twice". Returns the message without them (`None` if nothing is left).
fn message_options(message: &str, speech: &mut Speech) -> Option<String> {
    let mut text = message.trim();
    // "in Tamil: …" / "in hi-IN, …": only a language the grammar knows by name, or a tag
    // with a region, so that "in time, …" stays the message.
    if let Some(rest) = strip_word_prefix(text, "in")
        && let Some(end) = rest.find([':', ','])
    {
        let word = rest[..end].trim();
        let known =
            subtag_of_name(word).is_some() || (word.contains('-') && canonical_tag(word).is_some());
        if known {
            speech.language = Some(word.to_owned());
            text = rest[end + 1..].trim_start();
        }
    }
    // "… lang=hi-IN" at the very end.
    if let Some((before, last)) = text.rsplit_once(' ')
        && let Some(tag) = language_option(last)
    {
        speech.language = Some(tag.to_owned());
        text = before.trim_end();
    }
    if let Some(rest) = strip_repeat_ending(text) {
        speech.repeat = true;
        text = rest;
    }
    clean_message(text)
}

/// `text` without a trailing "…, say it twice" / "… (repeat)", if it has one.
fn strip_repeat_ending(text: &str) -> Option<&str> {
    let body = text.trim_end_matches(['.', '!', ' ']);
    // ASCII lower case keeps every byte offset of `body`.
    let lower = body.to_ascii_lowercase();
    for ending in REPEAT_BRACKETED {
        if let Some(before) = lower.strip_suffix(ending)
            && before.ends_with(' ')
        {
            return Some(body[..before.len()].trim_end());
        }
    }
    for ending in REPEAT_ENDINGS {
        let Some(before) = lower.strip_suffix(ending) else {
            continue;
        };
        for sep in REPEAT_SEPARATORS {
            if before.ends_with(sep) {
                let cut = before.len() - sep.len();
                // A sentence's full stop stays with the sentence.
                let keep = if sep.starts_with('.') { cut + 1 } else { cut };
                return Some(body[..keep].trim_end());
            }
        }
    }
    None
}

/// Splits "NUMBER and say TEXT" / "NUMBER \"TEXT\"" into the number part and the message.
/// Whichever comes first wins: a marker ("and say") or an opening quote.
fn split_message<'a>(grammar: &Grammar, rest: &'a str) -> (&'a str, Option<String>) {
    let marker = find_marker(grammar, rest);
    let quote = rest.find(['"', '“', '«']);
    match (marker, quote) {
        (Some((at, _)), Some(open)) if open < at => split_quoted(grammar, rest, open),
        (None, Some(open)) => split_quoted(grammar, rest, open),
        (Some((at, len)), _) => {
            let msg_start = (at + len).min(rest.len());
            (&rest[..at], clean_message(&rest[msg_start..]))
        }
        (None, None) => (rest, None),
    }
}

/// The earliest message marker in `" " + rest`, case-insensitive, longest at that place:
/// where it starts in `rest` (its leading space may be the virtual one before the text) and
/// how many bytes of `rest` it covers.
fn find_marker(grammar: &Grammar, rest: &str) -> Option<(usize, usize)> {
    grammar.marker.find(rest).map(|m| (m.start(), m.len()))
}

/// The quoted text is the message; what precedes it (minus a marker) is the number.
fn split_quoted<'a>(grammar: &Grammar, rest: &'a str, open: usize) -> (&'a str, Option<String>) {
    let quote_len = rest[open..].chars().next().map_or(1, char::len_utf8);
    let inner = &rest[open + quote_len..];
    let close = inner.rfind(['"', '”', '»']).unwrap_or(inner.len());
    (
        strip_marker_tail(grammar, &rest[..open]),
        clean_message(&inner[..close]),
    )
}

/// "… and say " before an opening quote. A marker that is a word of its own is cut with the
/// spaces and commas before it; one touching the number ("+91 98765:") with the spaces.
fn strip_marker_tail<'a>(grammar: &Grammar, s: &'a str) -> &'a str {
    let s = s.trim_end();
    let Some(marker) = grammar.marker_tail.find(s) else {
        return s;
    };
    let before = &s[..marker.start()];
    if before.is_empty() || before.ends_with([' ', ',']) {
        before.trim_end_matches([' ', ','])
    } else {
        before.trim_end()
    }
}

fn clean_message(text: &str) -> Option<String> {
    let t = text.trim();
    // Strip one pair of enclosing quotes ("…", “…”, «…», '…'), never a lone one.
    let t = [('"', '"'), ('“', '”'), ('«', '»'), ('\'', '\'')]
        .iter()
        .find_map(|&(open, close)| {
            t.strip_prefix(open)
                .and_then(|inner| inner.strip_suffix(close))
        })
        .unwrap_or(t)
        .trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Takes the phone number at the start of `s`: digits and the separators people write
/// (`+ ( ) - . /` and spaces), up to the last digit. Returns it and what follows.
fn take_number<'a>(grammar: &Grammar, s: &'a str) -> (&'a str, &'a str) {
    let s = s.trim_start();
    let end = grammar.number.find(s).map_or(0, |m| m.end());
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn india() -> Region {
        Region::parse("IN").unwrap()
    }

    fn call(to: &str, message: Option<&str>) -> Command {
        Command::Call {
            to: PhoneNumber::from_e164(to).unwrap(),
            message: message.map(str::to_owned),
            speech: Speech::default(),
        }
    }

    fn spoken(to: &str, message: Option<&str>, language: Option<&str>, repeat: bool) -> Command {
        Command::Call {
            to: PhoneNumber::from_e164(to).unwrap(),
            message: message.map(str::to_owned),
            speech: Speech {
                language: language.map(str::to_owned),
                repeat,
                question: None,
            },
        }
    }

    #[test]
    fn questions_are_cut_off_the_request_with_their_options() {
        let ask = |text: &str| match parse(text, india()) {
            Ok(Some(Command::Call {
                to,
                message,
                speech,
            })) => (to.e164().to_owned(), message, speech.question),
            other => panic!("{text:?}: {other:?}"),
        };
        let yes_no = Some(Question {
            text: "Can you come tomorrow?".to_owned(),
            options: vec![(1, "yes".to_owned()), (2, "no".to_owned())],
        });
        assert_eq!(
            ask("call +91 98765 43210 and ask: Can you come tomorrow? 1 yes 2 no"),
            ("+919876543210".to_owned(), None, yes_no.clone())
        );
        assert_eq!(
            ask("call +91 98765 43210 ask Can you come tomorrow? (yes/no)"),
            (
                "+919876543210".to_owned(),
                None,
                Some(Question {
                    text: "Can you come tomorrow?".to_owned(),
                    options: vec![(1, "yes".to_owned()), (2, "no".to_owned())],
                })
            )
        );
        assert_eq!(
            ask(
                "call +91 98765 43210 and say the party is on and ask: Can you come tomorrow? 1 for yes, 2 for no"
            ),
            (
                "+919876543210".to_owned(),
                Some("the party is on".to_owned()),
                yes_no
            )
        );
        // "ask" inside quotes is the message's.
        assert_eq!(
            ask("call +91 98765 43210 \"ask Bob\""),
            ("+919876543210".to_owned(), Some("ask Bob".to_owned()), None)
        );
    }

    #[test]
    fn languages_and_repeats_are_read_where_people_write_them() {
        let to = "+919876543210";
        let cases = [
            (
                "call +91 98765 43210 in Hindi and say namaste",
                spoken(to, Some("namaste"), Some("Hindi"), false),
            ),
            (
                "call +91 98765 43210 in hindi language and say namaste",
                spoken(to, Some("namaste"), Some("hindi"), false),
            ),
            (
                "call +91 98765 43210 say in Tamil: vanakkam",
                spoken(to, Some("vanakkam"), Some("Tamil"), false),
            ),
            (
                "call +91 98765 43210 and say in hi-IN, namaste",
                spoken(to, Some("namaste"), Some("hi-IN"), false),
            ),
            (
                "call +91 98765 43210 lang=hi-IN and say namaste",
                spoken(to, Some("namaste"), Some("hi-IN"), false),
            ),
            (
                "/call +91 98765 43210 and say namaste lang=ta-IN",
                spoken(to, Some("namaste"), Some("ta-IN"), false),
            ),
            (
                "call +91 98765 43210 in Klingon and say nuqneH",
                spoken(to, Some("nuqneH"), Some("Klingon"), false),
            ),
            (
                "call +91 98765 43210 in Hindi: namaste",
                spoken(to, Some("namaste"), Some("Hindi"), false),
            ),
            (
                "call +91 98765 43210 and say the table is ready, say it twice",
                spoken(to, Some("the table is ready"), None, true),
            ),
            (
                "call +91 98765 43210 and say The table is ready. Say it twice.",
                spoken(to, Some("The table is ready."), None, true),
            ),
            (
                "call +91 98765 43210 and say the table is ready (repeat)",
                spoken(to, Some("the table is ready"), None, true),
            ),
            (
                "call +91 98765 43210 repeat and say in Hindi: namaste",
                spoken(to, Some("namaste"), Some("Hindi"), true),
            ),
            (
                "call +91 98765 43210 in Hindi repeat: namaste",
                spoken(to, Some("namaste"), Some("Hindi"), true),
            ),
            // What only looks like an option stays the message.
            (
                "call +91 98765 43210 and say in time, we leave",
                spoken(to, Some("in time, we leave"), None, false),
            ),
            (
                "call +91 98765 43210 and say please repeat",
                spoken(to, Some("please repeat"), None, false),
            ),
            (
                "call +91 98765 43210 and say in the morning",
                spoken(to, Some("in the morning"), None, false),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text, india()), Ok(Some(want)), "{text:?}");
        }
        for refused in [
            "call +91 98765 43210 in 5 minutes",
            "call +91 98765 43210 in the morning",
            "call +91 98765 43210 lang=!! and say hi",
        ] {
            assert!(
                matches!(
                    parse(refused, india()),
                    Err(ParseError::TrailingText { .. })
                ),
                "{refused:?}"
            );
        }
    }

    /// What `parse` should make of a text.
    enum Want {
        Call(&'static str, Option<&'static str>),
        Other(Command),
        NotForUs,
        Refused(&'static str),
    }
    use Want::*;

    fn table() -> Vec<(&'static str, Want)> {
        vec![
            ("Call to +91 9876543210", Call("+919876543210", None)),
            ("call +91 98765 43210", Call("+919876543210", None)),
            ("CALL TO +91 9876543210", Call("+919876543210", None)),
            ("call +1 (415) 555-0100", Call("+14155550100", None)),
            ("Call 098765 43210", Call("+919876543210", None)),
            ("call 9876543210", Call("+919876543210", None)),
            ("call +919876543210", Call("+919876543210", None)),
            ("call +91-98765-43210", Call("+919876543210", None)),
            ("call +91.98765.43210", Call("+919876543210", None)),
            ("call 0091 98765 43210", Call("+919876543210", None)),
            ("dial +91 9876543210", Call("+919876543210", None)),
            ("Dial 9876543210", Call("+919876543210", None)),
            ("ring +91 9876543210", Call("+919876543210", None)),
            ("ring up 9876543210", Call("+919876543210", None)),
            ("phone +91 9876543210", Call("+919876543210", None)),
            ("phone to 9876543210", Call("+919876543210", None)),
            ("/call +91 9876543210", Call("+919876543210", None)),
            (
                "/call@callbot_bot +91 9876543210",
                Call("+919876543210", None),
            ),
            ("/CALL 9876543210", Call("+919876543210", None)),
            (
                "please call +91 9876543210 now",
                Call("+919876543210", None),
            ),
            ("please call +91 9876543210", Call("+919876543210", None)),
            ("can you call +91 9876543210?", Call("+919876543210", None)),
            (
                "could you please call 9876543210",
                Call("+919876543210", None),
            ),
            ("Hey, call 9876543210 please!", Call("+919876543210", None)),
            ("kindly dial +91 9876543210.", Call("+919876543210", None)),
            (
                "place a call to +91 9876543210",
                Call("+919876543210", None),
            ),
            ("make a call to 9876543210", Call("+919876543210", None)),
            ("call the number 9876543210", Call("+919876543210", None)),
            (
                "Call to the number +91 9876543210",
                Call("+919876543210", None),
            ),
            ("call to number 9876543210", Call("+919876543210", None)),
            (
                "please ring up the number +91 9876543210 and say hi",
                Call("+919876543210", Some("hi")),
            ),
            ("call on 9876543210", Call("+919876543210", None)),
            ("call   +91    9876543210", Call("+919876543210", None)),
            (
                "Call to +91 9876543210 and say Your table is ready",
                Call("+919876543210", Some("Your table is ready")),
            ),
            // Polite words at the end of a message are the message's.
            (
                "call +91 9876543210 and say thank you",
                Call("+919876543210", Some("thank you")),
            ),
            (
                "please call +91 9876543210 and say come home please",
                Call("+919876543210", Some("come home please")),
            ),
            (
                "call +91 9876543210 please now!",
                Call("+919876543210", None),
            ),
            (
                "call +91 9876543210 say: hello there",
                Call("+919876543210", Some("hello there")),
            ),
            (
                "call +91 9876543210 say hello there",
                Call("+919876543210", Some("hello there")),
            ),
            (
                "call +91 9876543210 with message The car is outside",
                Call("+919876543210", Some("The car is outside")),
            ),
            (
                "call +91 9876543210 with the message dinner at 8",
                Call("+919876543210", Some("dinner at 8")),
            ),
            (
                "call +91 9876543210 \"Your table is ready\"",
                Call("+919876543210", Some("Your table is ready")),
            ),
            (
                "call +91 9876543210 and say \"Your table is ready\"",
                Call("+919876543210", Some("Your table is ready")),
            ),
            (
                "call +91 9876543210 and say the \"special\" is ready",
                Call("+919876543210", Some("the \"special\" is ready")),
            ),
            (
                "call +91 9876543210 “smart quotes work”",
                Call("+919876543210", Some("smart quotes work")),
            ),
            (
                "call +91 9876543210 saying the build is green",
                Call("+919876543210", Some("the build is green")),
            ),
            (
                "call +91 9876543210 and tell them the deploy is done",
                Call("+919876543210", Some("the deploy is done")),
            ),
            (
                "call +91 9876543210: meeting moved to 5pm",
                Call("+919876543210", Some("meeting moved to 5pm")),
            ),
            (
                "call +91 9876543210, meeting moved",
                Call("+919876543210", Some("meeting moved")),
            ),
            (
                "Call to +91 9876543210 AND SAY Shouting works",
                Call("+919876543210", Some("Shouting works")),
            ),
            (
                "call 9876543210 and say <b>&amp; tricks</b>",
                Call("+919876543210", Some("<b>&amp; tricks</b>")),
            ),
            (
                "call +1 415 555 0100 and say hi, it's me",
                Call("+14155550100", Some("hi, it's me")),
            ),
            (
                "please call +44 20 7946 0958 and say hello from callbot",
                Call("+442079460958", Some("hello from callbot")),
            ),
            ("call +44 20 7946 0958", Call("+442079460958", None)),
            ("call +49 30 901820", Call("+4930901820", None)),
            (
                "call +1 (415) 555-0100 now please",
                Call("+14155550100", None),
            ),
            // "right now" was a dead entry of the table before the regex: "now" was
            // stripped first, and "right" was left as trailing text.
            ("call +91 9876543210 right now", Call("+919876543210", None)),
            (
                "please call 9876543210 right now thanks!",
                Call("+919876543210", None),
            ),
            (
                "/call@callbot_bot to the number 9876543210",
                Call("+919876543210", None),
            ),
            // Case-insensitive in ASCII only: the Kelvin sign is not a "k".
            ("o\u{212A}ay, call 9876543210", NotForUs),
            ("OKAY, call 9876543210", Call("+919876543210", None)),
            ("help", Other(Command::Help)),
            ("/help", Other(Command::Help)),
            ("/start", Other(Command::Help)),
            ("/help@callbot_bot", Other(Command::Help)),
            ("status", Other(Command::Status { id: None })),
            (
                "/status abc_123-XY",
                Other(Command::Status {
                    id: Some("abc_123-XY".to_owned()),
                }),
            ),
            ("list", Other(Command::List)),
            ("/calls", Other(Command::List)),
            ("history", Other(Command::List)),
            ("cancel", Other(Command::Cancel { id: None })),
            ("hang up", Other(Command::Cancel { id: None })),
            (
                "/cancel q1w2e3",
                Other(Command::Cancel {
                    id: Some("q1w2e3".to_owned()),
                }),
            ),
            ("hello there", NotForUs),
            ("good morning team", NotForUs),
            ("", NotForUs),
            ("   ", NotForUs),
            ("please", NotForUs),
            ("I'll call you back", NotForUs),
            ("the status of the project is fine", NotForUs),
            ("recall 9876543210", NotForUs),
            ("calling all hands", NotForUs),
            (
                "call me maybe",
                Refused("I couldn't find a phone number in “me maybe”."),
            ),
            (
                "call",
                Refused("I couldn't find a phone number in “your message”."),
            ),
            (
                "Call to +91 12345",
                Refused("+91 12345 is not a valid number for India."),
            ),
            (
                "call 12345",
                Refused("12345 is not a valid number for India."),
            ),
            (
                "dial +44 1234",
                Refused("+44 1234 is not a valid number for the United Kingdom."),
            ),
            (
                "call 12",
                Refused("I couldn't find a phone number in “12”."),
            ),
            (
                "call +1 555",
                Refused("+1 555 is not a valid number for the United States."),
            ),
            (
                "call +91 9876543210 tomorrow",
                Refused(
                    "I found the number +91 98765 43210 but not what “tomorrow” means. Write: call +91 98765 43210 and say <message>",
                ),
            ),
            (
                "phone is broken",
                Refused("I couldn't find a phone number in “is broken”."),
            ),
        ]
    }

    #[test]
    fn grammar_table() {
        let table = table();
        assert!(table.len() >= 60, "the table has {} rows", table.len());
        for (text, want) in table {
            let got = parse(text, india());
            match want {
                Call(to, message) => assert_eq!(got, Ok(Some(call(to, message))), "{text:?}"),
                Other(cmd) => assert_eq!(got, Ok(Some(cmd)), "{text:?}"),
                NotForUs => assert_eq!(got, Ok(None), "{text:?}"),
                Refused(reason) => assert_eq!(
                    got.map_err(|e| e.to_string()),
                    Err(reason.to_owned()),
                    "{text:?}"
                ),
            }
        }
    }

    /// How a parse reads in a snapshot: one line, the number in E.164.
    fn describe(parsed: &Result<Option<Command>, ParseError>) -> String {
        match parsed {
            Ok(None) => "not for us".to_owned(),
            Ok(Some(Command::Call {
                to,
                message,
                speech,
            })) if *speech == Speech::default() => format!("call {} {message:?}", to.e164()),
            Ok(Some(Command::Call {
                to,
                message,
                speech,
            })) => format!("call {} {message:?} {speech:?}", to.e164()),
            Ok(Some(other)) => format!("{other:?}"),
            Err(e) => format!("refused {:?}", e.to_string()),
        }
    }

    /// What the grammar makes of every input of the fuzz corpus (fuzz/corpus/grammar), one
    /// line each. The replay (tests/it/fuzz_replay.rs) checks promises only; this holds the
    /// answers. Written when the tables became regexes, and checked then to be the old
    /// grammar's answers for every input, so a change in how the grammar runs that changes
    /// an answer shows here. A new corpus input adds a line to review (`cargo insta review`).
    #[test]
    fn the_fuzz_corpus_parses_as_before() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/grammar");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 1000,
            "the corpus holds {} inputs",
            files.len()
        );
        let answers: String = files
            .iter()
            .map(|file| {
                let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
                format!("{text:?} => {}\n", describe(&parse(&text, india())))
            })
            .collect();
        insta::assert_snapshot!(answers);
    }

    /// The national number 98765 43210 written with a random prefix and random separators.
    fn variants() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            Just("+91"),
            Just("+91 "),
            Just("0"),
            Just(""),
            Just("0091 "),
            Just("(+91) ")
        ];
        let seps = prop::collection::vec(prop_oneof![Just(""), Just(" "), Just("-"), Just(".")], 9);
        (prefix, seps).prop_map(|(prefix, seps)| {
            let digits = "9876543210";
            let mut s = prefix.to_owned();
            for (i, d) in digits.chars().enumerate() {
                s.push(d);
                if i < 9 {
                    s.push_str(seps[i]);
                }
            }
            s
        })
    }

    /// The marker search as it was before the one-pass scan and the regex: every marker
    /// searched for in the lowercased text, earliest then longest wins. `find_marker` must
    /// agree with it.
    fn find_marker_by_search(rest: &str) -> Option<(usize, usize)> {
        let padded = format!(" {}", rest.to_ascii_lowercase());
        MESSAGE_MARKERS
            .iter()
            .filter_map(|m| padded.find(m).map(|at| (at, m.len())))
            .min_by_key(|&(at, len)| (at, usize::MAX - len))
            .map(|(at, len)| (at.saturating_sub(1), if at == 0 { len - 1 } else { len }))
    }

    /// Texts made of markers, digits, words and odd characters, so markers overlap, touch
    /// and start the text.
    fn marker_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(MESSAGE_MARKERS.to_vec()).prop_map(str::to_owned),
            prop::sample::select(MESSAGE_MARKERS.to_vec()).prop_map(str::to_uppercase),
            Just("+91 98765 43210".to_owned()),
            Just("say".to_owned()),
            Just("and".to_owned()),
            Just(" ".to_owned()),
            Just(":".to_owned()),
            "\\PC{0,3}",
        ];
        prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn formatting_variants_parse_to_one_e164(number in variants(), verb in prop_oneof![Just("call"), Just("Dial"), Just("/call"), Just("please ring")]) {
            let text = format!("{verb} {number} and say hi");
            prop_assert_eq!(parse(&text, india()), Ok(Some(call("+919876543210", Some("hi")))));
        }

        #[test]
        fn a_marker_first_then_any_text_does_not_panic(text in "\\PC{0,20}") {
            // Found by cargo fuzz: a marker at the very start of the rest, followed by a
            // multi-byte character, sliced one byte into that character.
            let _ = parse(&format!("call  and tell {text}"), india());
            let _ = parse(&format!("call and say {text}"), india());
        }

        #[test]
        fn the_marker_pattern_finds_what_searching_each_marker_found(text in marker_soup()) {
            prop_assert_eq!(find_marker(&GRAMMAR, &text), find_marker_by_search(&text));
        }

        #[test]
        fn spaces_are_normalized_as_split_whitespace_does(text in "[ a\t\n\u{a0}\u{2003}é]{0,12}") {
            let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let normalized = normalize_spaces(&text);
            prop_assert_eq!(normalized.as_ref(), joined.as_str());
        }

        #[test]
        fn no_input_panics(text in "\\PC{0,80}") {
            let _ = parse(&text, india());
        }

        #[test]
        fn no_call_input_panics(rest in "\\PC{0,80}") {
            let _ = parse(&format!("call {rest}"), india());
        }
    }
}
