//! A fake Twilio REST API on 127.0.0.1: records every request the real client sends, answers
//! as scripted, and plays Twilio's side of a call (fetches TwiML, posts signed callbacks).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use callbot::telephony::twilio::signature::sign;
use parking_lot::Mutex;
use rand::seq::SliceRandom as _;
use serde_json::json;

use super::AUTH_TOKEN;
use super::faults::{Fault, Style};

/// How the fake answers the next create-call request.
#[derive(Debug, Clone)]
pub enum Plan {
    Created,
    Error {
        status: u16,
        code: i64,
        message: &'static str,
        retry_after: Option<u64>,
    },
    /// Answer after this long (beyond the client's timeout: a timeout).
    Slow(Duration),
    /// Create the call, but only after this long.
    Delayed(Duration),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    /// Wall-clock time of the request (Twilio's `date_created` for a created call).
    pub date: chrono::DateTime<chrono::Utc>,
    pub path: String,
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
    /// The sid answered, if the request was answered with a created call.
    pub sid: Option<String>,
}

impl Recorded {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    creates: Mutex<Vec<Recorded>>,
    hangups: Mutex<Vec<Recorded>>,
    plan: Mutex<VecDeque<Plan>>,
    /// What `GET …/Calls/{sid}.json` answers (status, duration); unset: 404.
    fetch: Mutex<Option<(String, Option<String>)>>,
    /// Set by [`FakeTwilio::move_on_get`]: each GET of a call answers its next status.
    moving: Mutex<bool>,
    fetches: Mutex<Vec<String>>,
    /// Query strings of call-list requests.
    lists: Mutex<Vec<Vec<(String, String)>>>,
    faults: super::faults::Faults,
    /// Fires whenever a create request is recorded (the signal "nothing happened" checks wait on).
    created: tokio::sync::Notify,
    /// Recordings' audio by file name (`RE….mp3`), and the requests for them.
    recordings: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    recording_gets: Mutex<Vec<Recorded>>,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub base: String,
    inner: Arc<Inner>,
    http: reqwest::Client,
}

