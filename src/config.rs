//! Typed settings: `config/default.toml` (compiled in) → `--config FILE` → environment.
//!
//! The conventional names (`TWILIO_AUTH_TOKEN`, `CALLBOT_BIND`, …; see the README's settings table) map onto
//! their keys; any other key is `CALLBOT_SECTION__KEY` (`CALLBOT_CALLS__CPS=5`).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::core::call::{MachineDetection, Platform};
use crate::core::phone::{PhoneNumber, Region};
use crate::core::policy::{AllowList, Limits, Policy};
use crate::core::speech::{self, canonical_tag};

/// The defaults, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Conventional environment names and the keys they set.
const ENV_NAMES: &[(&str, &str)] = &[
    ("CALLBOT_BIND", "server.bind"),
    ("CALLBOT_PUBLIC_URL", "server.public_url"),
    ("CALLBOT_WEB_TOKEN", "server.web_token"),
    ("CALLBOT_LOG_FORMAT", "server.log_format"),
    ("CALLBOT_DEFAULT_REGION", "phone.default_region"),
    ("CALLBOT_STORE", "store.backend"),
    ("REDIS_URL", "store.redis_url"),
    ("TWILIO_ACCOUNT_SID", "twilio.account_sid"),
    ("TWILIO_AUTH_TOKEN", "twilio.auth_token"),
    ("TWILIO_FROM_NUMBER", "twilio.from_number"),
    ("TWILIO_API_BASE", "twilio.api_base"),
    ("TELEGRAM_BOT_TOKEN", "telegram.bot_token"),
    ("TELEGRAM_API_URL", "telegram.api_url"),
    ("TELEGRAM_MODE", "telegram.mode"),
    ("TELEGRAM_WEBHOOK_SECRET", "telegram.webhook_secret"),
    ("SLACK_BOT_TOKEN", "slack.bot_token"),
    ("SLACK_SIGNING_SECRET", "slack.signing_secret"),
    ("SLACK_APP_TOKEN", "slack.app_token"),
    ("SLACK_API_URL", "slack.api_url"),
    ("OPENAI_API_KEY", "llm.api_key"),
    ("OPENAI_BASE_URL", "llm.base_url"),
    ("OPENAI_MODEL", "llm.model"),
];

/// Longest `store.ttl_hours` accepted: ten years (the memory store's cache refuses idle
/// times beyond a thousand years, and the hours are multiplied into seconds).
const MAX_TTL_HOURS: u64 = 10 * 365 * 24;

/// Largest `calls.event_bus_capacity` accepted (the bus allocates a slot per event at start).
const MAX_EVENT_BUS_CAPACITY: usize = 1 << 20;

/// Shortest web token accepted when the console listens off loopback.
pub const WEB_TOKEN_MIN_CHARS: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub phone: PhoneSettings,
    pub twilio: TwilioSettings,
    pub calls: CallSettings,
    pub store: StoreSettings,
    pub simulator: SimulatorSettings,
    pub telegram: TelegramSettings,
    pub slack: SlackSettings,
    pub health: HealthSettings,
    pub llm: LlmSettings,
    pub access: AccessSettings,
    pub limits: LimitSettings,
    /// Languages a request may ask for, each with its `<Say>` voice: `hi-IN = "Polly.Aditi"`
    /// (`CALLBOT_VOICES__HI_IN=Polly.Aditi`; `_` reads as `-`). `calls.language` with
    /// `calls.voice` is always there, unless this table names another voice for it.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
    /// Where each key that was not a default came from (environment variable or file), so
    /// that errors name what the user actually set.
    #[serde(skip)]
    pub sources: Sources,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    Polling,
    Webhook,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramSettings {
    /// Bot token from BotFather (TELEGRAM_BOT_TOKEN); unset: the adapter is off.
    #[serde(default, deserialize_with = "opt_secret")]
    pub bot_token: Option<SecretString>,
    /// Bot API base URL (TELEGRAM_API_URL).
    pub api_url: String,
    /// `polling` or `webhook` (TELEGRAM_MODE).
    pub mode: TelegramMode,
    /// secret_token Telegram sends on every webhook (TELEGRAM_WEBHOOK_SECRET).
    #[serde(default, deserialize_with = "opt_secret")]
    pub webhook_secret: Option<SecretString>,
    /// Time limit for one Bot API request, milliseconds; a long poll waits at most this
    /// minus 5 s (up to 10 s) for updates.
    pub request_timeout_ms: u64,
    /// Long polling runs on one instance at a time, the holder of a lease this long,
    /// milliseconds (CALLBOT_TELEGRAM__POLLING_LEASE_MS): renewed every third of it; when the
    /// holder dies another instance polls within it.
    pub polling_lease_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Bot token xoxb-… (SLACK_BOT_TOKEN); unset: the adapter is off.
    #[serde(default, deserialize_with = "opt_secret")]
    pub bot_token: Option<SecretString>,
    /// Request signing secret (SLACK_SIGNING_SECRET).
    #[serde(default, deserialize_with = "opt_secret")]
    pub signing_secret: Option<SecretString>,
    /// App-level token xapp-… for Socket Mode (SLACK_APP_TOKEN).
    #[serde(default, deserialize_with = "opt_secret")]
    pub app_token: Option<SecretString>,
    /// Web API base URL, no trailing slash (SLACK_API_URL).
    pub api_url: String,
    /// Time limit for one Web API request or response_url post, milliseconds.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// How long a chat adapter's own connection (Slack Socket Mode, Telegram long polling)
    /// may be failing before `GET /healthz` answers 503 naming it, milliseconds
    /// (CALLBOT_HEALTH__ADAPTER_DOWN_MS).
    pub adapter_down_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// OPENAI_API_KEY; may be empty for local OpenAI-compatible servers.
    #[serde(default, deserialize_with = "opt_secret")]
    pub api_key: Option<SecretString>,
    /// OPENAI_BASE_URL; unset with no key: the LLM fallback is off.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub base_url: Option<String>,
    /// OPENAI_MODEL.
    pub model: String,
    /// Seconds to wait for one answer.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSettings {
    /// Let everyone call (demos only; warned about at every start).
    pub open: bool,
    /// Telegram user ids allowed to place calls (CALLBOT_ACCESS__TELEGRAM_USERS, comma-separated).
    #[serde(deserialize_with = "list")]
    pub telegram_users: Vec<String>,
    /// Telegram chat ids whose members may place calls.
    #[serde(deserialize_with = "list")]
    pub telegram_chats: Vec<String>,
    /// Slack team (workspace) ids allowed.
    #[serde(deserialize_with = "list")]
    pub slack_teams: Vec<String>,
    /// Slack user ids allowed.
    #[serde(deserialize_with = "list")]
    pub slack_users: Vec<String>,
    /// Slack channel ids whose members may place calls.
    #[serde(deserialize_with = "list")]
    pub slack_channels: Vec<String>,
    /// Destination countries (ISO codes); empty: only the default region's country.
    #[serde(deserialize_with = "list")]
    pub countries: Vec<String>,
    /// Numbers (E.164) always allowed, whatever their country.
    #[serde(deserialize_with = "number_list")]
    pub allow_numbers: Vec<String>,
    /// Numbers (E.164) never called.
    #[serde(deserialize_with = "number_list")]
    pub deny_numbers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Calls one requester may place per hour (CALLBOT_LIMITS__PER_USER_HOUR).
    pub per_user_hour: u32,
    /// Calls one requester may place per day (CALLBOT_LIMITS__PER_USER_DAY).
    pub per_user_day: u32,
    /// Calls to one number per hour, whoever asks.
    pub per_destination_hour: u32,
    /// Calls per hour across all requesters, web and CLI included (CALLBOT_LIMITS__GLOBAL_HOUR).
    pub global_hour: u32,
    /// Calls per day across all requesters, web and CLI included (CALLBOT_LIMITS__GLOBAL_DAY).
    pub global_day: u32,
    /// Language-model requests per requester per minute (CALLBOT_LIMITS__LLM_PER_USER_MINUTE);
    /// 0: the model is never asked.
    pub llm_per_user_minute: u32,
    /// Calls live at once.
    pub max_concurrent: u32,
    /// Longest spoken message, characters (Twilio's TwiML cap is 4000).
    pub message_max_chars: usize,
}

