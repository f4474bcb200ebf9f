//! The callee's side (issue 19): answering-machine detection and recordings, end to end.
//! The real Twilio client against the fake Twilio (which checks Basic auth on the recording's
//! audio), Telegram through teloxide against its fake, Slack against its fake with the
//! simulator playing the callee. Callbacks are signed as Twilio signs them; forged ones are
//! refused and change nothing; repeated and reordered ones post once.

use std::time::Duration;

use callbot::Settings;
use callbot::calls::store::ListFilter;
use callbot::core::call::{Call, CallStatus, MachineDetection};
use serde_json::Value;

use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
use crate::support::fake_twilio::Recorded;
use crate::support::{FakeTwilio, TestApp, stays_false, twilio_settings};
use crate::telegram::ALICE;

const WEB_TOKEN: &str = "callee-web-token-0123456789";

struct Env {
    app: TestApp,
    tg: FakeTelegram,
    twilio: FakeTwilio,
}

async fn spawn(configure: impl FnOnce(&mut Settings)) -> Env {
    let twilio = FakeTwilio::start().await;
    let tg = FakeTelegram::start().await;
    let mut s = twilio_settings(&twilio);
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![ALICE.id.to_string()];
    s.server.web_token = Some(WEB_TOKEN.to_owned().into());
    configure(&mut s);
    let app = TestApp::spawn(s).await;
    Env { app, tg, twilio }
}

impl Env {
    /// Asks for a call in Telegram; returns Twilio's view of the create and our call.
    async fn call(&self, text: &str) -> (Recorded, Call) {
        let before = self.twilio.creates().len();
        self.tg.push(self.tg.text(Chat::Private, ALICE, text));
        let create = self.twilio.wait_creates(before + 1).await[before].clone();
        let calls = self
            .app
            .service
            .list(1, &ListFilter::default())
            .await
            .unwrap();
        let id = calls[0].id.clone();
        let call = self
            .app
            .wait_for(&id, Duration::from_secs(15), |c| c.sid.is_some())
            .await;
        (create, call)
    }

    async fn status(&self, create: &Recorded, status: &str, seq: u64, extra: &[(&str, &str)]) {
        let form = self.twilio.callback(create, status, seq, extra);
        assert_eq!(self.twilio.send_callback(create, &form).await, 200);
    }

