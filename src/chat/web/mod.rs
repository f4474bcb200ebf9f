//! The web console and its JSON API (`POST /ai_prompt` speaks the [`crate::chat::dialogue`] as
//! the operator: it sees and cancels every call): `GET /` (one self-contained page), `POST /ai_prompt`,
//! `GET /api/calls`, `GET /api/calls/{id}`, `POST /api/calls/{id}/cancel`, `GET /api/stats`
//! and `GET /api/events` (server-sent events).
//!
//! When a web token is configured (required off loopback) every route but the page itself
//! needs `Authorization: Bearer <token>` (or `?token=` for EventSource, which cannot send
//! headers).
//!
//! Every route here answers only requests whose `Host` is one callbot is known by (the bound
//! address, `localhost`, the host of `CALLBOT_PUBLIC_URL`): a page in the operator's browser
//! that rebinds its own name to 127.0.0.1 (DNS rebinding) sends its own name as `Host` and is
//! refused. The routes that change something (`POST /ai_prompt`, `POST
//! /api/calls/{id}/cancel`) also need `Content-Type: application/json` (a cross-site form
//! cannot send it without a CORS preflight, which callbot never grants) and refuse a foreign
//! `Origin`. Every error is JSON `{"error": "…"}`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::{Stream, StreamExt as _};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tracing::warn;

use crate::calls::CallService;
use crate::calls::service::{CancelError, Cancelled};
use crate::calls::store::ListFilter;
use crate::chat::AdapterContext;
use crate::chat::dialogue::{Conversation, Reply};
use crate::core::call::{Call, CallError, CallId, CallSid, CallStatus, Origin, Platform};
use crate::core::command::ParseError;
use crate::core::policy::RefusalKind;
use crate::core::replies;

const INDEX_HTML: &str = include_str!("index.html");

/// Most calls one `GET /api/calls` returns.
const MAX_LIST: usize = 1000;

pub struct WebState {
    pub ctx: AdapterContext,
    pub token: Option<SecretString>,
    /// The names the console and API answer to.
    pub hosts: AllowedHosts,
}

/// The host names a browser may use to reach the console: `localhost`, the bound IP (any
/// loopback IP when bound to loopback, any IP when bound to all interfaces) and the host of
/// the public URL. Ports are not compared: a proxy may show another one, and a rebinding
/// page is told apart by its name, which it cannot choose to be one of these.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    bound: IpAddr,
    public_host: Option<String>,
}

impl AllowedHosts {
    pub fn new(bound: SocketAddr, public_url: &str) -> Self {
        let public_host = url::Url::parse(public_url).ok().and_then(|u| {
            u.host_str()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
        });
        Self {
            bound: bound.ip(),
            public_host,
        }
    }

    /// Whether `authority` (a `Host` header: `name[:port]`, `[v6][:port]`) is ours.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok(authority) = authority.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        let host = authority.host().trim_matches(['[', ']']);
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host == "localhost" || self.public_host.as_deref() == Some(host.as_str()) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                ip == self.bound
                    || self.bound.is_unspecified()
                    || (self.bound.is_loopback() && ip.is_loopback())
            }
            Err(_) => false,
        }
    }

    /// Whether an `Origin` header names one of our hosts over http(s).
    fn allows_origin(&self, origin: &str) -> bool {
        url::Url::parse(origin).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| {
                    let authority = match u.port() {
                        Some(port) => format!("{h}:{port}"),
                        None => h.to_owned(),
                    };
                    self.allows(&authority)
                })
        })
    }
}

pub fn routes(state: Arc<WebState>) -> Router {
    let api = Router::new()
        .route("/ai_prompt", post(prompt))
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{id}", get(get_call))
        .route("/api/calls/{id}/cancel", post(cancel_call))
        .route("/api/calls/{id}/recording", get(get_recording))
        .route("/api/stats", get(stats))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .route("/api/{*rest}", any(api_not_found))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard_writes));
    Router::new()
        .route("/", get(index))
        .merge(api)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_our_host,
        ))
        .with_state(state)
}

async fn api_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "No such API route.")
}

async fn method_not_allowed(method: Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on this route."),
    )
}