/// One list item or a whole list from TOML, or text from the environment.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<serde_json::Value>),
    One(serde_json::Value),
}

/// `a,b`, `a, b` or `[a, b]` as items: brackets and quotes around items are dropped (no id,
/// country code or phone number contains them), blanks skipped.
fn split_text(all: &str) -> Vec<String> {
    let all = all.trim();
    let all = all
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(all);
    all.split(',')
        .map(|s| s.trim().trim_matches(['"', '\'']).trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A list from TOML (`["a", "b"]`, numbers allowed) or from the environment as text (see
/// [`split_text`]).
fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let text = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v.into_iter().flat_map(|v| split_text(&text(v))).collect(),
        OneOrMany::One(v) => split_text(&text(v)),
    })
}

/// A list of E.164 numbers, like [`list`]; an integer in a TOML file is a number written
/// without quotes, so it lost its `+`.
fn number_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let item = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => split_text(&s),
        serde_json::Value::Number(n) => vec![format!("+{n}")],
        other => vec![other.to_string()],
    };
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v.into_iter().flat_map(item).collect(),
        OneOrMany::One(v) => item(v),
    })
}

/// An optional secret; empty or blank text is the same as unset (a `.env` or compose file
/// often lists every variable, the unused ones empty).
fn opt_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.trim().is_empty()).map(SecretString::from))
}

/// The listen address: an IP address and port. Host names are not looked up (a name can
/// resolve to several addresses, or differently tomorrow); `localhost` is 127.0.0.1.
fn bind_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text
        .rsplit_once(':')
        .filter(|(host, _)| host.eq_ignore_ascii_case("localhost"))
        .and_then(|(_, port)| port.parse::<u16>().ok())
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(serde::de::Error::custom(
        "is not an IP address and port: use for example 127.0.0.1:8080 (this machine only) \
         or 0.0.0.0:8080 (every interface); host names other than localhost are not looked up",
    ))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address, an IP address and port (CALLBOT_BIND); `localhost:PORT` means
    /// 127.0.0.1:PORT.
    #[serde(deserialize_with = "bind_addr")]
    pub bind: SocketAddr,
    /// Base URL Twilio/Slack/Telegram reach us at; defaults to `http://{bind}`.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub public_url: Option<String>,
    /// Bearer token for the web console and API (CALLBOT_WEB_TOKEN); required, with at least
    /// [`WEB_TOKEN_MIN_CHARS`] characters, when `bind` is not loopback. Empty is refused.
    #[serde(default)]
    pub web_token: Option<SecretString>,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// Seconds to let in-flight work finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted on webhook routes, bytes.
    pub webhook_body_limit: usize,
    /// Milliseconds a client gets to send a request body; slower bodies get 408.
    pub body_timeout_ms: u64,
    /// Milliseconds a connection gets to send a request's headers, counted from when it
    /// opens or its previous answer was sent (so it also ends idle keep-alive connections).
    pub header_timeout_ms: u64,
    /// Seconds a connection may keep an answer waiting because it does not read it; then
    /// it is closed.
    pub idle_timeout_secs: u64,
    /// Connections open at once; beyond it new ones wait to be accepted. Lowered at start
    /// to fit the process's open-file limit.
    pub max_connections: usize,
}

