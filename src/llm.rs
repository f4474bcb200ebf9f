//! The natural-language fallback: asks any OpenAI-compatible chat-completions API (OpenAI,
//! Ollama, llama.cpp, vLLM) what a message means, when the grammar found nothing.
//!
//! The answer is never trusted blindly: a number is dialed only if its digits occur, in
//! order, in the user's own text (spelled-out English digits and "double"/"triple" count),
//! and it then passes the same validation and access policy as any other.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs, ResponseFormat,
    ResponseFormatJsonSchema,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::calls::memo::{Memo, Space};
use crate::config::{LimitSettings, LlmSettings};
use crate::core::command::{Command, ParseError};
use crate::core::phone::{PhoneNumber, Region};
use crate::core::speech::Speech;
use crate::retry::{self, Policy, Verdict};

/// How long an interpretation is reused for the same text (redelivered chat messages).
const CACHE_TTL: Duration = Duration::from_secs(600);
/// The model's answers in the memo (every instance reuses them), by a digest of the text.
const ANSWERS: Space = Space {
    name: "model",
    capacity: 10_000,
};
/// Model requests, by the one retry policy: someone waits in the chat, so two tries with a
/// short jittered pause (the per-request timeout bounds each try). async-openai does not
/// show an error answer's headers, so a 429's Retry-After is not known here: it backs off.
const RETRY: Policy = Policy::new(Duration::from_millis(200), Duration::from_millis(200), 2)
    .with_total(Duration::from_millis(200));
/// Longest text sent to the model.
const MAX_INPUT_CHARS: usize = 2000;
/// Requesters the per-requester model limiter remembers before it forgets those whose
/// allowance has refilled (bounded memory however many people write).
const LIMITER_KEYS: usize = 10_000;

const SYSTEM_PROMPT: &str = "You turn chat messages into commands for callbot, a bot that places phone calls. \
Reply with one JSON object: {\"intent\": \"call\"|\"status\"|\"cancel\"|\"list\"|\"help\"|\"none\", \
\"number\": string or null, \"message\": string or null, \"language\": string or null}. \
intent is \"call\" when the user wants a phone call placed. number: the phone number exactly as \
the user gave it, written with digits (convert spelled-out digits, \"double 5\" = 55); include + and \
a country code only if the user gave them; never invent, guess or complete a number: if there is \
none, use null. message: what to say when the call is answered, as a short sentence addressed to \
the callee (e.g. \"The meeting moved to 5pm\"), or null. language: the BCP-47 code of the language \
the user asks the call to be spoken in (\"in Hindi\" = \"hi-IN\"), or null when they ask for none. \
Anything else is intent \"none\".";

/// What the model understood.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interpretation {
    pub intent: String,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
}

pub struct LlmParser {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
    /// The model's answers, shared like the rest of the dialogue's memory.
    cache: Arc<dyn Memo>,
    /// Cleared after a server refused `json_schema`; then plain JSON mode is used.
    schema_supported: AtomicBool,
    /// Model requests per requester per minute (`limits.llm_per_user_minute`).
    per_requester: DefaultKeyedRateLimiter<String>,
}

