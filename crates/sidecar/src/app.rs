//! `tempcreds-sidecar run`: validate, then fetch once or keep refreshing.
//!
//! Order of things: the configuration is validated before anything is bound
//! or called (every problem is logged, naming its flag; exit 64). With
//! `--once`, credentials are fetched and written and the process exits (1 on
//! failure, or with `--retry` it backs off and tries again until it
//! succeeds). Otherwise credentials a previous run left in the output
//! directory are adopted while their refresh point is ahead (see
//! [`crate::probe`]), the health endpoints and `/metrics` are bound (unless
//! `--no-health-server`), with `--endpoint-addr` the endpoint token written
//! and the credentials endpoint bound, the input directories watched, and the
//! refresh loop runs until SIGTERM or SIGINT (exit 0). `--once` ignores
//! `--endpoint-addr`: nothing would stay to serve.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tempcreds_core::{Credentials, SidecarConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::endpoint::{self, Latest, Token};
use crate::health::{self, Readiness};
use crate::inputs;
use crate::listen;
use crate::metrics::{FailureKind, Metrics};
use crate::output::{Output, WriteError};
use crate::probe;
use crate::refresh::{self, Backoff, Refresh};
use crate::sts::{FetchError, Sts};
use crate::watch;

/// Exit code for configuration errors (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code when fetching or writing credentials failed (`--once`), or the
/// health address cannot be bound.
pub const EXIT_FAILURE: u8 = 1;

/// How long in-flight work may take after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One refresh attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Obtaining credentials failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Writing them failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The real [`Refresh`]: STS, then the output files, then the credentials
/// the endpoint serves.
#[derive(Debug)]
pub struct StsRefresh {
    sts: Sts,
    output: Output,
    files: Vec<PathBuf>,
    latest: Latest,
    metrics: Option<Metrics>,
}

impl StsRefresh {
    /// Refreshes with `sts` into `output`, watching `config`'s input files.
    pub fn new(sts: Sts, output: Output, config: &SidecarConfig) -> StsRefresh {
        StsRefresh {
            sts,
            output,
            files: inputs::files(config),
            latest: Latest::default(),
            metrics: None,
        }
    }

    /// Counts refreshes and failures in `metrics`, and times STS calls.
    pub fn with_metrics(self, metrics: Metrics) -> StsRefresh {
        StsRefresh {
            sts: self.sts.with_metrics(metrics.clone()),
            metrics: Some(metrics),
            ..self
        }
    }

    /// The credentials of the last successful refresh, for the endpoint.
    pub fn latest(&self) -> Latest {
        self.latest.clone()
    }

    async fn fetch_and_write(&mut self) -> Result<Credentials, RefreshError> {
        let creds = self.sts.fetch().await?;
        self.output.write(&creds)?;
        self.latest.set(creds.clone());
        Ok(creds)
    }
}

impl Refresh for StsRefresh {
    type Error = RefreshError;

    async fn refresh(&mut self) -> Result<Credentials, RefreshError> {
        let result = self.fetch_and_write().await;
        if let Some(m) = &self.metrics {
            match &result {
                Ok(_) => m.refreshed(),
                Err(e) => m.failed(FailureKind::of(e)),
            }
        }
        result
    }

    fn inputs(&self) -> u64 {
        inputs::fingerprint(&self.files)
    }
}

/// Checks that need this process's environment and file system, so they
/// cannot be part of `SidecarConfig::validate` (which the webhook also runs
/// at admission, before the pod has a name or volumes).
fn local_checks(config: &SidecarConfig) -> Vec<tempcreds_core::ConfigError> {
    let mut errors = Vec::new();
    if config.pod_name_tag_key.is_some() && config.pod_name.is_none() {
        errors.push(tempcreds_core::ConfigError {
            flag: "pod-name-tag-key",
            message: "needs the pod's name: --pod-name or TEMPCREDS_POD_NAME \
                      (the webhook sets it from the downward API)"
                .into(),
        });
    }
    if !config.output_dir.is_dir() {
        errors.push(tempcreds_core::ConfigError {
            flag: "output-dir",
            message: format!(
                "{} is not an existing directory; the credentials are written there \
                 (in a pod, the shared volume the webhook mounts)",
                config.output_dir.display()
            ),
        });
    }
    errors
}

