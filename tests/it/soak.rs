//! Soak (issue 9): the callbot binary on the built-in simulator with chaos (every callback
//! sent twice, in shuffled order), taking calls from Telegram (webhook mode) while 5 % of the
//! Bot API requests are faulted. Every request must end with exactly one outcome reply that
//! matches the simulator's rule for its number, the metrics must add up, and the process's
//! resident memory must stay flat once the call store is full (the store keeps at most
//! `STORE_CAPACITY` calls, so growth beyond that would be a leak).
//!
//! `CALLBOT_SOAK_CALLS` sets the count (default 1,000 in `cargo test`; the full soak is
//! `CALLBOT_SOAK_CALLS=10000 cargo test --release --all-features --test it soak -- --nocapture`).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
use crate::support::{faults, never};
use crate::telegram::{ALICE, SECRET};

/// Calls the store keeps (moka capacity): the soak's steady state.
const STORE_CAPACITY: usize = 1000;

/// Destinations called in turn. People call the same numbers again; with every number new,
/// the phone-number cache (10,000 entries) and the per-destination hourly log would grow
/// for as long as the run, by design, and hide a leak in that growth.
const DISTINCT_NUMBERS: usize = 1000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What the simulator does with a number ending in `digit` (README), as the outcome starts.
fn expected_outcome(digit: u32) -> &'static str {
    match digit {
        0 => "📵",
        1 => "⌛",
        2 => "❌",
        _ => "✅",
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_on_the_simulator_with_chaos_and_chat_faults_ends_every_call_once_and_stays_flat() {
    let n: usize = std::env::var("CALLBOT_SOAK_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let _turn = crate::faulted::HEAVY.lock().await;
    let seed = faults::seed();
    println!("soak of {n} calls, fault seed {seed} (CALLBOT_FAULT_SEED={seed} replays it)");
    let tg = FakeTelegram::start().await;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CALLBOT_") || k.starts_with("TWILIO_") || k.starts_with("TELEGRAM_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("CALLBOT_BIND", "127.0.0.1:0")
        .env("CALLBOT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("CALLBOT_SIMULATOR__SPEED", "0.01")
        .env("CALLBOT_SIMULATOR__CHAOS", "true")
        .env("CALLBOT_CALLS__CPS", "200")
        .env("CALLBOT_STORE__CAPACITY", STORE_CAPACITY.to_string())
        .env("CALLBOT_LIMITS__PER_USER_HOUR", "1000000")
        .env("CALLBOT_LIMITS__PER_USER_DAY", "1000000")
        .env("CALLBOT_LIMITS__PER_DESTINATION_HOUR", "1000000")
        .env("CALLBOT_LIMITS__MAX_CONCURRENT", "100000")
        .env("CALLBOT_LIMITS__GLOBAL_HOUR", "1000000")
        .env("CALLBOT_LIMITS__GLOBAL_DAY", "1000000")
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", &tg.base)
        .env("TELEGRAM_MODE", "webhook")
        .env("TELEGRAM_WEBHOOK_SECRET", SECRET)
        .env("CALLBOT_ACCESS__TELEGRAM_USERS", ALICE.id.to_string())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let child = Child(child);
    let addr = loop {
        let line = lines.next().expect("callbot logs its address").unwrap();
        if line.contains("callbot listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep reading its log so the pipe never fills; keep the warnings and errors.
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak.log");
    println!("callbot's log: {}", log_path.display());
    let log = std::thread::spawn(move || {
        use std::io::Write as _;
        let mut file = std::io::BufWriter::new(std::fs::File::create(log_path).unwrap());
        let mut errors = vec![];
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if line.contains("\"ERROR\"") {
                errors.push(line);
            }
        }
        errors
    });
    tg.faults().enable(seed, 0.05, Duration::from_millis(1300));

    let http = reqwest::Client::new();
    let url = format!("http://{addr}/telegram/webhook");
    // Outcome replies by the message they answer, read incrementally: a reply without
    // buttons is an outcome (the status message has a Cancel button).
    let seen = std::cell::RefCell::new((0usize, HashMap::<i64, Vec<String>>::new()));
    let refresh = || {
        let mut seen = seen.borrow_mut();
        let new = tg.recorded_since(seen.0);
        seen.0 += new.len();
        for r in new {
            if r.method == "sendMessage"
                && r.body.get("reply_markup").is_none()
                && let Some(to) = r.body["reply_parameters"]["message_id"].as_i64()
            {
                let text = r.body["text"].as_str().unwrap_or_default().to_owned();
                seen.1.entry(to).or_default().push(text);
            }
        }
    };

    let outcomes_len = || {
        refresh();
        seen.borrow().1.len()
    };

    // Requests go in at a steady `RATE` a second (below the dialer's CPS, so the queue stays
    // short); the resident set is sampled each time another tenth of the outcomes is in.
    const RATE: u64 = 150;
    let mut asked: Vec<(i64, u32)> = Vec::with_capacity(n);
    let updates: Vec<_> = (0..n)
        .map(|i| {
            tg.text(
                Chat::Private,
                ALICE,
                &format!(
                    "call +91 98765 {:05} and say soak {i}",
                    i % DISTINCT_NUMBERS
                ),
            )
        })
        .collect();
    asked.extend(updates.iter().enumerate().map(|(i, u)| {
        (
            u["message"]["message_id"].as_i64().unwrap(),
            (i % 10) as u32,
        )
    }));
    let start = Instant::now();
    let sender = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut sent = vec![];
            for update in updates {
                tick.tick().await;
                let (http, url) = (http.clone(), url.clone());
                sent.push(tokio::spawn(async move {
                    http.post(&url)
                        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
                        .json(&update)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                }));
            }
            for s in sent {
                assert_eq!(s.await.unwrap().unwrap(), 200);
            }
        })
    };
    let mut curve: Vec<(usize, u64)> = vec![(0, rss_kib(pid))];
    let step = (n / 10).max(1);
    loop {
        let done = outcomes_len();
        if done >= curve.last().unwrap().0 + step || (done == n && curve.last().unwrap().0 < n) {
            curve.push((done, rss_kib(pid)));
            println!("  {done} done after {:.1} s", start.elapsed().as_secs_f64());
        }
        if done >= n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60 + 2 * n as u64 / RATE),
            "seed {seed}: {done} of {n} outcomes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sender.await.unwrap();
    let took = start.elapsed();
    // Two seconds for an outcome that would come twice (failing as soon as one does).
    never(
        Duration::from_secs(2),
        &format!("seed {seed}: an outcome posted twice"),
        || {
            refresh();
            seen.borrow().1.values().map(Vec::len).sum::<usize>() > n
        },
    )
    .await;
    let (requests, drawn) = tg.faults().stats();
    tg.faults().disable();

    println!(
        "{n} calls in {:.1} s ({:.0} calls/s); RSS by calls done (KiB):",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    for (done, kib) in &curve {
        println!("  {done:>6}  {kib}");
    }
    println!("telegram: {requests} requests, faults {drawn:?}");

    refresh();
    let outcomes = seen.borrow().1.clone();
    for (i, (message, digit)) in asked.iter().enumerate() {
        let texts = &outcomes[message];
        assert_eq!(texts.len(), 1, "seed {seed}: request {i}: {texts:?}");
        assert!(
            texts[0].starts_with(expected_outcome(*digit)),
            "seed {seed}: request {i}: {texts:?}"
        );
    }

    // The metrics count every call once, by its final status.
    let get = async |path: &str| -> String {
        let res = http.get(format!("http://{addr}{path}")).send().await;
        res.unwrap().text().await.unwrap()
    };
    let metrics = get("/metrics").await;
    let count = |status: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("callbot_calls_total{") && l.contains(&format!("status=\"{status}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let by_digit = |f: fn(u32) -> bool| asked.iter().filter(|(_, d)| f(*d)).count() as u64;
    assert_eq!(count("busy"), by_digit(|d| d == 0), "{metrics}");
    assert_eq!(count("no-answer"), by_digit(|d| d == 1), "{metrics}");
    assert_eq!(count("failed"), by_digit(|d| d == 2), "{metrics}");
    assert_eq!(count("completed"), by_digit(|d| d > 2), "{metrics}");
    // The store's own stats: what it holds is all final.
    let all: serde_json::Value = serde_json::from_str(&get("/api/stats").await).unwrap();
    let stats = &all["stats"];
    assert_eq!(stats["active"], 0, "{stats}");
    let held: u64 = stats["by_status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(held, stats["total"].as_u64().unwrap(), "{stats}");
    assert!(held as usize <= STORE_CAPACITY.min(n) + 50, "{stats}");

    // Flat: once the store is full (the first thousand), the rest adds no more than a
    // fifth to the resident set. Only meaningful for long runs.
    if n >= 5000 {
        let at_full = curve
            .iter()
            .find(|(done, _)| *done >= STORE_CAPACITY)
            .unwrap()
            .1;
        let last = curve.last().unwrap().1;
        assert!(
            last <= at_full + at_full / 5,
            "RSS grew from {at_full} KiB to {last} KiB: {curve:?}"
        );
    }
    drop(child);
    let errors = log.join().unwrap();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
}
