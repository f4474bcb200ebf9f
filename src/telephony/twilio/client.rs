//! The Twilio Voice REST client (2010-04-01 Calls API), over reqwest.
//! Checked against Twilio's OpenAPI description of the Calls API (`tests/it/support/fake_twilio.rs` answers as it describes).
//!
//! Retries follow the one policy ([`crate::retry`]). Reads (fetch, list) are retried here:
//! sending them again is harmless. Writes are not: the dialer retries a create itself, after
//! asking whether an unanswered one placed the call, and a hangup is the caller's to repeat.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::webhook::{amd_callback_url, recording_callback_url, status_callback_url, twiml_url};
use super::{twiml, wire};
use futures::TryStreamExt as _;

use super::webhook::is_recording_sid;
use crate::calls::{Audio, Hangup, Placed, Telephony, TelephonyError};
use crate::core::call::{Call, CallSid, CallStatus, MachineDetection, StatusUpdate};
use crate::core::policy::Refusal;
use crate::retry::{self, Policy, Verdict};

/// Reads: a few quick tries, so a dialer asking whether a call was placed, or the reaper,
/// gets its answer within seconds.
const READ_RETRY: Policy = Policy::new(Duration::from_millis(200), Duration::from_secs(2), 3)
    .with_total(Duration::from_secs(5))
    .with_max_retry_after(Duration::from_secs(5));

/// Longest inline `Twiml` Twilio takes on a create (error 32018 above it).
pub const INLINE_TWIML_MAX_CHARS: usize = 4000;

/// The events we ask Twilio to report (`StatusCallbackEvent`, one form key each).
const STATUS_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

pub struct TwilioClient {
    http: reqwest::Client,
    api_base: String,
    account_sid: String,
    auth_token: SecretString,
    public_url: String,
    ring_timeout_secs: u32,
    time_limit_secs: u32,
    timeout: Duration,
    polling: bool,
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    pub public_url: String,
    pub ring_timeout_secs: u32,
    pub time_limit_secs: u32,
    pub timeout: Duration,
    /// Polling mode: the TwiML goes inline (`Twiml`), with no `Url` and no
    /// `StatusCallback`; nothing of Twilio's reaches `public_url`.
    pub polling: bool,
}

/// The fields of Twilio's Call resource we use.
#[derive(Debug, Deserialize)]
struct CallResource {
    sid: String,
    status: String,
    /// Seconds, as a string; empty for busy, failed, unanswered or ongoing calls.
    #[serde(default)]
    duration: Option<String>,
    /// `human`, `machine_start`, … when answering-machine detection ran.
    #[serde(default)]
    answered_by: Option<String>,
}

/// A page of Twilio's call list (`GET …/Calls.json`), newest first.
#[derive(Debug, Deserialize)]
struct CallPage {
    calls: Vec<ListedCall>,
}

#[derive(Debug, Deserialize)]
struct ListedCall {
    sid: String,
    status: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    from: Option<String>,
    /// RFC 2822, e.g. "Tue, 01 Dec 2026 08:30:00 +0000".
    #[serde(default)]
    date_created: Option<String>,
}

/// Twilio's error body: `{"code": 21211, "message": "…", "more_info": "…", "status": 400}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

