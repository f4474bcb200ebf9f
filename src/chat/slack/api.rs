//! The Slack Web API calls callbot makes (chat.postMessage, chat.update) through
//! slack-morphism, and posts to a command's `response_url` through reqwest, each by the one
//! retry policy ([`crate::retry`]): 429 waits for `Retry-After`, network errors and 5xx back
//! off exponentially with jitter, Slack's own errors (`not_in_channel`, …) are returned at once.
//!
//! Also the start-up checks: `auth.test` with the bot token and `apps.connections.open` with
//! the app token, so a token Slack rejects stops the start instead of leaving callbot deaf.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use secrecy::{ExposeSecret as _, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::retry::{self, GiveUp, Policy, Verdict};

/// Attempts per API call (the first included).
pub const MAX_TRIES: u32 = 5;
/// Attempts for a message that must arrive (a call's outcome): with the back-off capped at
/// [`BACKOFF_MAX`], about a minute of trying.
pub const MUST_ARRIVE_TRIES: u32 = 20;
/// Longest back-off after a first network error or 5xx; doubles each time (jittered).
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest back-off between tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest `Retry-After` we honour (longer: give up this message).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// `Retry-After` assumed when a 429 carries none.
pub const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

/// Web API calls and `response_url` posts: the caps of this call site.
const POLICY: Policy =
    Policy::new(BACKOFF_BASE, BACKOFF_MAX, MAX_TRIES).with_max_retry_after(RETRY_AFTER_MAX);

pub type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;
pub type Client = SlackClient<Connector>;

/// Why a Web API call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Slack answered `ok: false` with this code.
    #[error("Slack said {0}")]
    Slack(String),
    /// Retries exhausted, or an answer we could not use.
    #[error("{0}")]
    Failed(String),
}

impl ApiError {
    /// The channel is not reachable with the bot token (private channel, DM with others).
    pub fn is_unreachable_channel(&self) -> bool {
        matches!(self, Self::Slack(code) if code == "not_in_channel" || code == "channel_not_found")
    }
}

/// One failed try, classified.
enum Try {
    Fatal(ApiError),
    /// Retry after this long (from Retry-After) or after the back-off.
    Again(Option<Duration>, String),
}

impl fmt::Display for Try {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fatal(e) => e.fmt(f),
            Self::Again(_, reason) => f.write_str(reason),
        }
    }
}

/// An HTTPS (and, for tests and proxies, HTTP) connector to `api_url`, which must not end
/// with a slash (slack-morphism appends `/{method}`).
pub fn client(api_url: &str) -> Client {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let connector = SlackClientHyperConnector::with_connector(https)
        .with_slack_api_url(api_url.trim_end_matches('/'));
    SlackClient::new(connector)
}

pub struct Api {
    client: Arc<Client>,
    token: SlackApiToken,
    http: reqwest::Client,
    /// Time limit for one HTTP request.
    timeout: Duration,
}

