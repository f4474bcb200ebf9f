//! What the Redis store costs Redis, measured on a private `redis-server` (started here on a
//! free port, nothing on disk) so that nobody else's commands are counted:
//!
//! - `trips`: Redis round trips over a call's whole life through the real app (a web request,
//!   the dialer, the fake Twilio's four status callbacks, repeats of them), counted with
//!   `MONITOR`: every command a client sent (commands a script runs inside Redis are shown as
//!   `lua` and are not round trips). The health check's PING (one a second) is left out.
//! - `memory`: Redis memory per ended call: `used_memory` before and after storing and ending
//!   10,000 calls (Telegram origin, a 60-character message, sid, duration), divided by 10,000;
//!   and `MEMORY USAGE` of one record.
//!
//! `cargo bench --bench redis_store -- [trips|memory] [--smoke]` (both by default; `--smoke`
//! stores 500 calls). Needs `redis-server` and `redis-cli` (apt-get install redis-server).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use callbot::calls::store::CallStore;
use callbot::config::StoreBackend;
use callbot::core::call::{Call, CallSid, CallStatus, Origin, Platform, StatusUpdate};
use callbot::core::phone::PhoneNumber;
use callbot::shared::Redis;
use callbot::shared::store::RedisStore;
use chrono::Utc;
use support::{FakeTwilio, TestApp, twilio_settings};

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
    let server = PrivateRedis::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if run("trips") {
        rt.block_on(round_trips(&server));
    }
    if run("memory") {
        rt.block_on(memory_per_call(&server, if smoke { 500 } else { 10_000 }));
    }
}