impl FakeTwilio {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Calls.json",
                post(create).get(list),
            )
            .route(
                "/2010-04-01/Accounts/{account}/Calls/{sid}",
                post(update).get(fetch),
            )
            .route(
                "/2010-04-01/Accounts/{account}/Recordings/{file}",
                axum::routing::get(recording),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            inner,
            http: reqwest::Client::new(),
        }
    }

    /// Scripts the answers to the next create requests (then: Created).
    pub fn plan(&self, plans: impl IntoIterator<Item = Plan>) {
        self.inner.plan.lock().extend(plans);
    }

    /// Answers `GET …/Calls/{sid}.json` with this status and duration from now on.
    pub fn set_fetch(&self, status: &str, duration: Option<&str>) {
        *self.inner.fetch.lock() = Some((status.to_owned(), duration.map(str::to_owned)));
    }

    /// From now on every call moves through its statuses one step per `GET …/Calls/{sid}.json`
    /// (what a poller sees), its outcome by the number's last digit as [`FakeTwilio::autoplay`]
    /// plays it: 0 busy and 1 no answer after ringing; otherwise answered, then completed
    /// after that many seconds. It then stays at its final status.
    pub fn move_on_get(&self) {
        *self.inner.moving.lock() = true;
    }

    /// How many times the call `sid` was fetched.
    pub fn fetches_of(&self, sid: &str) -> usize {
        self.inner
            .fetches
            .lock()
            .iter()
            .filter(|s| *s == sid)
            .count()
    }

    /// The fault mode of every REST request.
    pub fn faults(&self) -> &super::faults::Faults {
        &self.inner.faults
    }

    /// Call-list requests (`GET …/Calls.json`), their query parameters.
    pub fn lists(&self) -> Vec<Vec<(String, String)>> {
        self.inner.lists.lock().clone()
    }

    /// Sids fetched with `GET …/Calls/{sid}.json`.
    pub fn fetches(&self) -> Vec<String> {
        self.inner.fetches.lock().clone()
    }

    pub fn creates(&self) -> Vec<Recorded> {
        self.inner.creates.lock().clone()
    }

    /// Serves `audio` as the recording `sid` (`GET …/Recordings/{sid}.mp3`).
    pub fn add_recording(&self, sid: &str, audio: &[u8]) {
        self.inner
            .recordings
            .lock()
            .insert(format!("{sid}.mp3"), audio.to_vec());
    }

    /// Requests for recordings' audio (path and Authorization header).
    pub fn recording_gets(&self) -> Vec<Recorded> {
        self.inner.recording_gets.lock().clone()
    }

    /// Posts a signed callback to the URL the create request named under `key`
    /// (`AsyncAmdStatusCallback`, `RecordingStatusCallback`); returns the HTTP status.
    pub async fn send_to(&self, call: &Recorded, key: &str, form: &[(String, String)]) -> u16 {
        let url = call
            .get(key)
            .unwrap_or_else(|| panic!("the create named no {key}"));
        self.post_signed(url, form, None).await.status().as_u16()
    }

    /// The async AMD callback as Twilio posts it.
    pub fn amd_form(&self, call: &Recorded, answered_by: &str) -> Vec<(String, String)> {
        [
            ("AccountSid", super::ACCOUNT_SID),
            ("CallSid", call.sid.as_deref().unwrap()),
            ("AnsweredBy", answered_by),
            ("MachineDetectionDuration", "2140"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The recording status callback (`completed`) as Twilio posts it.
    pub fn recording_form(
        &self,
        call: &Recorded,
        recording_sid: &str,
        duration: u32,
    ) -> Vec<(String, String)> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Recordings/{recording_sid}",
            self.base,
            super::ACCOUNT_SID
        );
        [
            ("AccountSid", super::ACCOUNT_SID.to_owned()),
            ("CallSid", call.sid.clone().unwrap()),
            ("RecordingSid", recording_sid.to_owned()),
            ("RecordingUrl", url),
            ("RecordingStatus", "completed".to_owned()),
            ("RecordingDuration", duration.to_string()),
            ("RecordingChannels", "1".to_owned()),
            ("RecordingSource", "OutboundAPI".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn hangups(&self) -> Vec<Recorded> {
        self.inner.hangups.lock().clone()
    }

    pub async fn wait_creates(&self, n: usize) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let creates = self.creates();
            if creates.len() >= n {
                return creates;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "only {} of {n} create requests arrived",
                creates.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A "nothing happened" check: waits `window` for a create request beyond the first `n`,
    /// woken by each one that arrives, and panics as soon as there are more than `n`.
    pub async fn no_creates_beyond(&self, n: usize, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let created = self.inner.created.notified();
            tokio::pin!(created);
            // Registered before the count is read, so a create in between is not missed.
            created.as_mut().enable();
            let creates = self.creates();
            assert!(
                creates.len() <= n,
                "{} create requests where {n} were expected: {creates:#?}",
                creates.len()
            );
            if tokio::time::timeout_at(deadline, created).await.is_err() {
                return;
            }
        }
    }

    /// Twilio fetching the call's TwiML (signed POST to its Url).
    pub async fn fetch_twiml(&self, call: &Recorded) -> (u16, String) {
        let url = call.get("Url").unwrap();
        let form = vec![
            ("CallSid".to_owned(), call.sid.clone().unwrap()),
            ("CallStatus".to_owned(), "in-progress".to_owned()),
        ];
        let res = self.post_signed(url, &form, None).await;
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A status callback form as Twilio sends it.
    pub fn callback(
        &self,
        call: &Recorded,
        status: &str,
        seq: u64,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut form: Vec<(String, String)> = [
            ("AccountSid", super::ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call.sid.as_deref().unwrap()),
            ("CallStatus", status),
            ("CallbackSource", "call-progress-events"),
            ("Direction", "outbound-api"),
            ("From", call.get("From").unwrap()),
            ("To", call.get("To").unwrap()),
            ("Timestamp", "Tue, 24 Nov 2026 10:00:00 +0000"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        form.push(("SequenceNumber".into(), seq.to_string()));
        form.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        form
    }

    /// Posts a signed status callback to the call's StatusCallback URL; returns the HTTP status.
    pub async fn send_callback(&self, call: &Recorded, form: &[(String, String)]) -> u16 {
        let url = call.get("StatusCallback").unwrap();
        self.post_signed(url, form, None).await.status().as_u16()
    }

    /// Plays a whole answered call, callbacks duplicated and shuffled.
    pub async fn complete_shuffled(&self, call: &Recorded, duration: u32) {
        let d = duration.to_string();
        let mut forms = vec![
            self.callback(call, "initiated", 0, &[]),
            self.callback(call, "ringing", 1, &[]),
            self.callback(call, "in-progress", 2, &[]),
            self.callback(call, "completed", 3, &[("CallDuration", &d)]),
        ];
        forms.extend(forms.clone());
        forms.shuffle(&mut rand::rng());
        for form in forms {
            assert_eq!(self.send_callback(call, &form).await, 200);
        }
    }

    /// Posts with a signature made with `token` (default: the real auth token).
    pub async fn post_signed(
        &self,
        url: &str,
        form: &[(String, String)],
        token: Option<&str>,
    ) -> reqwest::Response {
        let signature = sign(token.unwrap_or(AUTH_TOKEN), url, form);
        self.http
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

fn record(headers: &HeaderMap, path: String, body: &str) -> Recorded {
    Recorded {
        at: Instant::now(),
        date: chrono::Utc::now(),
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        form: serde_urlencoded::from_str(body).unwrap(),
        sid: None,
    }
}

/// `GET …/Calls.json?To=&From=`: the calls created, newest first, as Twilio lists them.
async fn list(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    if let Some(res) = inner.faults.maybe(Style::Twilio).await {
        return res;
    }
    inner.lists.lock().push(query.clone());
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (to, from) = (param("To"), param("From"));
    let calls: Vec<_> = inner
        .creates
        .lock()
        .iter()
        .rev()
        .filter(|c| c.sid.is_some())
        .filter(|c| to.as_deref().is_none_or(|t| c.get("To") == Some(t)))
        .filter(|c| from.as_deref().is_none_or(|f| c.get("From") == Some(f)))
        .take(20)
        .map(|c| {
            json!({
                "sid": c.sid, "status": "queued", "to": c.get("To"), "from": c.get("From"),
                "account_sid": account, "direction": "outbound-api",
                "date_created": c.date.to_rfc2822(),
            })
        })
        .collect();
    axum::Json(json!({ "calls": calls, "page": 0, "page_size": 20, "start": 0 })).into_response()
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    // A faulted create usually never reaches Twilio. But an answer whose head said 201 and
    // whose body was then cut off or garbled came from a call that exists, and a slow answer
    // is one from a Twilio that placed the call and answered too late.
    let fault = inner.faults.draw();
    let after_effect = match fault {
        Some((Fault::Reset | Fault::Malformed | Fault::Slow, ..)) => fault,
        Some((fault, slow, retry_after)) => {
            return super::faults::answer(fault, Style::Twilio, slow, retry_after).await;
        }
        None => None,
    };
    let mut rec = record(
        &headers,
        format!("/2010-04-01/Accounts/{account}/Calls.json"),
        &body,
    );
    let plan = inner.plan.lock().pop_front().unwrap_or(Plan::Created);
    let delay = match plan {
        Plan::Error {
            status,
            code,
            message,
            retry_after,
        } => {
            inner.creates.lock().push(rec);
            inner.created.notify_waiters();
            let mut res = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({
                    "code": code, "message": message, "status": status,
                    "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                })),
            )
                .into_response();
            if let Some(secs) = retry_after {
                res.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            return res;
        }
        Plan::Slow(delay) => {
            inner.creates.lock().push(rec);
            inner.created.notify_waiters();
            // The scenario: Twilio answering slowly on purpose.
            tokio::time::sleep(delay).await;
            return (StatusCode::SERVICE_UNAVAILABLE, "too slow").into_response();
        }
        Plan::Delayed(delay) => delay,
        Plan::Created => Duration::ZERO,
    };
    // The call exists (and is recorded) before the answer goes out, as at Twilio, where
    // callbacks can overtake a slow create response.
    let sid = format!("CA{:032x}", rand::random::<u128>());
    rec.sid = Some(sid.clone());
    let to = rec.get("To").unwrap_or_default().to_owned();
    let from = rec.get("From").unwrap_or_default().to_owned();
    inner.creates.lock().push(rec);
    inner.created.notify_waiters();
    // The scenario (`Plan::Delayed`): the answer held back on purpose.
    tokio::time::sleep(delay).await;
    if let Some((fault, slow, retry_after)) = after_effect {
        return super::faults::answer(fault, Style::Twilio, slow, retry_after).await;
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "sid": sid, "status": "queued", "to": to, "from": from,
            "account_sid": account, "api_version": "2010-04-01", "direction": "outbound-api",
            "uri": format!("/2010-04-01/Accounts/{account}/Calls/{sid}.json"),
        })),
    )
        .into_response()
}

async fn update(
    State(inner): State<Arc<Inner>>,
    Path((account, sid)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(res) = inner.faults.maybe(Style::Twilio).await {
        return res;
    }
    let rec = record(
        &headers,
        format!("/2010-04-01/Accounts/{account}/Calls/{sid}"),
        &body,
    );
    let status = rec.get("Status").unwrap_or("").to_owned();
    inner.hangups.lock().push(rec);
    let sid = sid.trim_end_matches(".json");
    (
        StatusCode::OK,
        axum::Json(json!({ "sid": sid, "status": status })),
    )
        .into_response()
}

/// `GET …/Recordings/{sid}.mp3`: the audio, for the account's credentials only.
async fn recording(
    State(inner): State<Arc<Inner>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(res) = inner.faults.maybe(Style::Twilio).await {
        return res;
    }
    let rec = record(
        &headers,
        format!("/2010-04-01/Accounts/{account}/Recordings/{file}"),
        "",
    );
    let authorized = rec.authorization.as_deref()
        == Some(&format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{}:{}", super::ACCOUNT_SID, AUTH_TOKEN)
            )
        ));
    inner.recording_gets.lock().push(rec);
    if !authorized || account != super::ACCOUNT_SID {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "code": 20003, "message": "Authenticate", "status": 401 })),
        )
            .into_response();
    }
    match inner.recordings.lock().get(&file) {
        Some(audio) => (
            StatusCode::OK,
            [("content-type", "audio/mpeg")],
            audio.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "code": 20404, "message": "The requested resource was not found", "status": 404 })),
        )
            .into_response(),
    }
}

