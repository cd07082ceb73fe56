//! The tempcreds mutating admission webhook.
//!
//! [`mutate::mutate`] is the pure mutation (pod in, JSON patch out); the other
//! modules put I/O around it: the HTTPS server ([`server`], [`tls`]), the
//! cluster configuration file ([`config`]), file reloading ([`watch`]),
//! ServiceAccount defaults from the API ([`sa_cache`]), self-managed
//! certificates ([`selfcert`], [`selfcert_sync`]), the metrics
//! ([`metrics`]), the command line ([`cli`]) and offline injection into
//! manifests ([`inject_cmd`]).

pub mod cli;
pub mod config;
pub mod inject_cmd;
pub mod metrics;
pub mod mutate;
pub mod policy;
pub mod sa_cache;
pub mod selfcert;
pub mod selfcert_sync;
pub mod server;
pub mod tls;
pub mod watch;

pub use config::ClusterConfig;
pub use mutate::{Context, Outcome, mutate};

/// An error and its sources on one line, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