impl ServerSettings {
    /// The size limit and deadline of every request body.
    pub fn body_rules(&self) -> crate::body::BodyRules {
        crate::body::BodyRules {
            deadline: std::time::Duration::from_millis(self.body_timeout_ms),
            limit: self.webhook_body_limit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneSettings {
    /// Region for numbers written without `+` (ISO 3166-1 alpha-2).
    pub default_region: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    /// Account SID, AC + 32 hex digits (TWILIO_ACCOUNT_SID).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub account_sid: Option<String>,
    /// Auth token (TWILIO_AUTH_TOKEN); also verifies Twilio's webhook signatures.
    #[serde(default, deserialize_with = "opt_secret")]
    pub auth_token: Option<SecretString>,
    /// Caller id, E.164 (TWILIO_FROM_NUMBER).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub from_number: Option<String>,
    /// REST base URL (tests point it at a fake).
    pub api_base: String,
    /// Timeout of one REST request, milliseconds.
    pub request_timeout_ms: u64,
    /// How calls are followed (CALLBOT_TWILIO__MODE): `auto` (callbacks when
    /// `server.public_url` is set, polling when it is not), `callbacks` or `polling`.
    pub mode: TwilioModeSetting,
    /// Polling: milliseconds between two status requests of a call that is queued or ringing
    /// (CALLBOT_TWILIO__POLL_RINGING_MS).
    pub poll_ringing_ms: u64,
    /// Polling: milliseconds between two status requests of a call in progress
    /// (CALLBOT_TWILIO__POLL_IN_PROGRESS_MS).
    pub poll_in_progress_ms: u64,
    /// Polling: most status requests for one call (CALLBOT_TWILIO__POLL_MAX_REQUESTS); then
    /// its outcome is recorded as unknown.
    pub poll_max_requests: u32,
    /// Polling: most status requests per second, all calls (and, on Redis, all instances)
    /// together (CALLBOT_TWILIO__POLL_PER_SECOND); beyond it polls wait their turn.
    pub poll_per_second: u32,
}

/// `twilio.mode` as set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TwilioModeSetting {
    Auto,
    Callbacks,
    Polling,
}

/// How Twilio calls are followed, once `twilio.mode = "auto"` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioMode {
    /// Twilio fetches TwiML from `/twiml/{id}` and posts status callbacks to
    /// `/webhooks/status` (it needs to reach `server.public_url`).
    Callbacks,
    /// The TwiML goes inline with the create request and the status is fetched
    /// (`GET …/Calls/{sid}.json`): no inbound request at all, so no public URL.
    Polling,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSettings {
    /// Spoken when the request carries no message.
    pub default_message: String,
    /// TwiML `<Say voice>`.
    pub voice: String,
    /// TwiML `<Say language>`.
    pub language: String,
    /// Seconds to let the phone ring (Twilio `Timeout`).
    pub ring_timeout_secs: u32,
    /// Longest call, seconds (Twilio `TimeLimit`).
    pub time_limit_secs: u32,
    /// Calls created per second (Twilio's default account limit is 1).
    pub cps: u32,
    /// Create-call requests in flight at once.
    pub max_concurrent_requests: usize,
    /// Tries per call for retryable failures (429, 5xx, timeouts, connection errors).
    pub max_tries: u32,
    /// First retry delay, milliseconds; doubles each try, with jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Calls waiting to be dialed; beyond it requests are refused.
    pub queue_capacity: usize,
    /// Call events a slow subscriber (a chat follower, the live log) may fall behind by
    /// before it skips the oldest and re-reads the store.
    pub event_bus_capacity: usize,
    /// Ask "Call …? [Call] [Cancel]" in chat before dialing.
    pub confirm: bool,
    /// A call not final `time_limit_secs + reap_margin_secs` after it was created is fetched
    /// from the provider and closed.
    pub reap_margin_secs: u64,
    /// How often the reaper looks, milliseconds.
    pub reap_interval_ms: u64,
    /// Answering-machine detection (Twilio async AMD): off, enable, message_end.
    #[serde(default)]
    pub machine_detection: MachineDetection,
    /// Record every call (Twilio `Record=true`); the thread gets a link to the audio.
    #[serde(default)]
    pub record: bool,
    /// Spoken first on a recorded call; empty: nothing.
    #[serde(default)]
    pub record_announcement: String,
}

impl CallSettings {
    /// Whether calls need the provider to call us back beyond status callbacks (the
    /// answering-machine result, the recording): a mode without callbacks must refuse them.
    pub fn needs_callbacks(&self) -> bool {
        !self.machine_detection.is_off() || self.record
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `memory` or `redis` (CALLBOT_STORE).
    pub backend: StoreBackend,
    /// Redis URL for the redis backend (REDIS_URL); a secret (it may hold a password).
    #[serde(default, deserialize_with = "opt_secret")]
    pub redis_url: Option<SecretString>,
    /// Every Redis key starts with `{prefix}:` (a Cluster hash tag).
    pub redis_prefix: String,
    /// Calls are forgotten this many hours after their last change.
    pub ttl_hours: u64,
    /// Redis: how long an instance may go silent before the others take its work over, in
    /// milliseconds. A dial queue entry it read and has not settled (renewed every third of
    /// this while it dials) goes to another instance; a call it stored but never queued is
    /// failed with a reason.
    pub claim_ms: u64,
    /// Most calls kept in memory.
    pub capacity: u64,
    /// Several instances: how long a call's follow claim (and, in Twilio polling mode, its
    /// poll lease) lasts unrenewed, in milliseconds (a dead instance's calls are followed by
    /// another within it).
    pub follow_claim_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Time scale: 1.0 is realistic (seconds per step), 0.01 runs 100× faster.
    pub speed: f64,
    /// Send every callback twice and in shuffled order (exercises idempotency).
    pub chaos: bool,
}

/// Which telephony backend the settings select.
#[derive(Debug, Clone)]
pub enum TelephonyChoice {
    Simulator,
    Twilio {
        account_sid: String,
        auth_token: SecretString,
        from: PhoneNumber,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Every problem found, each naming the variable or file key the user set.
    #[error("invalid settings:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.trim().is_empty()))
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// An environment variable, by the name the user set.
    Env(String),
    /// A `--config` file.
    File(PathBuf),
}

#[derive(Debug, Clone)]
struct Source {
    kind: SourceKind,
    /// The value as the user wrote it, quoted (`"abc"`; a TOML number stays bare).
    shown: String,
}

/// Which keys the environment or a settings file set (dotted keys such as `calls.cps`), so
/// messages can name what the user wrote rather than an internal key.
#[derive(Debug, Clone, Default)]
pub struct Sources(BTreeMap<String, Source>);

/// The environment variable that sets `key`: its conventional name, or `CALLBOT_SECTION__KEY`.
pub fn env_name(key: &str) -> String {
    ENV_NAMES
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(n, _)| (*n).to_owned())
        .unwrap_or_else(|| format!("CALLBOT_{}", key.to_ascii_uppercase().replace('.', "__")))
}

/// Keys whose values are never shown.
fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    ["token", "secret", "key", "password"]
        .iter()
        .any(|w| last.contains(w))
        || last == "redis_url"
}

impl Sources {
    fn find(&self, key: &str) -> Option<&Source> {
        self.0.get(key).or_else(|| {
            // A whole section (`CALLBOT_FOO__BAR` for an unknown `foo`): its first key.
            self.0
                .range(format!("{key}.")..)
                .next()
                .filter(|(k, _)| k.starts_with(&format!("{key}.")))
                .map(|(_, s)| s)
        })
    }

    /// Where `key` was set: the variable's name, the file and key, or for a default the key
    /// and the variable that would set it.
    pub fn name(&self, key: &str) -> String {
        match self.find(key).map(|s| &s.kind) {
            Some(SourceKind::Env(var)) => var.clone(),
            Some(SourceKind::File(path)) => format!("{key} in {}", path.display()),
            None => format!("{key} ({})", env_name(key)),
        }
    }

    /// [`Sources::name`] with the value `shown` (already quoted), unless the key is a secret.
    pub fn named(&self, key: &str, shown: &str) -> String {
        if is_secret(key) {
            return self.name(key);
        }
        match self.find(key).map(|s| &s.kind) {
            Some(SourceKind::Env(var)) => format!("{var}={shown}"),
            Some(SourceKind::File(path)) => format!("{key} = {shown} in {}", path.display()),
            None => format!("{key} ({}) = {shown}", env_name(key)),
        }
    }

    fn insert(&mut self, key: String, kind: SourceKind, shown: String) {
        self.0.insert(key, Source { kind, shown });
    }

    fn add_file(&mut self, path: &Path, dict: &Dict, prefix: &str) {
        for (k, v) in dict {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Dict(_, inner) => self.add_file(path, inner, &key),
                Value::String(_, s) => {
                    self.insert(key, SourceKind::File(path.to_owned()), format!("{s:?}"))
                }
                other => {
                    let shown = serde_json::to_string(other).unwrap_or_default();
                    self.insert(key, SourceKind::File(path.to_owned()), shown)
                }
            }
        }
    }

    /// One sentence per figment error, naming the variable or file key.
    fn explain(&self, err: &figment::Error) -> Vec<String> {
        use figment::error::Kind;
        err.clone()
            .into_iter()
            .map(|e| {
                let mut path = e.path.clone();
                let field = match &e.kind {
                    Kind::UnknownField(field, _) => Some(field.clone()),
                    Kind::MissingField(field) => Some(field.to_string()),
                    _ => None,
                };
                if let Some(field) = field.filter(|f| path.last() != Some(f)) {
                    path.push(field);
                }
                let key = path.join(".");
                // An unknown key's value is never shown: it may be a secret under a misspelt
                // name (`CALLBOT_TWILO__AUTH_TOKEN`), which `is_secret` cannot recognise.
                let unknown = matches!(e.kind, Kind::UnknownField(..));
                let shown = self
                    .find(&key)
                    .filter(|_| !unknown)
                    .map(|s| s.shown.clone());
                let named = match &shown {
                    Some(shown) => self.named(&key, shown),
                    None => self.name(&key),
                };
                let what = match &e.kind {
                    Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                        expectation(actual, expected)
                    }
                    Kind::UnknownVariant(_, choices) => {
                        format!("must be one of: {}", choices.join(", "))
                    }
                    Kind::UnknownField(_, fields) => {
                        let section = path[..path.len() - 1].join(".");
                        if fields.is_empty() || section.is_empty() {
                            "is not a setting (see config/default.toml)".to_owned()
                        } else {
                            format!("is not a setting; [{section}] has {}", fields.join(", "))
                        }
                    }
                    Kind::MissingField(_) => "is missing".to_owned(),
                    Kind::Message(m) => m.clone(),
                    other => format!("is not valid: {other}"),
                };
                format!("{named} {what}")
            })
            .collect()
    }
}

/// What a value of the `expected` serde type must look like.
fn expectation(actual: &figment::error::Actual, expected: &str) -> String {
    use figment::error::Actual;
    let max = match expected {
        "u8" => Some(u64::from(u8::MAX)),
        "u16" => Some(u64::from(u16::MAX)),
        "u32" => Some(u64::from(u32::MAX)),
        "u64" | "usize" => Some(u64::MAX),
        _ => None,
    };
    if let Some(max) = max {
        return match actual {
            Actual::Unsigned(_) | Actual::Signed(_) => {
                format!("is out of range: use a whole number from 0 to {max}")
            }
            _ => "is not a whole number".to_owned(),
        };
    }
    match expected {
        "f32" | "f64" => "is not a number (such as 1 or 0.5)".to_owned(),
        "a boolean" => "is not true or false".to_owned(),
        "a string" | "string" => {
            "must be text: in a TOML file write it in quotes (\"+15005550006\")".to_owned()
        }
        e if e.contains("sequence") => "must be a list".to_owned(),
        e if e.starts_with("struct") || e.contains("map") => {
            "is a section of settings, not a single value".to_owned()
        }
        e => format!("is not valid: expected {e}"),
    }
}

/// Every environment variable that names a setting, its value as text.
///
/// figment's own `Env` provider reads values as TOML-like scalars, so `+15005550006`
/// became the integer 15005550006 and a string setting refused it (and `007` lost its
/// zeros). Here text stays text; numbers and booleans are read from text when a field asks
/// for one ([`Figment::extract_lossy`]). figment has no option for this, hence this small
/// provider.
struct EnvText(Vec<(String, String, String)>);

