//! callbot: thin main. CLI → Settings → App::build → run until ctrl-c / SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use callbot::App;
use callbot::calls::EventKind;
use callbot::calls::service::CallRequest;
use callbot::config::{Settings, TelephonyChoice};
use callbot::core::call::{CallStatus, Origin, Platform};
use callbot::core::phone::PhoneNumber;
use callbot::core::replies;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: glibc's malloc, with its arena locks, was about a
/// seventh of the CPU of a signed status callback under load (BENCHMARKS.md, wrk).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Place phone calls from chat (Telegram, Slack, web) through Twilio"
)]
struct Cli {
    /// Settings file merged over the defaults (environment still wins).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything that is configured (the default).
    Serve,
    /// Validate settings and print what is enabled (secrets redacted).
    CheckConfig,
    /// Place one call from the terminal and print its progress; exits 0 only if completed.
    Call {
        /// The number, as you would write it ("+91 98765 43210").
        number: String,
        /// What to say when answered.
        #[arg(long)]
        say: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("callbot: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Cmd::Serve);
    if let Cmd::CheckConfig = command {
        return check_config(&settings).await;
    }
    // The same refusals as check-config, before anything starts.
    if let Err(e) = settings.validate() {
        eprintln!("callbot: {e}");
        return ExitCode::FAILURE;
    }
    match command {
        Cmd::CheckConfig => unreachable!("handled above"),
        Cmd::Serve => {
            callbot::telemetry::init(settings.server.log_format);
            log_warnings(&settings);
            serve(settings).await
        }
        Cmd::Call { number, say } => {
            // Progress lines on stdout; only warnings among them unless RUST_LOG says more.
            callbot::telemetry::init_with_default(settings.server.log_format, "warn");
            log_warnings(&settings);
            call(settings, &number, say).await
        }
    }
}

fn log_warnings(settings: &Settings) {
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
}

async fn check_config(settings: &Settings) -> ExitCode {
    println!("{}", settings.describe());
    for w in settings.warnings() {
        eprintln!("warning: {w}");
    }
    if let Err(e) = settings.validate() {
        eprintln!("\ncallbot: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = check_store(settings).await {
        eprintln!("\ncallbot: {e:#}");
        return ExitCode::FAILURE;
    }
    println!("\nsettings are valid");
    ExitCode::SUCCESS
}

/// The shared store answers (`CALLBOT_STORE=redis`): its version, the URL redacted. `serve`
/// refuses to start on the same failure (`App::build` connects first).
async fn check_store(settings: &Settings) -> anyhow::Result<()> {
    #[cfg(feature = "redis")]
    if settings.store.backend == callbot::config::StoreBackend::Redis
        && let Some(url) = &settings.store.redis_url
    {
        use secrecy::ExposeSecret as _;
        let url = url.expose_secret();
        let shown = callbot::shared::redacted(url);
        let redis = callbot::shared::Redis::connect(url, &settings.store.redis_prefix).await?;
        let version = redis
            .server_version()
            .await
            .map_err(|e| anyhow::anyhow!("Redis at {shown} does not answer: {e}"))?;
        println!(
            "redis:           Redis {version} at {shown}, keys under {{{}}}:",
            settings.store.redis_prefix
        );
    }
    #[cfg(not(feature = "redis"))]
    let _ = settings;
    Ok(())
}

async fn serve(settings: Settings) -> ExitCode {
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("callbot: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if app.service().is_simulated() {
        eprintln!(
            "callbot: SIMULATOR mode: no real calls are placed (set TWILIO_* for real calls)"
        );
        eprintln!(
            "callbot: the simulated callee, by the number's last digit: 0 busy, 1 no answer, \
             2 failed, 3-9 answers and talks 2 + digit seconds"
        );
        eprintln!(
            "callbot: a question is answered by the second-to-last digit: 7 says yes, 8 never \
             answers, any other presses 1 (5 is a voicemail with machine detection on)"
        );
    }
    eprintln!("callbot: web console at http://{}/", app.local_addr());
    let token = app.shutdown_token();
    tokio::spawn(async move {
        stop_signal().await;
        token.cancel();
    });
    match app.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callbot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn call(mut settings: Settings, number: &str, say: Option<String>) -> ExitCode {
    let to = match PhoneNumber::parse(number, settings.region()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("callbot: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The simulator only needs our own routes: any free loopback port will do.
    if matches!(settings.telephony(), Ok(TelephonyChoice::Simulator))
        && settings.server.public_url.is_none()
    {
        settings.server.bind = "127.0.0.1:0".parse().expect("valid address");
    }
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("callbot: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let service = app.service();
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run());
    let mut events = service.subscribe();
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let call = match service
        .request(CallRequest {
            to,
            message: say,
            origin: Origin::new(Platform::Cli, user),
            speech: Default::default(),
        })
        .await
    {
        Ok(call) => call,
        Err(e) => {
            eprintln!("callbot: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut shown = replies::status_line(&call);
    println!("{shown} [{}]", call.id);
    let status = loop {
        match events.recv().await {
            Ok(ev) if ev.call.id == call.id && ev.kind != EventKind::Created => {
                // Queued and initiated read the same ("Calling…"); print each line once.
                let line = replies::status_line(&ev.call);
                if line != shown {
                    println!("{line}");
                    shown = line;
                }
                if ev.kind == EventKind::Final {
                    break ev.call.status;
                }
            }
            Ok(_) => {}
            Err(_) => match service.get(&call.id).await {
                Ok(Some(c)) if c.status.is_terminal() => break c.status,
                _ => {}
            },
        }
    };
    stop.cancel();
    let _ = server.await;
    if status == CallStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