impl LlmParser {
    /// `None` when neither a key nor a base URL is configured, or when
    /// `limits.llm_per_user_minute` is 0 (the model is never asked; the grammar answers
    /// alone, as without a model).
    pub fn from_settings(
        settings: &LlmSettings,
        limits: &LimitSettings,
        cache: Arc<dyn Memo>,
    ) -> Option<Arc<Self>> {
        if settings.api_key.is_none() && settings.base_url.is_none() {
            return None;
        }
        let per_minute = NonZeroU32::new(limits.llm_per_user_minute)?;
        let mut config = OpenAIConfig::new().with_api_key(
            settings
                .api_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned())
                .unwrap_or_default(),
        );
        if let Some(base) = &settings.base_url {
            config = config.with_api_base(base.trim_end_matches('/'));
        }
        Some(Arc::new(Self {
            client: Client::with_config(config),
            model: settings.model.clone(),
            timeout: Duration::from_secs(settings.timeout_secs.max(1)),
            cache,
            schema_supported: AtomicBool::new(true),
            per_requester: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }))
    }

    /// The model's reading of `text`, sent by `requester`, as a command.
    /// `Err(NotUnderstood)` when the model could not be asked or answered nonsense;
    /// `Err(TooManyRequests)` when this requester already had its model requests for the
    /// minute (a cached answer is still given); `Err(Unverified)` when it named a number
    /// the user did not write.
    pub async fn interpret(
        &self,
        text: &str,
        region: Region,
        requester: &str,
    ) -> Result<Option<Command>, ParseError> {
        let key: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let digest = digest(&key);
        let interpretation = match self.cached(&digest).await {
            Some(hit) => hit,
            None => {
                if !self.may_ask(requester) {
                    info!(target: "callbot::llm", requester, "model request refused: per-requester limit");
                    metrics::counter!("callbot_llm_requests_limited_total").increment(1);
                    return Err(ParseError::TooManyRequests);
                }
                let fresh = self.ask_with_retry(&key).await?;
                let bytes = serde_json::to_vec(&fresh).expect("an interpretation serializes");
                if let Err(e) = self.cache.put(ANSWERS, &digest, bytes, CACHE_TTL).await {
                    warn!(target: "callbot::llm", error = %e, "could not cache the model's answer");
                }
                fresh
            }
        };
        to_command(&interpretation, text, region)
    }

    /// A cached answer; the memo being unavailable is a miss (the model is asked).
    async fn cached(&self, digest: &str) -> Option<Interpretation> {
        match self.cache.get(ANSWERS, digest).await {
            Ok(hit) => hit.and_then(|bytes| serde_json::from_slice(&bytes).ok()),
            Err(e) => {
                warn!(target: "callbot::llm", error = %e, "could not read the model's answer cache");
                None
            }
        }
    }

    /// Takes one model request from `requester`'s allowance.
    fn may_ask(&self, requester: &str) -> bool {
        let limiter = &self.per_requester;
        if limiter.len() >= LIMITER_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(&requester.to_owned()).is_ok()
    }

    async fn ask_with_retry(&self, text: &str) -> Result<Interpretation, ParseError> {
        let verdict = |e: &AskError| match e {
            AskError::Transient(_) => Verdict::Retry(None),
            AskError::Permanent(_) => Verdict::Fatal,
        };
        retry::run(&RETRY, "language model", || self.ask(text), verdict)
            .await
            .map_err(|failure| {
                warn!(target: "callbot::llm", error = %failure.error, tries = failure.tries, "giving up on the language model");
                ParseError::NotUnderstood
            })
    }

    async fn ask(&self, text: &str) -> Result<Interpretation, AskError> {
        let text: String = text.chars().take(MAX_INPUT_CHARS).collect();
        let with_schema = self.schema_supported.load(Ordering::Relaxed);
        let started = Instant::now();
        let result = self.request(&text, with_schema).await;
        let response = match result {
            Err(RequestError::Api(OpenAIError::ApiError(e)))
                if with_schema && matches!(e.status_code.as_u16(), 400 | 422) =>
            {
                info!(target: "callbot::llm", "server refused json_schema; using plain JSON mode");
                self.schema_supported.store(false, Ordering::Relaxed);
                self.request(&text, false).await
            }
            other => other,
        }
        .map_err(AskError::from)?;
        let usage = response.usage.as_ref();
        let content = response
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .ok_or_else(|| AskError::Transient("the model returned no content".into()))?;
        // A model may answer better the next time (temperature 0 is not a promise).
        let parsed: Interpretation = serde_json::from_str(strip_fences(&content)).map_err(|e| {
            AskError::Transient(format!("the model's answer is not the expected JSON: {e}"))
        })?;
        info!(
            target: "callbot::llm",
            model = %self.model,
            latency_ms = started.elapsed().as_millis() as u64,
            prompt_tokens = usage.map(|u| u.prompt_tokens),
            completion_tokens = usage.map(|u| u.completion_tokens),
            intent = %parsed.intent,
            "language model answered"
        );
        Ok(parsed)
    }

    async fn request(
        &self,
        text: &str,
        with_schema: bool,
    ) -> Result<async_openai::types::chat::CreateChatCompletionResponse, RequestError> {
        let format = if with_schema {
            ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("A callbot command".into()),
                    name: "callbot_command".into(),
                    schema: schema(),
                    strict: Some(true),
                },
            }
        } else {
            ResponseFormat::JsonObject
        };
        let request = CreateChatCompletionRequestArgs::default()
            .model(&self.model)
            .temperature(0.0)
            .messages([
                ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(
                    SYSTEM_PROMPT,
                )),
                ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(text)),
            ])
            .response_format(format)
            .build()
            .map_err(RequestError::Api)?;
        match tokio::time::timeout(self.timeout, self.client.chat().create(request)).await {
            Ok(result) => result.map_err(RequestError::Api),
            Err(_) => Err(RequestError::Timeout(self.timeout)),
        }
    }
}

