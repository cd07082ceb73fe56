//! `tempcreds-sidecar`: the credential sidecar. See the library's docs.

use std::process::ExitCode;

use tempcreds_sidecar::cli::{self, Command};
use tempcreds_sidecar::{app, doctor, logging, probe, status};

fn main() -> ExitCode {
    let cli = match cli::parse_with_profiles(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(app::EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init();
    match cli.command {
        Command::Run(args) => app::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Status(args) => status::run(args),
    }
}
