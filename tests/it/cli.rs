//! The binary: `callbot check-config` and `callbot call`.

use std::process::Command;

fn callbot() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CALLBOT_") || k.starts_with("TWILIO_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn check_config_passes_on_defaults_and_names_the_simulator() {
    let out = callbot().arg("check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("built-in simulator"), "{stdout}");
}

#[test]
fn check_config_fails_clearly_and_redacts_secrets() {
    let out = callbot()
        .arg("check-config")
        .env("TWILIO_AUTH_TOKEN", "super-secret-value")
        .env("CALLBOT_PUBLIC_URL", "callbot.example.com")
        .env("CALLBOT_DEFAULT_REGION", "ZZ")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("TWILIO_ACCOUNT_SID, TWILIO_FROM_NUMBER missing"),
        "{all}"
    );
    assert!(all.contains("must be an absolute http(s) URL"), "{all}");
    assert!(all.contains("\"ZZ\" is not a known region"), "{all}");
    assert!(!all.contains("super-secret-value"), "{all}");
    assert!(all.contains("set (redacted)"), "{all}");
}

#[test]
fn call_command_prints_progress_and_exits_by_outcome() {
    let run = |number: &str| {
        callbot()
            .args(["call", number, "--say", "hello"])
            .env("CALLBOT_SIMULATOR__SPEED", "0.01")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let ok = run("+91 98765 43215");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(stdout.contains("🔔 Ringing +91 98765 43215…"), "{stdout}");
    assert!(
        stdout.contains("✅ Call to +91 98765 43215 completed, 0:07."),
        "{stdout}"
    );
    let busy = run("+91 98765 43210");
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stdout).contains("was busy"));
}

/// SIGTERM while a call is live: the server stops and the process exits 0 within the grace
/// period.
#[test]
fn sigterm_stops_the_server_within_the_grace_period() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = callbot()
        .env("CALLBOT_BIND", "127.0.0.1:0")
        .env("CALLBOT_SERVER__SHUTDOWN_GRACE_SECS", "2")
        .env("CALLBOT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("callbot logs its address").unwrap();
        if line.contains("callbot listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    // A call on the simulator, still ringing when the signal comes.
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/ai_prompt"))
            .json(&serde_json::json!({"command": "call +91 98765 43219"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 202);
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}\n{}", rest.join("\n"));
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        rest.iter().any(|l| l.contains("callbot stopped")),
        "{}",
        rest.join("\n")
    );
}

/// `callbot call` in a terminal: each status once (queued and initiated both read
/// "Calling…"), and no info log lines among them unless RUST_LOG asks.
#[test]
fn call_command_prints_each_status_once_without_info_logs() {
    let out = callbot()
        .env_remove("RUST_LOG")
        .args(["call", "+91 98765 43216"])
        .env("CALLBOT_SIMULATOR__SPEED", "0.01")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.matches("Calling").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("Ringing").count(), 1, "{stdout}");
    assert!(!stderr.contains("INFO"), "{stderr}");
}

/// Logs go to stderr; with stderr a pipe (not a terminal) they carry no colour codes.
#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;

    let mut child = callbot()
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("CALLBOT_BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("callbot listening");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = seen.join("\n");
    assert!(all.contains("callbot listening"), "{all}");
    assert!(all.contains("WARN"), "{all}");
    assert!(!all.contains('\u{1b}'), "{all:?}");
}