/// A model request that failed.
#[derive(Debug)]
enum RequestError {
    Api(OpenAIError),
    Timeout(Duration),
}

/// Why the model gave no interpretation, and whether asking again may help.
#[derive(Debug, thiserror::Error)]
enum AskError {
    /// A timeout, a dropped connection, 408/409/429/5xx, an answer we could not read.
    #[error("{0}")]
    Transient(String),
    /// A refusal that another try will not change (a bad key, an unknown model).
    #[error("{0}")]
    Permanent(String),
}

impl From<RequestError> for AskError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Timeout(t) => Self::Transient(format!("no answer within {t:?}")),
            RequestError::Api(OpenAIError::ApiError(api)) => {
                let status = api.status_code.as_u16();
                let message = api.to_string();
                if matches!(status, 408 | 409 | 429) || status >= 500 {
                    Self::Transient(message)
                } else {
                    Self::Permanent(message)
                }
            }
            RequestError::Api(e @ OpenAIError::InvalidArgument(_)) => {
                Self::Permanent(e.to_string())
            }
            RequestError::Api(e) => Self::Transient(e.to_string()),
        }
    }
}

fn schema() -> serde_json::Value {
    let nullable =
        |desc: &str| serde_json::json!({ "type": ["string", "null"], "description": desc });
    serde_json::json!({
        "type": "object",
        "properties": {
            "intent": { "type": "string", "enum": ["call", "status", "cancel", "list", "help", "none"] },
            "number": nullable("the phone number in digits, exactly as given; null if none"),
            "message": nullable("what to say on the call"),
            "language": nullable("BCP-47 language of the message"),
        },
        "required": ["intent", "number", "message", "language"],
        "additionalProperties": false,
    })
}

/// The cache key of a text: short, and without the text itself (it is someone's message).
/// SHA-1 as the hash at hand (Twilio's signatures use it); a key needs second-preimage
/// resistance, which SHA-1 still has.
fn digest(text: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(text.as_bytes()))
}

/// Some local models wrap JSON in ```json fences even in JSON mode.
fn strip_fences(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .map_or(t, str::trim)
}

/// Checks the model's answer against the user's text and turns it into a command.
pub fn to_command(
    i: &Interpretation,
    text: &str,
    region: Region,
) -> Result<Option<Command>, ParseError> {
    Ok(Some(match i.intent.as_str() {
        "call" => {
            let Some(number) = i.number.as_deref().filter(|n| !n.trim().is_empty()) else {
                return Err(ParseError::Number(
                    crate::core::phone::PhoneError::NoNumber(text.trim().to_owned()),
                ));
            };
            let to = PhoneNumber::parse(number, region)?;
            if !occurs_in(&to, text, region) {
                return Err(ParseError::Unverified {
                    number: to.display(),
                });
            }
            let message = i
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned);
            // The language as the model gave it: the voices table decides what it is.
            let speech = Speech {
                language: i
                    .language
                    .as_deref()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
                repeat: false,
                question: None,
            };
            Command::Call {
                to,
                message,
                speech,
            }
        }
        "status" => Command::Status { id: None },
        "cancel" => Command::Cancel { id: None },
        "list" => Command::List,
        "help" => Command::Help,
        _ => return Ok(None),
    }))
}

/// True when the number's digits occur, in order and contiguously, in the digits the user
/// wrote (separators ignored, spelled-out digits read). The national number may stand alone
/// only when the number is in the default region, so the model cannot pick a country.
pub fn occurs_in(number: &PhoneNumber, text: &str, region: Region) -> bool {
    let written = digits_of(text);
    let full: String = number.e164().trim_start_matches('+').to_owned();
    if written.contains(&full) {
        return true;
    }
    let in_region = number.region().is_some_and(|r| r == region);
    in_region && national_digits(number).is_some_and(|national| written.contains(&national))
}

