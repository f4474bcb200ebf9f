//! Wiring: store, telephony, dialer and adapters; the axum Router; graceful shutdown.

mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{Span, info, warn};

use self::serve::ConnectionLimits;

use crate::body::BodyRules;

use crate::calls::dialer::{self, DialerConfig};
use crate::calls::memo::{Memo, MemoryMemo};
use crate::calls::reaper::Housekeeping;
use crate::calls::service::CallDefaults;
use crate::calls::{CallService, CallStore, DialQueue, MemoryQueue, MemoryStore};
use crate::chat::web::{self, WebState};
use crate::chat::{AdapterContext, Interpreter};
use crate::config::{Settings, StoreBackend, TelephonyChoice};
use crate::telephony::{Plug, PlugContext, simulator, twilio};

pub struct App {
    listener: TcpListener,
    router: Router,
    service: Arc<CallService>,
    public_url: String,
    shutdown: CancellationToken,
    dialer: JoinHandle<()>,
    /// Gives its lease up on a graceful stop, so another instance takes over at once.
    housekeeping: JoinHandle<()>,
    grace: Duration,
    limits: ConnectionLimits,
}

fn interpreter(settings: &Settings, memo: &Arc<dyn Memo>) -> Interpreter {
    let interpreter = Interpreter::new(settings.region());
    #[cfg(feature = "llm")]
    let interpreter = interpreter.with_llm(crate::llm::LlmParser::from_settings(
        &settings.llm,
        &settings.limits,
        memo.clone(),
    ));
    #[cfg(not(feature = "llm"))]
    let _ = memo;
    interpreter
}

/// `uri` with the value of every `token` query parameter replaced, so that the web token
/// that EventSource has to send in `/api/events?token=` never reaches a log line. Keys are
/// compared decoded, as axum's `Query` reads them (`?%74oken=` is a token too).
pub fn redacted_uri(uri: &axum::http::Uri) -> std::borrow::Cow<'_, str> {
    let Some(query) = uri.query() else {
        return uri.to_string().into();
    };
    let is_token = |pair: &str| {
        url::form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(key, _)| key == "token")
    };
    if !query.split('&').any(is_token) {
        return uri.to_string().into();
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if is_token(pair) {
                "token=[redacted]"
            } else {
                pair
            }
        })
        .collect();
    let mut text = uri.to_string();
    let start = text.find('?').expect("the URI has a query");
    text.truncate(start + 1);
    text.push_str(&query.join("&"));
    text.into()
}

/// The span of one request, as tower-http's default one (DEBUG, same target, so the
/// `tower_http=…` filters still apply; method, URI, version) but with the URI's token
/// redacted. Fields are formatted only when the span is enabled.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> Span {
    tracing::debug_span!(
        target: "tower_http::trace::make_span",
        "request",
        method = %req.method(),
        uri = %redacted_uri(req.uri()),
        version = ?req.version(),
    )
}

/// Reads every request body up front with [`crate::body::read_whole`]: complete within the
/// deadline (408 otherwise, and the connection is closed) and no larger than the limit (413).
/// Twilio's routes read their bodies the same way themselves and are not under this layer.
///
/// A tower service rather than `axum::middleware::from_fn`: that one boxes the inner route
/// again, extracts its state and boxes the inner call's future on every request, which
/// showed on the signed-callback path (BENCHMARKS.md, wrk); here one future is boxed, and a
/// request without a body (GET) goes straight through.
#[derive(Clone)]
struct WholeBody<S> {
    inner: S,
    rules: BodyRules,
}

impl<S> tower::Service<axum::extract::Request> for WholeBody<S>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use axum::body::HttpBody as _;
        if req.body().is_end_stream() {
            return Box::pin(self.inner.call(req));
        }
        // The service that was made ready is the one called; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rules = self.rules;
        Box::pin(async move {
            match whole_body(rules, req).await {
                Ok(req) => inner.call(req).await,
                Err(refused) => Ok(refused),
            }
        })
    }
}

