//! The built `callbot` binary, started exactly as a user starts it: a cleared environment
//! plus only the variables under test (once a `--config FILE`), talking HTTP to it, with
//! every outbound base URL pointed at the local fakes.
//!
//! For every case `check-config` and `serve` run with the same environment and must agree:
//! check-config exits 0 exactly when serve starts and answers `/healthz`; a refusal names
//! the variable the user set. Processes run a few at a time, so the file stays well under a
//! minute.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use figment::Provider as _;
use figment::providers::{Format as _, Toml};
use figment::value::{Dict, Value};
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

use crate::support::fake_openai::FakeOpenAi;
use crate::support::fake_slack::{self, FakeSlack};
use crate::support::fake_telegram::{self, FakeTelegram};
use crate::support::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio};

/// Processes started at once (the machine may have two cores, shared).
const PARALLEL: usize = 6;
/// Longest a start may take before the test calls it hung (a debug build on a loaded
/// machine takes about a second).
const START_TIMEOUT: Duration = Duration::from_secs(40);

type Env = Vec<(String, String)>;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn command(env: &Env, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callbot"));
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one command did with a set of variables.
#[derive(Debug)]
enum Outcome {
    /// check-config exited 0, or serve answered /healthz.
    Accepted,
    /// It exited non-zero; everything it printed.
    Refused(String),
}

impl Outcome {
    fn accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }
}

async fn check_config(env: &Env) -> Outcome {
    let out = command(env, &["check-config"]).output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "check-config panicked: {text}");
    if out.status.success() {
        Outcome::Accepted
    } else {
        Outcome::Refused(text)
    }
}

/// A running `callbot serve`; killed when dropped.
struct Server {
    addr: String,
    /// What it wrote to stderr up to the line with its address.
    banner: String,
    _child: tokio::process::Child,
}

/// Starts `callbot` (serve) and waits for the line that gives its address, or for it to
/// exit. A start also has to answer `/healthz`.
async fn start(env: &Env, args: &[&str]) -> Result<Server, String> {
    let mut child = command(env, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut seen = String::new();
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("callbot neither started nor exited: {env:?}\n{seen}"))
            .unwrap();
        let Some(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(addr) = line.strip_prefix("callbot: web console at http://") {
            let addr = addr.trim_end_matches('/').to_owned();
            // Keep reading stderr so the pipe never fills while the server runs.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            let health = reqwest::get(format!("http://{addr}/healthz")).await;
            let status = health.map(|r| r.status().as_u16());
            assert_eq!(status.ok(), Some(200), "{env:?}: /healthz\n{seen}");
            return Ok(Server {
                addr,
                banner: seen,
                _child: child,
            });
        }
    }
    let status = child.wait().await.unwrap();
    assert!(
        !status.success(),
        "serve stopped with {status}: {env:?}\n{seen}"
    );
    assert!(
        !seen.contains("panicked"),
        "serve panicked: {env:?}\n{seen}"
    );
    Err(seen)
}

async fn serve(env: &Env) -> Outcome {
    match start(env, &["serve"]).await {
        Ok(_server) => Outcome::Accepted,
        Err(text) => Outcome::Refused(text),
    }
}

/// Adds a free loopback port unless the case sets the address itself.
fn with_port(mut env: Env) -> Env {
    let sets_bind = env
        .iter()
        .any(|(k, _)| k == "CALLBOT_BIND" || k == "CALLBOT_SERVER__BIND");
    if !sets_bind {
        env.push(("CALLBOT_BIND".into(), format!("127.0.0.1:{}", free_port())));
    }
    env
}

/// Runs check-config and serve with `env`; returns a complaint, or `None` when they agree
/// and every refusal names `var`.
async fn agree(var: &str, env: Env) -> (Option<String>, bool) {
    let env = with_port(env);
    let (check, serve) = tokio::join!(check_config(&env), serve(&env));
    let accepted = check.accepted();
    if check.accepted() != serve.accepted() {
        return (
            Some(format!(
                "{env:?}: check-config {check:?} but serve {serve:?}"
            )),
            accepted,
        );
    }
    for outcome in [&check, &serve] {
        if let Outcome::Refused(text) = outcome
            && !text.contains(var)
        {
            return (
                Some(format!("{env:?}: the refusal does not name {var}:\n{text}")),
                accepted,
            );
        }
    }
    (None, accepted)
}

