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