/// The request with its body read whole, or the answer refusing it.
async fn whole_body(
    rules: BodyRules,
    req: axum::extract::Request,
) -> Result<axum::extract::Request, axum::response::Response> {
    let (parts, body) = req.into_parts();
    let bytes = crate::body::read_whole(body, rules).await?;
    Ok(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
}

/// What the engine keeps and coordinates through: in this process (the embedded default), or
/// in one Redis shared by every instance (`CALLBOT_STORE=redis`).
struct Engines {
    store: Arc<dyn CallStore>,
    /// Calls waiting for a dialer (of any instance, on Redis).
    queue: Arc<dyn DialQueue>,
    /// Jobs that run on one instance at a time.
    leases: Arc<dyn crate::calls::lease::Leases>,
    /// Usage limits, counted for this process or for every instance.
    ledger: Arc<dyn crate::calls::usage::Ledger>,
    /// `calls.cps`, for this process or for every instance on the provider account.
    pacer: Arc<dyn crate::calls::pacing::Pacer>,
    /// `twilio.poll_per_second` (polling mode), likewise.
    poll_pacer: Arc<dyn crate::calls::pacing::Pacer>,
    /// What the instance cannot work without, checked every second for `/healthz`.
    probe: Option<Probe>,
    /// How the chat followers share the calls' follow-up.
    follow: crate::chat::follow::Coordination,
    /// Brings the other instances' call events to this one's bus, and this one's to them.
    #[cfg(feature = "redis")]
    bridge: Option<crate::shared::events::EventBridge>,
    /// The chat side's short-lived memory (dedupe, confirmations, the model's answers).
    memo: Arc<dyn Memo>,
}

/// A dependency's name and its check (the reason when it fails).
type Probe = (
    &'static str,
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>,
);

/// How often a dependency is checked for `/healthz`.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Checks `probe` every [`PROBE_EVERY`] until shutdown and tells `/healthz`; the reason is
/// logged once per outage, not once a second.
fn watch(
    (name, check): Probe,
    health: &Arc<crate::chat::health::Health>,
    shutdown: CancellationToken,
) {
    let line = health.dependency(name);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            match check().await {
                Ok(()) => {
                    if down {
                        info!(dependency = name, "reachable again");
                    }
                    down = false;
                    line.ok();
                }
                Err(reason) => {
                    if !down {
                        tracing::error!(dependency = name, %reason, "dependency down: requests and callbacks fail until it is back");
                    }
                    down = true;
                    line.failing(reason);
                }
            }
        }
    });
}

/// The Redis side of chat follow-up: per-call follow claims on the shared leases, the outcome
/// step claimed once, and the event bridge. An outcome claim is only asked for while its call
/// is live or just ended, so it is kept a day (or `store.ttl_hours`, if shorter), not as long
/// as the ended call.
#[cfg(feature = "redis")]
fn shared_follow(
    redis: &crate::shared::Redis,
    leases: Arc<dyn crate::calls::lease::Leases>,
    settings: &Settings,
) -> (
    crate::chat::follow::Coordination,
    crate::shared::events::EventBridge,
) {
    let follow = crate::chat::follow::Coordination {
        leases,
        claims: Arc::new(crate::shared::claims::RedisClaims::new(
            redis.clone(),
            Duration::from_secs(settings.store.ttl_hours.min(24) * 3600),
        )),
        ttl: Duration::from_millis(settings.store.follow_claim_ms),
        shared: true,
    };
    (
        follow,
        crate::shared::events::EventBridge::new(redis.clone()).appended_by_the_store(),
    )
}