impl Api {
    pub fn new(
        client: Arc<Client>,
        bot_token: &SecretString,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        // A response_url is named by the request; a redirect from it must not lead elsewhere.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            token: SlackApiToken::new(bot_token.expose_secret().to_owned().into()),
            http,
            timeout,
        })
    }

    /// chat.postMessage; returns the message's ts.
    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
        blocks: Option<Vec<SlackBlock>>,
    ) -> Result<String, ApiError> {
        self.post_message_tries(channel, thread_ts, text, blocks, MAX_TRIES)
            .await
    }

    /// chat.postMessage with this many attempts.
    pub async fn post_message_tries(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
        blocks: Option<Vec<SlackBlock>>,
        tries: u32,
    ) -> Result<String, ApiError> {
        let mut content = SlackMessageContent::new().with_text(text.to_owned());
        content.blocks = blocks;
        let mut req = SlackApiChatPostMessageRequest::new(channel.into(), content);
        req.thread_ts = thread_ts.map(|t| t.to_owned().into());
        let res = retrying("chat.postMessage", tries, || async {
            let session = self.client.open_session(&self.token);
            classify_slack(timed(self.timeout, session.chat_post_message(&req)).await)
        })
        .await?;
        Ok(res.ts.0)
    }

    /// chat.update of a message we posted, with this many attempts.
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Vec<SlackBlock>,
        tries: u32,
    ) -> Result<(), ApiError> {
        let content = SlackMessageContent::new()
            .with_text(text.to_owned())
            .with_blocks(blocks);
        let req = SlackApiChatUpdateRequest::new(channel.into(), content, ts.to_owned().into());
        retrying("chat.update", tries, || async {
            let session = self.client.open_session(&self.token);
            classify_slack(timed(self.timeout, session.chat_update(&req)).await)
        })
        .await?;
        Ok(())
    }

    /// auth.test: who the bot token is. A token Slack rejects (`invalid_auth`,
    /// `token_revoked`, …) is an error naming SLACK_BOT_TOKEN; a Slack that cannot be reached
    /// after [`MAX_TRIES`] is an error naming SLACK_API_URL.
    pub async fn check_bot_token(&self, api_url: &str) -> anyhow::Result<Me> {
        let res = retrying_unmetered("auth.test", MAX_TRIES, || async {
            let session = self.client.open_session(&self.token);
            classify_slack(timed(self.timeout, session.auth_test()).await)
        })
        .await;
        match res {
            Ok(me) => Ok(Me {
                team: me.team_id.0,
                user: me.user_id.0,
            }),
            Err(e) => Err(start_error("SLACK_BOT_TOKEN", "auth.test", api_url, e)),
        }
    }

    /// chat.postEphemeral: a message only `user` sees, in `channel`.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), ApiError> {
        let content = SlackMessageContent::new().with_text(text.to_owned());
        let req = SlackApiChatPostEphemeralRequest::new(channel.into(), user.into(), content);
        retrying("chat.postEphemeral", MAX_TRIES, || async {
            let session = self.client.open_session(&self.token);
            classify_slack(timed(self.timeout, session.chat_post_ephemeral(&req)).await)
        })
        .await?;
        Ok(())
    }

    /// Posts a message (JSON) to an interaction's or command's `response_url`.
    pub async fn respond(&self, url: &str, body: &serde_json::Value) -> Result<(), ApiError> {
        self.respond_tries(url, body, MAX_TRIES).await
    }

    /// A `response_url` post with this many attempts.
    pub async fn respond_tries(
        &self,
        url: &str,
        body: &serde_json::Value,
        tries: u32,
    ) -> Result<(), ApiError> {
        retrying("response_url", tries, || async {
            let res = match self.http.post(url).json(body).send().await {
                Ok(res) => res,
                Err(e) => return Err(Try::Again(None, e.to_string())),
            };
            let status = res.status();
            if status.is_success() {
                return Ok(());
            }
            if status.as_u16() == 429 {
                let after = res
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry::parse_retry_after)
                    .unwrap_or(RETRY_AFTER_DEFAULT);
                return Err(Try::Again(Some(after), "rate limited".into()));
            }
            let text = res.text().await.unwrap_or_default();
            if status.is_server_error() {
                Err(Try::Again(None, format!("HTTP {status}")))
            } else {
                Err(Try::Fatal(ApiError::Slack(format!(
                    "HTTP {status}: {text}"
                ))))
            }
        })
        .await
    }
}

/// Who the bot token belongs to (auth.test).
#[derive(Debug, Clone)]
pub struct Me {
    pub team: String,
    pub user: String,
}

