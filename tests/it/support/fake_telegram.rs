//! A fake Telegram Bot API on 127.0.0.1: serves getUpdates from a queue the test fills,
//! records every other method (sendMessage, editMessageText, answerCallbackQuery,
//! setMyCommands, setWebhook, deleteWebhook, …) and renders them as a chat transcript.
//! Method names match case-insensitively (teloxide sends `SendMessage`), bodies are JSON.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const TOKEN: &str = "123456:TEST-bot-token";
pub const BOT_ID: u64 = 999_000;
pub const BOT_USERNAME: &str = "callbot_test_bot";

/// A Telegram user writing to the bot.
#[derive(Debug, Clone, Copy)]
pub struct TgUser {
    pub id: u64,
    pub first_name: &'static str,
    pub username: &'static str,
}

/// Where a message is written.
#[derive(Debug, Clone, Copy)]
pub enum Chat {
    /// The private chat with this user.
    Private,
    Group(i64),
    /// A forum supergroup topic.
    Topic(i64, i32),
}

/// One Bot API request, as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    /// camelCase method name (`sendMessage`).
    pub method: String,
    pub body: Value,
    /// HTTP status answered.
    pub status: u16,
    /// What the fake answered (`result`).
    pub result: Value,
}

#[derive(Default)]
struct Inner {
    recorded: Mutex<Vec<Recorded>>,
    updates: Mutex<VecDeque<Value>>,
    next_update: Mutex<u32>,
    next_message: Mutex<i64>,
    /// First text of every message (by chat, id), for the transcript.
    texts: Mutex<HashMap<(i64, i64), String>>,
    /// Chat objects by id, as updates described them.
    chats: Mutex<HashMap<i64, Value>>,
    /// Scripted 429 answers per method: retry_after seconds.
    throttle: Mutex<HashMap<String, VecDeque<u32>>>,
    /// Seconds added to the date of messages the bot sends.
    date_offset: Mutex<i64>,
    polls: Mutex<usize>,
    /// getUpdates answers 409 Conflict (a webhook was set elsewhere) while set.
    polls_failing: Mutex<bool>,
    /// The getUpdates in flight (its number), and the numbers given so far.
    polling: Mutex<(Option<u64>, u64)>,
    /// getUpdates that arrived while another was in flight.
    conflicts: Mutex<usize>,
    faults: super::faults::Faults,
}

#[derive(Clone)]
pub struct FakeTelegram {
    pub base: String,
    inner: Arc<Inner>,
}

const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "answerCallbackQuery",
    "setMyCommands",
    "setWebhook",
    "deleteWebhook",
];