    async fn api(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.app.http.get(format!("{}{path}", self.app.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }
}

/// The create-call parameters of Twilio's OpenAPI description (`Calls.json`, POST).
fn openapi_create_params() -> serde_json::Map<String, Value> {
    let spec: Value =
        serde_json::from_str(include_str!("../data/twilio/twilio-calls-openapi.json")).unwrap();
    let post = &spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Calls.json"]["post"];
    post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn create_parameters_follow_the_settings_and_twilios_openapi() {
    let known = openapi_create_params();
    for (detection, record) in [
        (MachineDetection::Off, false),
        (MachineDetection::Enable, false),
        (MachineDetection::MessageEnd, true),
    ] {
        let env = spawn(|s| {
            s.calls.machine_detection = detection;
            s.calls.record = record;
        })
        .await;
        let (create, call) = env.call("call +91 98765 43210 and say hi").await;
        assert_eq!(call.machine_detection, detection);
        assert_eq!(call.record, record);
        for (name, _) in &create.form {
            assert!(
                known.contains_key(name),
                "{name} is not a create-call parameter"
            );
        }
        let amd = [
            "MachineDetection",
            "AsyncAmd",
            "AsyncAmdStatusCallback",
            "AsyncAmdStatusCallbackMethod",
        ];
        match detection {
            MachineDetection::Off => {
                assert!(amd.iter().all(|k| create.get(k).is_none()), "{create:?}")
            }
            _ => {
                let expected = if detection == MachineDetection::Enable {
                    "Enable"
                } else {
                    "DetectMessageEnd"
                };
                assert_eq!(create.get("MachineDetection"), Some(expected));
                assert_eq!(create.get("AsyncAmd"), Some("true"));
                assert_eq!(
                    create.get("AsyncAmdStatusCallback"),
                    Some(format!("{}/webhooks/amd?call_id={}", env.app.base, call.id).as_str())
                );
                assert_eq!(create.get("AsyncAmdStatusCallbackMethod"), Some("POST"));
            }
        }
        let rec = [
            "Record",
            "RecordingStatusCallback",
            "RecordingStatusCallbackMethod",
            "RecordingStatusCallbackEvent",
        ];
        if record {
            assert_eq!(create.get("Record"), Some("true"));
            assert_eq!(
                create.get("RecordingStatusCallback"),
                Some(format!("{}/webhooks/recording?call_id={}", env.app.base, call.id).as_str())
            );
            assert_eq!(create.get("RecordingStatusCallbackMethod"), Some("POST"));
            assert_eq!(create.all("RecordingStatusCallbackEvent"), ["completed"]);
        } else {
            assert!(rec.iter().all(|k| create.get(k).is_none()), "{create:?}");
        }
        // The methods are among the values the description allows.
        for key in [
            "AsyncAmdStatusCallbackMethod",
            "RecordingStatusCallbackMethod",
        ] {
            if let Some(v) = create.get(key) {
                assert!(known[key]["enum"].as_array().unwrap().contains(&v.into()));
            }
        }
    }
}

#[tokio::test]
async fn message_end_waits_for_the_beep_then_leaves_the_message_and_says_so_once() {
    let env = spawn(|s| s.calls.machine_detection = MachineDetection::MessageEnd).await;
    let (create, call) = env
        .call("call +91 98765 43210 and say the parcel is at the gate")
        .await;
    let twilio = &env.twilio;
    env.status(&create, "initiated", 0, &[]).await;
    env.status(&create, "ringing", 1, &[]).await;
    env.status(&create, "in-progress", 2, &[]).await;

    // Async AMD runs the TwiML at once: it holds the call and comes back, saying nothing yet.
    let (status, twiml) = twilio.fetch_twiml(&create).await;
    assert_eq!(status, 200);
    assert!(!twiml.contains("<Say"), "{twiml}");
    assert!(twiml.contains("<Pause length=\"1\"/>"), "{twiml}");
    let redirect = format!("<Redirect method=\"POST\">{}?wait=1</Redirect>", call.id);
    assert!(twiml.contains(&redirect), "{twiml}");
    let next = format!("{}/twiml/{}?wait=1", env.app.base, call.id);

    // A forged result is refused and changes nothing.
    let form = twilio.amd_form(&create, "human");
    let url = create.get("AsyncAmdStatusCallback").unwrap();
    let forged = twilio.post_signed(url, &form, Some("not-the-token")).await;
    assert_eq!(forged.status().as_u16(), 403);
    let unsigned = env.app.http.post(url).form(&form).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);
    assert_eq!(env.app.call(&call.id).await.answered_by, None);
    let form = twilio.callback(&create, "in-progress", 0, &[]);
    let again = twilio
        .post_signed(&next, &form, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(again.contains("?wait=2</Redirect>"), "{again}");

    // The beep: the next round speaks the message. Repeated, then a different (late) result:
    // the first one stays.
    let beep = twilio.amd_form(&create, "machine_end_beep");
    assert_eq!(
        twilio
            .send_to(&create, "AsyncAmdStatusCallback", &beep)
            .await,
        200
    );
    assert_eq!(
        twilio
            .send_to(&create, "AsyncAmdStatusCallback", &beep)
            .await,
        200
    );
    let human = twilio.amd_form(&create, "human");
    assert_eq!(
        twilio
            .send_to(&create, "AsyncAmdStatusCallback", &human)
            .await,
        200
    );
    let spoken = twilio
        .post_signed(&next, &form, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        spoken.contains(">the parcel is at the gate</Say>"),
        "{spoken}"
    );
    assert!(!spoken.contains("<Redirect"), "{spoken}");
    env.tg
        .wait_edit("voicemail answered, waiting for the beep")
        .await;

    twilio.complete_shuffled(&create, 19).await;
    env.tg.wait_message("reached voicemail").await;
    stays_false("a second outcome", async || {
        env.tg
            .transcript_from(0)
            .iter()
            .filter(|l| l.starts_with("sendMessage") && l.contains("reached voicemail"))
            .count()
            > 1
    })
    .await;
    // The messages in the chat (the status message's edits were awaited above).
    let messages: Vec<String> = env
        .tg
        .transcript_from(0)
        .into_iter()
        .filter(|l| l.starts_with("sendMessage") || l.contains("reached"))
        .collect();
    insta::assert_snapshot!(messages.join("\n"), @r#"
    sendMessage ↩ "call +91 98765 43210 and say the parcel is at the gate": 📞 Calling +91 98765 43210… [✖️ Cancel]
    editMessageText "📞 Calling +91 98765 43210…": 📼 Call to +91 98765 43210 reached voicemail, left the message, 0:19.
    sendMessage ↩ "call +91 98765 43210 and say the parcel is at the gate": 📼 Call to +91 98765 43210 reached voicemail, left the message, 0:19.
    "#);

    let call = env.app.call(&call.id).await;
    assert_eq!(call.answered_by.as_deref(), Some("machine_end_beep"));
    let json: Value = env
        .api(&format!("/api/calls/{}", call.id), Some(WEB_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["answered_by"], "machine_end_beep");
    assert_eq!(json["machine_detection"], "message_end");
}

#[tokio::test]
async fn a_detection_result_that_arrives_after_the_final_status_still_shapes_the_outcome() {
    let env = spawn(|s| s.calls.machine_detection = MachineDetection::Enable).await;
    let (create, call) = env.call("call +91 98765 43210 and say hi").await;
    // `enable` plays the message at once, no waiting.
    let (_, twiml) = env.twilio.fetch_twiml(&create).await;
    assert!(twiml.contains(">hi</Say>"), "{twiml}");
    env.status(&create, "in-progress", 2, &[]).await;
    env.status(&create, "completed", 3, &[("CallDuration", "5")])
        .await;
    assert_eq!(env.app.call(&call.id).await.status, CallStatus::Completed);
    // The result's callback was overtaken by the final one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let human = env.twilio.amd_form(&create, "human");
    assert_eq!(
        env.twilio
            .send_to(&create, "AsyncAmdStatusCallback", &human)
            .await,
        200
    );
    env.tg.wait_message("answered by a person, 0:05").await;
    assert_eq!(
        env.app.call(&call.id).await.answered_by.as_deref(),
        Some("human")
    );
}

#[tokio::test]
async fn a_recording_is_announced_posted_once_and_streamed_behind_the_token() {
    let env = spawn(|s| {
        s.calls.record = true;
        s.calls.record_announcement = "This call is recorded.".into();
    })
    .await;
    let (create, call) = env.call("call +91 98765 43210 and say hello").await;
    let twilio = &env.twilio;
    let (_, twiml) = twilio.fetch_twiml(&create).await;
    let announced = twiml.find(">This call is recorded.</Say>").expect(&twiml);
    assert!(announced < twiml.find(">hello</Say>").unwrap(), "{twiml}");
    twilio.complete_shuffled(&create, 7).await;
    env.tg.wait_message("completed, 0:07").await;

    let recording_sid = format!("RE{:032x}", 0xfeed_u128);
    let audio = b"ID3\x04fake mp3 bytes of the call".to_vec();
    twilio.add_recording(&recording_sid, &audio);
    let form = twilio.recording_form(&create, &recording_sid, 7);
    let url = create.get("RecordingStatusCallback").unwrap();
    let forged = twilio.post_signed(url, &form, Some("not-the-token")).await;
    assert_eq!(forged.status().as_u16(), 403);
    assert!(env.app.call(&call.id).await.recording.is_none());
    for _ in 0..2 {
        assert_eq!(
            twilio
                .send_to(&create, "RecordingStatusCallback", &form)
                .await,
            200
        );
    }
    let link = format!("{}/api/calls/{}/recording", env.app.base, call.id);
    env.tg
        .wait_message(&format!(
            "🎙️ Recording of the call to +91 98765 43210 (0:07): {link}"
        ))
        .await;
    stays_false("a second recording message", async || {
        env.tg
            .transcript_from(0)
            .iter()
            .filter(|l| l.contains("🎙️"))
            .count()
            > 1
    })
    .await;
    // Twilio's own address of the media is nowhere: not in the thread, not in the API.
    let transcript = env.tg.transcript_from(0).join("\n");
    assert!(!transcript.contains("Recordings/"), "{transcript}");
    let path = format!("/api/calls/{}", call.id);
    let json = env.api(&path, Some(WEB_TOKEN)).await.text().await.unwrap();
    assert!(
        !json.contains("Recordings/") && !json.contains(&twilio.base),
        "{json}"
    );
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["recording"]["duration_secs"], 7);
    assert_eq!(
        json["recording"]["url"],
        format!("/api/calls/{}/recording", call.id)
    );

    // The audio: behind the web token, fetched with the account's credentials.
    let path = format!("/api/calls/{}/recording", call.id);
    assert_eq!(env.api(&path, None).await.status().as_u16(), 401);
    assert_eq!(twilio.recording_gets().len(), 0);
    let res = env.api(&path, Some(WEB_TOKEN)).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "audio/mpeg");
    assert_eq!(res.bytes().await.unwrap().as_ref(), audio.as_slice());
    let gets = twilio.recording_gets();
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].path,
        format!(
            "/2010-04-01/Accounts/{}/Recordings/{recording_sid}.mp3",
            crate::support::ACCOUNT_SID
        )
    );
    let unknown = env
        .api("/api/calls/NoSuchCall/recording", Some(WEB_TOKEN))
        .await;
    assert_eq!(unknown.status().as_u16(), 404);

    // Twilio fails to give the audio (here: it has none): a clear 502, no Twilio URL in it.
    let (create2, call2) = env.call("call +91 98765 43211 and say bye").await;
    twilio.complete_shuffled(&create2, 3).await;
    let missing = format!("RE{:032x}", 0xdead_u128);
    let form = twilio.recording_form(&create2, &missing, 3);
    assert_eq!(
        twilio
            .send_to(&create2, "RecordingStatusCallback", &form)
            .await,
        200
    );
    env.app
        .wait_for(&call2.id, Duration::from_secs(5), |c| c.recording.is_some())
        .await;
    let res = env
        .api(
            &format!("/api/calls/{}/recording", call2.id),
            Some(WEB_TOKEN),
        )
        .await;
    assert_eq!(res.status().as_u16(), 502);
    let body: Value = res.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("could not be fetched") && error.contains("not found"),
        "{error}"
    );
    assert!(!error.contains(&twilio.base), "{error}");
}

