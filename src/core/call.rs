//! The call record and its state machine.
//!
//! `queued → initiated → ringing → in-progress → completed | busy | no-answer | failed | canceled`.
//! A call never moves backwards and terminal states are final, so the provider's status
//! callbacks may arrive repeated or in any order: [`Call::apply`] reports whether an update changed anything, and
//! exactly one update per call is ever [`Applied::Final`].

use std::fmt;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::phone::PhoneNumber;
use super::question::{Answer, Question};

/// Our id for a call: 128 random bits, base64url, so it is unguessable (it appears in the
/// URLs the telephony provider fetches and posts to) and URL-safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(CompactString);

impl CallId {
    pub fn generate() -> Self {
        use base64::Engine as _;
        let bytes: [u8; 16] = rand::random();
        // 22 characters: stored inline, no allocation per call.
        let mut buf = [0u8; 22];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut buf)
            .expect("16 bytes encode to 22");
        Self(CompactString::from_utf8(&buf[..n]).expect("base64 is ASCII"))
    }

    /// Accepts what `generate` produces (and any short URL-safe token, for tests and ids
    /// typed by users); rejects anything that could not be a call id.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The provider's id for a call.
///
/// The common form, two capital letters and 32 lowercase hex digits, is packed into 18
/// bytes inline, so the sid of a tracked call costs no
/// allocation (BENCHMARKS.md, memory); any other text is kept as it came. The packing is
/// canonical (only exact lowercase hex is packed), so equality and hashing stay textual.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct CallSid(SidRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum SidRepr {
    Packed { prefix: [u8; 2], digits: [u8; 16] },
    Text(Box<str>),
}

impl CallSid {
    pub fn new(s: &str) -> Self {
        let b = s.as_bytes();
        let lower_hex = |c: &u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
        if b.len() == 34
            && b[..2].iter().all(u8::is_ascii_uppercase)
            && b[2..].iter().all(lower_hex)
        {
            let mut digits = [0u8; 16];
            for (i, pair) in b[2..].chunks_exact(2).enumerate() {
                let nibble = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
                digits[i] = nibble(pair[0]) << 4 | nibble(pair[1]);
            }
            return Self(SidRepr::Packed {
                prefix: [b[0], b[1]],
                digits,
            });
        }
        Self(SidRepr::Text(s.into()))
    }
}

impl From<String> for CallSid {
    fn from(s: String) -> Self {
        Self::new(&s)
    }
}

impl From<CallSid> for String {
    fn from(sid: CallSid) -> Self {
        sid.to_string()
    }
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            SidRepr::Packed { prefix, digits } => {
                write!(f, "{}{}", prefix[0] as char, prefix[1] as char)?;
                digits.iter().try_for_each(|d| write!(f, "{d:02x}"))
            }
            SidRepr::Text(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallSid({self})")
    }
}

/// A call's statuses, in the order a call moves through them. How a provider spells them
/// on the wire is its adapter's business (under `telephony/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl CallStatus {
    pub const ALL: [CallStatus; 9] = [
        Self::Queued,
        Self::Initiated,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::NoAnswer,
        Self::Failed,
        Self::Canceled,
    ];

    /// Position in the lifecycle; all terminal states share the last rank.
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Initiated => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            _ => 4,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 4
    }

    /// callbot's name for the status (JSON, metrics labels, logs): "in-progress", "no-answer".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request came from: a chat platform, the web console or the CLI.
///
/// The platforms callbot ships with have their own variants; any other (an adapter added
/// later, "matrix") is [`Platform::Other`], made by [`Platform::named`]. The rules in
/// `core` never name a platform: they ask [`Platform::is_operator`] and look the platform
/// up in keyed tables (`policy::Policy::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Web,
    Cli,
    Telegram,
    Slack,
    /// A platform core has no variant for. Built only by [`Platform::named`], so a known
    /// name always comes back as its own variant.
    Other(PlatformName),
}

/// The name of a platform without its own variant: interned, so [`Platform`] stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlatformName(&'static str);