impl TwilioClient {
    pub fn new(cfg: TwilioConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("callbot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(Self {
            http,
            api_base: cfg.api_base.trim_end_matches('/').to_owned(),
            account_sid: cfg.account_sid,
            auth_token: cfg.auth_token,
            public_url: cfg.public_url.trim_end_matches('/').to_owned(),
            ring_timeout_secs: cfg.ring_timeout_secs,
            time_limit_secs: cfg.time_limit_secs,
            timeout: cfg.timeout,
            polling: cfg.polling,
        })
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.api_base, self.account_sid
        )
    }

    /// The TwiML of `call`, as the `/twiml/{id}` route serves it; in polling mode it goes
    /// inline with the create request.
    fn inline_twiml(call: &Call) -> String {
        twiml::render(&call.message, &call.voice, &call.language)
    }

    /// The form of a create-call request.
    pub fn create_form(&self, call: &Call) -> Vec<(&'static str, String)> {
        if self.polling {
            return vec![
                ("To", call.to.e164().to_owned()),
                ("From", call.from.to_string()),
                ("Twiml", Self::inline_twiml(call)),
                ("Timeout", self.ring_timeout_secs.to_string()),
                ("TimeLimit", self.time_limit_secs.to_string()),
            ];
        }
        let mut form = vec![
            ("To", call.to.e164().to_owned()),
            ("From", call.from.to_string()),
            ("Url", twiml_url(&self.public_url, &call.id)),
            ("Method", "POST".to_owned()),
            (
                "StatusCallback",
                status_callback_url(&self.public_url, &call.id),
            ),
            ("StatusCallbackMethod", "POST".to_owned()),
        ];
        form.extend(
            STATUS_EVENTS
                .iter()
                .map(|e| ("StatusCallbackEvent", (*e).to_owned())),
        );
        form.push(("Timeout", self.ring_timeout_secs.to_string()));
        form.push(("TimeLimit", self.time_limit_secs.to_string()));
        // Async AMD: the TwiML runs at once and the result arrives on its own signed POST
        // (`/webhooks/amd`); `twiml.rs` and the webhook decide what is spoken when.
        let detection = match call.machine_detection {
            MachineDetection::Off => None,
            MachineDetection::Enable => Some("Enable"),
            MachineDetection::MessageEnd => Some("DetectMessageEnd"),
        };
        if let Some(detection) = detection {
            form.push(("MachineDetection", detection.to_owned()));
            form.push(("AsyncAmd", "true".to_owned()));
            form.push((
                "AsyncAmdStatusCallback",
                amd_callback_url(&self.public_url, &call.id),
            ));
            form.push(("AsyncAmdStatusCallbackMethod", "POST".to_owned()));
        }
        if call.record {
            form.push(("Record", "true".to_owned()));
            form.push((
                "RecordingStatusCallback",
                recording_callback_url(&self.public_url, &call.id),
            ));
            form.push(("RecordingStatusCallbackMethod", "POST".to_owned()));
            form.push(("RecordingStatusCallbackEvent", "completed".to_owned()));
        }
        form
    }

    fn call_url(&self, sid: &CallSid) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            self.api_base, self.account_sid, sid
        )
    }

    async fn post(
        &self,
        op: &'static str,
        url: String,
        form: &[(&str, String)],
    ) -> Result<CallResource, TelephonyError> {
        self.send(op, self.http.post(url).form(form)).await
    }

    /// A GET, retried by [`READ_RETRY`]: failures that may pass, and garbled answers.
    async fn get<T: DeserializeOwned>(
        &self,
        op: &'static str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, TelephonyError> {
        let verdict = |e: &TelephonyError| match e {
            TelephonyError::Unconfirmed(_) => Verdict::Retry(None),
            e if e.is_retryable() => Verdict::Retry(e.retry_after()),
            _ => Verdict::Fatal,
        };
        retry::run(&READ_RETRY, op, || self.send(op, request()), verdict)
            .await
            .map_err(|failure| failure.error)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        op: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, TelephonyError> {
        let started = std::time::Instant::now();
        let result = self.send_timed(request).await;
        metrics::histogram!("callbot_telephony_request_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn send_timed<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, TelephonyError> {
        let response = request
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        // Twilio names a wait on 429 (too many requests) and may on 503 (unavailable).
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let body = response.bytes().await.map_err(|e| {
            if status.is_success() {
                // Twilio acted (for a create: the call exists); only the answer was lost.
                TelephonyError::Unconfirmed(format!("answer cut off: {e}"))
            } else {
                self.transport_error(&e)
            }
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| TelephonyError::Unconfirmed(format!("answer unreadable: {e}")));
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        Err(TelephonyError::Api {
            http_status: status.as_u16(),
            code: parsed.as_ref().and_then(|b| b.code),
            message: parsed
                .as_ref()
                .and_then(|b| b.message.clone())
                .unwrap_or_else(|| default_message(status)),
            more_info: parsed.and_then(|b| b.more_info),
            retry_after,
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> TelephonyError {
        if e.is_timeout() {
            TelephonyError::Timeout(self.timeout)
        } else if e.is_connect() {
            TelephonyError::Unreachable(e.without_url_ref())
        } else {
            // Without the URL: it carries the account sid, and the error goes to users.
            TelephonyError::Network(e.without_url_ref().to_string())
        }
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut msg = if self.is_connect() {
            "connection failed".to_owned()
        } else if self.is_request() {
            "request failed".to_owned()
        } else {
            "transport error".to_owned()
        };
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    }
}

impl From<CallResource> for StatusUpdate {
    fn from(resource: CallResource) -> Self {
        StatusUpdate {
            status: wire::status(&resource.status),
            sid: Some(CallSid::from(resource.sid)),
            duration_secs: resource.duration.and_then(|d| d.parse().ok()),
            answered_by: resource.answered_by.filter(|a| !a.is_empty()),
            ..StatusUpdate::default()
        }
    }
}

fn default_message(status: StatusCode) -> String {
    format!(
        "Twilio answered {}",
        status.canonical_reason().unwrap_or("an error")
    )
}

#[async_trait]
impl Telephony for TwilioClient {
    async fn place(&self, call: &Call) -> Result<Placed, TelephonyError> {
        let resource = self
            .post("create", self.calls_url(), &self.create_form(call))
            .await?;
        Ok(Placed {
            sid: CallSid::from(resource.sid),
            status: wire::status(&resource.status).unwrap_or(CallStatus::Queued),
        })
    }

    async fn hangup(&self, sid: &CallSid, how: Hangup) -> Result<(), TelephonyError> {
        let status = match how {
            Hangup::Cancel => "canceled",
            Hangup::Complete => "completed",
        };
        self.post(
            "hangup",
            self.call_url(sid),
            &[("Status", status.to_owned())],
        )
        .await?;
        Ok(())
    }

    async fn fetch(&self, sid: &CallSid) -> Result<StatusUpdate, TelephonyError> {
        let url = self.call_url(sid);
        let resource: CallResource = self.get("fetch", || self.http.get(&url)).await?;
        Ok(resource.into())
    }

    async fn poll(&self, sid: &CallSid) -> Result<StatusUpdate, TelephonyError> {
        let resource: CallResource = self.send("poll", self.http.get(self.call_url(sid))).await?;
        Ok(resource.into())
    }

    fn accepts(&self, call: &Call) -> Result<(), Refusal> {
        if !self.polling {
            return Ok(());
        }
        if let Some(feature) = call.needs_callbacks() {
            return Err(Refusal::NeedsCallbacks { feature });
        }
        let len = Self::inline_twiml(call).chars().count();
        if len > INLINE_TWIML_MAX_CHARS {
            return Err(Refusal::InstructionsTooLong {
                len,
                max: INLINE_TWIML_MAX_CHARS,
            });
        }
        Ok(())
    }

    async fn recent_calls(
        &self,
        call: &Call,
        since: DateTime<Utc>,
    ) -> Result<Vec<Placed>, TelephonyError> {
        let to = call.to.e164().to_owned();
        let from = call.from.to_string();
        let query = [
            ("To", to.as_str()),
            ("From", from.as_str()),
            ("PageSize", "20"),
        ];
        let url = self.calls_url();
        let page: CallPage = self
            .get("list", || self.http.get(&url).query(&query))
            .await?;
        Ok(page
            .calls
            .into_iter()
            .filter(|c| c.to.as_deref().is_none_or(|t| t == to))
            .filter(|c| c.from.as_deref().is_none_or(|f| f == from))
            .filter(|c| {
                c.date_created
                    .as_deref()
                    .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                    .is_some_and(|d| d.to_utc() >= since)
            })
            .map(|c| Placed {
                sid: CallSid::from(c.sid),
                status: wire::status(&c.status).unwrap_or(CallStatus::Queued),
            })
            .collect())
    }

    /// `GET {api_base}/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3` with the account's
    /// credentials. Built from the recording's sid and the configured API base rather than
    /// from the callback's `RecordingUrl` (the same resource): credentials only ever go to
    /// the API base. One try: a listener waits, and a failure is answered as a 502 at once.
    async fn recording(&self, sid: &str) -> Result<Audio, TelephonyError> {
        if !is_recording_sid(sid) {
            return Err(TelephonyError::Protocol(format!(
                "not a recording sid: {sid:?}"
            )));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Recordings/{sid}.mp3",
            self.api_base, self.account_sid
        );
        let response = self
            .http
            .get(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            // The connect and first-byte budget; the body then streams at its own pace.
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            return Err(TelephonyError::Api {
                http_status: status.as_u16(),
                code: parsed.as_ref().and_then(|b| b.code),
                message: parsed
                    .and_then(|b| b.message)
                    .unwrap_or_else(|| default_message(status)),
                more_info: None,
                retry_after: None,
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("audio/mpeg")
            .to_owned();
        let length = response.content_length();
        let body = response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url_ref()));
        Ok(Audio {
            content_type,
            length,
            body: Box::pin(body),
        })
    }

    fn is_simulated(&self) -> bool {
        false
    }
}
