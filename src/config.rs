//! Typed settings: `config/default.toml` (compiled in) → `--config FILE` → environment.
//!
//! The conventional names (`TWILIO_AUTH_TOKEN`, `CALLBOT_BIND`, …; see DESIGN.md) map onto
//! their keys; any other key is `CALLBOT_SECTION__KEY` (`CALLBOT_CALLS__CPS=5`).

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use std::collections::HashSet;

use crate::core::phone::{PhoneNumber, Region};
use crate::core::policy::{Limits, Policy};

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
    pub llm: LlmSettings,
    pub access: AccessSettings,
    pub limits: LimitSettings,
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
    #[serde(default)]
    pub bot_token: Option<SecretString>,
    /// Bot API base URL (TELEGRAM_API_URL).
    pub api_url: String,
    /// `polling` or `webhook` (TELEGRAM_MODE).
    pub mode: TelegramMode,
    /// secret_token Telegram sends on every webhook (TELEGRAM_WEBHOOK_SECRET).
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// Time limit for one Bot API request, milliseconds; a long poll waits at most this
    /// minus 5 s (up to 10 s) for updates.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Bot token xoxb-… (SLACK_BOT_TOKEN); unset: the adapter is off.
    #[serde(default)]
    pub bot_token: Option<SecretString>,
    /// Request signing secret (SLACK_SIGNING_SECRET).
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    /// App-level token xapp-… for Socket Mode (SLACK_APP_TOKEN).
    #[serde(default)]
    pub app_token: Option<SecretString>,
    /// Web API base URL, no trailing slash (SLACK_API_URL).
    pub api_url: String,
    /// Time limit for one Web API request or response_url post, milliseconds.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// OPENAI_API_KEY; may be empty for local OpenAI-compatible servers.
    #[serde(default)]
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

/// A list from TOML (`["a", "b"]`) or from the environment (`a,b`).
fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<serde_json::Value>),
        One(serde_json::Value),
    }
    let text = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v.into_iter().map(text).collect(),
        OneOrMany::One(v) => text(v).split(',').map(str::to_owned).collect::<Vec<_>>(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A list of E.164 numbers. The environment provider reads a lone `+14155550100` as the
/// integer 14155550100, sign and all gone: an integer here is a number that had its `+`.
fn number_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Number(u64),
        Text(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Item>),
        One(Item),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(Item::Text(s)) => s.split(',').map(|s| Item::Text(s.to_owned())).collect(),
        OneOrMany::One(n) => vec![n],
    };
    Ok(items
        .into_iter()
        .map(|i| match i {
            Item::Number(n) => format!("+{n}"),
            Item::Text(s) => s.trim().to_owned(),
        })
        .filter(|s| !s.is_empty())
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: SocketAddr,
    /// Base URL Twilio/Slack/Telegram reach us at; defaults to `http://{bind}`.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub public_url: Option<String>,
    /// Bearer token for the web console and API; required when `bind` is not loopback.
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
    #[serde(default, deserialize_with = "empty_is_none")]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub auth_token: Option<SecretString>,
    #[serde(default, deserialize_with = "empty_is_none")]
    pub from_number: Option<String>,
    /// REST base URL (tests point it at a fake).
    pub api_base: String,
    /// Timeout of one REST request, milliseconds.
    pub request_timeout_ms: u64,
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
    /// Ask "Call …? [Call] [Cancel]" in chat before dialing.
    pub confirm: bool,
    /// A call not final `time_limit_secs + reap_margin_secs` after it was created is fetched
    /// from the provider and closed.
    pub reap_margin_secs: u64,
    /// How often the reaper looks, milliseconds.
    pub reap_interval_ms: u64,
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
    pub backend: StoreBackend,
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// Calls are forgotten this many hours after their last change.
    pub ttl_hours: u64,
    /// Most calls kept in memory.
    pub capacity: u64,
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
    #[error("could not read settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid settings:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.trim().is_empty()))
}

