//! Twilio's inbound routes: `GET|POST /twiml/{id}` and `POST /webhooks/status`.
//! Both are authenticated by [`TwilioRequest::read`], which bounds the body, checks
//! `X-Twilio-Signature` against our public URL and hands the handler the form params.
//! The routes' state is the engine ([`CallService`]): the provider is built before the
//! engine (which places calls through it), so `app.rs` supplies it with `with_state`.
//!
//! Forged callbacks and callbacks for calls we do not know (normal after a restart with the
//! memory store) are answered without further work and logged through a [`QuietLog`]: a
//! few lines a minute with a count, never one line each.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::DateTime;
use compact_str::CompactString;
use metrics::Counter;
use tracing::{debug, warn};
use url::form_urlencoded;

use super::quiet_log::QuietLog;
use super::signature::SignatureVerifier;
use super::{twiml, wire};
use crate::calls::CallService;
use crate::calls::service::StatusOutcome;
use crate::core::call::{CallError, CallId, CallSid, StatusUpdate};

/// `callbot_webhook_requests_total` for the two routes, registered once: `counter!` hashes
/// the name and labels to find its handle on every call.
struct Counters {
    handles: [[Counter; 3]; 2],
}

const ROUTES: [&str; 2] = ["status", "twiml"];
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
        let r = usize::from(route == ROUTES[1]);
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

/// What the routes need besides the engine: the signature check, limits and counters.
pub struct TwilioHooks {
    verifier: SignatureVerifier,
    body_limit: usize,
    counters: Counters,
    /// Requests without a valid signature.
    forged: Arc<QuietLog>,
    /// Signed status callbacks for a call this instance does not know.
    unknown: Arc<QuietLog>,
}

impl TwilioHooks {
    /// Registers the routes' metrics; call it after the metrics recorder is installed.
    pub fn new(verifier: SignatureVerifier, body_limit: usize) -> Self {
        Self {
            verifier,
            body_limit,
            counters: Counters::new(),
            forged: QuietLog::new("Twilio requests with a missing or bad signature"),
            unknown: QuietLog::new("status callbacks for unknown calls"),
        }
    }
}

/// Twilio's routes, waiting for the engine as their state.
pub fn routes(hooks: Arc<TwilioHooks>) -> Router<Arc<CallService>> {
    let status_hooks = hooks.clone();
    let twiml =
        move |State(service): State<Arc<CallService>>, Path(id): Path<String>, req: Request| {
            let hooks = hooks.clone();
            async move { twiml_handler(&hooks, &service, &id, req).await }
        };
    let status = move |State(service): State<Arc<CallService>>, req: Request| {
        let hooks = status_hooks.clone();
        async move { status_handler(&hooks, &service, req).await }
    };
    Router::new()
        .route("/twiml/{id}", get(twiml.clone()).post(twiml))
        .route("/webhooks/status", post(status))
}

/// One form field. Twilio's names and most of its values fit in a `CompactString` inline
/// (24 bytes), so reading a callback's form allocates only for the few longer values.
pub type Field = (CompactString, CompactString);

/// A request whose Twilio signature checked out, with its form params.
pub struct TwilioRequest {
    pub params: Vec<Field>,
    pub query: Vec<Field>,
}

/// Decodes an `application/x-www-form-urlencoded` text (form_urlencoded, what serde_urlencoded
/// runs underneath, without its serde layer and its two owned Strings per field).
/// The fields are counted first (one per `&`, at most), so the vector is allocated once.
fn form_fields(encoded: &[u8]) -> Vec<Field> {
    if encoded.is_empty() {
        return Vec::new();
    }
    let mut fields = Vec::with_capacity(1 + encoded.iter().filter(|&&b| b == b'&').count());
    fields.extend(
        form_urlencoded::parse(encoded)
            .map(|(k, v)| (CompactString::from(k), CompactString::from(v))),
    );
    fields
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
        let query = parts
            .uri
            .query()
            .map(|q| form_fields(q.as_bytes()))
            .unwrap_or_default();
        let signature = parts
            .headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        let body: Bytes = axum::body::to_bytes(body, hooks.body_limit)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response())?;
        let params = if parts.method == Method::POST && !body.is_empty() {
            if std::str::from_utf8(&body).is_err() {
                return Err((StatusCode::BAD_REQUEST, "malformed form body").into_response());
            }
            form_fields(&body)
        } else {
            Vec::new()
        };
        let route = if path_and_query.starts_with("/twiml/") {
            "twiml"
        } else {
            "status"
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
    if let Err(refused) = TwilioRequest::read(req, hooks).await {
        return refused;
    }
    let Some(id) = CallId::parse(id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match service.get(&id).await {
        Ok(Some(call)) => {
            hooks.counters.count("twiml", "accepted");
            (
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                twiml::render(&call.message, &call.voice, &call.language),
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
