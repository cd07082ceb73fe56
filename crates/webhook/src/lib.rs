//! The tempcreds mutating admission webhook.
//!
//! [`mutate::mutate`] is the pure mutation (pod in, JSON patch out); the other
//! modules put I/O around it: the HTTPS server ([`server`], [`tls`]), the
//! cluster configuration file ([`config`]), ServiceAccount defaults from the
//! API ([`sa_cache`]), the metrics ([`metrics`]), the command line ([`cli`])
//! and offline injection into manifests ([`inject_cmd`]).

pub mod config;
pub mod mutate;

pub use config::ClusterConfig;
pub use mutate::{Context, Outcome, mutate};
