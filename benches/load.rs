//! Load drivers on loopback (they stop by themselves):
//!
//! - `callbacks`: signed `POST /webhooks/status` per second against a running callbot, and a
//!   bare axum endpoint answering 204, in the same run; prints both and the ratio.
//! - `pacing`: 10,000 queued calls at CPS 100 against a fake Twilio: achieved rate, lost,
//!   duplicated.
//! - `memory`: resident memory with 1,000,000 calls in the memory store: bytes per call.
//!
//! `cargo bench --bench load -- [callbacks|pacing|memory] [--smoke]` (all by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use callbot::calls::{CallStore, MemoryStore};
use callbot::core::call::{Call, CallSid, Origin, Platform, StatusUpdate};
use callbot::core::phone::PhoneNumber;
use callbot::telephony::twilio::signature::sign;
use callbot::{App, Settings};
use chrono::Utc;
use parking_lot::Mutex;

const CONNECTIONS: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let which: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| which.is_empty() || which.contains(&name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if run("callbacks") {
        rt.block_on(if smoke {
            callbacks(Duration::from_millis(300), 1, 2_000)
        } else {
            callbacks(Duration::from_millis(750), 20, 100_000)
        });
    }
    if run("pacing") {
        let (n, cps) = if smoke { (50, 100) } else { (10_000, 100) };
        rt.block_on(pacing(n, cps));
    }
    if run("memory") {
        rt.block_on(memory(if smoke { 10_000 } else { 1_000_000 }));
    }
}

/// CPU time this process has used (user + system), from /proc/self/stat.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the name; 100 Hz.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// One round of [`hammer`]: requests per second, and CPU time (client, server and kernel
/// together, all in this process) per request.
struct Round {
    rate: f64,
    cpu_per_request: Duration,
}

/// Sends as many requests as `CONNECTIONS` workers can for `duration`.
async fn hammer(
    duration: Duration,
    make: impl Fn(u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> Round {
    let make = Arc::new(make);
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|w| {
            let (make, count) = (make.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = w as u64;
                while Instant::now() < deadline {
                    let res = make(i).send().await.expect("request");
                    assert!(res.status().is_success(), "{}", res.status());
                    count.fetch_add(1, Ordering::Relaxed);
                    i += CONNECTIONS as u64;
                }
            })
        })
        .collect();
    let (started, cpu) = (Instant::now(), process_cpu());
    for w in workers {
        w.await.unwrap();
    }
    let n = count.load(Ordering::Relaxed).max(1);
    Round {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        cpu_per_request: (process_cpu() - cpu) / u32::try_from(n).unwrap_or(u32::MAX),
    }
}