impl EnvText {
    /// `CALLBOT_SECTION__KEY` variables, then the conventional names (which win).
    fn from_process() -> Self {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let mut entries = Vec::new();
        for (var, value) in &vars {
            let upper = var.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix("CALLBOT_") else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if key.split('.').any(str::is_empty) {
                continue;
            }
            entries.push((var.clone(), key, value.clone()));
        }
        entries.sort();
        for (name, key) in ENV_NAMES {
            if let Some((var, value)) = vars.iter().find(|(v, _)| v.eq_ignore_ascii_case(name)) {
                entries.push((var.clone(), (*key).to_owned(), value.clone()));
            }
        }
        Self(entries)
    }
}

impl Provider for EnvText {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        fn insert(dict: &mut Dict, key: &str, value: Value) {
            match key.split_once('.') {
                None => {
                    dict.insert(key.to_owned(), value);
                }
                Some((head, rest)) => {
                    let entry = dict
                        .entry(head.to_owned())
                        .or_insert_with(|| Value::from(Dict::new()));
                    if !matches!(entry, Value::Dict(..)) {
                        *entry = Value::from(Dict::new());
                    }
                    if let Value::Dict(_, inner) = entry {
                        insert(inner, rest, value);
                    }
                }
            }
        }
        let mut dict = Dict::new();
        for (_, key, value) in &self.0 {
            insert(&mut dict, key, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Whether Twilio (on the internet) cannot reach `host`: loopback, private (RFC 1918,
/// shared 100.64/10, IPv6 ULA), link-local or unspecified.
fn unreachable_host(host: &url::Host<&str>) -> bool {
    let ip = match host {
        url::Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            return d == "localhost" || d.ends_with(".localhost");
        }
        url::Host::Ipv4(ip) => IpAddr::V4(*ip),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip),
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| unreachable_host(&url::Host::Ipv4(v4)))
        }
    }
}

