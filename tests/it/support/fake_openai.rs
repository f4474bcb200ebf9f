//! A fake OpenAI-compatible chat-completions server on 127.0.0.1 that records each request
//! (model, messages, response_format) and answers as scripted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub enum Answer {
    /// The model's JSON content.
    Json(Value),
    /// Raw content (e.g. not JSON at all).
    Raw(&'static str),
    /// An HTTP error with OpenAI's error body.
    Status(u16, &'static str),
    /// Answer after this long.
    Slow(Duration),
    /// This JSON content, after this long.
    Late(Duration, Value),
}

/// The fake model's reading of a user's text.
type Understand = fn(&str) -> Value;

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Value>>,
    answers: Mutex<VecDeque<Answer>>,
    /// Once the scripted answers are used up: the model's JSON for the user's text.
    understand: Mutex<Option<Understand>>,
    faults: super::faults::Faults,
}

#[derive(Clone)]
pub struct FakeOpenAi {
    /// Base URL to put in OPENAI_BASE_URL (ends in /v1).
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, inner }
    }

    /// Scripts the next answers (then: intent "none").
    pub fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.answers.lock().extend(answers);
    }

    /// Answers every request without a scripted answer with `f(user text)`.
    pub fn understand(&self, f: fn(&str) -> Value) {
        *self.inner.understand.lock() = Some(f);
    }

    /// The fault mode of chat completions.
    pub fn faults(&self) -> &super::faults::Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.requests.lock().clone()
    }
}

fn completion(content: &str) -> Response {
    axum::Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop",
            "logprobs": null
        }],
        "usage": { "prompt_tokens": 180, "completion_tokens": 32, "total_tokens": 212 }
    }))
    .into_response()
}

async fn completions(
    State(inner): State<Arc<Inner>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(res) = inner.faults.maybe(super::faults::Style::OpenAi).await {
        return res;
    }
    let user_text = body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    inner.requests.lock().push(body);
    let answer = inner.answers.lock().pop_front();
    let understand = *inner.understand.lock();
    match answer {
        None if understand.is_some() => completion(&understand.unwrap()(&user_text).to_string()),
        None => completion(r#"{"intent":"none","number":null,"message":null,"language":null}"#),
        Some(Answer::Json(v)) => completion(&v.to_string()),
        Some(Answer::Raw(s)) => completion(s),
        Some(Answer::Status(code, message)) => (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({ "error": { "message": message, "type": "invalid_request_error", "param": "response_format", "code": null } })),
        )
            .into_response(),
        Some(Answer::Late(d, v)) => {
            // The scenario: a model that answers late on purpose.
            tokio::time::sleep(d).await;
            completion(&v.to_string())
        }
        Some(Answer::Slow(d)) => {
            // The scenario: a model slower than the client's timeout.
            tokio::time::sleep(d).await;
            completion(r#"{"intent":"none","number":null,"message":null,"language":null}"#)
        }
    }
}