async fn callbacks(duration: Duration, rounds: usize, calls: usize) {
    // A bare axum endpoint for comparison.
    let bare = Router::new().route(
        "/webhooks/status",
        post(|| async { StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_url = format!("http://{}/webhooks/status", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, bare).await.unwrap() });

    // A fake Twilio that accepts every create, so the calls are live when callbacks come.
    let sids = Arc::new(AtomicU64::new(0));
    let fake = Router::new().route(
        "/2010-04-01/Accounts/{account}/Calls.json",
        post(move || {
            let n = sids.fetch_add(1, Ordering::Relaxed);
            async move {
                let body = format!(r#"{{"sid":"CA{n:032x}","status":"queued"}}"#);
                (
                    StatusCode::CREATED,
                    [("content-type", "application/json")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

    // callbot, with Twilio credentials so its verifier uses a known token.
    let token = "load-test-token";
    let mut s = Settings::defaults();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.twilio.account_sid = Some(format!("AC{}", "0".repeat(32)));
    s.twilio.auth_token = Some(token.to_owned().into());
    s.twilio.from_number = Some("+15005550006".into());
    s.twilio.api_base = fake_url;
    s.calls.cps = 1_000_000;
    s.calls.queue_capacity = calls + 16;
    s.limits.max_concurrent = 1_000_000;
    s.limits.global_hour = u32::MAX;
    s.limits.global_day = u32::MAX;
    s.limits.per_user_hour = u32::MAX;
    s.limits.per_user_day = u32::MAX;
    s.limits.per_destination_hour = u32::MAX;
    let app = App::build(s).await.unwrap();
    let service = app.service();
    let base = app.public_url().to_owned();
    tokio::spawn(app.run());
    // Live calls to receive the callbacks: each gets initiated, ringing, in-progress and
    // completed once, in order, as from Twilio, so every callback changes a call.
    let mut ids = Vec::with_capacity(calls);
    for _ in 0..calls {
        let call = service
            .request(callbot::calls::service::CallRequest {
                to: PhoneNumber::from_e164("+919876543210").unwrap(),
                message: None,
                origin: Origin::new(Platform::Web, "load"),
                speech: Default::default(),
            })
            .await
            .unwrap();
        ids.push(call.id);
    }
    let mut live = Vec::with_capacity(calls);
    for id in &ids {
        loop {
            let call = service.get(id).await.unwrap().unwrap();
            if let Some(sid) = call.sid {
                live.push((id.clone(), sid));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let statuses = ["initiated", "ringing", "in-progress", "completed"];
    // Bodies are encoded and signed once, and both endpoints get the same signed requests,
    // so the client's share of the two cores is the same on both sides and the ratio compares
    // the servers.
    let requests: Arc<Vec<(String, axum::body::Bytes, String)>> = Arc::new(
        live.iter()
            .flat_map(|(id, sid)| {
                let url = format!("{base}/webhooks/status?call_id={id}");
                statuses.iter().enumerate().map(move |(seq, status)| {
                    let mut form: Vec<(String, String)> = vec![
                        ("CallSid".into(), sid.to_string()),
                        ("CallStatus".into(), (*status).into()),
                        ("SequenceNumber".into(), seq.to_string()),
                        ("To".into(), "+919876543210".into()),
                        ("From".into(), "+15005550006".into()),
                    ];
                    if *status == "completed" {
                        form.push(("CallDuration".into(), "42".into()));
                    }
                    let sig = sign(token, &url, &form);
                    let body = serde_urlencoded::to_string(&form).unwrap();
                    (url.clone(), axum::body::Bytes::from(body), sig)
                })
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    // callbot's requests are taken in order, each once (while they last); the bare endpoint
    // gets the same bodies.
    let cursor = Arc::new(AtomicU64::new(0));
    let send = |to_bare: bool| {
        let (client, requests, cursor) = (client.clone(), requests.clone(), cursor.clone());
        let bare_url = bare_url.clone();
        move |i: u64| {
            let i = if to_bare {
                i
            } else {
                cursor.fetch_add(1, Ordering::Relaxed)
            };
            let (url, body, sig) = &requests[(i % requests.len() as u64) as usize];
            client
                .post(if to_bare { &bare_url } else { url })
                .header("X-Twilio-Signature", sig)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.clone())
        }
    };
    // Rounds alternate between the two servers so drift on a shared machine hits both. The
    // rate ratio moves with what else the host runs (this is a VM with neighbours); CPU time
    // per request, which the same client costs on both sides, moves much less, so both are
    // reported.
    let (mut bare, mut ours, mut ratios, mut cpu_ratios) = (vec![], vec![], vec![], vec![]);
    let (mut bare_cpu, mut ours_cpu) = (vec![], vec![]);
    for _ in 0..rounds {
        let b = hammer(duration, send(true)).await;
        let c = hammer(duration, send(false)).await;
        let (b_us, c_us) = (
            b.cpu_per_request.as_secs_f64() * 1e6,
            c.cpu_per_request.as_secs_f64() * 1e6,
        );
        bare.push(b.rate);
        ours.push(c.rate);
        ratios.push(c.rate / b.rate);
        bare_cpu.push(b_us);
        ours_cpu.push(c_us);
        cpu_ratios.push(b_us / c_us);
        eprintln!(
            "  round: callbot {:.0}/s ({c_us:.1} µs CPU each), bare {:.0}/s ({b_us:.1} µs), ratio {:.2}, CPU ratio {:.2}",
            c.rate,
            b.rate,
            c.rate / b.rate,
            b_us / c_us
        );
    }
    let sent = cursor.load(Ordering::Relaxed);
    let fresh = sent.min(requests.len() as u64);
    println!(
        "callbacks: callbot {:.0} signed callbacks/s, bare axum {:.0} req/s, ratio {:.2}; CPU per request callbot {:.1} µs, bare {:.1} µs, ratio {:.2} (medians of {rounds} alternating rounds of {duration:?}, {CONNECTIONS} connections; {fresh} of {sent} callbacks were each a live call's next status)",
        median(&mut ours),
        median(&mut bare),
        median(&mut ratios),
        median(&mut ours_cpu),
        median(&mut bare_cpu),
        median(&mut cpu_ratios)
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn pacing(n: usize, cps: u32) {
    // A fake Twilio that records when each create arrives and for which number.
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let fake = {
        let seen = seen.clone();
        Router::new().route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(move |body: String| {
                let seen = seen.clone();
                async move {
                    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
                    let to = form.iter().find(|(k, _)| k == "To").unwrap().1.clone();
                    seen.lock().push((Instant::now(), to));
                    let sid = format!("CA{:032x}", rand::random::<u128>());
                    (
                        StatusCode::CREATED,
                        axum::Json(serde_json::json!({"sid": sid, "status": "queued"})),
                    )
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

    let mut s = Settings::defaults();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.twilio.account_sid = Some(format!("AC{}", "0".repeat(32)));
    s.twilio.auth_token = Some("t".to_owned().into());
    s.twilio.from_number = Some("+15005550006".into());
    s.twilio.api_base = fake_url;
    s.calls.cps = cps;
    s.limits.max_concurrent = 1_000_000;
    s.limits.global_hour = u32::MAX;
    s.limits.global_day = u32::MAX;
    s.limits.per_destination_hour = 1_000_000;
    let app = App::build(s).await.unwrap();
    let service = app.service();
    tokio::spawn(app.run());
    for i in 0..n {
        service
            .request(callbot::calls::service::CallRequest {
                to: PhoneNumber::from_e164(&format!("+9198{:08}", 76_000_000 + i)).unwrap(),
                message: None,
                origin: Origin::new(Platform::Web, "load"),
                speech: Default::default(),
            })
            .await
            .unwrap();
    }
    let expected = Duration::from_secs_f64(n as f64 / f64::from(cps));
    let deadline = Instant::now() + expected * 2 + Duration::from_secs(5);
    while seen.lock().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().clone();
    let mut numbers: Vec<&String> = seen.iter().map(|(_, to)| to).collect();
    numbers.sort();
    numbers.dedup();
    let span = seen.last().unwrap().0 - seen[0].0;
    let rate = (seen.len() - 1) as f64 / span.as_secs_f64();
    println!(
        "pacing: {n} calls queued at CPS {cps}: achieved {rate:.2}/s ({:+.2} %), lost {}, duplicated {}",
        (rate / f64::from(cps) - 1.0) * 100.0,
        n - numbers.len(),
        seen.len() - numbers.len()
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn memory(n: usize) {
    let store = MemoryStore::new(n as u64, Duration::from_secs(3600));
    let template = Call::new(
        PhoneNumber::from_e164("+919876543210").unwrap(),
        "+15005550006",
        "Hello, this is callbot with a message for you. Goodbye.".into(),
        "alice",
        "en-US",
        Origin::new(Platform::Telegram, "123456789"),
        Utc::now(),
    );
    let before = rss_bytes();
    for i in 0..n {
        let mut call = template
            .clone()
            .with_id(callbot::core::call::CallId::generate());
        call.sid = Some(CallSid::new(&format!("CA{i:032x}")));
        call.apply(
            &StatusUpdate {
                status: Some(callbot::core::call::CallStatus::Completed),
                duration_secs: Some(42),
                ..StatusUpdate::default()
            },
            Utc::now(),
        );
        store.insert(call).await.unwrap();
    }
    let after = rss_bytes();
    println!(
        "memory: {n} calls in the memory store: RSS +{:.1} MiB, {:.0} bytes per call",
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / n as f64
    );
}