/// Refuses a request whose `Host` (or absolute URI) is not one of ours (DNS rebinding).
async fn require_our_host(
    State(state): State<Arc<WebState>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    match host {
        Some(host) if state.hosts.allows(&host) => next.run(req).await,
        _ => error(
            StatusCode::FORBIDDEN,
            "This host name is not one callbot answers to; use the address it listens on, localhost, or set CALLBOT_PUBLIC_URL to the address you use.",
        ),
    }
}

/// `POST` routes change something: they need a JSON content type and, when a browser sends
/// an `Origin`, one of ours.
async fn guard_writes(State(state): State<Arc<WebState>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !origin.to_str().is_ok_and(|o| state.hosts.allows_origin(o)) {
            return error(
                StatusCode::FORBIDDEN,
                "Requests from another site are not allowed (Origin).",
            );
        }
    }
    if !is_json(req.headers()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send Content-Type: application/json.",
        );
    }
    next.run(req).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Prometheus text format.
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

async fn require_token(
    State(state): State<Arc<WebState>>,
    q: Result<Query<TokenQuery>, QueryRejection>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.token else {
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        // EventSource cannot send headers, so the live log alone takes the token in its query
        // (anywhere else a query token would end up in access logs for nothing).
        .or(q
            .ok()
            .and_then(|Query(q)| q.token)
            .filter(|_| req.uri().path() == "/api/events"));
    let ok =
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.expose_secret().as_bytes())));
    if ok {
        next.run(req).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "A valid web token is required (Authorization: Bearer …).",
        )
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A call as the API shows it: the record's public fields plus human-readable ones. Fields
/// are listed one by one, so nothing added to [`Call`] or [`Origin`] reaches the API by
/// itself; in particular not Slack's `response_url` (`Origin::reply_url`), which lets
/// whoever holds it post into the channel.
#[derive(Serialize)]
pub struct CallView<'a> {
    id: &'a CallId,
    to: &'a crate::core::phone::PhoneNumber,
    from: &'a str,
    message: &'a str,
    voice: &'a str,
    language: &'a str,
    /// Times the message is said, when more than once.
    #[serde(skip_serializing_if = "Option::is_none")]
    say_loop: Option<u8>,
    /// The question asked after the message, and how it was answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    question: Option<&'a crate::core::speech::Question>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a crate::core::speech::Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_text: Option<String>,
    status: CallStatus,
    history: &'a [(CallStatus, chrono::DateTime<chrono::Utc>)],
    created_at: chrono::DateTime<chrono::Utc>,
    placed_at: Option<chrono::DateTime<chrono::Utc>>,
    duration_secs: Option<u32>,
    sid: Option<&'a CallSid>,
    error: Option<&'a CallError>,
    answered_by: Option<&'a str>,
    machine_detection: crate::core::call::MachineDetection,
    record: bool,
    /// Our link to the audio and its duration, once ready (never the provider's URL).
    recording: Option<RecordingView>,
    sip_response_code: Option<u16>,
    attempts: u32,
    origin: OriginView<'a>,
    to_display: String,
    status_text: String,
    error_text: Option<String>,
}

#[derive(Serialize)]
struct RecordingView {
    url: String,
    duration_secs: Option<u32>,
}

/// Who asked and where, without reply handles.
#[derive(Serialize)]
struct OriginView<'a> {
    platform: Platform,
    team: Option<&'a str>,
    chat: &'a str,
    thread: Option<&'a str>,
    requester: &'a str,
    requester_name: Option<&'a str>,
}

