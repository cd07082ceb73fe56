//! The sidecar's refresh, back to back: behind `make bench`'s "flat over
//! 10,000 refreshes" figure. The sidecar itself waits at least a second
//! between refreshes (and normally half an hour), so 10,000 of them would
//! take hours; this drives the same [`StsRefresh`] (STS call chain, the
//! output files, the endpoint's copy, the metrics) with the sidecar's
//! logging and single-threaded runtime, without the wait, and prints the
//! process's resident memory as it goes.
//!
//! cargo run --profile release-sidecar -p tempcreds-sidecar --example refresh_soak -- COUNT RUN_FLAGS...
//!
//! RUN_FLAGS are `tempcreds-sidecar run`'s (`--source`, `--role-arn`,
//! `--output-dir`, `--sts-endpoint`, ...). Prints `rss refresh=N kib=K`
//! after refresh 10, 100, 1,000, ... and the last, then a machine-readable
//! `RESULT` line; exits 1 at the first failed refresh.

use std::process::ExitCode;

use clap::Parser;
use tempcreds_sidecar::app::StsRefresh;
use tempcreds_sidecar::cli::{Cli, Command};
use tempcreds_sidecar::health::Readiness;
use tempcreds_sidecar::metrics::Metrics;
use tempcreds_sidecar::output::Output;
use tempcreds_sidecar::refresh::Refresh;
use tempcreds_sidecar::sts::Sts;

/// VmRSS of this process in KiB. (`tempcreds_tests::vm_rss_kib` is the
/// tests' copy; an example linking the test harness would build it, kube and
/// reqwest included, in the size-optimised profile `make bench` uses.)
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(count) = args.next().and_then(|c| c.parse::<u64>().ok()) else {
        eprintln!("usage: refresh_soak COUNT RUN_FLAGS...");
        return ExitCode::from(2);
    };
    let cli = Cli::parse_from(
        ["tempcreds-sidecar".to_owned(), "run".to_owned()]
            .into_iter()
            .chain(args),
    );
    let Command::Run(run) = cli.command else {
        unreachable!("parsed as `run`");
    };
    let config = run.config;
    tempcreds_sidecar::logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let sts = match Sts::new(&config).await {
            Ok(sts) => sts,
            Err(e) => {
                eprintln!("cannot set up STS: {e}");
                return ExitCode::FAILURE;
            }
        };
        let output = Output::new(&config.output_dir, &config.profile);
        let metrics = Metrics::new(Readiness::default(), "default");
        let mut refresher = StsRefresh::new(sts, output, &config).with_metrics(metrics);
        let mut checkpoints = Vec::new();
        let mut next_checkpoint = 10;
        for i in 1..=count {
            if let Err(e) = refresher.refresh().await {
                eprintln!("refresh {i} failed: {e}");
                return ExitCode::FAILURE;
            }
            if i == next_checkpoint || i == count {
                let kib = rss_kib();
                println!("rss refresh={i} kib={kib}");
                checkpoints.push(format!("{i}:{kib}"));
                if i == next_checkpoint {
                    next_checkpoint *= 10;
                }
            }
        }
        println!("RESULT refreshes={count} rss_kib={}", checkpoints.join(","));
        ExitCode::SUCCESS
    })
}
