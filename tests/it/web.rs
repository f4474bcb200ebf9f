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
            .starts_with("I didn't understand that.")
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