impl<'a> CallView<'a> {
    pub fn new(call: &'a Call) -> Self {
        let o = &call.origin;
        Self {
            id: &call.id,
            to: &call.to,
            from: &call.from,
            message: &call.message,
            voice: &call.voice,
            language: &call.language,
            say_loop: call.say_loop,
            question: call.question.as_deref(),
            answer: call.answer.as_deref(),
            answer_text: replies::answer_line(call),
            status: call.status,
            history: &call.history,
            created_at: call.created_at,
            placed_at: call.placed_at,
            duration_secs: call.duration_secs,
            sid: call.sid.as_ref(),
            error: call.error.as_deref(),
            answered_by: call.answered_by.as_deref(),
            machine_detection: call.machine_detection,
            record: call.record,
            recording: call.recording.as_ref().map(|r| RecordingView {
                url: format!("/api/calls/{}/recording", call.id),
                duration_secs: r.duration_secs,
            }),
            sip_response_code: call.sip_response_code,
            attempts: call.attempts,
            origin: OriginView {
                platform: o.platform,
                team: o.team.as_deref(),
                chat: &o.chat,
                thread: o.thread.as_deref(),
                requester: &o.requester,
                requester_name: o.requester_name.as_deref(),
            },
            to_display: call.to.display(),
            status_text: replies::status_line(call),
            error_text: (call.status == CallStatus::Failed).then(|| replies::failure_reason(call)),
        }
    }
}

#[derive(Deserialize)]
struct PromptBody {
    command: String,
}

async fn prompt(State(state): State<Arc<WebState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send Content-Type: application/json.",
        );
    }
    let Ok(body) = serde_json::from_slice::<PromptBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"Send JSON like {"command": "Call to +91 9876543210"}."#,
        );
    };
    // The console is the operator's own (behind its token): it sees and cancels every call,
    // and its model requests are limited as one requester's.
    let conv = Conversation::operator(Origin::new(Platform::Web, "web"));
    render(state.ctx.dialogue().on_text(&conv, &body.command).await)
}

/// A dialogue reply as the API answers it: a call as JSON, `{"reply": …}`, or an error with
/// the status that fits.
fn render(answer: Reply) -> Response {
    let text = answer.text();
    match answer {
        Reply::Placed(call) | Reply::HangingUp(call) => {
            (StatusCode::ACCEPTED, Json(CallView::new(&call))).into_response()
        }
        Reply::Canceled(call) => Json(CallView::new(&call)).into_response(),
        Reply::CancelFailed(e) => cancel_response(Err(e)),
        Reply::Refused(refusal) => error(
            match refusal.kind() {
                RefusalKind::Identity => StatusCode::FORBIDDEN,
                RefusalKind::Request => StatusCode::UNPROCESSABLE_ENTITY,
                RefusalKind::Limit => StatusCode::TOO_MANY_REQUESTS,
            },
            text,
        ),
        Reply::Unreadable(ParseError::TooManyRequests) => {
            error(StatusCode::TOO_MANY_REQUESTS, text)
        }
        Reply::Unreadable(_) | Reply::NotUnderstood => {
            error(StatusCode::UNPROCESSABLE_ENTITY, text)
        }
        Reply::UnknownCall(_) | Reply::NoCalls | Reply::NoLiveCall => {
            error(StatusCode::NOT_FOUND, text)
        }
        Reply::NotPlaced(_) | Reply::NotRecorded | Reply::Sorry => {
            error(StatusCode::SERVICE_UNAVAILABLE, text)
        }
        // Help, status, list; the console is never asked to confirm, so the rest do not
        // reach it.
        _ => Json(json!({ "reply": text })).into_response(),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "web request failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something went wrong on our side; please try again.",
    )
}