impl PlatformName {
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// One leaked copy per distinct name. Hand-written (a dozen lines) rather than an
    /// interning crate: names come from the few adapters compiled in and from stored calls
    /// they made, so the table stays tiny, and only [`Platform::named`] adds to it.
    fn intern(name: &str) -> Self {
        use std::collections::HashSet;
        use std::sync::{LazyLock, Mutex};
        static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
        let mut names = NAMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = names.get(name) {
            return Self(known);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(leaked);
        Self(leaked)
    }
}

/// Why a text is not a platform name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a platform name is 1 to 32 lowercase ASCII letters, digits, '-' or '_'")]
pub struct BadPlatformName;

impl Platform {
    /// The platform called `name` ("telegram" is [`Platform::Telegram`], "matrix" is
    /// `Other`). Names are short lowercase identifiers.
    pub fn named(name: &str) -> Result<Self, BadPlatformName> {
        Ok(match name {
            "web" => Self::Web,
            "cli" => Self::Cli,
            "telegram" => Self::Telegram,
            "slack" => Self::Slack,
            _ => {
                let ok = (1..=32).contains(&name.len())
                    && name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !ok {
                    return Err(BadPlatformName);
                }
                Self::Other(PlatformName::intern(name))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Cli => "cli",
            Self::Telegram => "telegram",
            Self::Slack => "slack",
            Self::Other(name) => name.as_str(),
        }
    }

    /// The operator's own ways in: the web console (behind its token, required off
    /// loopback) and the CLI. They need no allow-list and no per-requester quota; every
    /// other platform, known to core or not, is a chat whose people the policy limits.
    pub fn is_operator(self) -> bool {
        matches!(self, Self::Web | Self::Cli)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::named(&name).map_err(serde::de::Error::custom)
    }
}

/// Where to reply and who asked: stored on the call, so whichever instance receives the
/// provider's callback can post into the right thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub platform: Platform,
    /// Slack team (workspace) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<CompactString>,
    /// Telegram chat id, Slack channel id; empty for web and cli.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub chat: CompactString,
    /// Telegram forum topic (message_thread_id), Slack thread_ts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<CompactString>,
    /// The message that asked for the call (replies point at it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<CompactString>,
    /// The platform's id of the person who asked.
    pub requester: CompactString,
    /// A name to show ("@alice"), if the platform gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_name: Option<CompactString>,
    /// The message callbot posted and edits as the call progresses (set by the adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<CompactString>,
    /// Platform-specific reply handle (Slack's response_url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_url: Option<String>,
}

impl Origin {
    pub fn new(platform: Platform, requester: impl Into<CompactString>) -> Self {
        Self {
            platform,
            team: None,
            chat: CompactString::default(),
            thread: None,
            message: None,
            requester: requester.into(),
            requester_name: None,
            status_message: None,
            reply_url: None,
        }
    }
}

/// Why a call failed, as the provider said it (its error code and message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    pub code: Option<i64>,
    pub message: String,
}

/// One status change, as reported by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusUpdate {
    pub status: Option<CallStatus>,
    pub sid: Option<CallSid>,
    pub duration_secs: Option<u32>,
    /// The provider's sequence number: the order it sent its callbacks in.
    pub sequence: Option<u64>,
    pub timestamp: Option<DateTime<Utc>>,
    pub answered_by: Option<String>,
    pub error: Option<CallError>,
    pub sip_response_code: Option<u16>,
}

/// Answering-machine detection asked of the provider for a call (`calls.machine_detection`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineDetection {
    /// No detection: whoever answers hears the message at once.
    #[default]
    Off,
    /// Tell a person from a machine as soon as possible; the message plays at once.
    Enable,
    /// Wait for the end of a machine's greeting (the beep) and speak the message after it.
    MessageEnd,
}

impl MachineDetection {
    pub fn is_off(&self) -> bool {
        *self == Self::Off
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Enable => "enable",
            Self::MessageEnd => "message_end",
        }
    }
}

/// Who or what answered, as answering-machine detection classified it (the provider's
/// `AnsweredBy`, read by [`Answerer::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    Human,
    /// A machine, detected at the start of its greeting (the message plays over it).
    MachineStart,
    /// A machine whose greeting ended (beep, silence or otherwise): the message is left after it.
    MachineEnd,
    Fax,
    Unknown,
}

impl Answerer {
    pub fn of(answered_by: &str) -> Self {
        match answered_by {
            "human" => Self::Human,
            "machine_start" => Self::MachineStart,
            a if a.starts_with("machine_end") => Self::MachineEnd,
            "fax" => Self::Fax,
            _ => Self::Unknown,
        }
    }

