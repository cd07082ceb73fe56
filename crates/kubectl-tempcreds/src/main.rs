//! `kubectl-tempcreds`, the kubectl plugin of tempcreds: `kubectl tempcreds
//! doctor POD` and `kubectl tempcreds status POD` find the pod's injected
//! sidecar ([`pod`]), take the flags the webhook gave it, and run the
//! sidecar's own `doctor` or `status` inside its container with `kubectl
//! exec` ([`kubectl`]), so a user needs neither the flags nor a shell in the
//! image. The exec'd process inherits the container's environment
//! (`TEMPCREDS_POD_NAME`, ...), so it sees what `run` sees.
//!
//! Exit codes: the sidecar command's (0 ok, 1 a check failed or a profile
//! has no valid credentials), 1 when the pod or its sidecar cannot be used
//! or kubectl fails, 64 for bad flags.

mod cli;
mod kubectl;
mod pod;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, OutputFormat};
use crate::kubectl::Kubectl;

/// Exit code for bad flags (`EX_USAGE`), as the sidecar's.
const EXIT_USAGE: u8 = 64;
/// Exit code when the pod, its sidecar or kubectl cannot be used.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Box<dyn std::error::Error>> {
    let kubectl = Kubectl::from_env(cli.kube);
    let args = cli.command.args();
    let pod = kubectl.get_pod(&args.pod)?;
    let sidecar = pod::find_sidecar(&pod)?;
    if matches!(cli.command, Command::Status(_)) && !sidecar.health_server {
        return Err(format!(
            "pod {}: the sidecar runs without its health listener (--no-health-server: a \
             hostNetwork pod), so it has no /metrics for status to read; `kubectl tempcreds \
             doctor {}` checks its configuration, and `kubectl logs {} -c {}` shows its refreshes",
            tempcreds_core::config::quoted(&args.pod),
            args.pod,
            args.pod,
            sidecar.name
        )
        .into());
    }
    pod::check_running(&pod, &sidecar.name)?;
    // The plugin's own flags come right after the subcommand: after the
    // sidecar's arguments they would land in its last `--and-profile`.
    let mut command = vec![sidecar.binary, cli.command.sidecar_command().to_owned()];
    if let (Command::Doctor(_), Some(audience)) = (&cli.command, sidecar.token_audience) {
        command.push(format!("--token-audience={audience}"));
    }
    if args.output == OutputFormat::Json {
        command.extend(["--output".to_owned(), "json".to_owned()]);
    }
    command.extend(sidecar.args);
    Ok(kubectl.exec(&args.pod, &sidecar.name, &command)?)
}