/// A call by id, or the latest when `id` is `None`.
async fn find(
    service: &CallService,
    id: Option<&str>,
) -> Result<Option<Call>, crate::calls::store::StoreError> {
    match id {
        Some(id) => match CallId::parse(id) {
            Some(id) => service.get(&id).await,
            None => Ok(None),
        },
        None => Ok(service
            .list(1, &ListFilter::default())
            .await?
            .into_iter()
            .next()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_calls(
    State(state): State<Arc<WebState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "limit must be a whole number (at most {MAX_LIST} are listed), as in /api/calls?limit=50."
            ),
        );
    };
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    match state.ctx.service.list(limit, &ListFilter::default()).await {
        Ok(calls) => Json(calls.iter().map(CallView::new).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

async fn get_call(
    State(state): State<Arc<WebState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error(StatusCode::NOT_FOUND, "No such call.");
    };
    match find(&state.ctx.service, Some(&id)).await {
        Ok(Some(call)) => Json(CallView::new(&call)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "No such call."),
        Err(e) => internal(e),
    }
}

/// The call's recording, streamed from the provider with the account's credentials (the
/// provider's own URL for it never leaves the server).
async fn get_recording(
    State(state): State<Arc<WebState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error(StatusCode::NOT_FOUND, "No such call.");
    };
    let call = match find(&state.ctx.service, Some(&id)).await {
        Ok(Some(call)) => call,
        Ok(None) => return error(StatusCode::NOT_FOUND, "No such call."),
        Err(e) => return internal(e),
    };
    let Some(recording) = &call.recording else {
        let why = if call.record {
            "This call's recording is not ready yet."
        } else {
            "This call was not recorded."
        };
        return error(StatusCode::NOT_FOUND, why);
    };
    match state.ctx.service.recording_audio(recording).await {
        Ok(audio) => {
            let mut response = axum::body::Body::from_stream(audio.body).into_response();
            let headers = response.headers_mut();
            if let Ok(v) = header::HeaderValue::from_str(&audio.content_type) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            if let Some(n) = audio.length {
                headers.insert(header::CONTENT_LENGTH, n.into());
            }
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("private, no-store"),
            );
            response
        }
        Err(e) => {
            warn!(call_id = %call.id, error = %e, "could not fetch a recording from the provider");
            error(
                StatusCode::BAD_GATEWAY,
                format!("The recording could not be fetched from the telephony provider: {e}"),
            )
        }
    }
}

async fn cancel_call(
    State(state): State<Arc<WebState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(id) = id.ok().and_then(|Path(id)| CallId::parse(&id)) else {
        return error(StatusCode::NOT_FOUND, "No such call.");
    };
    cancel_response(state.ctx.service.cancel(&id).await)
}

fn cancel_response(result: Result<Cancelled, CancelError>) -> Response {
    match result {
        Ok(Cancelled::BeforeDialing(call)) => Json(CallView::new(&call)).into_response(),
        Ok(Cancelled::HangupSent(call)) => {
            (StatusCode::ACCEPTED, Json(CallView::new(&call))).into_response()
        }
        Err(e @ CancelError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ CancelError::AlreadyEnded(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ CancelError::Telephony(_)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(CancelError::Store(e)) => internal(e),
    }
}

async fn stats(State(state): State<Arc<WebState>>) -> Response {
    match state.ctx.service.stats().await {
        Ok(stats) => Json(json!({
            "stats": stats,
            "simulated": state.ctx.service.is_simulated(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

/// Live updates: one `call` event per change (the call as JSON, with `kind`), and `resync`
/// when this subscriber fell behind and should reload the list.
async fn events(
    State(state): State<Arc<WebState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(state.ctx.service.subscribe()).map(|item| {
        Ok(match item {
            Ok(ev) => {
                let data = json!({ "kind": ev.kind, "call": CallView::new(&ev.call) });
                Event::default().event("call").data(data.to_string())
            }
            Err(BroadcastStreamRecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
        })
    });
    // Ends with the server: an open live log would otherwise hold graceful shutdown forever
    // (the page reconnects by itself once callbot is back).
    let stream = stream.take_until(state.ctx.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn host_names_callbot_answers_to() {
        let loopback =
            AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), "http://127.0.0.1:8080");
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.0.0.2:9",
            "localhost",
            "LocalHost.:8080",
            "[::1]:8080",
        ] {
            assert!(loopback.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "",
            "a b",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback.allows(host), "{host}");
        }
        let public = AllowedHosts::new(
            "0.0.0.0:8080".parse().unwrap(),
            "https://Callbot.Example.com/",
        );
        for host in [
            "callbot.example.com",
            "CALLBOT.example.com:443",
            "10.0.0.1:8080",
            "localhost",
        ] {
            assert!(public.allows(host), "{host}");
        }
        assert!(!public.allows("example.com"));
        assert!(public.allows_origin("https://callbot.example.com"));
        assert!(public.allows_origin("http://localhost:8080"));
        for origin in [
            "null",
            "https://evil.example",
            "file:///x",
            "chrome-extension://abc",
        ] {
            assert!(!public.allows_origin(origin), "{origin}");
        }
    }
}
