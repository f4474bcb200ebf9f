//! Request bodies read whole, within a deadline and a size limit.
//!
//! tower-http's body timeout only limits the gap between chunks, so a body dripping one byte
//! at a time would hold a connection and a task forever; no maintained middleware puts a
//! deadline on the whole body, hence [`read_whole`]. Bodies here are small webhook payloads,
//! so buffering them costs nothing.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use http_body_util::BodyExt as _;

/// How long a request body may take to arrive and how large it may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub deadline: Duration,
    pub limit: usize,
}

/// The whole body, or the answer refusing it: 413 over the limit, 408 (and the connection
/// closed) past the deadline, 400 when the connection breaks; each with a JSON `error`.
pub async fn read_whole(body: Body, rules: BodyRules) -> Result<Bytes, Response> {
    let error = |message: String| axum::Json(serde_json::json!({ "error": message }));
    let limited = http_body_util::Limited::new(body, rules.limit);
    // A webhook's body has usually arrived with its head: taken at once, no timer is set
    // (arming and cancelling one on every request showed in the callback profile).
    let mut collect = std::pin::pin!(limited.collect());
    let collected = match futures::poll!(collect.as_mut()) {
        std::task::Poll::Ready(collected) => Ok(collected),
        std::task::Poll::Pending => tokio::time::timeout(rules.deadline, collect).await,
    };
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            error(format!("request body larger than {} bytes", rules.limit)),
        )
            .into_response()),
        Ok(Err(_)) => Err((
            StatusCode::BAD_REQUEST,
            error("unreadable request body".into()),
        )
            .into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            error("request body too slow".into()),
        )
            .into_response()),
    }
}
