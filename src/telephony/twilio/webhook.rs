//! Twilio's inbound routes: `GET|POST /twiml/{id}`, `POST /webhooks/status`, a question's
//! answer (`POST /webhooks/gather`), and the answering-machine result (`POST /webhooks/amd`)
//! and recording (`POST /webhooks/recording`) callbacks. All are authenticated by
//! [`TwilioRequest::read`], which bounds the body, checks
//! `X-Twilio-Signature` against our public URL and hands the handler the form params.
//! The routes' state is the engine ([`CallService`]): the provider is built before the
//! engine (which places calls through it), so `app.rs` supplies it with `with_state`.
//!
//! Forged callbacks and callbacks for calls we do not know (normal after a restart with the
//! memory store) are answered without further work and logged through a [`QuietLog`]: a
//! few lines a minute with a count, never one line each.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::DateTime;
use compact_str::CompactString;
use metrics::Counter;
use tracing::{debug, warn};

use super::quiet_log::QuietLog;
use super::signature::SignatureVerifier;
use super::{twiml, wire};
use crate::body::{BodyRules, read_whole};
use crate::calls::CallService;
use crate::calls::service::StatusOutcome;
use crate::core::call::{CallError, CallId, CallSid, MachineDetection, Recording, StatusUpdate};
use crate::core::speech::{Answer, Question};

/// `callbot_webhook_requests_total` for the two routes, registered once: `counter!` hashes
/// the name and labels to find its handle on every call.
struct Counters {
    handles: [[Counter; 3]; 4],
}

const ROUTES: [&str; 4] = ["status", "twiml", "amd", "recording"];
const RESULTS: [&str; 3] = ["accepted", "unknown_call", "bad_signature"];

impl Counters {
    fn new() -> Self {
        Self {
            handles: ROUTES.map(|route| {
                RESULTS.map(|result| {
                    metrics::counter!("callbot_webhook_requests_total", "route" => route, "result" => result)
                })
            }),
        }
    }

    fn count(&self, route: &str, result: &str) {
        let r = ROUTES.iter().position(|x| *x == route).unwrap_or(0);
        if let Some(i) = RESULTS.iter().position(|x| *x == result) {
            self.handles[r][i].increment(1);
        }
    }
}

/// Where Twilio fetches the TwiML of a call.
pub fn twiml_url(public_url: &str, id: &CallId) -> String {
    format!("{public_url}/twiml/{id}")
}

/// Where Twilio posts a call's status. Our call id rides along, so a callback that arrives
/// before the create request has returned its sid still finds its call.
pub fn status_callback_url(public_url: &str, id: &CallId) -> String {
    format!("{public_url}/webhooks/status?call_id={id}")
}

/// Where Twilio posts the answering-machine result (async AMD) of a call.
pub fn amd_callback_url(public_url: &str, id: &CallId) -> String {
    format!("{public_url}/webhooks/amd?call_id={id}")
}

/// Where Twilio posts a call's finished recording.
pub fn recording_callback_url(public_url: &str, id: &CallId) -> String {
    format!("{public_url}/webhooks/recording?call_id={id}")
}

/// Rounds of [`twiml::wait_and_redirect`] (a second each) a `message_end` call waits for the
/// detection result before the message is spoken anyway. Twilio's own detection gives up
/// (`unknown`) after `MachineDetectionTimeout`, 30 s by default, and a greeting may run on.
pub const DETECTION_WAIT_ROUNDS: u32 = 45;

/// Where a call's `<Gather>` posts its answer, relative to the TwiML's own URL
/// (`{public}/twiml/{id}`), as Twilio resolves it: `{public}/webhooks/gather?call_id={id}`,
/// whatever path the public URL has.
pub fn gather_action(id: &CallId) -> String {
    format!("../webhooks/gather?call_id={id}")
}

/// What the routes need besides the engine: the signature check, limits and counters.
pub struct TwilioHooks {
    verifier: SignatureVerifier,
    body: BodyRules,
    counters: Counters,
    /// Requests without a valid signature.
    forged: Arc<QuietLog>,
    /// Signed status callbacks for a call this instance does not know.
    unknown: Arc<QuietLog>,
    /// Spoken first on a recorded call (`calls.record_announcement`); empty: nothing.
    announcement: String,
}