impl FakeTelegram {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            next_update: Mutex::new(1000),
            next_message: Mutex::new(1),
            ..Inner::default()
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(handle).get(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, inner }
    }

    /// Telegram answers the next `n` requests of `method` with 429 and this retry_after.
    pub fn throttle(&self, method: &str, n: usize, retry_after: u32) {
        self.inner
            .throttle
            .lock()
            .entry(method.to_ascii_lowercase())
            .or_default()
            .extend(std::iter::repeat_n(retry_after, n));
    }

    /// Messages the bot sends from now on are dated this many seconds from now.
    pub fn date_offset(&self, secs: i64) {
        *self.inner.date_offset.lock() = secs;
    }

    /// The fault mode of every Bot API method but getUpdates.
    pub fn faults(&self) -> &super::faults::Faults {
        &self.inner.faults
    }

    /// While `failing`, getUpdates is refused as when someone else set a webhook for the
    /// bot (409 Conflict). (A 5xx would do too, but teloxide waits 10 s after one.)
    pub fn fail_polls(&self, failing: bool) {
        *self.inner.polls_failing.lock() = failing;
    }

    /// getUpdates requests served so far.
    pub fn polls(&self) -> usize {
        *self.inner.polls.lock()
    }

    /// getUpdates requests that overlapped one in flight (two pollers: Telegram answers the
    /// older one 409 Conflict).
    pub fn conflicts(&self) -> usize {
        *self.inner.conflicts.lock()
    }

    fn message_id(&self) -> i64 {
        let mut next = self.inner.next_message.lock();
        *next += 1;
        *next
    }

    fn update_id(&self) -> u32 {
        let mut next = self.inner.next_update.lock();
        *next += 1;
        *next
    }

    /// A text message update (not delivered yet: see [`Self::push`]).
    pub fn text(&self, chat: Chat, from: TgUser, text: &str) -> Value {
        self.text_replying(chat, from, text, None)
    }

    /// A text message replying to `replied` (a message the fake answered, e.g. the bot's).
    pub fn text_replying(
        &self,
        chat: Chat,
        from: TgUser,
        text: &str,
        replied: Option<&Value>,
    ) -> Value {
        let (chat_json, thread) = match chat {
            Chat::Private => (
                json!({"id": from.id, "type": "private", "first_name": from.first_name, "username": from.username}),
                None,
            ),
            Chat::Group(id) => (
                json!({"id": id, "type": "supergroup", "title": "Front desk"}),
                None,
            ),
            Chat::Topic(id, thread) => (
                json!({"id": id, "type": "supergroup", "title": "Front desk", "is_forum": true}),
                Some(thread),
            ),
        };
        let chat_id = chat_json["id"].as_i64().unwrap();
        self.inner.chats.lock().insert(chat_id, chat_json.clone());
        let id = self.message_id();
        self.inner
            .texts
            .lock()
            .insert((chat_id, id), text.to_owned());
        let mut msg = json!({
            "message_id": id,
            "date": chrono::Utc::now().timestamp(),
            "chat": chat_json,
            "from": {"id": from.id, "is_bot": false, "first_name": from.first_name, "username": from.username},
            "text": text,
        });
        if let Some(thread) = thread {
            msg["message_thread_id"] = json!(thread);
            msg["is_topic_message"] = json!(true);
        }
        if let Some(replied) = replied {
            msg["reply_to_message"] = replied.clone();
        }
        json!({"update_id": self.update_id(), "message": msg})
    }

    /// `from` pressing the button labelled `label` on `message` (a message the bot sent).
    pub fn press(&self, from: TgUser, message: &Value, label: &str) -> Value {
        let data = message["reply_markup"]["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().unwrap())
            .find(|b| b["text"].as_str().is_some_and(|t| t.contains(label)))
            .unwrap_or_else(|| panic!("no button {label:?} on {message}"))["callback_data"]
            .clone();
        json!({
            "update_id": self.update_id(),
            "callback_query": {
                "id": format!("cq{}", self.message_id()),
                "from": {"id": from.id, "is_bot": false, "first_name": from.first_name, "username": from.username},
                "message": message,
                "chat_instance": "42",
                "data": data,
            }
        })
    }

    /// Queues an update for getUpdates; returns it.
    pub fn push(&self, update: Value) -> Value {
        self.inner.updates.lock().push_back(update.clone());
        update
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.inner.recorded.lock().clone()
    }

    /// The requests recorded after the first `mark` (for long runs: copies only the new ones).
    pub fn recorded_since(&self, mark: usize) -> Vec<Recorded> {
        let recorded = self.inner.recorded.lock();
        recorded.get(mark..).unwrap_or_default().to_vec()
    }

    /// Requests of one method, in order.
    pub fn requests(&self, method: &str) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Waits until the recorded requests satisfy `f` (panics after 15 s).
    pub async fn wait_for(&self, what: &str, f: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let recorded = self.recorded();
            if f(&recorded) {
                return recorded;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; transcript so far:\n{}",
                self.transcript_from(0).join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a successful sendMessage whose text contains `needle`; returns the message sent.
    pub async fn wait_message(&self, needle: &str) -> Value {
        let recorded = self
            .wait_for(&format!("a message with {needle:?}"), |r| {
                r.iter().any(|r| is_sent(r, needle))
            })
            .await;
        recorded
            .into_iter()
            .find(|r| is_sent(r, needle))
            .unwrap()
            .result
    }

    /// Waits for an editMessageText whose text contains `needle`.
    pub async fn wait_edit(&self, needle: &str) -> Value {
        let recorded = self
            .wait_for(&format!("an edit to {needle:?}"), |r| {
                r.iter().any(|r| is_edit(r, needle))
            })
            .await;
        recorded
            .into_iter()
            .find(|r| is_edit(r, needle))
            .unwrap()
            .result
    }

    /// The recorded requests from `mark` on, one line each, as a chat transcript.
    pub fn transcript_from(&self, mark: usize) -> Vec<String> {
        let texts = self.inner.texts.lock().clone();
        let quoted = |chat: i64, id: i64| {
            texts
                .get(&(chat, id))
                .map_or_else(|| format!("#{id}"), |t| format!("{t:?}"))
        };
        self.recorded()
            .iter()
            .skip(mark)
            .map(|r| {
                let b = &r.body;
                let chat = chat_id(&b["chat_id"]);
                let line = match r.method.as_str() {
                    "sendMessage" => {
                        let mut line = "sendMessage".to_owned();
                        if let Some(to) = b["reply_parameters"]["message_id"].as_i64() {
                            line.push_str(&format!(" ↩ {}", quoted(chat, to)));
                        }
                        if let Some(t) = b["message_thread_id"].as_i64() {
                            line.push_str(&format!(" (topic {t})"));
                        }
                        if let Some(mode) = b["parse_mode"].as_str() {
                            line.push_str(&format!(" ({mode})"));
                        }
                        format!("{line}: {}{}", text(b), buttons(b))
                    }
                    "editMessageText" => format!(
                        "editMessageText {}: {}{}",
                        quoted(chat, b["message_id"].as_i64().unwrap_or_default()),
                        text(b),
                        buttons(b)
                    ),
                    "answerCallbackQuery" => {
                        format!("answerCallbackQuery: {}", b["text"].as_str().unwrap_or(""))
                    }
                    "setMyCommands" => format!(
                        "setMyCommands: {}",
                        b["commands"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| format!("/{}", c["command"].as_str().unwrap()))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    "setWebhook" => format!(
                        "setWebhook: {} secret_token={} allowed_updates={}",
                        b["url"].as_str().unwrap_or(""),
                        b["secret_token"].as_str().unwrap_or("-"),
                        b["allowed_updates"]
                    ),
                    other => other.to_owned(),
                };
                if r.status == 200 {
                    line
                } else {
                    format!("{line} → {}", r.status)
                }
            })
            .collect()
    }
}

fn is_sent(r: &Recorded, needle: &str) -> bool {
    r.method == "sendMessage" && r.status == 200 && text(&r.body).contains(needle)
}

fn is_edit(r: &Recorded, needle: &str) -> bool {
    r.method == "editMessageText" && r.status == 200 && text(&r.body).contains(needle)
}

fn text(body: &Value) -> &str {
    body["text"].as_str().unwrap_or("")
}

fn buttons(body: &Value) -> String {
    let labels: Vec<&str> = body["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().unwrap())
        .filter_map(|b| b["text"].as_str())
        .collect();
    if labels.is_empty() {
        String::new()
    } else {
        format!(" [{}]", labels.join("] ["))
    }
}

fn chat_id(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_default()
}

/// A multipart form (teloxide sends setWebhook so, for the optional certificate) as a JSON
/// object; values that are JSON arrays or objects (allowed_updates) are parsed.
fn multipart(body: &str, boundary: &str) -> Value {
    let mut out = serde_json::Map::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        let parsed = serde_json::from_str::<Value>(value)
            .ok()
            .filter(|v| v.is_array() || v.is_object())
            .unwrap_or_else(|| Value::String(value.to_owned()));
        out.insert(name.to_owned(), parsed);
    }
    Value::Object(out)
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response();
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body: Value = if body.is_empty() {
        json!({})
    } else if let Some(boundary) = content_type.split("boundary=").nth(1) {
        multipart(&String::from_utf8_lossy(&body), boundary.trim_matches('"'))
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| json!({}))
    };
    let lower = method.to_ascii_lowercase();
    let Some(method) = METHODS.iter().find(|m| m.to_ascii_lowercase() == lower) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"})),
        )
            .into_response();
    };
    if *method == "getUpdates" {
        return get_updates(&inner, &body).await;
    }
    if let Some(res) = inner.faults.maybe(super::faults::Style::Telegram).await {
        return res;
    }
    let throttled = inner
        .throttle
        .lock()
        .get_mut(&lower)
        .and_then(VecDeque::pop_front);
    let mut record = Recorded {
        at: Instant::now(),
        method: (*method).to_owned(),
        body: body.clone(),
        status: 200,
        result: Value::Null,
    };
    if let Some(secs) = throttled {
        record.status = 429;
        inner.recorded.lock().push(record);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {secs}"),
                "parameters": {"retry_after": secs},
            })),
        )
            .into_response();
    }
    let result = match *method {
        "getMe" => json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Callbot", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        }),
        "sendMessage" | "editMessageText" => {
            let chat = chat_id(&body["chat_id"]);
            let id = match body["message_id"].as_i64() {
                Some(id) => id,
                None => {
                    let mut next = inner.next_message.lock();
                    *next += 1;
                    *next
                }
            };
            let chat_json =
                inner.chats.lock().get(&chat).cloned().unwrap_or_else(
                    || json!({"id": chat, "type": "private", "first_name": "Someone"}),
                );
            inner
                .texts
                .lock()
                .entry((chat, id))
                .or_insert_with(|| text(&body).to_owned());
            let mut msg = json!({
                "message_id": id,
                "date": chrono::Utc::now().timestamp() + *inner.date_offset.lock(),
                "chat": chat_json,
                "from": {"id": BOT_ID, "is_bot": true, "first_name": "Callbot", "username": BOT_USERNAME},
                "text": text(&body),
            });
            if let Some(thread) = body.get("message_thread_id") {
                msg["message_thread_id"] = thread.clone();
                msg["is_topic_message"] = json!(true);
            }
            if let Some(markup) = body.get("reply_markup") {
                msg["reply_markup"] = markup.clone();
            }
            msg
        }
        _ => json!(true),
    };
    record.result = result.clone();
    inner.recorded.lock().push(record);
    ok(result)
}

