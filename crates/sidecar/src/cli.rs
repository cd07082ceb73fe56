//! The command line: `tempcreds-sidecar run [FLAGS] [--once [--retry]]`,
//! `tempcreds-sidecar doctor [FLAGS] [--output text|json]`,
//! `tempcreds-sidecar status [FLAGS] [--output text|json]` and
//! `tempcreds-sidecar probe [--output-dir DIR]`.
//!
//! The flags are [`SidecarConfig`], shared with the webhook, which renders
//! them into the injected container; each is also read from
//! `TEMPCREDS_<FLAG>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tempcreds_core::SidecarConfig;
use tempcreds_core::config::parse_additional;

/// Keeps temporary AWS credentials from STS in a shared file, refreshed
/// before they expire.
#[derive(Debug, Parser)]
#[command(name = "tempcreds-sidecar", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How additional profiles are given, after the flags of `run`, `doctor` and
/// `status`.
const AND_PROFILE_HELP: &str = "Additional profiles: after the flags above, \
`--and-profile NAME FLAGS...` once per profile. FLAGS are that profile's own (--source, --role-arn, \
--chain-role-arn, session and tag flags, --refresh-before, ...; no TEMPCREDS_* variables); it takes \
--region, --sts-endpoint, --allow-http-sts-endpoint, --use-fips-endpoint, --use-dualstack-endpoint and \
--pod-name from the first profile unless it \
sets them, and shares --output-dir, --health-addr and --endpoint-addr. Each profile is refreshed on \
its own schedule into its own section of the credentials and config files, and served at \
/v1/credentials/NAME by the endpoint.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Obtain credentials, write them, and keep them fresh (or once, with --once).
    #[command(after_help = AND_PROFILE_HELP)]
    Run(RunArgs),
    /// Check the configuration step by step (token, issuer, policies, STS
    /// calls) and explain what is wrong. Writes nothing. Exit 0 when every
    /// check passes, 1 when one fails, 64 for bad flags.
    #[command(after_help = AND_PROFILE_HELP)]
    Doctor(DoctorArgs),
    /// Exit 0 when the output directory holds credentials that have not
    /// expired, 1 otherwise: the exec probe of pods without a health
    /// listener (`hostNetwork: true`). Reads the files only; calls nothing.
    Probe(ProbeArgs),
    /// Show each profile's credentials as the running sidecar reports them
    /// on `/metrics` (`--health-addr`): role, time left, last refresh,
    /// failures. Exit 0 when every profile has valid credentials, 1
    /// otherwise, 64 for bad flags.
    #[command(after_help = AND_PROFILE_HELP)]
    Status(StatusArgs),
}

/// `status`'s arguments: `run`'s configuration (to find the health
/// listener and name the profiles), and how to report.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The configuration of the running sidecar, as given to `run`.
    #[command(flatten)]
    pub config: SidecarConfig,

    /// The additional profiles (`--and-profile NAME FLAGS...`), parsed
    /// apart: see [`parse_with_profiles`].
    #[arg(skip)]
    pub additional: Vec<SidecarConfig>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The credentials profiles a sidecar keeps: its first profile's
/// configuration, then each additional one's.
pub fn profiles_of<'a>(
    config: &'a SidecarConfig,
    additional: &'a [SidecarConfig],
) -> Vec<&'a SidecarConfig> {
    std::iter::once(config).chain(additional).collect()
}

/// `probe`'s arguments.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The directory `run` writes to.
    #[arg(
        long,
        env = "TEMPCREDS_OUTPUT_DIR",
        value_name = "DIR",
        default_value = tempcreds_core::paths::OUTPUT_DIR
    )]
    pub output_dir: PathBuf,
}

/// The report format of `doctor` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