/// Runs `tempcreds-sidecar run` and returns the process's exit code.
pub fn run(args: RunArgs) -> ExitCode {
    let limits = args.listener_limits();
    let config = args.config;
    let validated = match (config.validate(), local_checks(&config)) {
        (result, extra) if extra.is_empty() => result,
        (Ok(_), extra) => Err(extra),
        (Err(mut errors), extra) => {
            errors.extend(extra);
            Err(errors)
        }
    };
    match validated {
        Ok(warnings) => {
            for w in warnings {
                warn!("{w}");
            }
        }
        Err(errors) => {
            for e in &errors {
                error!(flag = e.flag, "{e}");
            }
            error!(
                errors = errors.len(),
                "invalid configuration; see `tempcreds-sidecar run --help`"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mode = Mode {
        once: args.once,
        retry: args.retry,
        health_server: !args.no_health_server,
        limits,
    };
    let code = runtime.block_on(async_run(config, mode));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// How `run` was asked to behave, besides the configuration.
#[derive(Debug, Clone, Copy)]
struct Mode {
    once: bool,
    retry: bool,
    health_server: bool,
    limits: listen::Limits,
}

async fn async_run(config: SidecarConfig, args: Mode) -> ExitCode {
    let sts = match Sts::new(&config).await {
        Ok(sts) => sts,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    info!(
        source = %config.source,
        first_call = config.first_call().action(),
        role_arn = config.role_arn.as_ref().map(ToString::to_string),
        chain_roles = config.chain_role_arns.len(),
        session_name = %config.effective_session_name(),
        endpoint = sts.endpoint(),
        output_dir = %config.output_dir.display(),
        "starting"
    );
    let output = Output::new(&config.output_dir, &config.profile);
    let shutdown = shutdown_signal();
    if args.once {
        let mut refresher = StsRefresh::new(sts, output, &config);
        return run_once(&mut refresher, args.retry, shutdown).await;
    }

    let readiness = Readiness::default();
    // Served on the health listener; without it (`--no-health-server`)
    // nobody reads them, so nothing is recorded.
    let metrics = args
        .health_server
        .then(|| Metrics::new(readiness.clone(), &config.profile));
    let mut refresher = StsRefresh::new(sts, output, &config);
    if let Some(m) = &metrics {
        refresher = refresher.with_metrics(m.clone());
    }
    let mut first_due = Instant::now();
    // Nothing written yet is the usual first start.
    if let Ok(written) = probe::read_written(&config.output_dir) {
        match probe::adoptable(&written, config.refresh_before) {
            Some(due) => {
                let creds = written.credentials;
                info!(
                    access_key_id = %creds.access_key_id,
                    expiration = %creds.expiration_rfc3339(),
                    next_refresh_secs = due.saturating_duration_since(Instant::now()).as_secs(),
                    "serving the credentials a previous run wrote; they are fresh, so STS is not called yet"
                );
                readiness.written(refresh::expiry_instant(creds.expiration));
                refresher.latest().set(creds);
                first_due = due;
            }
            None => info!("the credentials a previous run wrote are due for refresh"),
        }
    }
    if let Some(metrics) = metrics {
        let listener = match tokio::net::TcpListener::bind(config.health_addr).await {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "--health-addr {}: cannot listen", config.health_addr);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        tokio::spawn(listen::serve(
            listener,
            health::router(readiness.clone(), metrics),
            args.limits,
        ));
    }
    if let Some(addr) = config.endpoint_addr
        && let Err(code) = serve_endpoint(addr, &config, refresher.latest(), args.limits).await
    {
        return code;
    }
    let (tx, rx) = mpsc::channel(1);
    let _watch = watch::watch(&inputs::files(&config), tx);
    refresh::run_from(
        first_due,
        refresher,
        config.refresh_before,
        readiness,
        rx,
        shutdown,
    )
    .await;
    info!("shutting down");
    ExitCode::SUCCESS
}

/// `--once`: one fetch and write; with `retry`, backoff and further
/// attempts until one succeeds or `shutdown` completes (exit 1).
async fn run_once(
    refresher: &mut StsRefresh,
    retry: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> ExitCode {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::default();
    loop {
        let result = tokio::select! {
            () = &mut shutdown => return ExitCode::from(EXIT_FAILURE),
            r = refresher.refresh() => r,
        };
        match result {
            Ok(creds) => {
                info!(
                    access_key_id = %creds.access_key_id,
                    expiration = %creds.expiration_rfc3339(),
                    "credentials written"
                );
                return ExitCode::SUCCESS;
            }
            Err(e) if retry => {
                let delay = backoff.next(None, fastrand::f64());
                warn!(
                    error = %e,
                    attempt = backoff.failures(),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "fetching credentials failed; retrying"
                );
                tokio::select! {
                    () = &mut shutdown => return ExitCode::from(EXIT_FAILURE),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                error!(error = %e, "fetching credentials failed");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
}

/// Writes a fresh authorization token, then serves the container-credentials
/// endpoint on `addr` in the background.
async fn serve_endpoint(
    addr: std::net::SocketAddr,
    config: &SidecarConfig,
    latest: Latest,
    limits: listen::Limits,
) -> Result<(), ExitCode> {
    let token = Token::generate().map_err(|e| {
        error!(error = %e, "cannot draw a random token for the credentials endpoint");
        ExitCode::from(EXIT_FAILURE)
    })?;
    token.write(&config.output_dir).map_err(|e| {
        error!(
            error = %e,
            "--output-dir {}: cannot write {}",
            config.output_dir.display(),
            tempcreds_core::paths::ENDPOINT_TOKEN_FILE
        );
        ExitCode::from(EXIT_FAILURE)
    })?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        error!(error = %e, "--endpoint-addr {addr}: cannot listen");
        ExitCode::from(EXIT_FAILURE)
    })?;
    info!(
        url = tempcreds_core::paths::endpoint_uri(addr),
        token_file = %config.output_dir.join(tempcreds_core::paths::ENDPOINT_TOKEN_FILE).display(),
        "serving the container-credentials endpoint"
    );
    tokio::spawn(listen::serve(
        listener,
        endpoint::router(token, latest),
        limits,
    ));
    Ok(())
}

/// Listens for SIGTERM and SIGINT now, and returns a future that completes
/// on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                error!(error = %e, "cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
