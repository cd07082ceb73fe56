//! The command line: `kubectl tempcreds doctor|status POD [--output
//! text|json] [-n NAMESPACE] [--context NAME] [--kubeconfig PATH]`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Diagnose the tempcreds credential sidecar of a pod: runs the sidecar's
/// own `doctor` or `status` inside its container (`kubectl exec`), with the
/// flags the webhook gave it. Needs RBAC `get` on pods and `create` on
/// pods/exec.
#[derive(Debug, Parser)]
#[command(name = "kubectl tempcreds", bin_name = "kubectl tempcreds", version, about, long_about = None)]
pub struct Cli {
    /// Where the pod is, passed on to kubectl.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's own flags, passed on to every kubectl call.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// The pod's namespace (default: the context's).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig file to use.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<String>,
}

impl KubeArgs {
    /// The flags as kubectl takes them.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--kubeconfig", &self.kubeconfig),
            ("--context", &self.context),
            ("--namespace", &self.namespace),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag}={v}"));
            }
        }
        args
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the sidecar's configuration step by step (token, issuer,
    /// policies, STS calls) and explain what is wrong: `tempcreds-sidecar
    /// doctor` in the sidecar's container. Exits with doctor's code: 0 when
    /// every check passes, 1 when one fails.
    Doctor(PodArgs),
    /// Show each profile's credentials: role, time left, last refresh,
    /// failed refreshes (`tempcreds-sidecar status` in the sidecar's
    /// container). Exit 0 when every profile has valid credentials.
    Status(PodArgs),
}

impl Command {
    /// The sidecar subcommand to run.
    pub fn sidecar_command(&self) -> &'static str {
        match self {
            Command::Doctor(_) => "doctor",
            Command::Status(_) => "status",
        }
    }

    /// The arguments.
    pub fn args(&self) -> &PodArgs {
        match self {
            Command::Doctor(a) | Command::Status(a) => a,
        }
    }
}

/// The pod and the report format.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// The pod's name.
    #[arg(value_name = "POD")]
    pub pod: String,

    /// Report format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
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
    fn kubectl_flags_go_before_or_after_the_pod() {
        let cli = Cli::try_parse_from([
            "kubectl-tempcreds",
            "doctor",
            "web",
            "-n",
            "apps",
            "--context=prod",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.command.sidecar_command(), "doctor");
        assert_eq!(cli.command.args().pod, "web");
        assert_eq!(cli.command.args().output, OutputFormat::Json);
        assert_eq!(
            cli.kube.to_args(),
            ["--context=prod", "--namespace=apps"].map(str::to_owned)
        );
        let cli = Cli::try_parse_from(["kubectl-tempcreds", "--kubeconfig", "/k", "status", "web"])
            .unwrap();
        assert_eq!(cli.command.sidecar_command(), "status");
        assert_eq!(cli.command.args().output, OutputFormat::Text);
        assert_eq!(cli.kube.to_args(), ["--kubeconfig=/k".to_owned()]);
        assert!(Cli::try_parse_from(["kubectl-tempcreds", "doctor"]).is_err());
    }
}
