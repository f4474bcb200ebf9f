//! The built-in call simulator: the embedded default when no Twilio credentials are set.
//!
//! From the outside it behaves like Twilio: `place` returns a sid at once, then a task
//! fetches our TwiML over HTTP and posts signed status callbacks to `/webhooks/status`, so
//! the production webhook path runs. The outcome depends on the number's last digit:
//!
//! | last digit | outcome |
//! |---|---|
//! | 0 | busy |
//! | 1 | no-answer |
//! | 2 | failed (SIP 404) |
//! | 3–9 | completed, talking for (2 + digit) seconds |
//!
//! With `calls.machine_detection` on, a number whose second-to-last digit is 5 is a
//! voicemail: the simulator posts the signed answering-machine callback as Twilio would
//! (`machine_end_beep` with `message_end`, `machine_start` with `enable`) after a two-second
//! greeting; any other answered number is a `human` after half a second. It follows the
//! TwiML's `<Redirect>` (after its `<Pause>`) as Twilio does. With `calls.record` it posts a
//! signed recording callback after the call, and serves a generated tone as the audio.
//!
//! A call with a question is answered after its message by the number's second-to-last
//! digit ([`Callee`]): 7 says "yes" (confidence 0.9), 8 never answers (the empty post of the
//! second `<Gather>`), any other presses 1.
//!
//! Timing is realistic at `speed = 1.0` (about 1 s to initiate and ring) and scales down
//! for tests. With `chaos`, every callback is sent twice and all of them in shuffled order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use rand::seq::SliceRandom as _;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::twilio::signature::{SignatureVerifier, sign};
use super::twilio::webhook::{
    self, TwilioHooks, amd_callback_url, recording_callback_url, status_callback_url, twiml_url,
};
use super::twilio::wire;
use super::{Plug, PlugContext};
use crate::calls::{Audio, Hangup, Placed, Telephony, TelephonyError};
use crate::config::SimulatorSettings;
use crate::core::call::{Call, CallId, CallSid, CallStatus, MachineDetection, StatusUpdate};

/// The caller id of simulated calls (Twilio's magic test number).
pub const SIMULATOR_FROM: &str = "+15005550006";

/// The simulator plugged in: it posts Twilio-shaped callbacks, so Twilio's webhook routes
/// serve it, checking signatures made with a token drawn at random for this run.
pub fn plug(section: &SimulatorSettings, ctx: PlugContext<'_>) -> Plug {
    warn!("SIMULATOR: no Twilio credentials are set, so no real calls are placed");
    let token: SecretString = format!("{:032x}", rand::random::<u128>()).into();
    let hooks = TwilioHooks::new(
        SignatureVerifier::new(token.clone(), ctx.public_url),
        ctx.body,
    )
    .with_announcement(&ctx.calls.record_announcement);
    Plug {
        telephony: Arc::new(Simulator::new(
            ctx.public_url,
            token,
            section.speed,
            section.chaos,
        )),
        routes: webhook::routes(Arc::new(hooks)),
        from: SIMULATOR_FROM.to_owned(),
        polling: None,
    }
}

/// The account sid the simulator signs its callbacks as.
pub const SIMULATOR_ACCOUNT: &str = "ACsimulator0000000000000000000000";

pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    public_url: String,
    token: SecretString,
    speed: f64,
    chaos: bool,
    /// Calls still running: their hang-up switch and last reported status.
    live: Mutex<HashMap<CallSid, (CancellationToken, CallStatus)>>,
    /// Recordings made, by sid (their audio is a generated tone).
    recordings: Mutex<std::collections::HashSet<String>>,
}

/// What the simulated callee does, from the number's last digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Busy,
    NoAnswer,
    Failed,
    Answer { talk_secs: u32 },
}

impl Outcome {
    pub fn for_number(e164: &str) -> Self {
        match e164.chars().last().and_then(|c| c.to_digit(10)) {
            Some(0) => Self::Busy,
            Some(1) => Self::NoAnswer,
            Some(2) => Self::Failed,
            Some(d) => Self::Answer { talk_secs: 2 + d },
            None => Self::Failed,
        }
    }
}