/// Every fake a variable can point at.
struct Fakes {
    twilio: FakeTwilio,
    telegram: FakeTelegram,
    slack: FakeSlack,
    openai: FakeOpenAi,
}

impl Fakes {
    async fn start() -> Self {
        Self {
            twilio: FakeTwilio::start().await,
            telegram: FakeTelegram::start().await,
            slack: FakeSlack::start().await,
            openai: FakeOpenAi::start().await,
        }
    }

    /// The rest of a working configuration for the adapter a variable belongs to.
    fn base(&self, var: &str) -> Env {
        if var.starts_with("TWILIO_") || var.starts_with("CALLBOT_TWILIO__") {
            env(&[
                ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
                ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
                ("TWILIO_FROM_NUMBER", FROM),
                ("TWILIO_API_BASE", &self.twilio.base),
            ])
        } else if var.starts_with("TELEGRAM_") {
            env(&[
                ("TELEGRAM_BOT_TOKEN", fake_telegram::TOKEN),
                ("TELEGRAM_API_URL", &self.telegram.base),
            ])
        } else if var.starts_with("SLACK_") {
            env(&[
                ("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN),
                ("SLACK_SIGNING_SECRET", fake_slack::SIGNING_SECRET),
                ("SLACK_API_URL", &self.slack.api_url),
            ])
        } else if var.starts_with("OPENAI_") {
            env(&[
                ("OPENAI_API_KEY", "sk-test"),
                ("OPENAI_BASE_URL", &self.openai.base),
            ])
        } else {
            Env::new()
        }
    }
}

/// One variable set to one value, over a working configuration.
struct Case {
    var: &'static str,
    value: &'static str,
    /// Whether callbot should start with it.
    starts: bool,
    /// More variables the case needs (`TELEGRAM_MODE=webhook` for the secret).
    with: &'static [(&'static str, &'static str)],
}

const fn case(var: &'static str, value: &'static str, starts: bool) -> Case {
    Case {
        var,
        value,
        starts,
        with: &[],
    }
}

/// The documented variables (README and DESIGN tables, the access and limit names) set to
/// awkward values: numbers, booleans, `+` numbers, empty, leading zeros.
const CASES: &[Case] = &[
    case("CALLBOT_BIND", "localhost:{port}", true),
    case("CALLBOT_BIND", "123456", false),
    case("CALLBOT_BIND", "true", false),
    case("CALLBOT_BIND", "", false),
    case("CALLBOT_PUBLIC_URL", "+15005550006", false),
    case("CALLBOT_PUBLIC_URL", "true", false),
    case("CALLBOT_PUBLIC_URL", "", true),
    case("CALLBOT_WEB_TOKEN", "123456", true),
    case("CALLBOT_WEB_TOKEN", "", false),
    case("CALLBOT_WEB_TOKEN", "   ", false),
    case("CALLBOT_DEFAULT_REGION", "1", false),
    case("CALLBOT_DEFAULT_REGION", "", false),
    case("CALLBOT_LOG_FORMAT", "json", true),
    case("CALLBOT_LOG_FORMAT", "true", false),
    case("CALLBOT_STORE", "redis", false),
    case("CALLBOT_STORE", "1", false),
    case("CALLBOT_STORE", "", false),
    case("REDIS_URL", "123456", true),
    case("CALLBOT_ACCESS__TELEGRAM_USERS", "123,456", true),
    case("CALLBOT_ACCESS__ALLOW_NUMBERS", "+14155550100", true),
    case("CALLBOT_ACCESS__ALLOW_NUMBERS", "14155550100", false),
    case("CALLBOT_ACCESS__ALLOW_NUMBERS", "true", false),
    case("CALLBOT_ACCESS__COUNTRIES", "1", false),
    case("CALLBOT_ACCESS__OPEN", "1", true),
    case("CALLBOT_ACCESS__OPEN", "maybe", false),
    case("CALLBOT_LIMITS__PER_USER_HOUR", "007", true),
    case("CALLBOT_LIMITS__PER_USER_HOUR", "abc", false),
    case("CALLBOT_LIMITS__PER_USER_HOUR", "-1", false),
    case("CALLBOT_LIMITS__PER_USER_DAY", "1.5", false),
    case("CALLBOT_CALLS__CPS", "0", false),
    case("CALLBOT_CALLS__DEFAULT_MESSAGE", "42", true),
    case("CALLBOT_CALLS__DEFAULT_MESSAGE", "", false),
    case("CALLBOT_CALLS__MACHINE_DETECTION", "message_end", true),
    case("CALLBOT_CALLS__MACHINE_DETECTION", "enable", true),
    case("CALLBOT_CALLS__MACHINE_DETECTION", "maybe", false),
    case("CALLBOT_CALLS__RECORD", "yes", true),
    case("CALLBOT_CALLS__RECORD", "maybe", false),
    case("CALLBOT_CALLS__RECORD_ANNOUNCEMENT", "", true),
    case("TWILIO_FROM_NUMBER", "+15005550006", true),
    case("TWILIO_FROM_NUMBER", "15005550006", false),
    case("TWILIO_FROM_NUMBER", "true", false),
    case("TWILIO_FROM_NUMBER", "", false),
    case("TWILIO_AUTH_TOKEN", "123456", true),
    case("TWILIO_AUTH_TOKEN", "", false),
    case("TWILIO_ACCOUNT_SID", "123456", false),
    case("TWILIO_ACCOUNT_SID", "true", false),
    case("TWILIO_API_BASE", "1", false),
    case("CALLBOT_TWILIO__MODE", "polling", true),
    case("CALLBOT_TWILIO__MODE", "auto", true),
    // Callbacks need a public URL; with one set they start.
    case("CALLBOT_TWILIO__MODE", "callbacks", false),
    Case {
        var: "CALLBOT_TWILIO__MODE",
        value: "callbacks",
        starts: true,
        with: &[("CALLBOT_PUBLIC_URL", "https://callbot.example.com")],
    },
    case("CALLBOT_TWILIO__MODE", "1", false),
    case("CALLBOT_TWILIO__POLL_MAX_REQUESTS", "007", true),
    case("CALLBOT_TWILIO__POLL_MAX_REQUESTS", "0", false),
    case("CALLBOT_TWILIO__POLL_PER_SECOND", "abc", false),
    case("CALLBOT_TWILIO__POLL_RINGING_MS", "5", false),
    case("TELEGRAM_BOT_TOKEN", "123456", false),
    case("TELEGRAM_BOT_TOKEN", "true", false),
    case("TELEGRAM_BOT_TOKEN", "", true),
    case("TELEGRAM_API_URL", "1", false),
    case("TELEGRAM_MODE", "true", false),
    case("TELEGRAM_MODE", "webhook", false),
    Case {
        with: &[("TELEGRAM_MODE", "webhook")],
        ..case("TELEGRAM_WEBHOOK_SECRET", "true", true)
    },
    Case {
        with: &[("TELEGRAM_MODE", "webhook")],
        ..case("TELEGRAM_WEBHOOK_SECRET", "+15005550006", false)
    },
    Case {
        with: &[("TELEGRAM_MODE", "webhook")],
        ..case("TELEGRAM_WEBHOOK_SECRET", "", false)
    },
    case("SLACK_BOT_TOKEN", "123456", false),
    case("SLACK_BOT_TOKEN", "true", false),
    case("SLACK_SIGNING_SECRET", "1234", true),
    case("SLACK_SIGNING_SECRET", "", false),
    case("SLACK_APP_TOKEN", "true", false),
    case("SLACK_APP_TOKEN", "123456", false),
    case("SLACK_API_URL", "1", false),
    case("OPENAI_MODEL", "1", true),
    case("OPENAI_MODEL", "", false),
    case("OPENAI_API_KEY", "123456", true),
    case("OPENAI_BASE_URL", "123456", false),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_variable_with_awkward_values_starts_or_is_refused_by_name_alike() {
    let fakes = Fakes::start().await;
    let runs = CASES.iter().map(|c| {
        let mut env = fakes.base(c.var);
        env.retain(|(k, _)| k != c.var);
        env.extend(self::env(c.with));
        let value = c.value.replace("{port}", &free_port().to_string());
        env.push((c.var.to_owned(), value.clone()));
        async move {
            let (complaint, accepted) = agree(c.var, env).await;
            match complaint {
                Some(c) => Some(c),
                None if accepted != c.starts => Some(format!(
                    "{}={value:?}: expected {}, but callbot {}",
                    c.var,
                    if c.starts { "a start" } else { "a refusal" },
                    if accepted { "started" } else { "refused" },
                )),
                None => None,
            }
        }
    });
    let problems: Vec<String> = futures::stream::iter(runs)
        .buffer_unordered(PARALLEL)
        .filter_map(|p| async { p })
        .collect()
        .await;
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Every key of `config/default.toml`, dotted (`calls.cps`).
fn default_keys() -> Vec<String> {
    fn walk(dict: &Dict, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in dict {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Dict(_, inner) => walk(inner, &key, out),
                _ => out.push(key),
            }
        }
    }
    let data = Toml::string(callbot::config::DEFAULT_TOML).data().unwrap();
    let mut keys = Vec::new();
    for dict in data.values() {
        walk(dict, "", &mut keys);
    }
    keys
}

/// Every key in config/default.toml, as `CALLBOT_SECTION__KEY`, set to each awkward value:
/// check-config and serve agree, and a refusal names the variable. Settings other branches
/// add get the same treatment with no change here. Refusals are cheap, so serve runs for
/// each; the accepted values of each kind start together in one serve (a start costs about
/// a second of CPU in a debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_from_the_environment_is_read_as_text_and_refused_by_its_name() {
    let keys = default_keys();
    assert!(keys.len() > 40, "{keys:?}");
    let values = ["123456", "true", "+15005550006", ""];
    let cases: Vec<(String, &str)> = keys
        .iter()
        .flat_map(|k| {
            let var = format!("CALLBOT_{}", k.to_ascii_uppercase().replace('.', "__"));
            values.iter().map(move |v| (var.clone(), *v))
        })
        .collect();
    let runs = cases.iter().map(|(var, value)| async move {
        let env = with_port(env(&[(var, value)]));
        match check_config(&env).await {
            Outcome::Accepted => (var, value, None),
            Outcome::Refused(text) => {
                let serve = serve(&env).await;
                let problem = if serve.accepted() {
                    Some(format!(
                        "{var}={value:?}: check-config refused but serve started:\n{text}"
                    ))
                } else if !text.contains(var.as_str()) {
                    Some(format!(
                        "{var}={value:?}: the refusal does not name it:\n{text}"
                    ))
                } else {
                    None
                };
                (var, value, Some(problem))
            }
        }
    });
    let results: Vec<_> = futures::stream::iter(runs)
        .buffer_unordered(PARALLEL * 2)
        .collect()
        .await;
    let mut problems: Vec<String> = results
        .iter()
        .filter_map(|(_, _, r)| r.clone().flatten())
        .collect();
    // The accepted ones, one serve per value with all of them at once.
    let mut accepted: BTreeMap<&str, Env> = BTreeMap::new();
    for (var, value, r) in &results {
        if r.is_none() {
            accepted
                .entry(value)
                .or_default()
                .push(((*var).clone(), (**value).to_owned()));
        }
    }
    assert!(
        accepted.get("123456").is_some_and(|e| e.len() > 10),
        "{accepted:?}"
    );
    for (value, env) in accepted {
        if let Outcome::Refused(text) = serve(&with_port(env.clone())).await {
            problems.push(format!(
                "check-config accepted each of these set to {value:?}, serve refused them together: {env:?}\n{text}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The README's real-call instructions, with Twilio's API at the fake: `export
/// TWILIO_FROM_NUMBER=+1…` and the rest, then a call from the web API reaches Twilio with
/// that caller id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_settings_from_the_environment_place_a_call_from_that_number() {
    let twilio = FakeTwilio::start().await;
    let env = with_port(env(&[
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_FROM_NUMBER", "+15005550006"),
        ("TWILIO_API_BASE", &twilio.base),
        ("CALLBOT_PUBLIC_URL", "https://callbot.example.com"),
    ]));
    assert!(check_config(&env).await.accepted());
    let server = start(&env, &[]).await.expect("callbot starts");
    let res = reqwest::Client::new()
        .post(format!("http://{}/ai_prompt", server.addr))
        .json(&serde_json::json!({ "command": "Call to +91 98765 43215" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202, "{}", res.text().await.unwrap());
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(create.get("From"), Some("+15005550006"));
    assert_eq!(create.get("To"), Some("+919876543215"));
    assert_eq!(
        create
            .get("Url")
            .map(|u| u.starts_with("https://callbot.example.com/twiml/")),
        Some(true),
        "{create:?}"
    );
}

/// A laptop with no tunnel: Twilio credentials and nothing else. check-config says the calls
/// are followed by polling (and does not warn about the missing public URL); the server
/// places a call with inline TwiML and no callback URL and follows it to its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_credentials_without_a_public_url_follow_calls_by_polling() {
    let twilio = FakeTwilio::start().await;
    twilio.move_on_get();
    let env = with_port(env(&[
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_FROM_NUMBER", FROM),
        ("TWILIO_API_BASE", &twilio.base),
        ("CALLBOT_TWILIO__POLL_RINGING_MS", "50"),
        ("CALLBOT_TWILIO__POLL_IN_PROGRESS_MS", "50"),
    ]));
    let out = command(&env, &["check-config"]).output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("call status:     polling mode (CALLBOT_PUBLIC_URL is unset): TwiML sent inline, no callbacks"),
        "{text}"
    );
    assert!(
        text.contains("every 50 ms while queued or ringing"),
        "{text}"
    );
    assert!(!text.contains("cannot reach"), "{text}");

    let server = start(&env, &[]).await.expect("callbot starts");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("http://{}/ai_prompt", server.addr))
        .json(&serde_json::json!({ "command": "Call to +91 98765 43213" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let call: serde_json::Value = res.json().await.unwrap();
    let create = twilio.wait_creates(1).await.remove(0);
    assert!(
        create.get("Twiml").is_some_and(|t| t.contains("<Say")),
        "{create:?}"
    );
    assert_eq!(create.get("Url"), None);
    assert_eq!(create.get("StatusCallback"), None);
    let url = format!(
        "http://{}/api/calls/{}",
        server.addr,
        call["id"].as_str().unwrap()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let shown: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        if shown["status"] == "completed" {
            assert_eq!(shown["duration_secs"], 3, "{shown}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--config FILE`: text in quotes stays text (`"+1…"`, `"007"`), a bare number where text
/// belongs is refused naming the file and key, and the environment still wins over the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_says_it_simulates_and_how_the_simulated_callee_answers() {
    let server = start(&with_port(env(&[])), &[])
        .await
        .expect("callbot starts");
    for told in [
        "SIMULATOR mode: no real calls are placed",
        "last digit: 0 busy, 1 no answer, 2 failed, 3-9 answers",
        "second-to-last digit: 7 says yes, 8 never answers, any other presses 1",
        "5 is a voicemail",
    ] {
        assert!(
            server.banner.contains(told),
            "{told:?} in\n{}",
            server.banner
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_file_is_read_like_the_environment_and_errors_name_the_file_and_key() {
    let twilio = FakeTwilio::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("callbot.toml");
    std::fs::write(
        &good,
        format!(
            "[server]\nweb_token = \"007\"\npublic_url = \"https://callbot.example.com\"\n\
             [twilio]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"123456\"\n\
             from_number = \"+15005550006\"\napi_base = \"{}\"\n\
             [calls]\ncps = \"007\"\n[access]\nallow_numbers = [\"+14155550100\"]\n",
            twilio.base
        ),
    )
    .unwrap();
    let good = good.to_str().unwrap().to_owned();
    let env = with_port(env(&[("CALLBOT_CALLS__VOICE", "true")]));
    let out = command(&env, &["--config", &good, "check-config"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("from +15005550006"), "{stdout}");
    assert!(stdout.contains("7 call(s)/s"), "{stdout}");
    assert!(stdout.contains("voice true"), "{stdout}");
    let server = start(&env, &["--config", &good]).await.expect("starts");
    assert!(
        !server.banner.contains("SIMULATOR"),
        "Twilio is configured: {}",
        server.banner
    );
    let res = reqwest::Client::new()
        .post(format!("http://{}/ai_prompt", server.addr))
        .bearer_auth("007")
        .json(&serde_json::json!({ "command": "Call to +91 98765 43216" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202, "{}", res.text().await.unwrap());
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(create.get("From"), Some("+15005550006"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[twilio]\nfrom_number = 15005550006\n").unwrap();
    let bad = bad.to_str().unwrap().to_owned();
    for args in [
        vec!["--config", &bad, "check-config"],
        vec!["--config", &bad],
    ] {
        let out = command(&env, &args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("twilio.from_number = 15005550006 in {bad}")),
            "{stderr}"
        );
        assert!(stderr.contains("in quotes"), "{stderr}");
    }
}

/// `config/example.env` loaded as the README says (`set -a; . ./.env`): check-config
/// accepts its placeholders and serve starts with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_env_file_as_written_is_accepted_by_check_config_and_serve() {
    let text = include_str!("../../config/example.env");
    let mut env: Env = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert!(
        env.iter()
            .any(|(k, v)| k == "TWILIO_FROM_NUMBER" && v.starts_with('+'))
    );
    for (k, v) in &mut env {
        if k == "CALLBOT_BIND" {
            *v = format!("127.0.0.1:{}", free_port());
        }
    }
    let (complaint, accepted) = agree("CALLBOT_", env).await;
    assert_eq!(complaint, None);
    assert!(accepted);
}

/// `CALLBOT_STORE=redis` as a user sets it up: without `REDIS_URL` both commands refuse and
/// name it; with a Redis that does not answer both refuse clearly without printing its
/// password; with a working one check-config shows its version and two `serve` processes
/// share their calls.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_from_the_environment_is_checked_and_shared_by_two_processes() {
    let Some(redis) = crate::support::redis::TestRedis::get("binary redis store") else {
        return;
    };
    let without_url = with_port(env(&[("CALLBOT_STORE", "redis")]));
    for outcome in [check_config(&without_url).await, serve(&without_url).await] {
        let Outcome::Refused(text) = outcome else {
            panic!("accepted without REDIS_URL")
        };
        assert!(text.contains("REDIS_URL"), "{text}");
    }

    let unreachable = format!("redis://:hunter2-secret@127.0.0.1:{}/0", free_port());
    let down = with_port(env(&[
        ("CALLBOT_STORE", "redis"),
        ("REDIS_URL", &unreachable),
    ]));
    for outcome in [check_config(&down).await, serve(&down).await] {
        let Outcome::Refused(text) = outcome else {
            panic!("accepted an unreachable Redis")
        };
        assert!(
            text.contains("could not connect to Redis at redis://:redacted@127.0.0.1"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "the password is printed: {text}");
    }

    let shared = env(&[
        ("CALLBOT_STORE", "redis"),
        ("REDIS_URL", &redis.url),
        ("CALLBOT_STORE__REDIS_PREFIX", &redis.prefix),
        ("CALLBOT_SIMULATOR__SPEED", "0.01"),
    ]);
    let out = command(&shared, &["check-config"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("redis:           Redis "), "{text}");
    let a = start(&with_port(shared.clone()), &[])
        .await
        .expect("A starts");
    let b = start(&with_port(shared), &[]).await.expect("B starts");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("http://{}/ai_prompt", a.addr))
        .json(&serde_json::json!({ "command": "Call to +91 98765 43215" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let placed: serde_json::Value = res.json().await.unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    crate::support::until(
        Duration::from_secs(20),
        "B lists A's call, completed",
        async || {
            let listed: serde_json::Value = http
                .get(format!("http://{}/api/calls", b.addr))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            listed.to_string().contains(&id) && listed.to_string().contains("completed")
        },
    )
    .await;
}

/// Two `callbot` processes on one Redis, configured by the environment alone: A (one call a
/// second) is killed with SIGKILL while its queue is full; B, started at the address Twilio
/// calls back (the load balancer's), finishes A's queue: every call ends, each created once.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_redis_one_killed_with_sigkill_and_the_other_finishes_its_queue() {
    let Some(redis) = crate::support::redis::TestRedis::get("binary: two processes on redis")
    else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let public_url = format!("http://127.0.0.1:{port_b}");
    let shared = env(&[
        ("CALLBOT_STORE", "redis"),
        ("REDIS_URL", &redis.url),
        ("CALLBOT_STORE__REDIS_PREFIX", &redis.prefix),
        ("CALLBOT_STORE__CLAIM_MS", "1000"),
        ("CALLBOT_PUBLIC_URL", &public_url),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_FROM_NUMBER", FROM),
        ("TWILIO_API_BASE", &twilio.base),
        ("CALLBOT_LIMITS__MAX_CONCURRENT", "1000"),
        ("CALLBOT_LIMITS__GLOBAL_HOUR", "1000"),
        ("CALLBOT_LIMITS__GLOBAL_DAY", "1000"),
    ]);
    let with = |extra: &[(&str, &str)]| {
        let mut e = shared.clone();
        e.extend(env(extra));
        e
    };
    let mut a = start(
        &with(&[
            ("CALLBOT_BIND", &format!("127.0.0.1:{port_a}")),
            ("CALLBOT_CALLS__CPS", "1"),
        ]),
        &[],
    )
    .await
    .expect("A starts");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let res = http
            .post(format!("http://{}/ai_prompt", a.addr))
            .json(&serde_json::json!({ "command": format!("call +91 98702 {i:05}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
        let body: serde_json::Value = res.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    twilio.wait_creates(2).await;
    a._child.start_kill().unwrap(); // SIGKILL
    a._child.wait().await.unwrap();
    let created_by_a = twilio.creates().len();
    assert!(created_by_a < 5, "A's queue was still full: {created_by_a}");

    let b = start(
        &with(&[
            ("CALLBOT_BIND", &format!("127.0.0.1:{port_b}")),
            ("CALLBOT_CALLS__CPS", "50"),
        ]),
        &[],
    )
    .await
    .expect("B starts");
    let _twilio_plays = twilio.autoplay();
    crate::support::until(
        Duration::from_secs(60),
        "every call ends on B",
        async || {
            for id in &ids {
                let call: serde_json::Value = http
                    .get(format!("http://{}/api/calls/{id}", b.addr))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if !matches!(
                    call["status"].as_str(),
                    Some("completed" | "busy" | "no-answer")
                ) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    twilio.no_creates_beyond(20, crate::support::QUIET).await;
    for id in &ids {
        let creates = twilio
            .creates()
            .iter()
            .filter(|c| c.get("Url").is_some_and(|u| u.ends_with(id.as_str())))
            .count();
        assert_eq!(creates, 1, "{id} created once");
    }
}

/// The callee settings from the environment alone: check-config shows them, and `serve`
/// places a call with async AMD (`DetectMessageEnd`) and a recording, whose TwiML waits for
/// the detection result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_detection_and_recording_from_the_environment_reach_the_create_request() {
    let twilio = FakeTwilio::start().await;
    // Both need Twilio's callbacks: a public URL (here the bound address itself).
    let bind = format!("127.0.0.1:{}", free_port());
    let public = format!("http://{bind}");
    let env = with_port(env(&[
        ("CALLBOT_BIND", &bind),
        ("CALLBOT_PUBLIC_URL", &public),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_FROM_NUMBER", FROM),
        ("TWILIO_API_BASE", &twilio.base),
        ("CALLBOT_CALLS__MACHINE_DETECTION", "message_end"),
        ("CALLBOT_CALLS__RECORD", "true"),
        (
            "CALLBOT_CALLS__RECORD_ANNOUNCEMENT",
            "Recorded for quality.",
        ),
    ]));
    let out = command(&env, &["check-config"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("machine detection message_end, recording on"),
        "{stdout}"
    );
    // Without the public URL Twilio is polled, and neither can work: refused by name.
    let mut polled = env.clone();
    polled.retain(|(k, _)| k != "CALLBOT_PUBLIC_URL");
    let out = command(&polled, &["check-config"]).output().await.unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    for var in ["CALLBOT_CALLS__MACHINE_DETECTION", "CALLBOT_CALLS__RECORD"] {
        assert!(said.contains(var), "{var}: {said}");
    }
    assert!(said.contains("needs Twilio to call callbot back"), "{said}");
    let server = start(&env, &["serve"]).await.expect("starts");
    let res = reqwest::Client::new()
        .post(format!("http://{}/ai_prompt", server.addr))
        .json(&serde_json::json!({ "command": "Call +91 98765 43216 and say hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202, "{}", res.text().await.unwrap());
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(create.get("MachineDetection"), Some("DetectMessageEnd"));
    assert_eq!(create.get("AsyncAmd"), Some("true"));
    assert_eq!(create.get("Record"), Some("true"));
    assert!(
        create
            .get("RecordingStatusCallback")
            .is_some_and(|u| u.contains("/webhooks/recording?call_id="))
    );
    let (status, twiml) = twilio.fetch_twiml(&create).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Redirect"), "{twiml}");
    // The AMD result: the message follows the announcement.
    let form = twilio.amd_form(&create, "machine_end_beep");
    assert_eq!(
        twilio
            .send_to(&create, "AsyncAmdStatusCallback", &form)
            .await,
        200
    );
    let (_, twiml) = twilio.fetch_twiml(&create).await;
    assert!(
        twiml.contains(
            ">Recorded for quality.</Say><Say voice=\"alice\" language=\"en-US\">hi</Say>"
        ),
        "{twiml}"
    );
}

/// The `[voices]` table from the environment only: `CALLBOT_VOICES__HI_IN` is the language
/// hi-IN. check-config lists it, a call asked "in Hindi" is served with its voice, a language
/// not in it is refused with the list, and a bad entry is refused by its variable's name by
/// check-config and serve alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voices_table_from_the_environment_speaks_a_call_in_hindi() {
    let twilio = FakeTwilio::start().await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let public = format!("http://{bind}");
    let mut vars = env(&[
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_FROM_NUMBER", "+15005550006"),
        ("TWILIO_API_BASE", &twilio.base),
        ("CALLBOT_BIND", &bind),
        ("CALLBOT_PUBLIC_URL", &public),
        ("CALLBOT_VOICES__HI_IN", "Polly.Aditi"),
        ("CALLBOT_VOICES__EN_IN", "Polly.Raveena"),
    ]);
    let out = command(&vars, &["check-config"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "voices:          en-IN Polly.Raveena, en-US alice (default), hi-IN Polly.Aditi"
        ),
        "{text}"
    );

    let server = start(&vars, &[]).await.expect("callbot starts");
    let http = reqwest::Client::new();
    let prompt = |command: &'static str| {
        http.post(format!("http://{}/ai_prompt", server.addr))
            .json(&serde_json::json!({ "command": command }))
            .send()
    };
    let res = prompt("Call +91 98765 43215 in Hindi and say namaste")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202, "{}", res.text().await.unwrap());
    let create = twilio.wait_creates(1).await.remove(0);
    let (status, xml) = twilio.fetch_twiml(&create).await;
    assert_eq!(status, 200, "{xml}");
    let (_, says) = crate::support::twiml::parse_twiml(&xml);
    assert_eq!(
        says[0].attrs,
        [
            ("voice".to_owned(), "Polly.Aditi".to_owned()),
            ("language".to_owned(), "hi-IN".to_owned())
        ]
    );
    let res = prompt("Call +91 98765 43215 in Tamil and say vanakkam")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["error"],
        "I have no voice for “Tamil”. The languages set up are: English (en-IN), English (en-US), Hindi (hi-IN)."
    );
    drop(server);

    // A voice that is no voice name, a key that is no language tag: refused by name.
    vars.retain(|(k, _)| k != "CALLBOT_BIND");
    for (var, value) in [
        ("CALLBOT_VOICES__HI_IN", "Polly Aditi"),
        ("CALLBOT_VOICES__HINDUSTANI_IN", "Polly.Aditi"),
        ("CALLBOT_VOICES__HI_IN", ""),
    ] {
        let mut bad = vars.clone();
        bad.retain(|(k, _)| k != var);
        bad.push((var.to_owned(), value.to_owned()));
        let (problem, accepted) = agree(var, bad).await;
        assert_eq!(problem, None);
        assert!(!accepted, "{var}={value:?} was accepted");
    }
}