impl TwilioHooks {
    /// Registers the routes' metrics; call it after the metrics recorder is installed.
    pub fn new(verifier: SignatureVerifier, body: BodyRules) -> Self {
        Self {
            verifier,
            body,
            counters: Counters::new(),
            forged: QuietLog::new("Twilio requests with a missing or bad signature"),
            unknown: QuietLog::new("status callbacks for unknown calls"),
            announcement: String::new(),
        }
    }

    /// Speaks `text` first on every recorded call.
    #[must_use]
    pub fn with_announcement(mut self, text: &str) -> Self {
        text.trim().clone_into(&mut self.announcement);
        self
    }
}

/// Twilio's routes, waiting for the engine as their state.
pub fn routes(hooks: Arc<TwilioHooks>) -> Router<Arc<CallService>> {
    let status_hooks = hooks.clone();
    let amd_hooks = hooks.clone();
    let recording_hooks = hooks.clone();
    let twiml =
        move |State(service): State<Arc<CallService>>, Path(id): Path<String>, req: Request| {
            let hooks = hooks.clone();
            async move { twiml_handler(&hooks, &service, &id, req).await }
        };
    let gather_hooks = status_hooks.clone();
    let status = move |State(service): State<Arc<CallService>>, req: Request| {
        let hooks = status_hooks.clone();
        async move { status_handler(&hooks, &service, req).await }
    };
    let amd = move |State(service): State<Arc<CallService>>, req: Request| {
        let hooks = amd_hooks.clone();
        async move { amd_handler(&hooks, &service, req).await }
    };
    let recording = move |State(service): State<Arc<CallService>>, req: Request| {
        let hooks = recording_hooks.clone();
        async move { recording_handler(&hooks, &service, req).await }
    };
    let gather = move |State(service): State<Arc<CallService>>, req: Request| {
        let hooks = gather_hooks.clone();
        async move { gather_handler(&hooks, &service, req).await }
    };
    Router::new()
        .route("/twiml/{id}", get(twiml.clone()).post(twiml))
        .route("/webhooks/status", post(status))
        .route("/webhooks/amd", post(amd))
        .route("/webhooks/recording", post(recording))
        .route("/webhooks/gather", post(gather))
}

/// One form field. Twilio's names and most of its values fit in a `CompactString` inline
/// (24 bytes), so reading a callback's form allocates only for the few longer values.
pub type Field = (CompactString, CompactString);

/// A request whose Twilio signature checked out, with its form params.
pub struct TwilioRequest {
    pub params: Vec<Field>,
    pub query: Vec<Field>,
}

/// Decodes an `application/x-www-form-urlencoded` text, field by field as
/// `form_urlencoded::parse` does (unit tests compare the two on any text).
///
/// Written by hand because decoding was the largest single cost of a signed callback
/// (BENCHMARKS.md, wrk): `form_urlencoded` copies a value once to replace `+`, again to
/// percent-decode it and checks its UTF-8 once more, and `serde_urlencoded` adds two owned
/// Strings per field. Here a field without `%` or `+` (most of what Twilio posts: sids,
/// statuses, sequence numbers) is taken as it is, and one with either is decoded in a single
/// pass. A `CompactString` of up to 24 bytes lives inline, so most fields allocate nothing.
fn form_fields(encoded: &str) -> Vec<Field> {
    if encoded.is_empty() {
        return Vec::new();
    }
    let bytes = encoded.as_bytes();
    let mut fields = Vec::with_capacity(1 + memchr::memchr_iter(b'&', bytes).count());
    let mut start = 0;
    for end in memchr::memchr_iter(b'&', bytes).chain(std::iter::once(bytes.len())) {
        let pair = &encoded[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', pair.as_bytes()) {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, ""),
        };
        fields.push((form_decoded(name), form_decoded(value)));
    }
    fields
}