/// Telegram's answer to a long poll that a newer one overlapped.
fn terminated_by_other_poll() -> Response {
    (
        StatusCode::CONFLICT,
        axum::Json(json!({
            "ok": false, "error_code": 409,
            "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
        })),
    )
        .into_response()
}

/// Marks a long poll in flight until it is answered or its client goes away (the handler is
/// dropped with the connection).
struct InFlight<'a> {
    inner: &'a Inner,
    number: u64,
}

impl InFlight<'_> {
    fn start(inner: &Inner) -> InFlight<'_> {
        let mut polling = inner.polling.lock();
        if polling.0.is_some() {
            *inner.conflicts.lock() += 1;
        }
        polling.1 += 1;
        polling.0 = Some(polling.1);
        InFlight {
            inner,
            number: polling.1,
        }
    }

    /// A newer poll took over: Telegram ends this one with 409.
    fn overtaken(&self) -> bool {
        self.inner.polling.lock().0 != Some(self.number)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut polling = self.inner.polling.lock();
        if polling.0 == Some(self.number) {
            polling.0 = None;
        }
    }
}

/// Long polling: answers with queued updates at or after `offset`, or waits up to `timeout`.
/// Two at once are refused as Telegram refuses them: the older gets 409 Conflict.
async fn get_updates(inner: &Inner, body: &Value) -> Response {
    *inner.polls.lock() += 1;
    let in_flight = InFlight::start(inner);
    let offset = body["offset"].as_i64().unwrap_or(0);
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(10));
    let start = Instant::now();
    // A long poll, as Telegram holds it: the queue is looked at every 10 ms until an update
    // is there or the client's timeout has passed (the fake's behaviour, not a test's wait).
    loop {
        if in_flight.overtaken() {
            return terminated_by_other_poll();
        }
        // Someone set a webhook for this bot: Telegram refuses long polls, the one in
        // flight included.
        if *inner.polls_failing.lock() {
            return (
                StatusCode::CONFLICT,
                axum::Json(json!({
                    "ok": false, "error_code": 409,
                    "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                })),
            )
                .into_response();
        }
        let updates: Vec<Value> = {
            let mut queue = inner.updates.lock();
            // Updates below the offset are confirmed: forget them.
            queue.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            queue.iter().cloned().collect()
        };
        if !updates.is_empty() || start.elapsed() >= timeout {
            return ok(Value::Array(updates));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