    pub fn is_machine(self) -> bool {
        matches!(self, Self::MachineStart | Self::MachineEnd)
    }
}

/// A call's recording, as the provider reported it: its id at the provider, from which the
/// provider adapter finds the audio (never the provider's media URL, which is not kept: the
/// chat and the API get our own link, `/api/calls/{id}/recording`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub sid: CompactString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
}

/// What applying an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing changed (duplicate, regression, or the call was already final).
    Ignored,
    /// The call moved to a new non-terminal status (or gained its sid).
    Progress,
    /// The call reached its final status; this happens once per call.
    Final,
}

/// A phone call callbot placed or will place.
///
/// Its serialized form is what a shared store keeps (one record per call), kept small
/// (BENCHMARKS.md, Redis memory per call): fields that are unset are left out (and read back
/// as unset), and times are milliseconds since the epoch (a third of the bytes of RFC 3339
/// text; a store keeps times to the millisecond).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: CallId,
    pub to: PhoneNumber,
    /// Short ids and config values are `CompactString`s: inline up to 24 bytes, so a tracked
    /// call costs few allocations (BENCHMARKS.md, memory).
    pub from: CompactString,
    pub message: String,
    pub voice: CompactString,
    pub language: CompactString,
    pub status: CallStatus,
    /// When each status was reached, in order.
    #[serde(with = "history_ms")]
    pub history: Vec<(CallStatus, DateTime<Utc>)>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<CallSid>,
    /// Boxed: most calls never fail, and the box keeps `Call` small (BENCHMARKS.md, memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<CallError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_response_code: Option<u16>,
    pub origin: Origin,
    /// Dial attempts made (retries included).
    pub attempts: u32,
    /// Highest provider sequence number applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
    /// When the provider accepted the call (its time limit runs from here, not from when it
    /// was queued here).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "chrono::serde::ts_milliseconds_option"
    )]
    pub placed_at: Option<DateTime<Utc>>,
    /// Answering-machine detection asked for this call.
    #[serde(default, skip_serializing_if = "MachineDetection::is_off")]
    pub machine_detection: MachineDetection,
    /// The call is recorded (`calls.record`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record: bool,
    /// The finished recording, once the provider reported it. Boxed: most calls have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Box<Recording>>,
    /// Status requests made for this call when it is followed by polling (none for a call
    /// whose provider calls back): kept on the call so the budget holds across restarts and
    /// instances.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub polls: u32,
    /// `language` was asked for and is not the default one (replies then name it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub language_chosen: bool,
    /// How many times the message is said (`<Say loop>`), when more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub say_loop: Option<u8>,
    /// The question asked after the message (`<Gather>`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Box<Question>>,
    /// How the callee answered it; set once, by the first answer that arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Box<Answer>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A call's history as `[status, milliseconds]` pairs: the first at its time since the epoch,