/// How the simulated callee answers a question, from the number's second-to-last digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee {
    /// 6, and any digit but 7 and 8: presses 1.
    Key,
    /// 7: says "yes" (confidence 0.9).
    Voice,
    /// 8: never answers.
    Silent,
}

impl Callee {
    pub fn for_number(e164: &str) -> Self {
        match e164.chars().rev().nth(1).and_then(|c| c.to_digit(10)) {
            Some(7) => Self::Voice,
            Some(8) => Self::Silent,
            _ => Self::Key,
        }
    }

    /// The fields of its `<Gather>` post.
    fn answer(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Self::Key => vec![("Digits", "1")],
            Self::Voice => vec![("SpeechResult", "yes"), ("Confidence", "0.9")],
            Self::Silent => vec![],
        }
    }
}

/// The `action` of the first `<Gather>` in `twiml`, unescaped.
fn gather_action(twiml: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(twiml);
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"Gather" => {
                let action = e.try_get_attribute("action").ok()??;
                return action.unescape_value().ok().map(|v| v.into_owned());
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

impl Simulator {
    /// `token` signs the callbacks; the webhook verifier must use the same one.
    pub fn new(public_url: &str, token: SecretString, speed: f64, chaos: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                http: reqwest::Client::new(),
                public_url: public_url.trim_end_matches('/').to_owned(),
                token,
                speed,
                chaos,
                live: Mutex::new(HashMap::new()),
                recordings: Mutex::default(),
            }),
        }
    }
}

#[async_trait]
impl Telephony for Simulator {
    async fn place(&self, call: &Call) -> Result<Placed, TelephonyError> {
        let sid = CallSid::new(&format!("CA{:032x}", rand::random::<u128>()));
        let hangup = CancellationToken::new();
        self.inner
            .live
            .lock()
            .insert(sid.clone(), (hangup.clone(), CallStatus::Queued));
        let inner = self.inner.clone();
        let script = Script {
            id: call.id.clone(),
            sid: sid.clone(),
            to: call.to.e164().to_owned(),
            from: call.from.to_string(),
            outcome: Outcome::for_number(call.to.e164()),
            detection: call.machine_detection,
            voicemail: is_voicemail(call.to.e164()),
            record: call.record,
        };
        tokio::spawn(async move {
            script.run(&inner, hangup).await;
            inner.live.lock().remove(&script.sid);
        });
        Ok(Placed {
            sid,
            status: CallStatus::Queued,
        })
    }

    async fn hangup(&self, sid: &CallSid, _how: Hangup) -> Result<(), TelephonyError> {
        match self.inner.live.lock().get(sid) {
            Some((token, _)) => {
                token.cancel();
                Ok(())
            }
            None => Err(not_found()),
        }
    }

    async fn fetch(&self, sid: &CallSid) -> Result<StatusUpdate, TelephonyError> {
        match self.inner.live.lock().get(sid) {
            Some((_, status)) => Ok(StatusUpdate {
                status: Some(*status),
                sid: Some(sid.clone()),
                ..StatusUpdate::default()
            }),
            None => Err(not_found()),
        }
    }

    async fn recording(&self, sid: &str) -> Result<Audio, TelephonyError> {
        if !self.inner.recordings.lock().contains(sid) {
            return Err(not_found());
        }
        let wav = tone_wav();
        Ok(Audio {
            content_type: "audio/wav".to_owned(),
            length: Some(wav.len() as u64),
            body: Box::pin(futures::stream::once(
                async move { Ok(bytes::Bytes::from(wav)) },
            )),
        })
    }

    fn is_simulated(&self) -> bool {
        true
    }
}

fn not_found() -> TelephonyError {
    TelephonyError::Api {
        http_status: 404,
        code: Some(20404),
        message: "The requested resource was not found".into(),
        more_info: None,
        retry_after: None,
    }
}