async fn fetch(
    State(inner): State<Arc<Inner>>,
    Path((_account, sid)): Path<(String, String)>,
) -> Response {
    if let Some(res) = inner.faults.maybe(Style::Twilio).await {
        return res;
    }
    let sid = sid.trim_end_matches(".json").to_owned();
    let nth = {
        let mut fetches = inner.fetches.lock();
        fetches.push(sid.clone());
        fetches.iter().filter(|s| **s == sid).count() - 1
    };
    let moving = *inner.moving.lock();
    let to = moving
        .then(|| {
            inner
                .creates
                .lock()
                .iter()
                .find(|c| c.sid.as_deref() == Some(sid.as_str()))
                .and_then(|c| c.get("To").map(str::to_owned))
        })
        .flatten();
    if let Some(to) = to {
        let digit = to.chars().last().and_then(|c| c.to_digit(10)).unwrap_or(9);
        let d = digit.to_string();
        let steps: Vec<(&str, Option<&str>)> = match digit {
            0 => vec![
                ("queued", None),
                ("ringing", None),
                ("ringing", None),
                ("busy", None),
            ],
            1 => vec![
                ("queued", None),
                ("ringing", None),
                ("ringing", None),
                ("no-answer", None),
            ],
            _ => vec![
                ("queued", None),
                ("ringing", None),
                ("in-progress", None),
                ("in-progress", None),
                ("completed", Some(d.as_str())),
            ],
        };
        let (status, duration) = steps[nth.min(steps.len() - 1)];
        return (
            StatusCode::OK,
            axum::Json(json!({
                "sid": sid, "status": status, "duration": duration, "to": to,
                "from": super::FROM, "account_sid": super::ACCOUNT_SID,
                "answered_by": null, "queue_time": "0", "direction": "outbound-api",
            })),
        )
            .into_response();
    }
    match inner.fetch.lock().clone() {
        Some((status, duration)) => (
            StatusCode::OK,
            axum::Json(json!({ "sid": sid, "status": status, "duration": duration })),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "code": 20404, "message": "The requested resource was not found", "status": 404 })),
        )
            .into_response(),
    }
}