/// A Telegram bot token: the bot's numeric id, a colon, then letters, digits, `_` or `-`.
fn looks_like_telegram_token(token: &str) -> bool {
    token.split_once(':').is_some_and(|(id, rest)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

impl Settings {
    /// Loads defaults → `file` → the process environment. Every value from the environment
    /// is text; numeric and boolean settings read it (`5`, `true`, `yes`, `0`), string ones
    /// keep it as written. Errors name the variable or the file and key.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut sources = Sources::default();
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            let toml = Toml::file_exact(file);
            let data = toml.data().map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "could not read the settings file {}: {e}",
                    file.display()
                )])
            })?;
            for dict in data.values() {
                sources.add_file(file, dict, "");
            }
            figment = figment.merge(toml);
        }
        let env = EnvText::from_process();
        for (var, key, value) in &env.0 {
            sources.insert(
                key.clone(),
                SourceKind::Env(var.clone()),
                format!("{value:?}"),
            );
        }
        let mut settings: Self = figment
            .merge(env)
            .extract_lossy()
            .map_err(|e| ConfigError::Invalid(sources.explain(&e)))?;
        settings.sources = sources;
        Ok(settings)
    }

    /// Defaults only, for tests and embedding.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid")
    }

    /// How to name `key` to the user (see [`Sources::name`]).
    pub fn name(&self, key: &str) -> String {
        self.sources.name(key)
    }

    /// `key` with its value, as the user set it (see [`Sources::named`]).
    fn named(&self, key: &str, value: impl std::fmt::Display) -> String {
        self.sources.named(key, &format!("{:?}", value.to_string()))
    }

    /// Every refusal, for `check-config`, `serve` and `call` alike: everything a later failure
    /// would otherwise reveal, except what only the platforms can answer (a token they
    /// reject). Lists every problem, each naming what the user set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut refuse = |p: String| problems.push(p);

        let region = &self.phone.default_region;
        if Region::parse(region).is_none() {
            refuse(format!(
                "{} is not a known region; use an ISO code like IN, US, GB",
                self.named("phone.default_region", region)
            ));
        }
        if let Some(url) = &self.server.public_url {
            match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => refuse(format!(
                    "{} must be an absolute http(s) URL such as https://callbot.example.com",
                    self.named("server.public_url", url)
                )),
            }
        }
        let loopback = self.server.bind.ip().is_loopback();
        match &self.server.web_token {
            Some(t) if t.expose_secret().trim().is_empty() => refuse(format!(
                "{} is empty: unset it (loopback only) or set a random string of at least {WEB_TOKEN_MIN_CHARS} characters",
                self.name("server.web_token")
            )),
            Some(t)
                if !loopback && t.expose_secret().trim().chars().count() < WEB_TOKEN_MIN_CHARS =>
            {
                refuse(format!(
                    "{} has {} characters; with {} (not loopback) it needs at least {WEB_TOKEN_MIN_CHARS} (for example from `openssl rand -hex 16`)",
                    self.name("server.web_token"),
                    t.expose_secret().trim().chars().count(),
                    self.named("server.bind", self.server.bind),
                ))
            }
            None if !loopback => refuse(format!(
                "{} is not a loopback address, so the web console needs CALLBOT_WEB_TOKEN (at least {WEB_TOKEN_MIN_CHARS} characters; an open call endpoint on a public address is not allowed)",
                self.named("server.bind", self.server.bind)
            )),
            _ => {}
        }
        let sv = &self.server;
        // Upper bounds keep the durations and the semaphore within what tokio accepts.
        for (key, value, most) in [
            ("server.header_timeout_ms", sv.header_timeout_ms, 3_600_000),
            ("server.idle_timeout_secs", sv.idle_timeout_secs, 86_400),
            ("server.max_connections", sv.max_connections as u64, 1 << 20),
        ] {
            if !(1..=most).contains(&value) {
                refuse(format!(
                    "{} must be between 1 and {most}",
                    self.named(key, value)
                ));
            }
        }
        if let Err(e) = self.telephony() {
            refuse(e);
        }
        if self.twilio.mode == TwilioModeSetting::Callbacks && self.server.public_url.is_none() {
            refuse(format!(
                "{} needs CALLBOT_PUBLIC_URL: Twilio fetches each call's TwiML from it and posts the call's status to it. Set it to the https URL of a reverse proxy or tunnel, or use polling (unset CALLBOT_TWILIO__MODE or set it to polling)",
                self.named("twilio.mode", "callbacks")
            ));
        }
        // Features that need Twilio to call back (questions, answering-machine detection,
        // recordings) are refused here when they are switched on for every call and the
        // mode is polling, naming the setting; per call, `Call::needs_callbacks` does it.
        let tw = &self.twilio;
        for (key, value, least, most) in [
            ("twilio.poll_ringing_ms", tw.poll_ringing_ms, 10, 60_000),
            (
                "twilio.poll_in_progress_ms",
                tw.poll_in_progress_ms,
                10,
                600_000,
            ),
            (
                "twilio.poll_max_requests",
                u64::from(tw.poll_max_requests),
                1,
                1_000_000,
            ),
            (
                "twilio.poll_per_second",
                u64::from(tw.poll_per_second),
                1,
                10_000,
            ),
        ] {
            if !(least..=most).contains(&value) {
                refuse(format!(
                    "{} must be {least} to {most}",
                    self.named(key, value)
                ));
            }
        }
        let mut urls = vec![
            ("twilio.api_base", &self.twilio.api_base),
            ("telegram.api_url", &self.telegram.api_url),
            ("slack.api_url", &self.slack.api_url),
        ];
        if let Some(base) = &self.llm.base_url {
            urls.push(("llm.base_url", base));
        }
        for (key, url) in urls {
            match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => refuse(format!(
                    "{} is not an absolute http(s) URL",
                    self.named(key, url)
                )),
            }
        }
        let c = &self.calls;
        let at_least_one = [
            ("calls.cps", c.cps as usize),
            ("calls.max_concurrent_requests", c.max_concurrent_requests),
            ("calls.max_tries", c.max_tries as usize),
            ("calls.queue_capacity", c.queue_capacity),
            ("calls.time_limit_secs", c.time_limit_secs as usize),
            ("limits.max_concurrent", self.limits.max_concurrent as usize),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                refuse(format!("{} must be at least 1", self.named(key, value)));
            }
        }
        // The bus allocates its ring up front: a slot per event, rounded up to a power of two.
        if !(1..=MAX_EVENT_BUS_CAPACITY).contains(&c.event_bus_capacity) {
            refuse(format!(
                "{} must be between 1 and {MAX_EVENT_BUS_CAPACITY}",
                self.named("calls.event_bus_capacity", c.event_bus_capacity)
            ));
        }
        if c.default_message.trim().is_empty() || c.default_message.chars().count() > 4000 {
            refuse(format!(
                "{} must have 1 to 4000 characters",
                self.name("calls.default_message")
            ));
        }
        if !(300..=600_000).contains(&self.telegram.polling_lease_ms) {
            refuse(format!(
                "{} must be 300 to 600000 milliseconds",
                self.named("telegram.polling_lease_ms", self.telegram.polling_lease_ms)
            ));
        }
        // Detection results and recordings arrive on callbacks: with no public URL for Twilio
        // (polling mode) every call would be refused, so the setting is, once, here.
        if matches!(self.telephony(), Ok(TelephonyChoice::Twilio { .. }))
            && self.twilio_mode() == TwilioMode::Polling
        {
            for (key, on) in [
                ("calls.machine_detection", !c.machine_detection.is_off()),
                ("calls.record", c.record),
            ] {
                if on {
                    refuse(format!(
                        "{} needs Twilio to call callbot back, but Twilio is polled (no CALLBOT_PUBLIC_URL, or twilio.mode = \"polling\"): set CALLBOT_PUBLIC_URL or turn it off",
                        self.name(key)
                    ));
                }
            }
        }
        if c.record_announcement.chars().count() > 1000 {
            refuse(format!(
                "{} has {} characters; at most 1000 (it is spoken before every recorded call)",
                self.name("calls.record_announcement"),
                c.record_announcement.chars().count()
            ));
        }
        if !(5..=600).contains(&c.ring_timeout_secs) {
            refuse(format!(
                "{} must be between 5 and 600 (Twilio's range)",
                self.named("calls.ring_timeout_secs", c.ring_timeout_secs)
            ));
        }
        if !(1..=MAX_TTL_HOURS).contains(&self.store.ttl_hours) {
            refuse(format!(
                "{} must be 1 to {MAX_TTL_HOURS} hours (ten years)",
                self.named("store.ttl_hours", self.store.ttl_hours)
            ));
        }
        if self.store.backend == StoreBackend::Redis {
            if !cfg!(feature = "redis") {
                refuse(format!(
                    "{}: this build has no redis support (built without the `redis` feature); use memory",
                    self.named("store.backend", "redis")
                ));
            } else if self
                .store
                .redis_url
                .as_ref()
                .is_none_or(|u| u.expose_secret().trim().is_empty())
            {
                refuse(format!(
                    "{} needs {} (redis://host:6379/0, rediss:// for TLS)",
                    self.named("store.backend", "redis"),
                    self.name("store.redis_url")
                ));
            }
        }
        if !(100..=3_600_000).contains(&self.store.claim_ms) {
            refuse(format!(
                "{} must be 100 to 3600000 milliseconds",
                self.named("store.claim_ms", self.store.claim_ms)
            ));
        }
        if !(100..=600_000).contains(&self.store.follow_claim_ms) {
            refuse(format!(
                "{} must be 100 to 600000 milliseconds",
                self.named("store.follow_claim_ms", self.store.follow_claim_ms)
            ));
        }
        let prefix = &self.store.redis_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            refuse(format!(
                "{} must be 1 to 64 letters, digits, '-', '_', '.' or ':'",
                self.named("store.redis_prefix", prefix)
            ));
        }
        if cfg!(feature = "telegram") {
            if let Some(token) = &self.telegram.bot_token {
                if !looks_like_telegram_token(token.expose_secret().trim()) {
                    refuse(format!(
                        "{} does not look like a bot token from BotFather (the bot's id, a colon, then letters: 123456:ABC-DEF…)",
                        self.name("telegram.bot_token")
                    ));
                }
                if self.telegram.mode == TelegramMode::Webhook
                    && self.telegram.webhook_secret.is_none()
                {
                    refuse(format!(
                        "{} needs TELEGRAM_WEBHOOK_SECRET (1-256 characters A-Z, a-z, 0-9, _ and -): Telegram sends it with every update so nobody else can post to /telegram/webhook",
                        self.named("telegram.mode", "webhook")
                    ));
                }
            }
            if let Some(secret) = &self.telegram.webhook_secret {
                let s = secret.expose_secret();
                if s.len() > 256
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    refuse(format!(
                        "{} may only have 1-256 characters A-Z, a-z, 0-9, _ and - (Telegram's rule)",
                        self.name("telegram.webhook_secret")
                    ));
                }
            }
        }
        if cfg!(feature = "slack") {
            if let Some(token) = &self.slack.bot_token {
                if !token.expose_secret().trim().starts_with("xoxb-") {
                    refuse(format!(
                        "{} does not look like a bot token (xoxb-…, from the app's OAuth & Permissions page)",
                        self.name("slack.bot_token")
                    ));
                }
                if self.slack.signing_secret.is_none() && self.slack.app_token.is_none() {
                    refuse(format!(
                        "{} is set but SLACK_SIGNING_SECRET is not: Slack's requests to /slack/* could not be verified. Set SLACK_SIGNING_SECRET (from the app's Basic Information page), or SLACK_APP_TOKEN to use Socket Mode instead",
                        self.name("slack.bot_token")
                    ));
                }
            }
            if let Some(token) = &self.slack.app_token
                && !token.expose_secret().trim().starts_with("xapp-")
            {
                refuse(format!(
                    "{} does not look like an app-level token (xapp-…, from the app's Basic Information page)",
                    self.name("slack.app_token")
                ));
            }
        }
        if self.llm_enabled() && self.llm.model.trim().is_empty() {
            refuse(format!(
                "{} is empty: name the model, for example gpt-4o-mini",
                self.name("llm.model")
            ));
        }
        for country in &self.access.countries {
            if Region::parse(country).is_none() {
                refuse(format!(
                    "{}: {country:?} is not a known region",
                    self.name("access.countries")
                ));
            }
        }
        for (key, numbers) in [
            ("access.allow_numbers", &self.access.allow_numbers),
            ("access.deny_numbers", &self.access.deny_numbers),
        ] {
            for n in numbers {
                if PhoneNumber::from_e164(n).is_err() {
                    refuse(format!(
                        "{}: {n:?} must be a valid E.164 number like +919876543210",
                        self.name(key)
                    ));
                }
            }
        }
        self.validate_voices(&mut refuse);
        let max_chars = self.limits.message_max_chars;
        if max_chars == 0 || max_chars > 4000 {
            refuse(format!(
                "{} must be 1 to 4000 (Twilio's TwiML cap)",
                self.named("limits.message_max_chars", max_chars)
            ));
        }
        if !(self.simulator.speed > 0.0 && self.simulator.speed.is_finite()) {
            refuse(format!(
                "{} must be a positive number",
                self.named("simulator.speed", self.simulator.speed)
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// How Twilio calls are followed: `twilio.mode`, with `auto` resolved by whether
    /// `server.public_url` was set (to anything, loopback included: a tunnel on the same host,
    /// tests). The default `http://{bind}` does not count: Twilio cannot reach it.
    pub fn twilio_mode(&self) -> TwilioMode {
        match self.twilio.mode {
            TwilioModeSetting::Callbacks => TwilioMode::Callbacks,
            TwilioModeSetting::Polling => TwilioMode::Polling,
            TwilioModeSetting::Auto if self.server.public_url.is_some() => TwilioMode::Callbacks,
            TwilioModeSetting::Auto => TwilioMode::Polling,
        }
    }

    /// Whether the LLM fallback is on (a key or a base URL is set).
    pub fn llm_enabled(&self) -> bool {
        self.llm.api_key.is_some() || self.llm.base_url.is_some()
    }

    /// Settings that work but probably not as meant; `check-config` prints them and every
    /// start logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let twilio = matches!(self.telephony(), Ok(TelephonyChoice::Twilio { .. }));
        if twilio && self.twilio_mode() == TwilioMode::Polling {
            let tw = &self.twilio;
            // The longest a call can last: queued, ringing, then answered up to its limit.
            let ringing =
                u64::from(self.calls.ring_timeout_secs + 5) * 1000 / tw.poll_ringing_ms.max(1);
            let answered =
                u64::from(self.calls.time_limit_secs) * 1000 / tw.poll_in_progress_ms.max(1);
            let needed = ringing + answered + 1;
            if u64::from(tw.poll_max_requests) < needed {
                w.push(format!(
                    "{} is less than the {needed} status requests a call ringing {} s and lasting {} s takes at these intervals: longer calls end with their outcome unknown",
                    self.named("twilio.poll_max_requests", tw.poll_max_requests),
                    self.calls.ring_timeout_secs,
                    self.calls.time_limit_secs,
                ));
            }
        }
        if twilio && self.twilio_mode() == TwilioMode::Callbacks {
            match self.server.public_url.as_deref().map(Url::parse) {
                None => w.push(format!(
                    "CALLBOT_PUBLIC_URL is unset, so Twilio is told to fetch TwiML from and post status callbacks to http://{}, which it cannot reach; set it to the https URL of a reverse proxy or tunnel",
                    self.server.bind
                )),
                Some(Ok(u)) => {
                    let named = self.named("server.public_url", u.as_str());
                    if u.host().as_ref().is_some_and(unreachable_host) {
                        w.push(format!(
                            "{named} is a loopback or private address: Twilio, on the internet, cannot reach it, so calls get no TwiML and no status"
                        ));
                    }
                    if u.scheme() == "http" {
                        w.push(format!(
                            "{named} is plain http: Twilio would send call details and signed callbacks in clear; use https"
                        ));
                    }
                }
                Some(Err(_)) => {}
            }
        }
        if let Some(t) = &self.server.web_token {
            let chars = t.expose_secret().trim().chars().count();
            if chars > 0 && chars < WEB_TOKEN_MIN_CHARS {
                w.push(format!(
                    "{} has only {chars} characters: accepted on loopback, but anything else needs at least {WEB_TOKEN_MIN_CHARS}",
                    self.name("server.web_token")
                ));
            }
        }
        if self.telegram.bot_token.is_some() && self.telegram.mode == TelegramMode::Webhook {
            let https = self
                .server
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"));
            if !https {
                w.push(
                    "TELEGRAM_MODE=webhook: Telegram delivers updates only to an https CALLBOT_PUBLIC_URL on port 443, 80, 88 or 8443".into(),
                );
            }
        }
        if self.slack.bot_token.is_none() {
            for key in ["slack.signing_secret", "slack.app_token"] {
                let set = match key {
                    "slack.signing_secret" => self.slack.signing_secret.is_some(),
                    _ => self.slack.app_token.is_some(),
                };
                if set {
                    w.push(format!(
                        "{} is set but SLACK_BOT_TOKEN is not: the Slack adapter is off",
                        self.name(key)
                    ));
                }
            }
        }
        // A dialer renews its hold on a call every third of the claim time; one cut off from
        // Redis mid-create loses the call after the claim time, and its successor asks
        // Twilio's call list before creating: the create must have been answered by then.
        let create_ms = self.twilio.request_timeout_ms.saturating_mul(2);
        if self.store.backend == StoreBackend::Redis && self.store.claim_ms < create_ms {
            w.push(format!(
                "{} is shorter than twice the Twilio request timeout ({create_ms} ms): an instance cut off from Redis while a create is in flight could lose the call to another before Twilio answers, and Twilio's call list would not show it yet",
                self.named("store.claim_ms", self.store.claim_ms)
            ));
        }
        w
    }

    /// The effective access policy.
    pub fn policy(&self) -> Policy {
        let set = |v: &[String]| v.iter().cloned().collect::<HashSet<_>>();
        let a = &self.access;
        let countries = if a.countries.is_empty() {
            [self.region().code().to_owned()].into()
        } else {
            a.countries.iter().map(|c| c.to_ascii_uppercase()).collect()
        };
        let l = &self.limits;
        Policy {
            open: a.open,
            // The public keys (`[access] telegram_users`, …) fill the allow-lists keyed by
            // platform; an adapter added later gets its own entry here.
            access: [
                (
                    Platform::Telegram,
                    AllowList {
                        users: set(&a.telegram_users),
                        chats: set(&a.telegram_chats),
                        teams: HashSet::new(),
                    },
                ),
                (
                    Platform::Slack,
                    AllowList {
                        users: set(&a.slack_users),
                        chats: set(&a.slack_channels),
                        teams: set(&a.slack_teams),
                    },
                ),
            ]
            .into(),
            countries,
            allow_numbers: set(&a.allow_numbers),
            deny_numbers: set(&a.deny_numbers),
            limits: Limits {
                per_user_hour: l.per_user_hour,
                per_user_day: l.per_user_day,
                per_destination_hour: l.per_destination_hour,
                global_hour: l.global_hour,
                global_day: l.global_day,
                max_concurrent: l.max_concurrent,
                message_max_chars: l.message_max_chars,
            },
        }
    }

    pub fn region(&self) -> Region {
        Region::parse(&self.phone.default_region).unwrap_or_else(|| Region::parse("US").unwrap())
    }

    /// Twilio when all three credentials are set, the simulator when none is.
    pub fn telephony(&self) -> Result<TelephonyChoice, String> {
        let t = &self.twilio;
        let token = t
            .auth_token
            .as_ref()
            .filter(|s| !s.expose_secret().trim().is_empty());
        match (&t.account_sid, token, &t.from_number) {
            (None, None, None) => Ok(TelephonyChoice::Simulator),
            (Some(sid), Some(token), Some(from)) => {
                if !(sid.starts_with("AC") && sid.len() == 34) {
                    return Err(format!(
                        "{} does not look like an Account SID (AC + 32 hex digits)",
                        self.named("twilio.account_sid", sid)
                    ));
                }
                let from = PhoneNumber::from_e164(from).map_err(|_| {
                    format!(
                        "{} must be an E.164 number like +15005550006 (a +, the country code, the number)",
                        self.named("twilio.from_number", from)
                    )
                })?;
                Ok(TelephonyChoice::Twilio {
                    account_sid: sid.clone(),
                    auth_token: token.clone(),
                    from,
                })
            }
            (sid, token, from) => {
                let missing: Vec<&str> = [
                    (sid.is_none(), "TWILIO_ACCOUNT_SID"),
                    (token.is_none(), "TWILIO_AUTH_TOKEN"),
                    (from.is_none(), "TWILIO_FROM_NUMBER"),
                ]
                .into_iter()
                .filter_map(|(m, n)| m.then_some(n))
                .collect();
                Err(format!(
                    "Twilio is partly configured: {} missing (set all three for real calls, or none for the simulator)",
                    missing.join(", ")
                ))
            }
        }
    }

    /// Which way calls are followed, for `check-config` and the start-up log.
    pub fn describe_mode(&self) -> String {
        let tw = &self.twilio;
        match (self.telephony(), self.twilio_mode()) {
            (Ok(TelephonyChoice::Twilio { .. }), TwilioMode::Polling) => format!(
                "polling mode{}: TwiML sent inline, no callbacks, so no public URL is needed; status fetched every {} ms while queued or ringing, every {} ms in progress, at most {} requests per call and {} per second",
                if tw.mode == TwilioModeSetting::Auto {
                    " (CALLBOT_PUBLIC_URL is unset)"
                } else {
                    ""
                },
                tw.poll_ringing_ms,
                tw.poll_in_progress_ms,
                tw.poll_max_requests,
                tw.poll_per_second,
            ),
            (Ok(TelephonyChoice::Twilio { .. }), TwilioMode::Callbacks) => format!(
                "callback mode: Twilio fetches TwiML from {0}/twiml/… and posts status callbacks to {0}/webhooks/status",
                self.server
                    .public_url
                    .as_deref()
                    .unwrap_or("(CALLBOT_PUBLIC_URL, unset)")
                    .trim_end_matches('/')
            ),
            _ => "simulated (signed callbacks from the built-in simulator)".to_owned(),
        }
    }

    /// The `[voices]` table as configured (tags canonicalized when the service builds its
    /// [`speech::Voices`]).
    pub fn voices(&self) -> Vec<(String, String)> {
        self.voices
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `calls.language` and every `[voices]` key is a language tag, once; every voice a
    /// name Twilio could know (`alice`, `Polly.Aditi`, `Google.hi-IN-Wavenet-A`).
    fn validate_voices(&self, refuse: &mut impl FnMut(String)) {
        if canonical_tag(&self.calls.language).is_none() {
            refuse(format!(
                "{} is not a language tag such as en-US or hi-IN",
                self.named("calls.language", &self.calls.language)
            ));
        }
        let voice_ok = |v: &str| {
            let v = v.trim();
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        if !voice_ok(&self.calls.voice) {
            refuse(format!(
                "{} is not a voice name (such as alice, Polly.Aditi or Google.hi-IN-Wavenet-A)",
                self.named("calls.voice", &self.calls.voice)
            ));
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (key, voice) in &self.voices {
            let name = format!("voices.{key}");
            match canonical_tag(key) {
                None => refuse(format!(
                    "{}: {key:?} is not a language tag such as hi-IN (in the environment: CALLBOT_VOICES__HI_IN)",
                    self.name(&name)
                )),
                Some(tag) => {
                    if let Some(other) = seen.insert(tag.clone(), key) {
                        refuse(format!(
                            "{} and voices.{other} are the same language ({tag}); keep one",
                            self.name(&name)
                        ));
                    }
                }
            }
            if !voice_ok(voice) {
                refuse(format!(
                    "{} is not a voice name (such as Polly.Aditi or Google.hi-IN-Wavenet-A)",
                    self.named(&name, voice)
                ));
            }
        }
    }

    /// "en-US alice (default), hi-IN Polly.Aditi": every language a call may be spoken in.
    fn describe_voices(&self) -> String {
        let voices = speech::Voices::new(&self.calls.language, &self.calls.voice, self.voices());
        voices
            .table()
            .map(|(tag, voice)| {
                if tag == voices.default_language() {
                    format!("{tag} {voice} (default)")
                } else {
                    format!("{tag} {voice}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Human summary for `callbot check-config`; secrets show only whether they are set.
    pub fn describe(&self) -> String {
        let secret = |s: &Option<SecretString>| {
            if s.is_some() {
                "set (redacted)"
            } else {
                "unset"
            }
        };
        let telephony = match self.telephony() {
            Ok(TelephonyChoice::Simulator) => {
                "built-in simulator (no real calls are placed)".to_owned()
            }
            Ok(TelephonyChoice::Twilio {
                account_sid, from, ..
            }) => format!(
                "Twilio, account {}…, from {from}, API {}",
                &account_sid[..6.min(account_sid.len())],
                self.twilio.api_base
            ),
            Err(e) => format!("invalid: {e}"),
        };
        let public = self
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{} (default)", self.server.bind));
        let mode = self.describe_mode();
        format!(
            "bind:            {}\n\
             public url:      {public}\n\
             web token:       {}\n\
             default region:  {}\n\
             telephony:       {telephony}\n\
             call status:     {mode}\n\
             twilio token:    {}\n\
             store:           {:?}{}\n\
             dialing:         {} call(s)/s, {} request(s) in flight, {} tries, queue {}\n\
             calls:           ring {} s, limit {} s, voice {} ({})\n\
             callee:          machine detection {}, recording {}\n\
             voices:          {}\n\
             telegram:        {}\n\
             slack:           {}\n\
             llm:             {}\n\
             {}",
            self.server.bind,
            secret(&self.server.web_token),
            self.phone.default_region,
            secret(&self.twilio.auth_token),
            self.store.backend,
            if self.store.redis_url.is_some() {
                " (REDIS_URL set, redacted)"
            } else {
                ""
            },
            self.calls.cps,
            self.calls.max_concurrent_requests,
            self.calls.max_tries,
            self.calls.queue_capacity,
            self.calls.ring_timeout_secs,
            self.calls.time_limit_secs,
            self.calls.voice,
            self.calls.language,
            self.calls.machine_detection.as_str(),
            if self.calls.record { "on" } else { "off" },
            self.describe_voices(),
            feature_state(
                cfg!(feature = "telegram"),
                self.telegram.bot_token.is_some(),
                &format!("on ({:?} mode, token redacted)", self.telegram.mode),
            ),
            feature_state(
                cfg!(feature = "slack"),
                self.slack.bot_token.is_some(),
                if self.slack.app_token.is_some() {
                    "on (Socket Mode, tokens redacted)"
                } else {
                    "on (HTTP events, tokens redacted)"
                },
            ),
            feature_state(
                cfg!(feature = "llm"),
                self.llm.api_key.is_some() || self.llm.base_url.is_some(),
                &format!("on (model {})", self.llm.model),
            ),
            self.policy().describe(),
        )
    }
}

fn feature_state(compiled: bool, configured: bool, on: &str) -> String {
    match (compiled, configured) {
        (false, _) => "not compiled in".to_owned(),
        (true, false) => "off (not configured)".to_owned(),
        (true, true) => on.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Settings)) -> Result<(), String> {
        let mut s = Settings::defaults();
        f(&mut s);
        s.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_use_the_simulator() {
        let s = Settings::defaults();
        s.validate().unwrap();
        assert!(matches!(s.telephony(), Ok(TelephonyChoice::Simulator)));
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn sid_without_token_is_refused() {
        let err =
            with(|s| s.twilio.account_sid = Some(format!("AC{}", "0".repeat(32)))).unwrap_err();
        assert!(
            err.contains("TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER missing"),
            "{err}"
        );
    }

    #[test]
    fn relative_public_url_and_unknown_region_are_refused() {
        let err = with(|s| {
            s.server.public_url = Some("/callbot".into());
            s.phone.default_region = "XX".into();
        })
        .unwrap_err();
        assert!(err.contains("must be an absolute http(s) URL"), "{err}");
        assert!(err.contains("\"XX\" is not a known region"), "{err}");
    }

    #[test]
    fn public_bind_needs_a_token() {
        let err = with(|s| s.server.bind = "0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert!(err.contains("CALLBOT_WEB_TOKEN"), "{err}");
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns figment::Error"
    )]
    fn environment_names_map_onto_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CALLBOT_ACCESS__TELEGRAM_USERS", "123, 456");
            jail.set_env("CALLBOT_ACCESS__COUNTRIES", "IN");
            jail.set_env("CALLBOT_BIND", "127.0.0.1:9999");
            jail.set_env("TWILIO_AUTH_TOKEN", "tok");
            jail.set_env("CALLBOT_CALLS__CPS", "7");
            // The access names the Security section documents.
            jail.set_env("CALLBOT_ACCESS__TELEGRAM_CHATS", "-100123");
            jail.set_env("CALLBOT_ACCESS__SLACK_TEAMS", "T0123ABCD");
            jail.set_env("CALLBOT_ACCESS__SLACK_USERS", "U01,U02");
            jail.set_env("CALLBOT_ACCESS__OPEN", "true");
            jail.set_env("CALLBOT_LIMITS__PER_USER_HOUR", "4");
            jail.set_env("CALLBOT_LIMITS__PER_USER_DAY", "9");
            // A lone number keeps its +; a list of them too.
            jail.set_env("CALLBOT_ACCESS__ALLOW_NUMBERS", "+14155550100");
            jail.set_env(
                "CALLBOT_ACCESS__DENY_NUMBERS",
                "+14155550101, +919876543210",
            );
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.access.telegram_chats, ["-100123"]);
            assert_eq!(s.access.slack_teams, ["T0123ABCD"]);
            assert_eq!(s.access.slack_users, ["U01", "U02"]);
            assert!(s.access.open);
            assert_eq!((s.limits.per_user_hour, s.limits.per_user_day), (4, 9));
            assert_eq!(s.access.allow_numbers, ["+14155550100"]);
            assert_eq!(s.access.deny_numbers, ["+14155550101", "+919876543210"]);
            assert_eq!(s.server.bind.port(), 9999);
            assert_eq!(s.calls.cps, 7);
            assert_eq!(s.access.telegram_users, ["123", "456"]);
            assert_eq!(s.access.countries, ["IN"]);
            assert_eq!(s.twilio.auth_token.unwrap().expose_secret(), "tok");
            Ok(())
        });
    }
    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns figment::Error"
    )]
    fn string_settings_keep_any_text_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWILIO_ACCOUNT_SID", format!("AC{}", "0".repeat(32)));
            jail.set_env("TWILIO_AUTH_TOKEN", "007");
            jail.set_env("TWILIO_FROM_NUMBER", "+15005550006");
            jail.set_env("CALLBOT_WEB_TOKEN", "1234567890123456");
            jail.set_env("OPENAI_MODEL", "1.5");
            jail.set_env("CALLBOT_CALLS__DEFAULT_MESSAGE", "[x]");
            jail.set_env("CALLBOT_CALLS__VOICE", "true");
            jail.set_env("CALLBOT_CALLS__CONFIRM", "yes");
            jail.set_env("CALLBOT_CALLS__CPS", "007");
            jail.set_env("CALLBOT_ACCESS__TELEGRAM_USERS", "[123, 456]");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.twilio.from_number.as_deref(), Some("+15005550006"));
            assert_eq!(s.twilio.auth_token.as_ref().unwrap().expose_secret(), "007");
            assert_eq!(
                s.server.web_token.as_ref().unwrap().expose_secret(),
                "1234567890123456"
            );
            assert_eq!(s.llm.model, "1.5");
            assert_eq!(s.calls.default_message, "[x]");
            assert_eq!(s.calls.voice, "true");
            assert!(s.calls.confirm);
            assert_eq!(s.calls.cps, 7);
            assert_eq!(s.access.telegram_users, ["123", "456"]);
            s.validate().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns figment::Error"
    )]
    fn errors_name_the_variable_the_user_set() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CALLBOT_CALLS__CPS", "abc");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains(r#"CALLBOT_CALLS__CPS="abc" is not a whole number"#),
                "{err}"
            );
            jail.set_env("CALLBOT_CALLS__CPS", "0");
            jail.set_env("CALLBOT_LOG_FORMAT", "JSON");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains(r#"CALLBOT_LOG_FORMAT="JSON" must be one of: pretty, json"#),
                "{err}"
            );
            jail.set_env("CALLBOT_LOG_FORMAT", "json");
            let err = Settings::load(None)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(r#"CALLBOT_CALLS__CPS="0" must be at least 1"#),
                "{err}"
            );
            jail.set_env("CALLBOT_CALLS__CPS", "1");
            jail.set_env("CALLBOT_BIND", "localhost:8080");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
            jail.set_env("CALLBOT_BIND", "callbot.internal:8080");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains(
                    r#"CALLBOT_BIND="callbot.internal:8080" is not an IP address and port"#
                ),
                "{err}"
            );
            jail.set_env("CALLBOT_BIND", "127.0.0.1:8080");
            // A secret under a misspelt name is named, never shown.
            jail.set_env("CALLBOT_TWILO__AUTH_TOKEN", "hunter2-secret");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("CALLBOT_TWILO__AUTH_TOKEN"), "{err}");
            assert!(!err.contains("hunter"), "{err}");
            // (sections are read in order, so this one is reported now)
            jail.set_env("CALLBOT_TWILIO__AUTH", "hunter3-secret");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains("CALLBOT_TWILIO__AUTH is not a setting"),
                "{err}"
            );
            assert!(!err.contains("hunter"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn web_token_must_be_non_blank_and_long_off_loopback() {
        let err = with(|s| s.server.web_token = Some("  ".to_owned().into())).unwrap_err();
        assert!(err.contains("CALLBOT_WEB_TOKEN) is empty"), "{err}");
        let err = with(|s| {
            s.server.bind = "0.0.0.0:8080".parse().unwrap();
            s.server.web_token = Some("short-token".to_owned().into());
        })
        .unwrap_err();
        assert!(err.contains("has 11 characters"), "{err}");
        assert!(!err.contains("short-token"), "{err}");
        with(|s| s.server.web_token = Some("short-token".to_owned().into())).unwrap();
    }

    #[test]
    fn twilio_with_an_unreachable_public_url_is_warned_about() {
        let mut s = Settings::defaults();
        s.twilio.account_sid = Some(format!("AC{}", "0".repeat(32)));
        s.twilio.auth_token = Some("tok".to_owned().into());
        s.twilio.from_number = Some("+15005550006".into());
        // Unset: polling, which needs no public URL, so nothing to warn about.
        assert_eq!(s.twilio_mode(), TwilioMode::Polling);
        assert_eq!(s.warnings(), Vec::<String>::new());
        s.twilio.mode = TwilioModeSetting::Callbacks;
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains(
                "twilio.mode (CALLBOT_TWILIO__MODE) = \"callbacks\" needs CALLBOT_PUBLIC_URL"
            ),
            "{err}"
        );
        for (url, expect) in [
            ("http://10.0.0.5:8080", "loopback or private"),
            ("https://192.168.1.2", "loopback or private"),
            ("https://[fd00::1]", "loopback or private"),
            ("https://169.254.1.1", "loopback or private"),
            ("https://localhost", "loopback or private"),
            ("http://callbot.example.com", "plain http"),
        ] {
            s.server.public_url = Some(url.into());
            let w = s.warnings().join("\n");
            assert!(w.contains(expect), "{url}: {w}");
        }
        s.server.public_url = Some("https://callbot.example.com".into());
        assert_eq!(s.warnings(), Vec::<String>::new());
        s.validate().unwrap();
    }

    #[test]
    fn the_twilio_mode_follows_whether_a_public_url_was_set() {
        let mut s = Settings::defaults();
        assert_eq!(s.twilio.mode, TwilioModeSetting::Auto);
        assert_eq!(s.twilio_mode(), TwilioMode::Polling);
        // Loopback counts when set explicitly: a tunnel on the same host, tests.
        s.server.public_url = Some("http://127.0.0.1:8080".into());
        assert_eq!(s.twilio_mode(), TwilioMode::Callbacks);
        s.twilio.mode = TwilioModeSetting::Polling;
        assert_eq!(s.twilio_mode(), TwilioMode::Polling);
        s.server.public_url = None;
        s.twilio.mode = TwilioModeSetting::Callbacks;
        assert_eq!(s.twilio_mode(), TwilioMode::Callbacks);
        // With Twilio set: check-config says which, and warns when the budget is short.
        s.twilio.mode = TwilioModeSetting::Auto;
        s.twilio.account_sid = Some(format!("AC{}", "0".repeat(32)));
        s.twilio.auth_token = Some("tok".to_owned().into());
        s.twilio.from_number = Some("+15005550006".into());
        let d = s.describe();
        assert!(
            d.contains("call status:     polling mode (CALLBOT_PUBLIC_URL is unset)"),
            "{d}"
        );
        s.twilio.poll_max_requests = 20;
        let w = s.warnings().join("\n");
        assert!(
            w.contains(
                "CALLBOT_TWILIO__POLL_MAX_REQUESTS) = \"20\" is less than the 60 status requests"
            ),
            "{w}"
        );
        s.server.public_url = Some("https://callbot.example.com".into());
        let d = s.describe();
        assert!(d.contains("call status:     callback mode: Twilio fetches TwiML from https://callbot.example.com/twiml/"), "{d}");
        // Detection and recordings come on callbacks: refused when Twilio is polled.
        s.calls.record = true;
        s.calls.machine_detection = MachineDetection::MessageEnd;
        s.validate().unwrap();
        s.server.public_url = None;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("CALLBOT_CALLS__RECORD"), "{err}");
        assert!(err.contains("CALLBOT_CALLS__MACHINE_DETECTION"), "{err}");
        assert!(err.contains("needs Twilio to call callbot back"), "{err}");
    }
}