#[tokio::test]
async fn a_call_that_was_not_recorded_has_no_recording() {
    let env = spawn(|_| {}).await;
    let (create, call) = env.call("call +91 98765 43210 and say hello").await;
    assert_eq!(create.get("Record"), None);
    let (_, twiml) = env.twilio.fetch_twiml(&create).await;
    assert!(!twiml.contains("recorded"), "{twiml}");
    let res = env
        .api(
            &format!("/api/calls/{}/recording", call.id),
            Some(WEB_TOKEN),
        )
        .await;
    assert_eq!(res.status().as_u16(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "This call was not recorded.");
}

#[cfg(feature = "slack")]
#[tokio::test]
async fn in_slack_the_simulated_voicemail_and_person_and_the_recording_reach_the_thread() {
    use crate::slack::{ALICE as SLACK_ALICE, CHANNEL, TEAM, with_slack};
    use crate::support::fake_slack::{FakeSlack, SIGNING_SECRET, signature};

    let slack = FakeSlack::start().await;
    let mut s = with_slack(crate::support::settings(), &slack);
    s.calls.machine_detection = MachineDetection::MessageEnd;
    s.calls.record = true;
    let app = TestApp::spawn(s).await;
    let thread = "1600000000.000100";
    let event = |id: &str, ts: &str, number: &str| {
        let body = serde_json::json!({
            "token": "legacy", "team_id": TEAM, "api_app_id": "A0APP", "type": "event_callback",
            "event_id": id, "event_time": chrono::Utc::now().timestamp(),
            "event": {
                "type": "app_mention", "user": SLACK_ALICE, "ts": ts, "thread_ts": thread,
                "channel": CHANNEL, "event_ts": ts,
                "text": format!("<@U0BOT> call {number} and say the parcel is here"),
            },
        })
        .to_string();
        let now = chrono::Utc::now().timestamp().to_string();
        app.http
            .post(format!("{}/slack/events", app.base))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", &now)
            .header("x-slack-signature", signature(SIGNING_SECRET, &now, &body))
            .body(body)
    };
    // Second-to-last digit 5: a voicemail to the simulator; else a person.
    let res = event("Ev1", "1600000000.000200", "+91 98765 43259")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let posted = |needle: &'static str| {
        let slack = &slack;
        async move {
            slack
                .wait_for(needle, |r| {
                    r.method == "chat.postMessage" && r.text().contains(needle)
                })
                .await
        }
    };
    let voicemail = posted("reached voicemail, left the message").await;
    assert_eq!(voicemail.get("thread_ts"), Some(thread));
    assert!(voicemail.text().starts_with(&format!("<@{SLACK_ALICE}> ")));
    let recording = posted("🎙️ Recording of the call to +91 98765 43259").await;
    assert_eq!(recording.get("thread_ts"), Some(thread));
    let res = event("Ev2", "1600000000.000300", "+91 98765 43219")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    posted("answered by a person").await;

    // The link in the thread plays the simulator's audio (loopback: no token needed).
    let link = recording
        .text()
        .split(": ")
        .last()
        .unwrap()
        .trim_end_matches('>')
        .trim_start_matches('<')
        .to_owned();
    let res = app.http.get(&link).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{link}");
    assert_eq!(res.headers()["content-type"], "audio/wav");
    assert!(res.bytes().await.unwrap().starts_with(b"RIFF"));
    let calls = app.service.list(10, &ListFilter::default()).await.unwrap();
    let by = |n: &str| {
        calls
            .iter()
            .find(|c| c.to.e164() == n)
            .and_then(|c| c.answered_by.clone())
    };
    assert_eq!(by("+919876543259").as_deref(), Some("machine_end_beep"));
    assert_eq!(by("+919876543219").as_deref(), Some("human"));
}