impl FakeTwilio {
    /// Plays Twilio's side of every call created from now on, in the background: its
    /// callbacks sent twice each in shuffled order. The outcome follows the number's last
    /// digit, as the simulator's does: 0 busy, 1 no answer, otherwise completed after that
    /// many seconds. Ends when the returned handle is dropped (aborted).
    pub fn autoplay(&self) -> AbortOnDrop {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut played = 0;
            loop {
                // Woken by each create (registered before reading, so none is missed).
                let created = me.inner.created.notified();
                tokio::pin!(created);
                created.as_mut().enable();
                let creates = me.creates();
                for call in creates.into_iter().skip(played) {
                    played += 1;
                    let me = me.clone();
                    tokio::spawn(async move { me.play(&call).await });
                }
                created.await;
            }
        });
        AbortOnDrop(task)
    }

    /// One call's callbacks, duplicated and shuffled; the outcome by its last digit.
    async fn play(&self, call: &Recorded) {
        let digit = call
            .get("To")
            .and_then(|to| to.chars().last())
            .and_then(|c| c.to_digit(10))
            .unwrap_or(9);
        let duration = digit.to_string();
        let last = match digit {
            0 => self.callback(call, "busy", 2, &[]),
            1 => self.callback(call, "no-answer", 2, &[]),
            _ => self.callback(call, "completed", 3, &[("CallDuration", &duration)]),
        };
        let mut forms = vec![
            self.callback(call, "initiated", 0, &[]),
            self.callback(call, "ringing", 1, &[]),
        ];
        if digit > 1 {
            forms.push(self.callback(call, "in-progress", 2, &[]));
        }
        forms.push(last);
        forms.extend(forms.clone());
        forms.shuffle(&mut rand::rng());
        for form in forms {
            assert_eq!(self.send_callback(call, &form).await, 200);
        }
    }
}

/// A background task that ends when this is dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
