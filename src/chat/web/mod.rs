//! The web console and its JSON API: `GET /` (one self-contained page), `POST /ai_prompt`,
//! `GET /api/calls`, `GET /api/calls/{id}`, `POST /api/calls/{id}/cancel`, `GET /api/stats`
//! and `GET /api/events` (server-sent events).
//!
//! When a web token is configured (required off loopback) every route but the page itself
//! needs `Authorization: Bearer <token>` (or `?token=` for EventSource, which cannot send
//! headers).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt as _};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tracing::warn;

use crate::calls::service::{CallRequest, CancelError, Cancelled};
use crate::calls::store::ListFilter;
use crate::calls::{CallService, RequestError};
use crate::chat::AdapterContext;
use crate::core::call::{Call, CallId, CallStatus, Origin, Platform};
use crate::core::command::Command;
use crate::core::replies;

const INDEX_HTML: &str = include_str!("index.html");

/// Most calls one `GET /api/calls` returns.
const MAX_LIST: usize = 1000;

pub struct WebState {
    pub ctx: AdapterContext,
    pub token: Option<SecretString>,
}

pub fn routes(state: Arc<WebState>) -> Router {
    let api = Router::new()
        .route("/ai_prompt", post(prompt))
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{id}", get(get_call))
        .route("/api/calls/{id}/cancel", post(cancel_call))
        .route("/api/stats", get(stats))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    Router::new().route("/", get(index)).merge(api)
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
    Query(q): Query<TokenQuery>,
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
        .or(q.token.filter(|_| req.uri().path() == "/api/events"));
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

/// A call as the API shows it: the record plus human-readable fields.
#[derive(Serialize)]
pub struct CallView<'a> {
    #[serde(flatten)]
    call: &'a Call,
    to_display: String,
    status_text: String,
    error_text: Option<String>,
}

impl<'a> CallView<'a> {
    pub fn new(call: &'a Call) -> Self {
        Self {
            call,
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
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
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
    // The console is one requester (behind its token): its model requests are limited as one.
    let parsed = match state
        .ctx
        .interpreter
        .interpret(&body.command, Some("web:web"))
        .await
    {
        Ok(Some(cmd)) => cmd,
        Ok(None) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("I didn't understand that.\n{}", replies::help()),
            );
        }
        Err(reason @ crate::core::command::ParseError::TooManyRequests) => {
            return error(StatusCode::TOO_MANY_REQUESTS, reason.to_string());
        }
        Err(reason) => return error(StatusCode::UNPROCESSABLE_ENTITY, reason.to_string()),
    };
    let service = &state.ctx.service;
    match parsed {
        Command::Call { to, message } => {
            let req = CallRequest {
                to,
                message,
                origin: Origin::new(Platform::Web, "web"),
            };
            match service.request(req).await {
                Ok(call) => (StatusCode::ACCEPTED, Json(CallView::new(&call))).into_response(),
                Err(e @ (RequestError::QueueFull(_) | RequestError::Stopping)) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                }
                Err(RequestError::Refused(reason)) => error(StatusCode::FORBIDDEN, reason),
                Err(RequestError::Rejected(reason)) => {
                    error(StatusCode::UNPROCESSABLE_ENTITY, reason)
                }
                Err(RequestError::Limited(reason)) => error(StatusCode::TOO_MANY_REQUESTS, reason),
                Err(RequestError::Store(e)) => internal(e),
            }
        }
        Command::Help => reply(replies::help()),
        Command::List => match service.list(10, &ListFilter::default()).await {
            Ok(calls) => reply(replies::list(&calls)),
            Err(e) => internal(e),
        },
        Command::Status { id } => match find(service, id.as_deref()).await {
            Ok(Some(call)) => reply(replies::summary(&call)),
            Ok(None) => error(StatusCode::NOT_FOUND, "No such call."),
            Err(e) => internal(e),
        },
        Command::Cancel { id } => match find(service, id.as_deref()).await {
            Ok(Some(call)) => cancel_response(service.cancel(&call.id).await),
            Ok(None) => error(StatusCode::NOT_FOUND, "No such call."),
            Err(e) => internal(e),
        },
    }
}

fn reply(text: String) -> Response {
    Json(json!({ "reply": text })).into_response()
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

async fn list_calls(State(state): State<Arc<WebState>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    match state.ctx.service.list(limit, &ListFilter::default()).await {
        Ok(calls) => Json(calls.iter().map(CallView::new).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

async fn get_call(State(state): State<Arc<WebState>>, Path(id): Path<String>) -> Response {
    match find(&state.ctx.service, Some(&id)).await {
        Ok(Some(call)) => Json(CallView::new(&call)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "No such call."),
        Err(e) => internal(e),
    }
}

async fn cancel_call(State(state): State<Arc<WebState>>, Path(id): Path<String>) -> Response {
    let Some(id) = CallId::parse(&id) else {
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