struct Script {
    id: CallId,
    sid: CallSid,
    to: String,
    from: String,
    outcome: Outcome,
    detection: MachineDetection,
    voicemail: bool,
    record: bool,
}

/// A voicemail when machine detection is on: the second-to-last digit is 5.
pub fn is_voicemail(e164: &str) -> bool {
    e164.chars().rev().nth(1) == Some('5')
}

/// Half a second of a 440 Hz tone, 8 kHz 8-bit mono WAV: the audio of every simulated
/// recording. The RIFF header is written out here (44 bytes; no crate needed for one tone).
fn tone_wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples: Vec<u8> = (0..RATE / 2)
        .map(|i| {
            let t = f64::from(i) / f64::from(RATE);
            (128.0 + 100.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as u8
        })
        .collect();
    let len = samples.len() as u32;
    let mut wav = Vec::with_capacity(44 + samples.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&RATE.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&len.to_le_bytes());
    wav.extend_from_slice(&samples);
    wav
}

/// The target of a TwiML `<Redirect>`, unescaped, if the document has one.
fn redirect_of(twiml: &str) -> Option<String> {
    let start = twiml.find("<Redirect")?;
    let open_end = start + twiml[start..].find('>')? + 1;
    let close = open_end + twiml[open_end..].find("</Redirect>")?;
    quick_xml::escape::unescape(twiml[open_end..close].trim())
        .ok()
        .map(|u| u.into_owned())
}

/// Callbacks sent so far (for SequenceNumber), and those held back in chaos mode.
#[derive(Default)]
struct Progress {
    sequence: u64,
    held: Vec<Vec<(String, String)>>,
}

impl Script {
    async fn run(&self, inner: &Inner, hangup: CancellationToken) {
        let mut progress = Progress::default();
        self.play(inner, &hangup, &mut progress).await;
        if inner.chaos {
            // Every callback twice, all shuffled.
            let mut all: Vec<_> = progress.held.iter().chain(&progress.held).collect();
            all.shuffle(&mut rand::rng());
            for form in all {
                self.post_status(inner, form).await;
            }
        }
    }

    async fn emit(
        &self,
        inner: &Inner,
        progress: &mut Progress,
        status: CallStatus,
        extra: Vec<(&str, String)>,
    ) {
        let form = self.callback_form(status, progress.sequence, extra);
        progress.sequence += 1;
        if let Some(entry) = inner.live.lock().get_mut(&self.sid) {
            entry.1 = status;
        }
        if inner.chaos {
            progress.held.push(form);
        } else {
            self.post_status(inner, &form).await;
        }
    }

