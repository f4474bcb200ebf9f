//! The web console's HTTP API.

use std::time::Duration;

use futures::StreamExt as _;

use crate::support::{TestApp, settings};

#[tokio::test]
async fn console_page_and_health_are_served() {
    let app = TestApp::spawn(settings()).await;
    let page = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>callbot</title>"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn prompt_errors_are_clear() {
    let app = TestApp::spawn(settings()).await;
    let (status, body) = app.prompt("Call to +91 12345").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], "+91 12345 is not a valid number for India.");

    let (status, body) = app.prompt("good morning").await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("I couldn't understand that.")
    );

    let res = app
        .http
        .post(format!("{}/ai_prompt", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Send JSON like"));

    let (status, body) = app.prompt("help").await;
    assert_eq!(status, 200);
    assert!(
        body["reply"]
            .as_str()
            .unwrap()
            .contains("call +91 98765 43210 and say")
    );

    let res = app
        .http
        .get(format!("{}/api/calls/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(
        app.service
            .list(10, &Default::default())
            .await
            .unwrap()
            .len(),
        0,
        "nothing was placed"
    );
}

#[tokio::test]
async fn calls_list_and_stats_show_what_happened() {
    let app = TestApp::spawn(settings()).await;
    let first = app.place("call +91 98765 43215").await;
    let second = app.place("call +91 98765 43210").await;
    app.wait_final(&first).await;
    app.wait_final(&second).await;
    let list: serde_json::Value = app
        .http
        .get(format!("{}/api/calls?limit=1", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], second.as_str(), "newest first");
    assert_eq!(list[0]["to_display"], "+91 98765 43210");
    let stats: serde_json::Value = app
        .http
        .get(format!("{}/api/stats", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["simulated"], true);
    assert_eq!(stats["stats"]["total"], 2);
    assert_eq!(stats["stats"]["by_status"]["completed"], 1);
    assert_eq!(stats["stats"]["by_status"]["busy"], 1);
    assert_eq!(stats["stats"]["answer_rate"], 50.0);
    assert_eq!(stats["stats"]["average_duration_secs"], 7.0);
}

#[tokio::test]
async fn live_log_streams_each_status_over_sse() {
    let app = TestApp::spawn(settings()).await;
    let res = app
        .http
        .get(format!("{}/api/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    let id = app.place("call +91 98765 43216").await;
    let mut seen = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&"completed".to_owned()) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                if v["call"]["id"] == id.as_str() {
                    seen.push(v["call"]["status"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert_eq!(
        seen,
        [
            "queued",
            "queued",
            "initiated",
            "ringing",
            "in-progress",
            "completed"
        ]
    );
}

#[tokio::test]
async fn web_token_guards_the_api_when_set() {
    let mut s = settings();
    s.server.web_token = Some("sekret-token".to_owned().into());
    let app = TestApp::spawn(s).await;
    let (status, _) = app.prompt("call +91 98765 43215").await;
    assert_eq!(status, 401);
    let res = app
        .http
        .post(format!("{}/ai_prompt", app.base))
        .bearer_auth("sekret-token")
        .json(&serde_json::json!({"command": "call +91 98765 43215"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let sse = app
        .http
        .get(format!("{}/api/events?token=wrong", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 401);
    let page = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200, "the page itself holds no data");
}

/// Parses Prometheus text format strictly enough to catch a broken exposition: every sample
/// line is `name{labels} value` with a valid name and a float value.
fn prometheus_samples(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" TYPE ") || comment.starts_with(" HELP "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_when_calls_are_placed() {
    let app = TestApp::spawn(settings()).await;
    let scrape = || async {
        let res = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        prometheus_samples(&res.text().await.unwrap())
    };
    let before = scrape().await;
    let id = app.place("call +91 98765 43215").await;
    app.wait_final(&id).await;
    let after = scrape().await;
    let completed = r#"callbot_calls_total{status="completed"}"#;
    assert!(sample(&after, completed) >= sample(&before, completed) + 1.0);
    assert!(
        sample(&after, "callbot_dial_attempts_total")
            >= sample(&before, "callbot_dial_attempts_total") + 1.0
    );
    let accepted = r#"callbot_webhook_requests_total{route="status",result="accepted"}"#;
    assert!(
        sample(&after, accepted) >= sample(&before, accepted) + 4.0,
        "four callbacks"
    );
    let twiml = r#"callbot_webhook_requests_total{route="twiml",result="accepted"}"#;
    assert!(sample(&after, twiml) >= sample(&before, twiml) + 1.0);
    assert!(after.iter().any(|(s, _)| s == "callbot_queue_depth"));
    assert!(after.iter().any(|(s, _)| s == "callbot_active_calls"));
}

/// The console and the API answer only to callbot's own names (DNS rebinding): a page that
/// rebinds `evil.example` to 127.0.0.1 sends `Host: evil.example` and is refused; the bound
/// address, `localhost` and the public URL's host are served. Webhook routes are left alone.
#[tokio::test]
async fn console_and_api_refuse_a_host_name_that_is_not_callbots() {
    let mut s = settings();
    s.server.public_url = Some("https://callbot.example.com".into());
    let app = TestApp::spawn(s).await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let send = |method: &str, path: &str, host: &str| {
        app.http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .header("host", host)
            .header("content-type", "application/json")
            .body(r#"{"command": "call +91 98765 43215"}"#)
    };
    for host in [format!("evil.example:{port}"), "evil.example".into()] {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/api/calls"),
            ("GET", "/api/stats"),
            ("GET", "/api/events"),
            ("GET", "/metrics"),
            ("POST", "/ai_prompt"),
        ] {
            let res = send(method, path, &host).send().await.unwrap();
            assert_eq!(res.status().as_u16(), 403, "{method} {path} Host: {host}");
            let body: serde_json::Value = res.json().await.unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("CALLBOT_PUBLIC_URL"),
                "{body}"
            );
        }
    }
    assert!(
        app.service
            .list(10, &Default::default())
            .await
            .unwrap()
            .is_empty(),
        "nothing was placed through a foreign host name"
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".into(),
        "callbot.example.com".into(),
    ] {
        let res = send("GET", "/api/stats", &host).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "Host: {host}");
    }
    let res = send("POST", "/ai_prompt", "callbot.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let res = send("GET", "/healthz", &format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "liveness answers any name");
}

/// `POST /ai_prompt` and cancel change something: a foreign `Origin` is refused (403) and a
/// body that is not declared JSON is refused (415), so a cross-site form cannot place or
/// cancel a call; the console's own requests (same origin, JSON) go through.
#[tokio::test]
async fn state_changing_routes_need_json_and_callbots_own_origin() {
    let app = TestApp::spawn(settings()).await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let prompt = |origin: &str| {
        app.http
            .post(format!("{}/ai_prompt", app.base))
            .header("origin", origin)
            .json(&serde_json::json!({"command": "call +91 98765 43215"}))
    };
    for origin in [
        "http://evil.example",
        &format!("http://evil.example:{port}"),
        "null",
        "file://",
    ] {
        let res = prompt(origin).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 403, "Origin: {origin}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("Origin"), "{body}");
    }
    assert!(
        app.service
            .list(10, &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let res = prompt(&format!("http://localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();

    let cancel = format!("{}/api/calls/{id}/cancel", app.base);
    // A form post, as a foreign page can send without asking.
    let res = app
        .http
        .post(&cancel)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let res = app.http.post(&cancel).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 415, "no content type at all");
    let res = app
        .http
        .post(&cancel)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let call = app
        .call(&callbot::core::call::CallId::parse(&id).unwrap())
        .await;
    assert_ne!(call.status, callbot::core::call::CallStatus::Canceled);
    // What the console sends.
    let res = app
        .http
        .post(&cancel)
        .header("origin", format!("http://127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    // Canceled before dialing (200), hung up (202), or it had already ended (409).
    assert!(matches!(status, 200 | 202 | 409), "{status}");
}

/// Every error of the API is JSON `{"error": …}`: bad query, bad path, unknown route, wrong
/// method, oversized body.
#[tokio::test]
async fn every_api_error_is_json_with_a_reason() {
    let app = TestApp::spawn(settings()).await;
    let limit = callbot::Settings::defaults().server.webhook_body_limit;
    let cases: Vec<(&str, &str, Option<Vec<u8>>, u16)> = vec![
        ("GET", "/api/calls?limit=abc", None, 400),
        ("GET", "/api/calls?limit=-1", None, 400),
        ("GET", "/api/calls/%ff", None, 404),
        ("GET", "/api/calls/nope", None, 404),
        ("GET", "/api/nope", None, 404),
        ("GET", "/api/calls/x/y/z", None, 404),
        ("DELETE", "/api/calls", None, 405),
        ("PUT", "/ai_prompt", None, 405),
        ("GET", "/ai_prompt", None, 405),
        ("POST", "/api/calls/nope/cancel", Some(b"{}".to_vec()), 404),
        ("POST", "/ai_prompt", Some(b"{\"command\":".to_vec()), 400),
        ("POST", "/ai_prompt", Some(b"{\"cmd\":\"x\"}".to_vec()), 400),
        ("POST", "/ai_prompt", Some(vec![b'a'; limit + 1]), 413),
    ];
    for (method, path, body, want) in cases {
        let mut req = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), want, "{method} {path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}: {:?}",
            res.headers()
        );
        let body: serde_json::Value = res.json().await.unwrap();
        let reason = body["error"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{method} {path}: {body}");
    }
    let res = app
        .http
        .get(format!("{}/api/calls?limit=abc", app.base))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("whole number"),
        "{body}"
    );
}

/// A call placed from Slack carries the command's response_url (a capability: whoever holds
/// it can post into the channel). Neither the list, the call, nor the live log shows it.
#[cfg(feature = "slack")]
#[tokio::test]
async fn web_api_never_shows_a_slack_response_url() {
    use crate::slack::{ALICE, signed_command, with_slack};
    use crate::support::fake_slack::FakeSlack;

    let slack = FakeSlack::start().await;
    let app = TestApp::spawn(with_slack(settings(), &slack)).await;
    let live = app
        .http
        .get(format!("{}/api/events", app.base))
        .send()
        .await
        .unwrap();
    let mut live = live.bytes_stream();
    let (status, body, _) = signed_command(&app, &slack, ALICE, "+91 98765 43210", "r1").await;
    assert_eq!(status, 200, "{body}");
    let calls = app.service.list(10, &Default::default()).await.unwrap();
    assert_eq!(calls.len(), 1, "the command placed a call");
    let reply_url = calls[0]
        .origin
        .reply_url
        .clone()
        .expect("the call keeps its response_url to reply with");
    let done = app.wait_final(&calls[0].id).await;
    let id = done.id;
    let last = format!("\"status\":\"{}\"", done.status.as_str());

    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&last) {
        let chunk = tokio::time::timeout_at(deadline, live.next())
            .await
            .expect("the live log shows the call to its end")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let list = app
        .http
        .get(format!("{}/api/calls", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let one = app
        .http
        .get(format!("{}/api/calls/{}", app.base, id.as_str()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(one.contains(id.as_str()) && list.contains(id.as_str()));
    assert!(seen.contains(id.as_str()));
    for (what, text) in [("list", &list), ("call", &one), ("live log", &seen)] {
        assert!(
            !text.contains(&reply_url),
            "{what} shows the response_url: {text}"
        );
        assert!(!text.contains("reply_url"), "{what}: {text}");
        assert!(!text.contains("/response/"), "{what}: {text}");
    }
    let view: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(
        view["origin"]["platform"], "slack",
        "who asked is still shown"
    );
    assert_eq!(view["origin"]["requester"], ALICE);
}

/// The binary, started as a user would, lists every series the README documents on its very
/// first scrape (an alert on a series that appears only after first use sees no data).
#[tokio::test]
async fn a_fresh_instance_lists_every_documented_metric() {
    use tokio::io::AsyncBufReadExt as _;

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_callbot"));
    for (k, _) in std::env::vars() {
        if ["CALLBOT_", "TWILIO_", "TELEGRAM_", "SLACK_", "OPENAI_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .env("CALLBOT_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("web console at ").nth(1) {
                return rest.trim_end_matches('/').to_owned();
            }
        }
        panic!("callbot exited before listening");
    })
    .await
    .expect("callbot starts");
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = prometheus_samples(&text);
    let readme = include_str!("../../README.md");
    let documented = [
        "callbot_calls_total",
        "callbot_dial_attempts_total",
        "callbot_dial_retries_total",
        "callbot_telephony_request_seconds",
        "callbot_webhook_requests_total",
        "callbot_chat_posts_total",
        "callbot_queue_depth",
        "callbot_active_calls",
    ];
    for name in documented {
        assert!(readme.contains(name), "the README documents {name}");
        assert!(
            samples.iter().any(|(series, _)| {
                let n = series.split('{').next().unwrap();
                n == name || n.strip_prefix(name).is_some_and(|s| s.starts_with('_'))
            }),
            "{name} is missing from a fresh /metrics:\n{text}"
        );
    }
    assert_eq!(
        sample(&samples, r#"callbot_calls_total{status="completed"}"#),
        0.0
    );
    child.kill().await.unwrap();
}
