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
use tracing::{Instrument as _, error, info, warn};

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

/// Validates every profile, with [`local_checks`] (the output directory,
/// which the profiles share, once), logging
/// each problem with its profile and flag. Returns whether all are valid.
fn validate_profiles(configs: &[SidecarConfig]) -> bool {
    let mut count = 0;
    for (i, config) in configs.iter().enumerate() {
        let mut errors = match config.validate() {
            Ok(warnings) => {
                for w in warnings {
                    warn!(profile = %config.profile, "{w}");
                }
                Vec::new()
            }
            Err(errors) => errors,
        };
        // The output directory is the sidecar's, checked once.
        errors.extend(
            local_checks(config)
                .into_iter()
                .filter(|e| i == 0 || e.flag != "output-dir"),
        );
        for e in &errors {
            error!(profile = %config.profile, flag = e.flag, "{e}");
        }
        count += errors.len();
    }
    if count > 0 {
        error!(
            errors = count,
            "invalid configuration; see `tempcreds-sidecar run --help`"
        );
    }
    count == 0
}

/// Runs `tempcreds-sidecar run` and returns the process's exit code.
pub fn run(args: RunArgs) -> ExitCode {
    let limits = args.listener_limits();
    let mut configs = vec![args.config];
    configs.extend(args.additional);
    if !validate_profiles(&configs) {
        return ExitCode::from(EXIT_CONFIG);
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
    let code = runtime.block_on(async_run(configs, mode));
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

/// One profile, ready to run: its configuration, refresher and state.
struct Profile {
    config: SidecarConfig,
    refresher: StsRefresh,
    readiness: Readiness,
    first_due: Instant,
}

async fn async_run(configs: Vec<SidecarConfig>, args: Mode) -> ExitCode {
    let names: Vec<String> = configs.iter().map(|c| c.profile.clone()).collect();
    let outputs = Output::profiles(&configs[0].output_dir, &names);
    let readiness: Vec<Readiness> = names.iter().map(|_| Readiness::default()).collect();
    // Served on the health listener; without it (`--no-health-server`, or
    // `--once`) nobody reads them, so nothing is recorded.
    let metrics: Vec<Option<Metrics>> = if args.health_server && !args.once {
        Metrics::profiles(
            names
                .iter()
                .cloned()
                .zip(readiness.iter().cloned())
                .collect(),
        )
        .into_iter()
        .map(Some)
        .collect()
    } else {
        names.iter().map(|_| None).collect()
    };
    let health_metrics = metrics.first().cloned().flatten();
    let mut profiles = Vec::new();
    for (((config, output), readiness), metrics) in configs
        .into_iter()
        .zip(outputs)
        .zip(&readiness)
        .zip(metrics)
    {
        let first = profiles.first().map(|p: &Profile| &p.refresher.sts);
        let sts = match Sts::sharing(&config, first).await {
            Ok(sts) => sts,
            Err(e) => {
                error!(profile = %config.profile, "{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        info!(
            profile = %config.profile,
            source = %config.source,
            first_call = config.first_call().action(),
            role_arn = config.role_arn.as_ref().map(ToString::to_string),
            chain_roles = config.chain_role_arns.len(),
            session_name = %config.effective_session_name(),
            endpoint = sts.endpoint(),
            endpoint_kind = sts.endpoint_kind(),
            output_dir = %config.output_dir.display(),
            "starting"
        );
        let mut refresher = StsRefresh::new(sts, output, &config);
        if let Some(m) = &metrics {
            refresher = refresher.with_metrics(m.clone());
        }
        profiles.push(Profile {
            config,
            refresher,
            readiness: readiness.clone(),
            first_due: Instant::now(),
        });
    }
    let first = profiles[0].config.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = shutdown_signal();
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if args.once {
        let mut tasks = tokio::task::JoinSet::new();
        for mut p in profiles {
            let stop = until_stopped();
            let span = tracing::info_span!("profile", profile = %p.config.profile);
            tasks.spawn(
                async move { run_once(&mut p.refresher, args.retry, stop).await }.instrument(span),
            );
        }
        tokio::pin!(shutdown);
        let mut code = ExitCode::SUCCESS;
        loop {
            tokio::select! {
                () = &mut shutdown, if !stop.borrow().to_owned() => {
                    let _ = stop.send(true);
                }
                done = tasks.join_next() => match done {
                    Some(Ok(c)) if c != ExitCode::SUCCESS => code = c,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => code = ExitCode::from(EXIT_FAILURE),
                    None => return code,
                },
            }
        }
    }

    for p in &mut profiles {
        adopt(p);
    }
    if let Some(metrics) = health_metrics {
        let listener = match tokio::net::TcpListener::bind(first.health_addr).await {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "--health-addr {}: cannot listen", first.health_addr);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        tokio::spawn(listen::serve(
            listener,
            health::router(readiness, metrics),
            args.limits,
        ));
    }
    if let Some(addr) = first.endpoint_addr {
        let latest = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let path = tempcreds_core::paths::endpoint_path(
                    (i > 0).then_some(p.config.profile.as_str()),
                );
                (path, p.refresher.latest())
            })
            .collect();
        if let Err(code) = serve_endpoint(addr, &first, latest, args.limits).await {
            return code;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for p in profiles {
        let (tx, rx) = mpsc::channel(1);
        let watcher = watch::watch(&inputs::files(&p.config), tx);
        let stop = until_stopped();
        let span = tracing::info_span!("profile", profile = %p.config.profile);
        tasks.spawn(
            async move {
                let _watcher = watcher;
                refresh::run_from(
                    p.first_due,
                    p.refresher,
                    p.config.refresh_before,
                    p.readiness,
                    rx,
                    stop,
                )
                .await;
            }
            .instrument(span),
        );
    }
    shutdown.await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    info!("shutting down");
    ExitCode::SUCCESS
}

/// Adopts the credentials a previous run left for `p`'s profile while their
/// refresh point is ahead (nothing written yet is the usual first start).
fn adopt(p: &mut Profile) {
    let file = p.refresher.output.process_json_file();
    let Ok(written) = probe::read_written(&p.config.output_dir, &file) else {
        return;
    };
    match probe::adoptable(&written, p.config.refresh_before) {
        Some(due) => {
            let creds = written.credentials;
            info!(
                profile = %p.config.profile,
                access_key_id = %creds.access_key_id,
                expiration = %creds.expiration_rfc3339(),
                next_refresh_secs = due.saturating_duration_since(Instant::now()).as_secs(),
                "serving the credentials a previous run wrote; they are fresh, so STS is not called yet"
            );
            p.readiness
                .written(refresh::expiry_instant(creds.expiration));
            p.refresher.output.adopt(&creds);
            p.refresher.latest().set(creds);
            p.first_due = due;
        }
        None => info!(
            profile = %p.config.profile,
            "the credentials a previous run wrote are due for refresh"
        ),
    }
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
    latest: Vec<(String, Latest)>,
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
