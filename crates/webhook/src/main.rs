//! `tempcreds-webhook`: the mutating admission webhook (`serve`) and offline
//! injection into manifests (`inject`). Everything but wiring lives in the
//! library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tempcreds_webhook::cli::{Cli, Command, LogFormat};
use tempcreds_webhook::{error_chain, inject_cmd, server};

/// mimalloc instead of glibc's allocator: a review allocates and frees a
/// few hundred small objects (JSON values, strings, maps), and glibc's
/// malloc took about a quarter of the webhook's CPU under load
/// (`make bench`, bench/results.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for an unusable config or certificate (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // One process-wide provider, whatever features other crates enable.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Inject(args) => match inject_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let prepared = match server::prepare(args) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "not starting");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::run(prepared, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "serve failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs to stderr: JSON unless stderr is a terminal (or as `--log-format`
/// says); level from `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