    async fn play(&self, inner: &Inner, hangup: &CancellationToken, p: &mut Progress) {
        let step = |secs: f64| Duration::from_secs_f64(secs * inner.speed);
        // A sleep that a hang-up cuts short; true when hung up.
        let wait = |d: Duration| async move {
            tokio::select! {
                () = hangup.cancelled() => true,
                () = tokio::time::sleep(d) => false,
            }
        };
        use CallStatus::*;
        if wait(step(0.3)).await {
            return self.emit(inner, p, Canceled, vec![]).await;
        }
        self.emit(inner, p, Initiated, vec![]).await;
        if wait(step(1.0)).await {
            return self.emit(inner, p, Canceled, vec![]).await;
        }
        self.emit(inner, p, Ringing, vec![]).await;
        let talk_secs = match self.outcome {
            Outcome::Busy => {
                let status = if wait(step(2.0)).await {
                    Canceled
                } else {
                    Busy
                };
                return self
                    .emit(inner, p, status, vec![("SipResponseCode", "486".into())])
                    .await;
            }
            Outcome::NoAnswer => {
                let status = if wait(step(4.0)).await {
                    Canceled
                } else {
                    NoAnswer
                };
                return self
                    .emit(inner, p, status, vec![("SipResponseCode", "487".into())])
                    .await;
            }
            Outcome::Failed => {
                wait(step(0.5)).await;
                return self
                    .emit(inner, p, Failed, vec![("SipResponseCode", "404".into())])
                    .await;
            }
            Outcome::Answer { talk_secs } => talk_secs,
        };
        if wait(step(2.0)).await {
            return self.emit(inner, p, Canceled, vec![]).await;
        }
        let fail = vec![
            ("ErrorCode", "11200".into()),
            ("ErrorMessage", "HTTP retrieval failure".into()),
        ];
        let mut url = twiml_url(&inner.public_url, &self.id);
        let mut twiml = match self.fetch_twiml(inner, &url).await {
            Ok(body) => body,
            Err(e) => {
                warn!(call_id = %self.id, error = %e, "simulator could not fetch TwiML");
                return self.emit(inner, p, Failed, fail).await;
            }
        };
        self.emit(inner, p, InProgress, vec![]).await;
        let answered = Instant::now();
        // Async AMD: the TwiML runs at once; the result comes after the greeting (a
        // voicemail) or the first words (a person), as its own callback.
        let detection = match self.detection {
            MachineDetection::Off => None,
            _ if !self.voicemail => Some(("human", 0.5)),
            MachineDetection::Enable => Some(("machine_start", 1.0)),
            MachineDetection::MessageEnd => Some(("machine_end_beep", 2.0)),
        };
        let mut detected = detection.is_none();
        // Twilio follows `<Redirect>` after the `<Pause>` before it (bounded here).
        for _ in 0..100 {
            let Some(next) = redirect_of(&twiml) else {
                break;
            };
            if wait(step(1.0)).await {
                return self
                    .emit(inner, p, Completed, vec![("CallDuration", "0".into())])
                    .await;
            }
            if let Some((answered_by, after)) = detection
                && !detected
                && answered.elapsed() >= step(after)
            {
                self.post_detection(inner, answered_by, after).await;
                detected = true;
            }
            url = match url::Url::parse(&url).and_then(|u| u.join(&next)) {
                Ok(u) => u.to_string(),
                Err(_) => break,
            };
            twiml = match self.fetch_twiml(inner, &url).await {
                Ok(body) => body,
                Err(e) => {
                    warn!(call_id = %self.id, error = %e, "simulator could not follow a redirect");
                    return self.emit(inner, p, Failed, fail).await;
                }
            };
        }
        if let Some((answered_by, after)) = detection
            && !detected
        {
            wait(step(after)).await;
            self.post_detection(inner, answered_by, after).await;
        }
        if let Some(action) = gather_action(&twiml) {
            // The callee hears the message and the question, then answers (or, asked twice,
            // does not: Twilio then posts the second <Gather>'s empty result).
            if wait(step(2.0)).await {
                return self.emit(inner, p, Canceled, vec![]).await;
            }
            self.answer(inner, &action).await;
        }
        let talked = if wait(step(f64::from(talk_secs))).await {
            (answered.elapsed().as_secs_f64() / inner.speed).round() as u32
        } else {
            talk_secs
        };
        self.emit(
            inner,
            p,
            Completed,
            vec![("CallDuration", talked.to_string())],
        )
        .await;
        if self.record {
            let recording = format!("RE{:032x}", rand::random::<u128>());
            inner.recordings.lock().insert(recording.clone());
            wait(step(1.0)).await;
            let mut form = self.callback_form(Completed, 0, vec![]);
            form.retain(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "CallStatus" | "SequenceNumber" | "CallbackSource"
                )
            });
            form.extend([
                ("RecordingSid".to_owned(), recording.clone()),
                (
                    "RecordingUrl".to_owned(),
                    format!("https://api.twilio.com/2010-04-01/Accounts/{SIMULATOR_ACCOUNT}/Recordings/{recording}"),
                ),
                ("RecordingStatus".to_owned(), "completed".to_owned()),
                ("RecordingDuration".to_owned(), talked.to_string()),
                ("RecordingChannels".to_owned(), "1".to_owned()),
                ("RecordingSource".to_owned(), "OutboundAPI".to_owned()),
            ]);
            let url = recording_callback_url(&inner.public_url, &self.id);
            for _ in 0..if inner.chaos { 2 } else { 1 } {
                if let Err(e) = post_signed(inner, &url, &form).await {
                    warn!(call_id = %self.id, error = %e, "simulator could not deliver the recording callback");
                }
            }
        }
    }

    /// The answering-machine callback, as Twilio posts it (twice in chaos mode).
    async fn post_detection(&self, inner: &Inner, answered_by: &str, after_secs: f64) {
        let mut form = self.callback_form(CallStatus::InProgress, 0, vec![]);
        form.retain(|(k, _)| !matches!(k.as_str(), "SequenceNumber" | "CallbackSource"));
        form.push(("AnsweredBy".to_owned(), answered_by.to_owned()));
        form.push((
            "MachineDetectionDuration".to_owned(),
            ((after_secs * 1000.0) as u32).to_string(),
        ));
        let url = amd_callback_url(&inner.public_url, &self.id);
        for _ in 0..if inner.chaos { 2 } else { 1 } {
            if let Err(e) = post_signed(inner, &url, &form).await {
                warn!(call_id = %self.id, error = %e, "simulator could not deliver the answering-machine callback");
            }
        }
    }

    fn callback_form(
        &self,
        status: CallStatus,
        sequence: u64,
        extra: Vec<(&str, String)>,
    ) -> Vec<(String, String)> {
        let mut form: Vec<(String, String)> = [
            ("AccountSid", SIMULATOR_ACCOUNT.to_owned()),
            ("ApiVersion", "2010-04-01".to_owned()),
            ("CallSid", self.sid.to_string()),
            ("CallStatus", wire::status_name(status).to_owned()),
            ("CallbackSource", "call-progress-events".to_owned()),
            ("Direction", "outbound-api".to_owned()),
            ("From", self.from.clone()),
            ("To", self.to.clone()),
            ("SequenceNumber", sequence.to_string()),
            ("Timestamp", Utc::now().to_rfc2822()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        form.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        form
    }

    async fn post_status(&self, inner: &Inner, form: &[(String, String)]) {
        let url = status_callback_url(&inner.public_url, &self.id);
        if let Err(e) = post_signed(inner, &url, form).await {
            warn!(call_id = %self.id, error = %e, "simulator could not deliver a status callback");
        }
    }

    /// Posts the callee's answer to the `<Gather>` action (relative to the TwiML's URL, as
    /// Twilio resolves it), signed, with the call's fields as Twilio sends them.
    async fn answer(&self, inner: &Inner, action: &str) {
        let twiml = twiml_url(&inner.public_url, &self.id);
        let url = match url::Url::parse(&twiml).and_then(|base| base.join(action)) {
            Ok(url) => url.to_string(),
            Err(e) => {
                warn!(call_id = %self.id, error = %e, "simulator could not resolve the gather action");
                return;
            }
        };
        let mut form = self.callback_form(CallStatus::InProgress, 0, vec![]);
        form.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "SequenceNumber" | "Timestamp" | "CallbackSource"
            )
        });
        form.extend(
            Callee::for_number(&self.to)
                .answer()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if let Err(e) = post_signed(inner, &url, &form).await {
            warn!(call_id = %self.id, error = %e, "simulator could not deliver the answer");
        }
    }

    async fn fetch_twiml(&self, inner: &Inner, url: &str) -> Result<String, String> {
        let form = self.callback_form(CallStatus::InProgress, 0, vec![]);
        let response = post_signed(inner, url, &form).await?;
        let body = response.text().await.map_err(|e| e.to_string())?;
        debug!(call_id = %self.id, twiml = %body, "simulator fetched TwiML");
        Ok(body)
    }
}

async fn post_signed(
    inner: &Inner,
    url: &str,
    form: &[(String, String)],
) -> Result<reqwest::Response, String> {
    let signature = sign(inner.token.expose_secret(), url, form);
    let response = inner
        .http
        .post(url)
        .header("X-Twilio-Signature", signature)
        .form(form)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}