/// One name or value: `+` is a space, `%XX` a byte (a `%` without two hex digits stays as it
/// is), and bytes that are not UTF-8 become U+FFFD, as in `form_urlencoded`.
fn form_decoded(text: &str) -> CompactString {
    let bytes = text.as_bytes();
    let Some(first) = memchr::memchr2(b'%', b'+', bytes) else {
        return CompactString::new(text);
    };
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        // The run up to the next `%` or `+` is copied as it is.
        let next = memchr::memchr2(b'%', b'+', &bytes[i..]).map_or(bytes.len(), |n| i + n);
        out.extend_from_slice(&bytes[i..next]);
        i = next;
        match bytes.get(i) {
            Some(b'+') => out.push(b' '),
            Some(_) => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    // Two hex digits: at most 0xFF.
                    out.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            None => break,
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => CompactString::from(text),
        Err(e) => CompactString::from(String::from_utf8_lossy(e.as_bytes())),
    }
}

impl TwilioRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .chain(&self.query)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl TwilioRequest {
    /// Reads the request and checks its signature; the error is the answer to send.
    pub async fn read(req: Request, hooks: &TwilioHooks) -> Result<Self, Response> {
        // The head is kept and read in place while the body arrives.
        let (parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let query = parts.uri.query().map(form_fields).unwrap_or_default();
        let signature = parts
            .headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        // These routes are not under app.rs's whole-body layer: the body is bounded here.
        let body = read_whole(body, hooks.body).await?;
        let params = if parts.method == Method::POST && !body.is_empty() {
            let Ok(text) = std::str::from_utf8(&body) else {
                return Err((StatusCode::BAD_REQUEST, "malformed form body").into_response());
            };
            form_fields(text)
        } else {
            Vec::new()
        };
        let route = match parts.uri.path() {
            p if p.starts_with("/twiml/") => "twiml",
            "/webhooks/amd" => "amd",
            "/webhooks/recording" => "recording",
            _ => "status",
        };
        let Some(signature) = signature else {
            hooks.counters.count(route, "bad_signature");
            if let Some(left_out) = hooks.forged.hit() {
                warn!(path = %parts.uri.path(), left_out, "Twilio request without signature");
            }
            return Err((StatusCode::FORBIDDEN, "missing X-Twilio-Signature").into_response());
        };
        if !hooks.verifier.verify(path_and_query, &params, signature) {
            hooks.counters.count(route, "bad_signature");
            if let Some(left_out) = hooks.forged.hit() {
                warn!(path = %parts.uri.path(), left_out, "Twilio request with a bad signature");
            }
            return Err((StatusCode::FORBIDDEN, "bad X-Twilio-Signature").into_response());
        }
        Ok(Self { params, query })
    }
}

async fn twiml_handler(
    hooks: &TwilioHooks,
    service: &CallService,
    id: &str,
    req: Request,
) -> Response {
    let req = match TwilioRequest::read(req, hooks).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let Some(id) = CallId::parse(id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match service.get(&id).await {
        Ok(Some(call)) => {
            hooks.counters.count("twiml", "accepted");
            // `message_end`: the message waits for the end of a machine's greeting. Async AMD
            // runs this TwiML at once, so it holds the call (pause, redirect back here) until
            // the result is stored, a bounded number of rounds.
            let round = req
                .param("wait")
                .and_then(|w| w.parse::<u32>().ok())
                .unwrap_or(0);
            let body = if call.machine_detection == MachineDetection::MessageEnd
                && call.answered_by.is_none()
                && round < DETECTION_WAIT_ROUNDS
            {
                // Relative to this document's URL (`/twiml/{id}`), as Twilio resolves it, so a
                // public URL with a path prefix keeps it.
                twiml::wait_and_redirect(&format!("{id}?wait={}", round + 1), 1)
            } else {
                let said = twiml::for_call(&call, &gather_action(&call.id));
                if call.record && !hooks.announcement.is_empty() {
                    twiml::with_announcement(
                        &said,
                        &hooks.announcement,
                        &call.voice,
                        &call.language,
                    )
                } else {
                    said
                }
            };
            (
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                body,
            )
                .into_response()
        }
        Ok(None) => {
            hooks.counters.count("twiml", "unknown_call");
            (StatusCode::NOT_FOUND, "unknown call").into_response()
        }
        Err(e) => {
            warn!(error = %e, "store unavailable while serving TwiML");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Parses Twilio's status callback form into a domain update.
pub fn parse_status(req: &TwilioRequest) -> StatusUpdate {
    let num = |name| req.param(name).and_then(|v| v.parse::<u64>().ok());
    let error = req.param("ErrorCode").map(|code| CallError {
        code: code.parse().ok(),
        message: req
            .param("ErrorMessage")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("Twilio error {code}")),
    });
    StatusUpdate {
        status: req.param("CallStatus").and_then(wire::status),
        sid: req.param("CallSid").map(CallSid::new),
        duration_secs: num("CallDuration").and_then(|d| u32::try_from(d).ok()),
        sequence: num("SequenceNumber"),
        timestamp: req
            .param("Timestamp")
            .and_then(|t| DateTime::parse_from_rfc2822(t).ok())
            .map(|t| t.to_utc()),
        answered_by: req.param("AnsweredBy").map(str::to_owned),
        error,
        sip_response_code: num("SipResponseCode").and_then(|c| u16::try_from(c).ok()),
    }
}

/// The answer a `<Gather>` posted: `Digits` (with the question's label for it), or
/// `SpeechResult` with `Confidence`, or nothing (asked twice, no answer).
pub fn parse_answer(req: &TwilioRequest, question: Option<&Question>) -> Answer {
    if let Some(digits) = req.param("Digits") {
        return Answer::Key {
            digits: digits.to_owned(),
            label: question.and_then(|q| q.label(digits)).map(str::to_owned),
        };
    }
    if let Some(text) = req.param("SpeechResult") {
        return Answer::Speech {
            text: text.to_owned(),
            confidence: req
                .param("Confidence")
                .and_then(|c| c.parse::<f32>().ok())
                .filter(|c| (0.0..=1.0).contains(c)),
        };
    }
    Answer::Nothing
}

/// `POST /webhooks/gather?call_id=…`: the callee's answer, signed like every callback. The
/// first answer is stored (a repeated delivery changes nothing); Twilio gets the TwiML
/// that ends the call.
async fn gather_handler(hooks: &TwilioHooks, service: &CallService, req: Request) -> Response {
    let req = match TwilioRequest::read(req, hooks).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let Some(id) = req.param("call_id").and_then(CallId::parse) else {
        return (StatusCode::BAD_REQUEST, "no call_id").into_response();
    };
    let call = match service.get(&id).await {
        Ok(Some(call)) => call,
        Ok(None) => {
            hooks.counters.count("status", "unknown_call");
            return (StatusCode::NOT_FOUND, "unknown call").into_response();
        }
        Err(e) => {
            warn!(error = %e, "store unavailable while taking an answer");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let answer = parse_answer(&req, call.question.as_deref());
    debug!(call_id = %id, ?answer, "gather answer");
    match service.on_answer(&id, answer).await {
        Ok(_) => {
            hooks.counters.count("status", "accepted");
            (
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                twiml::after_answer(&call),
            )
                .into_response()
        }
        Err(e) => {
            warn!(error = %e, "store unavailable; asking Twilio to retry the answer");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn status_handler(hooks: &TwilioHooks, service: &CallService, req: Request) -> Response {
    let req = match TwilioRequest::read(req, hooks).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let update = parse_status(&req);
    let id = req.param("call_id").and_then(CallId::parse);
    debug!(call_id = ?id, sid = ?update.sid, status = ?update.status, seq = ?update.sequence, "status callback");
    match service.on_status(id.as_ref(), &update).await {
        Ok(StatusOutcome::Applied(_)) => {
            hooks.counters.count("status", "accepted");
            StatusCode::OK.into_response()
        }
        Ok(StatusOutcome::UnknownCall) => {
            hooks.counters.count("status", "unknown_call");
            // 200 so Twilio stops retrying; there is nothing to update.
            if let Some(left_out) = hooks.unknown.hit() {
                warn!(call_id = ?id, sid = ?update.sid, left_out, "status callback for an unknown call");
            }
            StatusCode::OK.into_response()
        }
        Err(e) => {
            warn!(error = %e, "store unavailable; asking Twilio to retry the callback");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Twilio's answering-machine result (async AMD): `AnsweredBy` is stored once, whatever the
/// order of this and the status callbacks, and a repeat changes nothing.
async fn amd_handler(hooks: &TwilioHooks, service: &CallService, req: Request) -> Response {
    let req = match TwilioRequest::read(req, hooks).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let id = req.param("call_id").and_then(CallId::parse);
    let sid = req.param("CallSid").map(CallSid::new);
    let Some(answered_by) = req.param("AnsweredBy") else {
        return (StatusCode::BAD_REQUEST, "AnsweredBy is missing").into_response();
    };
    debug!(call_id = ?id, sid = ?sid, answered_by, "answering-machine result");
    let outcome = service
        .on_detection(id.as_ref(), sid.as_ref(), answered_by)
        .await;
    answer_callback(hooks, "amd", outcome)
}

/// Twilio's recording callback (`RecordingStatusCallbackEvent=completed`): the recording's
/// sid and duration are stored once; its `RecordingUrl` is neither kept nor logged (the
/// audio is fetched by sid from the configured API base, see `client.rs`).
async fn recording_handler(hooks: &TwilioHooks, service: &CallService, req: Request) -> Response {
    let req = match TwilioRequest::read(req, hooks).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let id = req.param("call_id").and_then(CallId::parse);
    let sid = req.param("CallSid").map(CallSid::new);
    if req
        .param("RecordingStatus")
        .is_some_and(|s| s != "completed")
    {
        // In-progress or absent: nothing to link to.
        hooks.counters.count("recording", "accepted");
        return StatusCode::OK.into_response();
    }
    let Some(recording_sid) = req.param("RecordingSid").filter(|s| is_recording_sid(s)) else {
        return (
            StatusCode::BAD_REQUEST,
            "RecordingSid is missing or malformed",
        )
            .into_response();
    };
    let recording = Recording {
        sid: recording_sid.into(),
        duration_secs: req
            .param("RecordingDuration")
            .and_then(|d| d.parse::<u32>().ok()),
    };
    debug!(call_id = ?id, sid = ?sid, recording = %recording.sid, "recording ready");
    let outcome = service
        .on_recording(id.as_ref(), sid.as_ref(), recording)
        .await;
    answer_callback(hooks, "recording", outcome)
}

/// `RE` and 32 hex digits: it becomes part of a URL path.
pub fn is_recording_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("RE") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn answer_callback(
    hooks: &TwilioHooks,
    route: &'static str,
    outcome: Result<StatusOutcome, crate::calls::store::StoreError>,
) -> Response {
    match outcome {
        Ok(StatusOutcome::Applied(_)) => {
            hooks.counters.count(route, "accepted");
            StatusCode::OK.into_response()
        }
        Ok(StatusOutcome::UnknownCall) => {
            hooks.counters.count(route, "unknown_call");
            if let Some(left_out) = hooks.unknown.hit() {
                warn!(route, left_out, "callback for an unknown call");
            }
            StatusCode::OK.into_response()
        }
        Err(e) => {
            warn!(route, error = %e, "store unavailable; asking Twilio to retry the callback");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::form_fields;
    use proptest::prelude::*;

    fn reference(text: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn fast(text: &str) -> Vec<(String, String)> {
        form_fields(text)
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }

    #[test]
    fn form_fields_decode_like_form_urlencoded() {
        for text in [
            "",
            "&",
            "&&a=1&&",
            "CallSid=CA00&CallStatus=ringing",
            "From=%2B15005550006&Timestamp=Tue%2C+01+Dec+2026+10%3A00%3A00+%2B0000",
            "a==b&=c&d&e=",
            "SpeechResult=se%C3%B1or+s%C3%AD&bad=%ZZ%&plus=a+b",
            "text=%E0%A4%A8%E0%A4%AE%E0%A4%B8%E0%A5%8D%E0%A4%A4%E0%A5%87",
            "lossy=%FF%FE",
            "a-very-long-field-name-beyond-twenty-four=and-a-value-longer-than-twenty-four-bytes",
        ] {
            assert_eq!(fast(text), reference(text), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn form_fields_match_form_urlencoded_on_any_text(text in "([a-zA-Z0-9=&%+ ._~-]|%[0-9A-Fa-f]{2}|[é€😀]){0,60}") {
            prop_assert_eq!(fast(&text), reference(&text));
        }
    }
}