/// apps.connections.open with the app token, once, at start: Socket Mode would otherwise
/// retry a rejected token every few seconds forever while `/healthz` says ok. The URL it
/// returns is not used (slack-morphism's listener asks for its own).
pub async fn check_app_token(
    client: &Client,
    app_token: &SecretString,
    timeout: Duration,
    api_url: &str,
) -> anyhow::Result<()> {
    let token = SlackApiToken::new(app_token.expose_secret().to_owned().into());
    let req = SlackApiAppsConnectionOpenRequest::new();
    retrying_unmetered("apps.connections.open", MAX_TRIES, || async {
        let session = client.open_session(&token);
        classify_slack(timed(timeout, session.apps_connections_open(&req)).await)
    })
    .await
    .map(drop)
    .map_err(|e| start_error("SLACK_APP_TOKEN", "apps.connections.open", api_url, e))
}

/// The start-up error for a token check that failed.
fn start_error(setting: &str, method: &str, api_url: &str, e: ApiError) -> anyhow::Error {
    match e {
        ApiError::Slack(code) => anyhow::anyhow!(
            "Slack rejected {setting} ({method}: {code}). Copy the token again from the Slack \
             app's settings (bot token xoxb-… under OAuth & Permissions; app-level token xapp-… \
             with the connections:write scope under Basic Information)."
        ),
        ApiError::Failed(reason) => anyhow::anyhow!(
            "could not reach the Slack Web API at {api_url} to check {setting} ({reason}); \
             check SLACK_API_URL and the network"
        ),
    }
}

async fn timed<T>(
    timeout: Duration,
    f: impl Future<Output = Result<T, SlackClientError>>,
) -> Result<T, Option<SlackClientError>> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(Some),
        Err(_) => Err(None),
    }
}

fn classify_slack<T>(result: Result<T, Option<SlackClientError>>) -> Result<T, Try> {
    match result {
        Ok(v) => Ok(v),
        Err(None) => Err(Try::Again(None, "timed out".into())),
        Err(Some(SlackClientError::ApiError(e))) if e.code == "ratelimited" => {
            Err(Try::Again(Some(RETRY_AFTER_DEFAULT), e.code))
        }
        Err(Some(SlackClientError::ApiError(e))) => Err(Try::Fatal(ApiError::Slack(e.code))),
        Err(Some(SlackClientError::RateLimitError(e))) => Err(Try::Again(
            Some(e.retry_after.unwrap_or(RETRY_AFTER_DEFAULT)),
            "rate limited".into(),
        )),
        Err(Some(SlackClientError::HttpError(e))) if e.status_code.is_server_error() => {
            Err(Try::Again(None, e.to_string()))
        }
        // A garbled answer (a proxy cutting the body short) is retried like a dropped
        // connection: for chat messages we prefer a rare duplicate to a lost outcome (calls
        // are the other way round: see `TelephonyError::Unconfirmed`).
        Err(Some(
            e @ (SlackClientError::HttpProtocolError(_)
            | SlackClientError::ProtocolError(_)
            | SlackClientError::SystemError(_)
            | SlackClientError::EndOfStream(_)),
        )) => Err(Try::Again(None, e.to_string())),
        Err(Some(e)) => Err(Try::Fatal(ApiError::Failed(e.to_string()))),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `tries` are used.
async fn retrying<T, F, Fut>(what: &str, tries: u32, attempt: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Try>>,
{
    let result = retrying_unmetered(what, tries, attempt).await;
    crate::telemetry::chat_post("slack", result.is_ok());
    result
}

async fn retrying_unmetered<T, F, Fut>(what: &str, tries: u32, attempt: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Try>>,
{
    let policy = POLICY.with_tries(tries);
    let verdict = |t: &Try| match t {
        Try::Fatal(_) => Verdict::Fatal,
        Try::Again(after, _) => Verdict::Retry(*after),
    };
    retry::run(&policy, what, attempt, verdict)
        .await
        .map_err(|failure| match (failure.error, failure.gave_up) {
            (Try::Fatal(e), _) => e,
            (Try::Again(..), Some(GiveUp::RetryAfter(after))) => {
                ApiError::Failed(format!("{what}: rate limited for {after:?}"))
            }
            (Try::Again(_, reason), _) => ApiError::Failed(format!("{what}: {reason}")),
        })
}