/// A `redis-server` of our own, stopped when dropped.
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let server = Self { port, child };
        for _ in 0..200 {
            if server.cli(&["PING"]).trim() == "PONG" {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the private redis-server did not answer on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn info(&self, field: &str) -> i64 {
        self.cli(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO has no {field}"))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli MONITOR`: the commands clients send, kept in order; a marker (`ECHO`) splits
/// them into phases.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(server: &PrivateRedis) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("redis-cli")
            .args(["-p", &server.port.to_string(), "MONITOR"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().push(line);
            }
        });
        let monitor = Self { child, lines };
        // MONITOR answers OK once it watches; commands before that are not shown.
        for _ in 0..400 {
            if !monitor.lines.lock().is_empty() {
                return monitor;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("redis-cli MONITOR did not start");
    }

    /// Marks the end of a phase and waits until MONITOR has shown the mark.
    async fn mark(&self, server: &PrivateRedis, name: &str) {
        server.cli(&["ECHO", &format!("mark:{name}")]);
        for _ in 0..400 {
            if self
                .lines
                .lock()
                .iter()
                .any(|l| l.contains(&format!("\"mark:{name}\"")))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("MONITOR never showed the mark {name}");
    }

    /// The commands callbot sent between two marks (none run inside a script, no PING).
    fn between(&self, from: &str, to: &str) -> Vec<String> {
        let lines = self.lines.lock();
        let at = |name: &str| {
            lines
                .iter()
                .position(|l| l.contains(&format!("\"mark:{name}\"")))
                .unwrap_or_else(|| panic!("no mark {name}"))
        };
        lines[at(from) + 1..at(to)]
            .iter()
            .filter(|l| !l.contains(" lua]") && !l.contains("\"mark:"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_lowercase))
            .filter(|cmd| cmd != "ping")
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(commands: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for c in commands {
        *counts.entry(c.as_str()).or_insert(0) += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(c, n)| format!("{n} {c}")).collect();
    format!("{} ({})", commands.len(), parts.join(", "))
}

async fn round_trips(server: &PrivateRedis) {
    let twilio = FakeTwilio::start().await;
    let mut settings = twilio_settings(&twilio);
    settings.store.backend = StoreBackend::Redis;
    settings.store.redis_url = Some(server.url().into());
    settings.store.redis_prefix = "bench-trips".into();
    let app = TestApp::spawn(settings).await;
    // A first call warms the script cache (EVALSHA's one-time NOSCRIPT and SCRIPT LOAD).
    let warm = app.place("call +91 98765 43210").await;
    let create = twilio.wait_creates(1).await.remove(0);
    twilio.complete_shuffled(&create, 5).await;
    app.wait_final(&warm).await;

    // The bench waits on the app's events, not by reading the store (which would count).
    let mut events = app.service.subscribe();
    let mut until = async |what: &str, done: &dyn Fn(&callbot::calls::CallEvent) -> bool| {
        let wait = async {
            loop {
                if let Ok(ev) = events.recv().await
                    && done(&ev)
                {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no event: {what}"));
    };
    let monitor = Monitor::start(server);
    monitor.mark(server, "start").await;
    let id = app.place("call +91 98765 43211").await;
    let create = twilio.wait_creates(2).await.remove(1);
    until("the sid is stored", &|ev| {
        ev.call.id == id && ev.call.sid.is_some()
    })
    .await;
    monitor.mark(server, "placed").await;
    let statuses = [
        ("initiated", 0, vec![]),
        ("ringing", 1, vec![]),
        ("in-progress", 2, vec![]),
        ("completed", 3, vec![("CallDuration", "42")]),
    ];
    for (status, seq, extra) in &statuses {
        let form = twilio.callback(&create, status, *seq, extra);
        assert_eq!(twilio.send_callback(&create, &form).await, 200);
    }
    until("the final status", &|ev| {
        ev.call.id == id && ev.kind == callbot::calls::EventKind::Final
    })
    .await;
    monitor.mark(server, "callbacks").await;
    // Twilio's repeats: the same callbacks again.
    for (status, seq, extra) in &statuses {
        let form = twilio.callback(&create, status, *seq, extra);
        assert_eq!(twilio.send_callback(&create, &form).await, 200);
    }
    monitor.mark(server, "repeats").await;

    let request = monitor.between("start", "placed");
    let callbacks = monitor.between("placed", "callbacks");
    let repeats = monitor.between("callbacks", "repeats");
    println!("Redis round trips of one call (MONITOR on a private redis-server):");
    println!(
        "  request and dial (web request, insert, dialer's sid): {}",
        summary(&request)
    );
    println!(
        "  4 status callbacks (initiated, ringing, in-progress, completed): {} = {:.1} per callback",
        summary(&callbacks),
        callbacks.len() as f64 / 4.0
    );
    println!(
        "  4 repeated callbacks: {} = {:.1} per callback",
        summary(&repeats),
        repeats.len() as f64 / 4.0
    );
    println!(
        "  whole life: {} round trips",
        request.len() + callbacks.len()
    );
}

async fn memory_per_call(server: &PrivateRedis, n: usize) {
    let redis = Redis::connect(&server.url(), "bench-memory").await.unwrap();
    let store = RedisStore::new(redis, Duration::from_secs(7 * 24 * 3600));
    let before = server.info("used_memory");
    let mut last = None;
    for i in 0..n {
        let mut origin = Origin::new(Platform::Telegram, "123456789");
        origin.chat = "-1001234567890".into();
        origin.thread = Some("42".into());
        origin.message = Some("98765".into());
        origin.requester_name = Some("@alice".into());
        origin.status_message = Some("98766".into());
        let call = Call::new(
            PhoneNumber::from_e164(&format!("+9198{:08}", 76_000_000 + i)).unwrap(),
            "+15005550006",
            "Your table is ready, please come to the front desk. Thanks!".into(),
            "alice",
            "en-US",
            origin,
            Utc::now(),
        );
        let id = call.id.clone();
        store.insert(call).await.unwrap();
        let sid = CallSid::new(&format!("CA{:032x}", i as u128 + 1));
        for (status, seq) in [
            (CallStatus::Initiated, 0u64),
            (CallStatus::Ringing, 1),
            (CallStatus::InProgress, 2),
            (CallStatus::Completed, 3),
        ] {
            let update = StatusUpdate {
                status: Some(status),
                sid: Some(sid.clone()),
                sequence: Some(seq),
                duration_secs: (status == CallStatus::Completed).then_some(42),
                ..StatusUpdate::default()
            };
            store
                .update(&id, &mut |c: &mut Call| c.apply(&update, Utc::now()))
                .await
                .unwrap();
        }
        last = Some(id);
    }
    // The event stream is a ring of at most `events::STREAM_LEN` entries, whatever the
    // number of calls: measured on its own, not counted per call.
    let stream = server.cli(&["MEMORY", "USAGE", "{bench-memory}:events"]);
    let entries = server.cli(&["XLEN", "{bench-memory}:events"]);
    server.cli(&["DEL", "{bench-memory}:events"]);
    let after = server.info("used_memory");
    println!(
        "The event stream (a ring of about {} entries, deleted before the count below): {} entries, MEMORY USAGE {} bytes",
        callbot::shared::events::STREAM_LEN,
        entries.trim(),
        stream.trim()
    );
    let id = last.unwrap();
    let record = server.cli(&["MEMORY", "USAGE", &format!("{{bench-memory}}:call:{id}")]);
    let json = server.cli(&["GET", &format!("{{bench-memory}}:call:{id}")]);
    println!(
        "Redis memory per ended call: {n} calls stored and ended: used_memory {before} -> {after} bytes = {:.0} bytes per call (record, its place in the list, counters); MEMORY USAGE of one record {} bytes, its text {} bytes",
        (after - before) as f64 / n as f64,
        record.trim(),
        json.trim_end().len()
    );
}