impl Settings {
    /// Loads defaults → `file` → the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(file)
            .extract()
            .map_err(|e| Box::new(e).into())
    }

    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let names: Vec<&str> = ENV_NAMES.iter().map(|(n, _)| *n).collect();
        figment
            .merge(
                Env::prefixed("CALLBOT_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .merge(Env::raw().only(&names).map(|k| {
                ENV_NAMES
                    .iter()
                    .find(|(n, _)| k.as_str().eq_ignore_ascii_case(n))
                    .map(|(_, key)| (*key).into())
                    .unwrap_or_else(|| k.into())
            }))
    }

    /// Defaults only, for tests and embedding.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid")
    }

    /// Checks everything a later failure would otherwise reveal; lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if Region::parse(&self.phone.default_region).is_none() {
            problems.push(format!(
                "phone.default_region (CALLBOT_DEFAULT_REGION) = {:?} is not a known region; use an ISO code like IN, US, GB",
                self.phone.default_region
            ));
        }
        if let Some(url) = &self.server.public_url {
            match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => problems.push(format!(
                    "server.public_url (CALLBOT_PUBLIC_URL) = {url:?} must be an absolute http(s) URL such as https://callbot.example.com"
                )),
            }
        }
        if !self.server.bind.ip().is_loopback() && self.server.web_token.is_none() {
            problems.push(format!(
                "server.bind = {} is not a loopback address, so the web console needs CALLBOT_WEB_TOKEN (an open call endpoint on a public address is not allowed)",
                self.server.bind
            ));
        }
        if let Err(e) = self.telephony() {
            problems.push(e);
        }
        if Url::parse(&self.twilio.api_base).is_err() {
            problems.push(format!(
                "twilio.api_base (TWILIO_API_BASE) = {:?} is not a URL",
                self.twilio.api_base
            ));
        }
        let c = &self.calls;
        if c.cps == 0 {
            problems.push("calls.cps must be at least 1".into());
        }
        if c.max_concurrent_requests == 0 || c.max_tries == 0 || c.queue_capacity == 0 {
            problems.push(
                "calls.max_concurrent_requests, calls.max_tries and calls.queue_capacity must be at least 1"
                    .into(),
            );
        }
        if c.default_message.trim().is_empty() || c.default_message.chars().count() > 4000 {
            problems.push("calls.default_message must have 1 to 4000 characters".into());
        }
        if !(5..=600).contains(&c.ring_timeout_secs) {
            problems
                .push("calls.ring_timeout_secs must be between 5 and 600 (Twilio's range)".into());
        }
        if c.time_limit_secs == 0 {
            problems.push("calls.time_limit_secs must be at least 1".into());
        }
        if self.store.backend == StoreBackend::Redis {
            if !cfg!(feature = "redis") {
                problems.push("store.backend = redis needs the `redis` feature".into());
            }
            if self.store.redis_url.is_none() {
                problems.push("store.backend = redis needs REDIS_URL".into());
            }
        }
        for c in &self.access.countries {
            if Region::parse(c).is_none() {
                problems.push(format!("access.countries: {c:?} is not a known region"));
            }
        }
        for n in self
            .access
            .allow_numbers
            .iter()
            .chain(&self.access.deny_numbers)
        {
            if PhoneNumber::from_e164(n).is_err() {
                problems.push(format!(
                    "access.allow_numbers/deny_numbers: {n:?} must be a valid E.164 number like +919876543210"
                ));
            }
        }
        if self.limits.message_max_chars == 0 || self.limits.message_max_chars > 4000 {
            problems.push("limits.message_max_chars must be 1 to 4000 (Twilio's TwiML cap)".into());
        }
        if self.limits.max_concurrent == 0 {
            problems.push("limits.max_concurrent must be at least 1".into());
        }
        if !(self.simulator.speed > 0.0 && self.simulator.speed.is_finite()) {
            problems.push("simulator.speed must be a positive number".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
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
            telegram_users: set(&a.telegram_users),
            telegram_chats: set(&a.telegram_chats),
            slack_teams: set(&a.slack_teams),
            slack_users: set(&a.slack_users),
            slack_channels: set(&a.slack_channels),
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
                        "TWILIO_ACCOUNT_SID = {sid:?} does not look like an Account SID (AC + 32 hex digits)"
                    ));
                }
                let from = PhoneNumber::from_e164(from).map_err(|_| {
                    format!(
                        "TWILIO_FROM_NUMBER = {from:?} must be an E.164 number like +15005550006"
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
        format!(
            "bind:            {}\n\
             public url:      {public}\n\
             web token:       {}\n\
             default region:  {}\n\
             telephony:       {telephony}\n\
             twilio token:    {}\n\
             store:           {:?}{}\n\
             dialing:         {} call(s)/s, {} request(s) in flight, {} tries, queue {}\n\
             calls:           ring {} s, limit {} s, voice {} ({})\n\
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
}