fn national_digits(number: &PhoneNumber) -> Option<String> {
    let parsed = phonenumber::parse(None, number.e164()).ok()?;
    Some(parsed.national().value().to_string())
}

/// All digits in `text`, in order: numerals, spelled-out English digits, "double 5" = "55",
/// "triple 0" = "000", "oh" = "0".
pub fn digits_of(text: &str) -> String {
    let mut out = String::new();
    let mut repeat = 1;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let lower = word.to_ascii_lowercase();
        let spelled = match lower.as_str() {
            "zero" | "oh" | "o" => Some('0'),
            "one" => Some('1'),
            "two" => Some('2'),
            "three" => Some('3'),
            "four" => Some('4'),
            "five" => Some('5'),
            "six" => Some('6'),
            "seven" => Some('7'),
            "eight" => Some('8'),
            "nine" => Some('9'),
            _ => None,
        };
        match lower.as_str() {
            "double" => repeat = 2,
            "triple" => repeat = 3,
            _ => {
                if let Some(d) = spelled {
                    out.extend(std::iter::repeat_n(d, repeat));
                } else {
                    let digits: Vec<char> = word.chars().filter(char::is_ascii_digit).collect();
                    if let Some((first, rest)) = digits.split_first() {
                        out.extend(std::iter::repeat_n(*first, repeat));
                        out.extend(rest);
                    }
                }
                repeat = 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn india() -> Region {
        Region::parse("IN").unwrap()
    }

    fn interp(intent: &str, number: Option<&str>, message: Option<&str>) -> Interpretation {
        Interpretation {
            intent: intent.into(),
            number: number.map(Into::into),
            message: message.map(Into::into),
            language: None,
        }
    }

    #[test]
    fn spelled_digits_are_read() {
        assert_eq!(
            digits_of("ring nine eight seven six five four three two one zero at 5pm"),
            "98765432105"
        );
        assert_eq!(digits_of("double five triple 0 oh 7"), "5500007");
        assert_eq!(digits_of("+91 98765-43210"), "919876543210");
    }

    #[test]
    fn a_number_from_the_text_is_accepted() {
        let text = "hey, could you ring my colleague on nine eight seven six five four three two one zero and tell him the meeting moved to 5pm";
        let cmd = to_command(
            &interp("call", Some("9876543210"), Some("The meeting moved to 5pm")),
            text,
            india(),
        );
        assert_eq!(
            cmd,
            Ok(Some(Command::Call {
                to: PhoneNumber::from_e164("+919876543210").unwrap(),
                message: Some("The meeting moved to 5pm".into()),
                speech: Speech::default(),
            }))
        );
    }

    #[test]
    fn the_models_language_is_the_calls() {
        let mut i = interp("call", Some("9876543210"), Some("namaste"));
        i.language = Some(" hi-IN ".into());
        let Ok(Some(Command::Call { speech, .. })) =
            to_command(&i, "call 9876543210 in Hindi and say namaste", india())
        else {
            panic!("not a call");
        };
        assert_eq!(speech.language.as_deref(), Some("hi-IN"));
    }

    #[test]
    fn an_invented_number_is_refused() {
        let text = "call my mom please";
        let err = to_command(
            &interp("call", Some("+91 98765 43210"), None),
            text,
            india(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ParseError::Unverified {
                number: "+91 98765 43210".into()
            }
        );
        // The model may not move a national number to another country.
        let text = "ring 98765 43210";
        let err = to_command(
            &interp("call", Some("+1 987 654 3210"), None),
            text,
            india(),
        );
        assert!(err.is_err());
    }

    #[test]
    fn other_intents_map_to_commands() {
        assert_eq!(
            to_command(&interp("list", None, None), "what did I call", india()),
            Ok(Some(Command::List))
        );
        assert_eq!(
            to_command(&interp("none", None, None), "hi", india()),
            Ok(None)
        );
        assert!(to_command(&interp("call", None, None), "call my mom", india()).is_err());
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fences("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_fences(" {\"a\":1} "), "{\"a\":1}");
    }
}