/// `doctor`'s arguments: `run`'s, plus how to report and what to expect.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The configuration to check, as given to `run`.
    #[command(flatten)]
    pub config: SidecarConfig,

    /// The additional profiles (`--and-profile NAME FLAGS...`), parsed
    /// apart: see [`parse_with_profiles`].
    #[arg(skip)]
    pub additional: Vec<SidecarConfig>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// The audience the role's IAM OIDC provider lists (the projected
    /// token's audience, annotation tempcreds.io/token-audience).
    #[arg(
        long,
        env = "TEMPCREDS_TOKEN_AUDIENCE",
        value_name = "AUDIENCE",
        default_value = "sts.amazonaws.com"
    )]
    pub token_audience: String,

    /// An extra CA certificate (PEM) to trust when fetching the issuer's
    /// discovery document and keys, for private issuers. STS itself trusts
    /// only public CAs.
    #[arg(long, value_name = "PATH")]
    pub issuer_ca_file: Option<PathBuf>,
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sidecar's configuration (of its first profile, and what the
    /// additional ones share).
    #[command(flatten)]
    pub config: SidecarConfig,

    /// The additional profiles (`--and-profile NAME FLAGS...`), parsed
    /// apart: see [`parse_with_profiles`].
    #[arg(skip)]
    pub additional: Vec<SidecarConfig>,

    /// Fetch and write credentials once, then exit: 0 on success, 1 when STS
    /// or writing fails, 64 for a configuration error.
    #[arg(long, env = "TEMPCREDS_ONCE")]
    pub once: bool,

    /// With --once: retry with backoff until credentials are written (or
    /// SIGTERM), instead of exiting 1 on the first failure. The run-once
    /// init container that a classic (non-native) sidecar gets uses it, so
    /// the app never starts before credentials exist, even while STS is
    /// unreachable.
    #[arg(long, env = "TEMPCREDS_RETRY", requires = "once")]
    pub retry: bool,

    /// Do not bind `--health-addr`: no `/healthz`, `/readyz` or `/metrics`.
    /// For pods whose network namespace is the node's (`hostNetwork: true`),
    /// where every such pod would want the same port; their probes run
    /// `tempcreds-sidecar probe` instead.
    #[arg(long, env = "TEMPCREDS_NO_HEALTH_SERVER")]
    pub no_health_server: bool,

    /// How long a connection to the health or credentials listener may take
    /// to send a request's headers (and stay idle between requests) before
    /// it is closed.
    #[arg(
        long,
        env = "TEMPCREDS_LISTENER_HEADER_TIMEOUT",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = duration_arg
    )]
    pub listener_header_timeout: Duration,

    /// Connections each listener serves at once; more wait, unaccepted,
    /// until one ends.
    #[arg(
        long,
        env = "TEMPCREDS_LISTENER_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = crate::listen::DEFAULT_CONNECTIONS,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub listener_max_connections: u16,
}

impl RunArgs {
    /// The listeners' limits from the flags.
    pub fn listener_limits(&self) -> crate::listen::Limits {
        crate::listen::Limits {
            headers: self.listener_header_timeout,
            connections: usize::from(self.listener_max_connections),
            ..crate::listen::Limits::default()
        }
    }
}

/// Parses a command line with additional profiles: the arguments before
/// the first `--and-profile` with clap, then each profile's
/// ([`tempcreds_core::config::parse_additional`]) for `run` and `doctor`.
pub fn parse_with_profiles(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
    let (head, rest) = tempcreds_core::config::split_profiles(args);
    let mut cli = Cli::try_parse_from(head)?;
    match &mut cli.command {
        Command::Run(run) => run.additional = parse_additional(&run.config, &rest)?,
        Command::Doctor(doctor) => doctor.additional = parse_additional(&doctor.config, &rest)?,
        Command::Status(status) => status.additional = parse_additional(&status.config, &rest)?,
        Command::Probe(_) if !rest.is_empty() => {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::UnknownArgument,
                "probe takes no --and-profile\n",
            ));
        }
        Command::Probe(_) => {}
    }
    Ok(cli)
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    match tempcreds_core::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than 0s".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_shared_flags_and_once() {
        let cli = Cli::try_parse_from([
            "tempcreds-sidecar",
            "run",
            "--source",
            "secret",
            "--access-key-id-file",
            "/k/id",
            "--once",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(args.once);
        assert!(!args.retry && !args.no_health_server);
        assert_eq!(args.listener_limits(), crate::listen::Limits::default());
        assert_eq!(args.config.source, tempcreds_core::Source::Secret);
    }

    #[test]
    fn retry_needs_once() {
        let err = Cli::try_parse_from(["tempcreds-sidecar", "run", "--retry"]).unwrap_err();
        assert!(err.to_string().contains("--once"), "{err}");
    }

    #[test]
    fn probe_reads_the_default_output_dir() {
        let cli = Cli::try_parse_from(["tempcreds-sidecar", "probe"]).unwrap();
        let Command::Probe(args) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(args.output_dir, PathBuf::from("/var/run/tempcreds"));
    }

    #[test]
    fn status_takes_the_shared_flags_and_an_output_format() {
        let cli = Cli::try_parse_from([
            "tempcreds-sidecar",
            "status",
            "--source",
            "secret",
            "--health-addr",
            "0.0.0.0:9000",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Status(args) = cli.command else {
            panic!("not status")
        };
        assert_eq!(args.output, OutputFormat::Json);
        assert_eq!(args.config.health_addr.port(), 9000);
        assert_eq!(profiles_of(&args.config, &[]), [&args.config]);
        // `run`-only flags are refused.
        let err = Cli::try_parse_from(["tempcreds-sidecar", "status", "--once"]).unwrap_err();
        assert!(err.to_string().contains("--once"), "{err}");
    }

    #[test]
    fn doctor_takes_the_shared_flags_and_its_own() {
        let cli = Cli::try_parse_from([
            "tempcreds-sidecar",
            "doctor",
            "--source",
            "web-identity",
            "--output",
            "json",
            "--issuer-ca-file",
            "/ca.crt",
        ])
        .unwrap();
        let Command::Doctor(args) = cli.command else {
            panic!("not doctor")
        };
        assert_eq!(args.output, OutputFormat::Json);
        assert_eq!(args.token_audience, "sts.amazonaws.com");
        assert_eq!(args.issuer_ca_file, Some(PathBuf::from("/ca.crt")));
    }
}