/// each later one as milliseconds after the one before (`["ringing",2140]` rather than
/// `["ringing",1764662402140]`: seven bytes less per step, BENCHMARKS.md, Redis memory per
/// call). A later step written with an absolute time (records stored before this encoding)
/// reads as such: no step comes 3 years after the one before it. chrono's serde modules
/// cover a single time, not a time inside a tuple, hence these few lines.
mod history_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::CallStatus;

    /// Above this, a later step's number is a time since the epoch (2001-09-09 on), not a gap.
    const ABSOLUTE: i64 = 1_000_000_000_000;

    pub fn serialize<S: Serializer>(
        history: &[(CallStatus, DateTime<Utc>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut before: Option<i64> = None;
        s.collect_seq(history.iter().map(|(st, at)| {
            // Times before 2001-09-09 (a provider's nonsense) are kept as that day, so that
            // every absolute time reads as one.
            let ms = at.timestamp_millis().max(ABSOLUTE);
            let shown = match before {
                Some(b) if (ms - b).unsigned_abs() < ABSOLUTE.unsigned_abs() => ms - b,
                _ => ms,
            };
            before = Some(ms);
            (st, shown)
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(CallStatus, DateTime<Utc>)>, D::Error> {
        let mut before: Option<i64> = None;
        Vec::<(CallStatus, i64)>::deserialize(d)?
            .into_iter()
            .map(|(st, n)| {
                let ms = match before {
                    Some(b) if n.unsigned_abs() < ABSOLUTE.unsigned_abs() => b.saturating_add(n),
                    _ => n,
                };
                before = Some(ms);
                DateTime::from_timestamp_millis(ms)
                    .map(|at| (st, at))
                    .ok_or_else(|| serde::de::Error::custom("a time out of range"))
            })
            .collect()
    }
}

impl Call {
    /// Where the call's time limit starts: when the provider accepted it, or when the
    /// provider first reported on it, or (never dialed) when it was queued.
    pub fn dialed_at(&self) -> DateTime<Utc> {
        self.placed_at
            .or_else(|| {
                self.history
                    .iter()
                    .find(|(s, _)| *s != CallStatus::Queued)
                    .map(|(_, at)| *at)
            })
            .unwrap_or(self.created_at)
    }

    pub fn new(
        to: PhoneNumber,
        from: impl Into<CompactString>,
        message: String,
        voice: impl Into<CompactString>,
        language: impl Into<CompactString>,
        origin: Origin,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: CallId::generate(),
            to,
            from: from.into(),
            message,
            voice: voice.into(),
            language: language.into(),
            status: CallStatus::Queued,
            history: {
                // queued, initiated, ringing, in-progress and a final status: one allocation.
                let mut h = Vec::with_capacity(5);
                h.push((CallStatus::Queued, now));
                h
            },
            created_at: now,
            duration_secs: None,
            sid: None,
            error: None,
            answered_by: None,
            sip_response_code: None,
            origin,
            attempts: 0,
            last_sequence: None,
            placed_at: None,
            machine_detection: MachineDetection::Off,
            record: false,
            recording: None,
            polls: 0,
            language_chosen: false,
            say_loop: None,
            question: None,
            answer: None,
        }
    }

    /// Who answered, once detection classified it.
    pub fn answerer(&self) -> Option<Answerer> {
        self.answered_by.as_deref().map(Answerer::of)
    }

    /// The result of answering-machine detection, which arrives on its own callback, in any
    /// order with the status callbacks (even after the final one). The first result is kept;
    /// repeats change nothing. `Progress` while the call is live (shown), `Ignored` after
    /// (stored for the outcome, which waits for it, and the console).
    pub fn detected(&mut self, answered_by: &str) -> Applied {
        if self.answered_by.is_some() || answered_by.is_empty() {
            return Applied::Ignored;
        }
        self.answered_by = Some(answered_by.to_owned());
        if self.status.is_terminal() {
            Applied::Ignored
        } else {
            Applied::Progress
        }
    }

    /// A finished recording; the first report is kept, repeats change nothing. It may arrive
    /// after the call ended (usually does), so it is taken on a final call too.
    pub fn recorded(&mut self, recording: Recording) -> bool {
        if self.recording.is_some() {
            return false;
        }
        self.recording = Some(Box::new(recording));
        true
    }

    /// The outcome should say who answered, but detection has not said yet: an answered
    /// call with detection on and no result stored.
    pub fn awaits_detection(&self) -> bool {
        !self.machine_detection.is_off()
            && self.answered_by.is_none()
            && self.status == CallStatus::Completed
    }

    /// Restamps a call built before it was admitted with the time it was admitted at.
    pub fn queued_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = at;
        self.history.clear();
        self.history.push((CallStatus::Queued, at));
        self
    }

    /// What this call asks for that needs the provider to call back while it runs (a
    /// question's answer, answering-machine detection, a recording), named for the
    /// requester ("a question"); `None` when the call can be placed without callbacks
    /// (inline instructions, status by polling). Each such per-call feature adds its line
    /// here, so that a provider without a public URL refuses it at request time with
    /// [`crate::core::policy::Refusal::NeedsCallbacks`].
    pub fn needs_callbacks(&self) -> Option<&'static str> {
        if self.question.is_some() {
            Some("a question")
        } else if !self.machine_detection.is_off() {
            Some("answering-machine detection")
        } else if self.record {
            Some("a recording")
        } else {
            None
        }
    }

    /// Replaces the generated id (the service picks it before the policy records usage).
    pub fn with_id(mut self, id: CallId) -> Self {
        self.id = id;
        self
    }

    /// Records the callee's answer to the call's question. Only the first counts: a repeated
    /// or late delivery changes nothing (and so posts nothing twice).
    pub fn answered(&mut self, answer: Answer) -> Applied {
        if self.question.is_none() || self.answer.is_some() {
            return Applied::Ignored;
        }
        self.answer = Some(Box::new(answer));
        Applied::Progress
    }

    /// When the call reached `status`, if it did.
    pub fn reached(&self, status: CallStatus) -> Option<DateTime<Utc>> {
        self.history
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, t)| *t)
    }

    /// Applies a provider update. Duplicates (same or older SequenceNumber), regressions
    /// (ringing after in-progress) and anything after a final status change nothing.
    pub fn apply(&mut self, update: &StatusUpdate, now: DateTime<Utc>) -> Applied {
        if self.status.is_terminal() {
            return Applied::Ignored;
        }
        let mut applied = Applied::Ignored;
        if self.sid.is_none()
            && let Some(sid) = &update.sid
        {
            self.sid = Some(sid.clone());
            applied = Applied::Progress;
        }
        if let (Some(seq), Some(last)) = (update.sequence, self.last_sequence)
            && seq <= last
        {
            return applied;
        }
        let Some(status) = update.status else {
            return applied;
        };
        if status.rank() <= self.status.rank() {
            return applied;
        }
        if let Some(seq) = update.sequence {
            self.last_sequence = Some(seq);
        }
        self.status = status;
        self.history.push((status, update.timestamp.unwrap_or(now)));
        if update.duration_secs.is_some() {
            self.duration_secs = update.duration_secs;
        }
        if update.answered_by.is_some() {
            self.answered_by.clone_from(&update.answered_by);
        }
        if update.sip_response_code.is_some() {
            self.sip_response_code = update.sip_response_code;
        }
        if update.error.is_some() {
            self.error = update.error.clone().map(Box::new);
        }
        if status.is_terminal() {
            // A finished call is kept for the log; give back the spare capacity.
            self.history.shrink_to_fit();
            Applied::Final
        } else {
            Applied::Progress
        }
    }

    /// Ends the call as failed with a reason (dialing failed, or it was never placed).
    pub fn fail(&mut self, error: CallError, now: DateTime<Utc>) -> Applied {
        self.finish(CallStatus::Failed, Some(error), now)
    }

    /// Ends the call locally (canceled before it was dialed, or closed by the reaper).
    pub fn finish(
        &mut self,
        status: CallStatus,
        error: Option<CallError>,
        now: DateTime<Utc>,
    ) -> Applied {
        debug_assert!(status.is_terminal());
        self.apply(
            &StatusUpdate {
                status: Some(status),
                error,
                ..StatusUpdate::default()
            },
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sids_round_trip_packed_or_not() {
        for text in [
            "CA0123456789abcdef0123456789abcdef",
            "CA0123456789ABCDEF0123456789abcdef",
            "ca0123456789abcdef0123456789abcdef",
            "CA0123",
            "",
            "CAé123456789abcdef0123456789abcde",
        ] {
            let sid = CallSid::new(text);
            assert_eq!(sid.to_string(), text);
            let json = serde_json::to_string(&sid).unwrap();
            assert_eq!(serde_json::from_str::<CallSid>(&json).unwrap(), sid);
        }
        let packed = CallSid::new("CA0123456789abcdef0123456789abcdef");
        assert!(matches!(packed.0, SidRepr::Packed { .. }));
        assert_eq!(packed, CallSid::from(packed.to_string()));
        assert_ne!(packed, CallSid::new("CA0123456789ABCDEF0123456789abcdef"));
        assert_eq!(std::mem::size_of::<CallSid>(), 24);
    }

    fn call() -> Call {
        Call::new(
            PhoneNumber::from_e164("+919876543210").unwrap(),
            "+15005550006",
            "hi".into(),
            "alice",
            "en-US",
            Origin::new(Platform::Web, "web"),
            Utc::now(),
        )
    }

    #[test]
    fn history_is_stored_as_gaps_and_reads_back_to_the_millisecond() {
        let mut c = call();
        let t0 = DateTime::from_timestamp_millis(1_764_662_400_123).unwrap();
        c.history = vec![
            (CallStatus::Queued, t0),
            (
                CallStatus::Ringing,
                t0 + chrono::Duration::milliseconds(2140),
            ),
            // A provider clock a little behind ours: a step may come "before" the last.
            (
                CallStatus::InProgress,
                t0 + chrono::Duration::milliseconds(1900),
            ),
            (CallStatus::Completed, t0 + chrono::Duration::seconds(40)),
        ];
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json["history"],
            serde_json::json!([
                ["queued", 1_764_662_400_123_i64],
                ["ringing", 2140],
                ["in-progress", -240],
                ["completed", 38100]
            ])
        );
        let back: Call = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.history, c.history);
        // A record written before the gaps: every step at its time since the epoch.
        let mut old = json;
        old["history"] = serde_json::json!([
            ["queued", 1_764_662_400_123_i64],
            ["ringing", 1_764_662_402_263_i64]
        ]);
        let back: Call = serde_json::from_value(old).unwrap();
        assert_eq!(back.history[1].1, t0 + chrono::Duration::milliseconds(2140));
    }

    fn update(status: CallStatus, seq: u64) -> StatusUpdate {
        StatusUpdate {
            status: Some(status),
            sequence: Some(seq),
            duration_secs: (status == CallStatus::Completed).then_some(42),
            ..StatusUpdate::default()
        }
    }

    #[test]
    fn call_ids_are_unique_and_url_safe() {
        let a = CallId::generate();
        let b = CallId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
        assert!(CallId::parse(a.as_str()).is_some());
        assert!(CallId::parse("../etc").is_none());
    }

    #[test]
    fn statuses_serialize_as_their_names() {
        for s in CallStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            let back: CallStatus = serde_json::from_value(s.as_str().into()).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn platforms_by_name_known_or_not() {
        assert_eq!(Platform::named("telegram"), Ok(Platform::Telegram));
        assert_eq!(Platform::named("cli"), Ok(Platform::Cli));
        let matrix = Platform::named("matrix").unwrap();
        assert!(matches!(matrix, Platform::Other(_)));
        assert_eq!(matrix, Platform::named("matrix").unwrap(), "interned once");
        assert_eq!(matrix.to_string(), "matrix");
        assert!(!matrix.is_operator() && !Platform::Slack.is_operator());
        assert!(Platform::Web.is_operator() && Platform::Cli.is_operator());
        for bad in ["", "Matrix", "ma trix", &"x".repeat(33)] {
            assert!(Platform::named(bad).is_err(), "{bad:?}");
        }
        for p in [Platform::Slack, Platform::Web, matrix] {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, p.as_str());
            assert_eq!(serde_json::from_value::<Platform>(json).unwrap(), p);
        }
        assert!(serde_json::from_value::<Platform>("Not A Name".into()).is_err());
    }

    #[test]
    fn regression_and_duplicates_are_ignored_and_final_is_final() {
        let mut c = call();
        let now = Utc::now();
        assert_eq!(
            c.apply(&update(CallStatus::Ringing, 1), now),
            Applied::Progress
        );
        assert_eq!(
            c.apply(&update(CallStatus::Ringing, 1), now),
            Applied::Ignored
        );
        assert_eq!(
            c.apply(&update(CallStatus::Initiated, 0), now),
            Applied::Ignored
        );
        assert_eq!(
            c.apply(&update(CallStatus::Completed, 3), now),
            Applied::Final
        );
        assert_eq!(
            c.apply(&update(CallStatus::InProgress, 2), now),
            Applied::Ignored
        );
        assert_eq!(
            c.apply(&update(CallStatus::Failed, 4), now),
            Applied::Ignored
        );
        assert_eq!(c.status, CallStatus::Completed);
        assert_eq!(c.duration_secs, Some(42));
    }

    proptest! {
        /// Any interleaving, duplication and reordering of a call's events gives the same
        /// final state and exactly one Final.
        #[test]
        fn any_order_gives_one_final(order in Just((0..4u64).chain(0..4).chain(0..2).collect::<Vec<_>>()).prop_shuffle()) {
            let statuses = [CallStatus::Initiated, CallStatus::Ringing, CallStatus::InProgress, CallStatus::Completed];
            let mut c = call();
            let now = Utc::now();
            let finals = order
                .iter()
                .filter(|&&i| c.apply(&update(statuses[i as usize], i), now) == Applied::Final)
                .count();
            prop_assert_eq!(finals, 1);
            prop_assert_eq!(c.status, CallStatus::Completed);
            prop_assert_eq!(c.duration_secs, Some(42));
        }
    }
}
