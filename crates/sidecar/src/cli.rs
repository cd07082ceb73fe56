//! The command line: `tempcreds-sidecar run [FLAGS] [--once]`.
//!
//! The flags are [`SidecarConfig`], shared with the webhook, which renders
//! them into the injected container; each is also read from
//! `TEMPCREDS_<FLAG>`.

use clap::{Args, Parser, Subcommand};
use tempcreds_core::SidecarConfig;

/// Keeps temporary AWS credentials from STS in a shared file, refreshed
/// before they expire.
#[derive(Debug, Parser)]
#[command(name = "tempcreds-sidecar", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Obtain credentials, write them, and keep them fresh (or once, with --once).
    Run(RunArgs),
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sidecar's configuration.
    #[command(flatten)]
    pub config: SidecarConfig,

    /// Fetch and write credentials once, then exit: 0 on success, 1 when STS
    /// or writing fails, 64 for a configuration error.
    #[arg(long, env = "TEMPCREDS_ONCE")]
    pub once: bool,
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
        let Command::Run(args) = cli.command;
        assert!(args.once);
        assert_eq!(args.config.source, tempcreds_core::Source::Secret);
    }
}