async fn engines(settings: &Settings) -> anyhow::Result<Engines> {
    match settings.store.backend {
        StoreBackend::Memory => Ok(Engines {
            store: Arc::new(MemoryStore::new(
                settings.store.capacity,
                Duration::from_secs(settings.store.ttl_hours * 3600),
            )),
            queue: Arc::new(MemoryQueue::new(settings.calls.queue_capacity)),
            leases: Arc::new(crate::calls::lease::Solo),
            probe: None,
            ledger: Arc::new(crate::calls::usage::MemoryLedger::new()),
            pacer: Arc::new(crate::calls::pacing::LocalPacer::new(settings.calls.cps)),
            poll_pacer: Arc::new(crate::calls::pacing::LocalPacer::new(
                settings.twilio.poll_per_second,
            )),
            follow: crate::chat::follow::Coordination::solo(),
            #[cfg(feature = "redis")]
            bridge: None,
            memo: Arc::new(MemoryMemo::default()),
        }),
        #[cfg(feature = "redis")]
        StoreBackend::Redis => {
            use secrecy::ExposeSecret as _;
            let url = settings
                .store
                .redis_url
                .as_ref()
                .context("CALLBOT_STORE=redis needs REDIS_URL")?;
            let redis =
                crate::shared::Redis::connect(url.expose_secret(), &settings.store.redis_prefix)
                    .await?;
            // One pace per provider account: instances dialing through it share its rate.
            let account = match settings.telephony() {
                Ok(TelephonyChoice::Twilio { account_sid, .. }) => account_sid,
                _ => "simulator".to_owned(),
            };
            let queue = crate::shared::queue::RedisQueue::start(
                redis.clone(),
                url.expose_secret(),
                settings.calls.queue_capacity,
                Duration::from_millis(settings.store.claim_ms),
            )
            .await?;
            let leases = Arc::new(crate::shared::lease::RedisLeases::new(redis.clone()));
            let (follow, bridge) = shared_follow(&redis, leases.clone(), settings);
            Ok(Engines {
                store: Arc::new(crate::shared::store::RedisStore::new(
                    redis.clone(),
                    Duration::from_secs(settings.store.ttl_hours * 3600),
                )),
                queue,
                memo: Arc::new(crate::shared::memo::RedisMemo::new(redis.clone())),
                ledger: Arc::new(crate::shared::limits::RedisLedger::new(redis.clone())),
                pacer: Arc::new(crate::shared::pacing::RedisPacer::new(
                    redis.clone(),
                    &account,
                    settings.calls.cps,
                )),
                // Status requests share a pace of their own on the same account.
                poll_pacer: Arc::new(crate::shared::pacing::RedisPacer::new(
                    redis.clone(),
                    &format!("{account}:polls"),
                    settings.twilio.poll_per_second,
                )),
                probe: Some((
                    "redis",
                    Arc::new(move || {
                        let redis = redis.clone();
                        Box::pin(async move {
                            redis.ping().await.map_err(|e| format!("unreachable: {e}"))
                        })
                    }),
                )),
                leases,
                follow,
                bridge: Some(bridge),
            })
        }
        #[cfg(not(feature = "redis"))]
        StoreBackend::Redis => anyhow::bail!(
            "this build has no redis support (built without the `redis` feature); use CALLBOT_STORE=memory"
        ),
    }
}

