//! The other side of `benches/wrk_callbacks.sh`, the out-of-process callback benchmark.
//!
//! `wrk_peer serve` listens on 127.0.0.1 (port 0) and prints its base URL. It is two things:
//! - the **bare axum endpoint** callbot is compared with: `POST /webhooks/status` answers
//!   200 with an empty body, as callbot does, and reads nothing;
//! - a **fake Twilio** for the one call the benchmark places: `POST
//!   /2010-04-01/Accounts/{sid}/Calls.json` answers as Twilio does and remembers the
//!   `StatusCallback` URL, which `GET /last-callback` returns.
//!
//! `wrk_peer sign TOKEN URL BODY` prints Twilio's signature of a form body posted to `URL`,
//! so the script can precompute the header wrk sends.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use parking_lot::Mutex;

/// The sid the fake Twilio gives the call it creates.
const CALL_SID: &str = "CA0000000000000000000000000000beef";

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn create(State(last): State<Arc<Mutex<String>>>, body: Bytes) -> impl IntoResponse {
    let fields = form(&body);
    if let Some((_, url)) = fields.iter().find(|(k, _)| k == "StatusCallback") {
        *last.lock() = url.clone();
    }
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "sid": CALL_SID, "status": "queued" })),
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => {
            let last = Arc::new(Mutex::new(String::new()));
            let app = Router::new()
                .route("/webhooks/status", post(|| async { StatusCode::OK }))
                .route("/2010-04-01/Accounts/{sid}/Calls.json", post(create))
                .route(
                    "/last-callback",
                    get(
                        |State(last): State<Arc<Mutex<String>>>| async move { last.lock().clone() },
                    ),
                )
                .with_state(last);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "http://{}",
                listener.local_addr().map_err(|e| e.to_string())?
            );
            axum::serve(listener, app).await.map_err(|e| e.to_string())
        }
        ["sign", token, url, body] => {
            let params = form(body.as_bytes());
            println!(
                "{}",
                callbot::telephony::twilio::signature::sign(token, url, &params)
            );
            Ok(())
        }
        _ => Err("usage: wrk_peer serve | wrk_peer sign TOKEN URL BODY".to_owned()),
    }
}
