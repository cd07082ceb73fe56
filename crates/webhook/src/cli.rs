//! The command line: `serve` and `inject`. Every flag of `serve` is also read
//! from an environment variable (`TEMPCREDS_` and the flag in upper case).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

fn duration_arg(s: &str) -> Result<Duration, String> {
    tempcreds_core::parse_duration(s).map_err(|e| e.to_string())
}

fn namespaced_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name))
            if tempcreds_core::spec::is_dns_subdomain(ns)
                && tempcreds_core::spec::is_dns_subdomain(name) =>
        {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not NAMESPACE/NAME (e.g. tempcreds/tempcreds-tls)"
        )),
    }
}

/// tempcreds' mutating admission webhook: injects the credential sidecar
/// into pods that opt in with `tempcreds.io/` annotations.
#[derive(Debug, Parser)]
#[command(name = "tempcreds-webhook", version)]
pub struct Cli {
    /// Log format: `auto` is JSON unless stderr is a terminal.
    #[arg(long, env = "TEMPCREDS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Print Kubernetes manifests with their pod templates mutated exactly as
    /// admission would (like `istioctl kube-inject`).
    Inject(InjectArgs),
}

/// `tempcreds-webhook serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TEMPCREDS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first); reloaded when it changes. Give
    /// either the two files or `--tls-self-managed-secret`.
    #[arg(
        long,
        env = "TEMPCREDS_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file",
        required_unless_present = "tls_self_managed_secret",
        conflicts_with = "tls_self_managed_secret"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key; reloaded when it changes.
    #[arg(
        long,
        env = "TEMPCREDS_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Self-managed certificates: the Secret (`NAMESPACE/NAME`) where the
    /// webhook keeps its own CA and serving certificate, issuing and renewing
    /// them itself, and setting the caBundle of `--webhook-configuration`.
    #[arg(
        long,
        env = "TEMPCREDS_TLS_SELF_MANAGED_SECRET",
        value_name = "NAMESPACE/NAME",
        value_parser = namespaced_name,
        requires_all = ["tls_dns_names", "webhook_configuration"]
    )]
    pub tls_self_managed_secret: Option<(String, String)>,
    /// Names the self-managed serving certificate is valid for (the
    /// Service's DNS name, e.g. `tempcreds.tempcreds.svc`; an IP address is
    /// accepted for local runs). Repeatable.
    #[arg(
        long = "tls-dns-name",
        env = "TEMPCREDS_TLS_DNS_NAME",
        value_name = "NAME",
        value_delimiter = ',',
        requires = "tls_self_managed_secret"
    )]
    pub tls_dns_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose caBundle the webhook keeps
    /// equal to its self-managed CA.
    #[arg(
        long,
        env = "TEMPCREDS_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        requires = "tls_self_managed_secret"
    )]
    pub webhook_configuration: Option<String>,
    /// Cluster config (YAML); reloaded when it changes.
    #[arg(long, env = "TEMPCREDS_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Self-managed certificates: lifetime of a new CA. A CA is renewed
    /// when a fifth of its lifetime is left, or at once when the stored one
    /// is valid for longer than this (the lifetime was shortened).
    #[arg(
        long,
        env = "TEMPCREDS_TLS_CA_LIFETIME",
        value_name = "DURATION",
        default_value = "3650d",
        value_parser = duration_arg,
        requires = "tls_self_managed_secret"
    )]
    pub tls_ca_lifetime: Duration,
    /// Self-managed certificates: lifetime of a new serving certificate (at
    /// most `--tls-ca-lifetime`). It is renewed when a third of its lifetime
    /// is left, or at once when the stored one is valid for longer than this.
    #[arg(
        long,
        env = "TEMPCREDS_TLS_CERT_LIFETIME",
        value_name = "DURATION",
        default_value = "365d",
        value_parser = duration_arg,
        requires = "tls_self_managed_secret"
    )]
    pub tls_cert_lifetime: Duration,
    /// Self-managed certificates: after a CA renewal, how long the new CA
    /// must have been in the webhook configuration's caBundle before the
    /// serving certificate switches to it (time for every API server to see
    /// the new caBundle).
    #[arg(
        long,
        env = "TEMPCREDS_TLS_CA_PROPAGATION_DELAY",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = duration_arg,
        requires = "tls_self_managed_secret"
    )]
    pub tls_ca_propagation_delay: Duration,
    /// After SIGTERM, how long to keep accepting and serving new
    /// connections, with `/readyz` answering 503, before closing the
    /// listener: clients that the Service still routes here until the
    /// endpoints drop the pod are served instead of refused (like
    /// kube-apiserver's `--shutdown-delay-duration`). 0 closes at once.
    #[arg(long, env = "TEMPCREDS_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "5s", value_parser = duration_arg)]
    pub shutdown_delay: Duration,
    /// Once the listener is closed (after `--shutdown-delay`), how long open
    /// connections may take to finish before they are dropped.
    #[arg(long, env = "TEMPCREDS_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "20s", value_parser = duration_arg)]
    pub shutdown_grace: Duration,
    /// How often the files are re-read even without a change event.
    #[arg(long, env = "TEMPCREDS_RELOAD_INTERVAL", value_name = "DURATION", default_value = "60s", value_parser = duration_arg)]
    pub reload_interval: Duration,
}

/// `tempcreds-webhook inject`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    /// Manifest file (multi-document YAML), `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: PathBuf,
    /// Cluster config (YAML); default: the default sidecar image and settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// YAML map of the ServiceAccount's `tempcreds.io/` annotations, applied
    /// as defaults to every pod template.
    #[arg(long, value_name = "FILE")]
    pub service_account_annotations: Option<PathBuf>,
    /// Namespace assumed for objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}