impl App {
    /// Binds the listener (port 0 picks a free one) and builds everything; nothing is
    /// served until [`App::run`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let listener = TcpListener::bind(settings.server.bind)
            .await
            .with_context(|| format!("could not listen on {}", settings.server.bind))?;
        Self::build_on(settings, listener).await
    }

    /// [`App::build`] on a listener bound already (a test that names its loopback address as
    /// the public URL binds port 0 first; `server.bind` is then not used).
    pub async fn build_on(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        settings.validate()?;
        // The dependency tree enables both rustls providers (ring and aws-lc-rs); pick one
        // before any client is built, or rustls cannot choose. A second call is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::telemetry::metrics();
        crate::telemetry::register_series();
        crate::core::phone::PhoneNumber::warm_up(settings.region());
        // Compiles the grammar's patterns now rather than on the first message (whose
        // Slack acknowledgement has 3 s).
        let _ = crate::core::command::parse("call +1 202 555 0100 and say hi", settings.region());
        let local = listener.local_addr()?;
        let public_url = settings
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
            .trim_end_matches('/')
            .to_owned();

        // The telephony provider: one factory per provider, one line each.
        let plug_ctx = PlugContext {
            public_url: &public_url,
            body: settings.server.body_rules(),
            calls: &settings.calls,
        };
        let Plug {
            telephony,
            routes: provider_routes,
            from,
            polling,
        } = match settings.telephony().map_err(anyhow::Error::msg)? {
            TelephonyChoice::Twilio {
                account_sid,
                auth_token,
                from,
            } => twilio::plug(
                twilio::Account {
                    account_sid,
                    auth_token,
                    from,
                },
                &settings.twilio,
                settings.twilio_mode(),
                plug_ctx,
            )?,
            TelephonyChoice::Simulator => simulator::plug(&settings.simulator, plug_ctx),
        };

        let Engines {
            store,
            queue,
            leases,
            probe,
            ledger,
            pacer,
            poll_pacer,
            follow,
            #[cfg(feature = "redis")]
            bridge,
            memo,
        } = engines(&settings).await?;
        if !telephony.is_simulated() {
            info!(mode = %settings.describe_mode(), "how Twilio calls are followed");
        }

        let calls = &settings.calls;
        let shutdown = CancellationToken::new();
        let bus = crate::calls::EventBus::with_capacity(calls.event_bus_capacity);
        #[cfg(feature = "redis")]
        if let Some(bridge) = bridge {
            bridge
                .start(&bus, shutdown.clone())
                .await
                .context("could not start the call event bridge on Redis")?;
        }
        let service = CallService::with_bus(
            store,
            telephony.clone(),
            CallDefaults {
                voices: settings.voices(),
                from,
                voice: calls.voice.clone(),
                language: calls.language.clone(),
                message: calls.default_message.clone(),
                machine_detection: calls.machine_detection,
                record: calls.record,
            },
            settings.policy(),
            queue.clone(),
            bus,
            ledger,
        );
        if settings.access.open {
            warn!(
                "ACCESS IS OPEN: anyone who can reach a chat adapter may place calls (access.open = true)"
            );
        }
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        if let Some(cfg) = polling {
            crate::calls::poller::spawn(
                service.clone(),
                telephony.clone(),
                leases.clone(),
                poll_pacer,
                cfg,
                Duration::from_millis(settings.store.follow_claim_ms),
                shutdown.clone(),
            );
        }
        let dialer = dialer::spawn(
            service.clone(),
            queue,
            telephony,
            DialerConfig {
                max_concurrent: calls.max_concurrent_requests,
                max_tries: calls.max_tries,
                backoff_base: Duration::from_millis(calls.backoff_base_ms),
                backoff_max: Duration::from_millis(calls.backoff_max_ms),
                grace,
            },
            shutdown.clone(),
            pacer,
        );

        let housekeeping = crate::calls::reaper::spawn(
            service.clone(),
            leases.clone(),
            Housekeeping {
                interval: Duration::from_millis(calls.reap_interval_ms.max(10)),
                max_age: Duration::from_secs(
                    u64::from(calls.time_limit_secs) + calls.reap_margin_secs,
                ),
                recover_after: Duration::from_millis(settings.store.claim_ms),
            },
            shutdown.clone(),
        );

        // Histogram samples wait in the recorder until upkeep folds them into buckets; with
        // nobody scraping /metrics they would pile up, one per provider request.
        let upkeep = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = upkeep.cancelled() => return,
                    _ = every.tick() => crate::telemetry::metrics().run_upkeep(),
                }
            }
        });

        let health = crate::chat::health::Health::new(Duration::from_millis(
            settings.health.adapter_down_ms,
        ));
        if let Some(probe) = probe {
            watch(probe, &health, shutdown.clone());
        }
        let ctx = AdapterContext {
            service: service.clone(),
            interpreter: Arc::new(interpreter(&settings, &memo)),
            public_url: public_url.clone(),
            confirm: settings.calls.confirm,
            shutdown: shutdown.clone(),
            health: health.clone(),
            memory: memo,
            follow,
        };
        let web = Arc::new(WebState {
            ctx: ctx.clone(),
            token: settings.server.web_token.clone(),
            hosts: web::AllowedHosts::new(local, &public_url),
        });
        #[cfg_attr(
            not(any(feature = "telegram", feature = "slack")),
            expect(unused_mut, reason = "adapters merge their routes in")
        )]
        let mut router = Router::new()
            .route(
                "/healthz",
                get(move || std::future::ready(health.response())),
            )
            .merge(web::routes(web));
        #[cfg(feature = "telegram")]
        if settings.telegram.bot_token.is_some() {
            router = router.merge(
                crate::chat::telegram::start(&settings.telegram, ctx.clone(), leases.clone())
                    .await?,
            );
        }
        #[cfg(feature = "slack")]
        if settings.slack.bot_token.is_some() {
            router = router.merge(crate::chat::slack::start(&settings.slack, ctx.clone()).await?);
        }
        // whole_body bounds every route's body, so axum's DefaultBodyLimit is not layered
        // as well (it inserted a request extension on every callback for nothing). The
        // provider's routes, merged after it, bound theirs as they read them (the signed
        // callback path, measured in BENCHMARKS.md, goes without the layer's extra future).
        let rules = settings.server.body_rules();
        let router = router
            .layer(tower::layer::layer_fn(move |inner| WholeBody {
                inner,
                rules,
            }))
            .merge(provider_routes.with_state(service.clone()));
        // tower-http's request tracing (a span per request, with the URI's token redacted,
        // and a DEBUG line per request and answer) only when the log filter lets those lines
        // through (`RUST_LOG=tower_http=debug`; the filter is fixed at start). With the
        // default filter it wrote nothing but still cost about 3 % of a signed
        // callback's CPU (BENCHMARKS.md, wrk). Its one line at the default level, an ERROR
        // per 5xx answer, is left to the code that answers 5xx, which logs why.
        let router = if tracing::enabled!(
            target: "tower_http::trace::on_response",
            tracing::Level::DEBUG
        ) {
            router.layer(TraceLayer::new_for_http().make_span_with(request_span))
        } else {
            router
        };
        let limits = ConnectionLimits {
            header_timeout: Duration::from_millis(settings.server.header_timeout_ms),
            idle_timeout: Duration::from_secs(settings.server.idle_timeout_secs),
            max_connections: serve::fitted_max_connections(settings.server.max_connections),
        };

        Ok(Self {
            listener,
            router,
            service,
            public_url,
            shutdown,
            dialer,
            housekeeping,
            grace,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn service(&self) -> Arc<CallService> {
        self.service.clone()
    }

    /// Cancel it to stop the app gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then lets the dialer settle.
    pub async fn run(self) -> anyhow::Result<()> {
        info!(addr = %self.local_addr(), public_url = %self.public_url, "callbot listening");
        serve::serve(
            self.listener,
            self.router,
            self.limits,
            self.shutdown.clone(),
            self.grace,
        )
        .await;
        if tokio::time::timeout(self.grace + Duration::from_secs(1), self.dialer)
            .await
            .is_err()
        {
            warn!("dialer did not stop within the grace period");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.housekeeping).await;
        info!("callbot stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_uri;

    #[test]
    fn token_values_are_redacted_from_uris() {
        let cases = [
            ("/api/events?token=s3cret", "/api/events?token=[redacted]"),
            (
                "/api/events?a=1&token=s3cret&b=2",
                "/api/events?a=1&token=[redacted]&b=2",
            ),
            ("/api/events?%74oken=s3cret", "/api/events?token=[redacted]"),
            ("/api/events?token", "/api/events?token=[redacted]"),
            ("/api/calls?limit=5", "/api/calls?limit=5"),
            ("/api/calls?tokens=x", "/api/calls?tokens=x"),
            ("/healthz", "/healthz"),
        ];
        for (uri, want) in cases {
            assert_eq!(redacted_uri(&uri.parse().unwrap()), want, "{uri}");
        }
    }
}
