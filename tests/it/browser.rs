//! The web console in a real headless Chromium (Debian's chromium + chromedriver), driven over
//! WebDriver with fantoccini: type, press Enter, watch the row go live, without reloading.
//!
//! Without the browser the test is skipped and says so on the test output (even without
//! `--nocapture`); with `CI=true` a missing browser fails it. `CALLBOT_TEST_CHROMIUM` and
//! `CALLBOT_TEST_CHROMEDRIVER` override the two paths.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::{TestApp, settings};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SKIPPED: &str = "SKIPPED: the browser test needs Debian's chromium and chromium-driver";

/// The browser's and the driver's paths.
fn paths() -> (String, String) {
    let path = |var, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    (
        path("CALLBOT_TEST_CHROMIUM", CHROMIUM),
        path("CALLBOT_TEST_CHROMEDRIVER", CHROMEDRIVER),
    )
}

/// CI systems set `CI=true` (GitHub Actions, GitLab, …); `1` counts too, `false` does not.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and a fresh headless Chromium session. `None` (skip) only outside CI
/// when the browser is not installed; in CI its absence fails the test.
async fn browser(profile: &Path) -> Option<(Driver, Client)> {
    let (chromium, chromedriver) = paths();
    if !Path::new(&chromium).exists() || !Path::new(&chromedriver).exists() {
        assert!(
            !in_ci(),
            "CI=true and {chromium} or {chromedriver} is missing: CI needs Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        // Straight to the process's stderr: the test harness captures `eprintln!` of a
        // passing test, and a skip must not read as a plain `ok`.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n{SKIPPED} ({chromium}, {chromedriver}): apt-get install chromium chromium-driver"
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // Polling with a bound (100 tries over about ten seconds): chromedriver gives no other
    // signal that it is ready.
    for _ in 0..100 {
        if let Ok(client) = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            return Some((driver, client));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not accept a session");
}

async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

async fn submit(client: &Client, command: &str) {
    let input = client.find(Locator::Id("command")).await.unwrap();
    input.clear().await.unwrap();
    input
        .send_keys(&format!("{command}\u{E007}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn console_places_a_call_shows_errors_and_cancels_in_a_real_browser() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let profile = tempfile::tempdir().unwrap();
    let Some((_driver, client)) = browser(profile.path()).await else {
        return;
    };
    let mut s = settings();
    s.simulator.speed = 0.5;
    let app = TestApp::spawn(s).await;

    client.goto(&format!("{}/", app.base)).await.unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//span[@id='conn' and text()='● live']"))
        .await
        .expect("the live log connects");
    let banner = client.find(Locator::Id("sim")).await.unwrap();
    assert!(
        banner.is_displayed().await.unwrap(),
        "the simulator banner shows"
    );
    client
        .execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();

    // A call, followed live to completed with its duration.
    submit(
        &client,
        "Call to +91 98765 43215 and say Your table is ready",
    )
    .await;
    let row = wait_for(&client, "tr[data-status='completed']").await;
    let text = row.text().await.unwrap();
    assert!(text.contains("+91 98765 43215"), "{text}");
    assert!(text.contains("Your table is ready"), "{text}");
    assert_eq!(
        row.find(Locator::Css(".duration"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "0:07"
    );

    // A bad number: the reason next to the box.
    submit(&client, "Call to +91 12345").await;
    let result = wait_for(&client, "#result.error").await;
    assert_eq!(
        result.text().await.unwrap(),
        "+91 12345 is not a valid number for India."
    );

    // Cancel a ringing call with its button.
    submit(&client, "call +91 98765 43211").await;
    let ringing = wait_for(&client, "tr[data-status='ringing'] button").await;
    ringing.click().await.unwrap();
    wait_for(&client, "tr[data-status='canceled']").await;

    // A failed and a busy call: the failure shows its reason.
    submit(&client, "call +91 98765 43212 and say The order is delayed").await;
    let failed = wait_for(&client, "tr[data-status='failed']").await;
    let text = failed.text().await.unwrap();
    assert!(text.contains("SIP 404"), "the reason shows: {text}");
    submit(&client, "call +91 98765 43210").await;
    wait_for(&client, "tr[data-status='busy']").await;

    let still = client
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(true), "the page never reloaded");
    // The stats strip follows the log (refreshed just after each event): it counts the
    // canceled call and nothing live before the screenshot is taken.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = client
            .find(Locator::Id("stats"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if stats.contains("canceled")
            && stats.contains("failed")
            && stats.contains("busy")
            && stats.contains("0\nLive now")
        {
            break stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats never caught up: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stats.contains("Calls today"), "{stats}");
    assert!(stats.contains("4\nCalls today"), "{stats}");
    assert!(stats.contains("25%\nAnswered"), "{stats}");
    // The last thing typed was a bad number: its reason stays next to the box.
    submit(&client, "Call to +91 12345").await;
    wait_for(&client, "#result.error").await;

    let png = client.screenshot().await.unwrap();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // Phone-sized: nothing wider than the screen.
    client.set_window_size(390, 844).await.unwrap();
    let fits = client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "no horizontal scrolling on a phone");
    let png = client.screenshot().await.unwrap();
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-phone.png"),
        png,
    )
    .unwrap();
    client.close().await.unwrap();
}

/// What the callee did, in the console (the simulator plays the callee): a voicemail that
/// got the message after its beep, a question answered by key, a call in Hindi, each with its
/// recording. The screenshot is `docs/console-callee.png`.
#[tokio::test]
async fn console_shows_voicemail_answers_and_recordings_in_a_real_browser() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let profile = tempfile::tempdir().unwrap();
    let Some((_driver, client)) = browser(profile.path()).await else {
        return;
    };
    let mut s = settings();
    s.simulator.speed = 0.2;
    s.calls.machine_detection = callbot::core::call::MachineDetection::MessageEnd;
    s.calls.record = true;
    s.voices.insert("hi-IN".into(), "Polly.Aditi".into());
    let app = TestApp::spawn(s).await;
    client.goto(&format!("{}/", app.base)).await.unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//span[@id='conn' and text()='● live']"))
        .await
        .expect("the live log connects");

    // The second-to-last digit picks the simulated callee: 5 a voicemail, 6 presses 1,
    // others are people.
    submit(
        &client,
        "call +91 98765 43244 in Hindi and say namaste, your table is ready",
    )
    .await;
    submit(
        &client,
        "call +91 98765 43263 and ask: Can you come tomorrow? 1 yes 2 no",
    )
    .await;
    submit(
        &client,
        "call +91 98765 43259 and say Your parcel is at the front desk",
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = client
            .find_all(Locator::Css("tr[data-status='completed']"))
            .await
            .unwrap();
        let recordings = client
            .find_all(Locator::Css("tr[data-status='completed'] button.recording"))
            .await
            .unwrap();
        if rows.len() == 3 && recordings.len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three completed calls with their recordings: {} rows, {} recordings",
            rows.len(),
            recordings.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = client
        .find(Locator::Id("calls"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("answered by: machine end beep"), "{page}");
    assert!(page.contains("answered by: human"), "{page}");
    assert!(page.contains("Q: Can you come tomorrow?"), "{page}");
    let answer = wait_for(&client, "tr[data-status='completed'] .answer").await;
    assert!(
        answer.text().await.unwrap().contains("1 — yes"),
        "{}",
        answer.text().await.unwrap()
    );
    let png = client.screenshot().await.unwrap();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-callee.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());
    client.close().await.unwrap();
}

/// Runs the browser test in this test binary, with the browser missing and `ci` as `CI`.
fn run_browser_test_without_a_browser(ci: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "browser::console_places_a_call_shows_errors_and_cancels_in_a_real_browser",
            "--exact",
        ])
        .env("CALLBOT_TEST_CHROMIUM", "/nonexistent/chromium")
        .env("CI", ci)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_missing_browser_is_a_visible_skip_outside_ci_and_a_failure_in_ci() {
    let (passed, text) = run_browser_test_without_a_browser("false");
    assert!(passed, "{text}");
    assert!(text.contains(SKIPPED), "the skip is in the output: {text}");
    assert!(text.contains("1 passed"), "{text}");

    let (passed, text) = run_browser_test_without_a_browser("true");
    assert!(!passed, "{text}");
    assert!(text.contains("CI=true and /nonexistent/chromium"), "{text}");
}
