//! The tempcreds credential sidecar.
//!
//! It obtains temporary AWS credentials from STS ([`sts`]), writes them
//! atomically into the shared volume ([`output`]), refreshes them before they
//! expire and backs off when STS fails ([`refresh`]), re-authenticates when
//! the token or key files change ([`watch`]), and reports readiness
//! ([`health`]) and Prometheus metrics ([`metrics`]) and, with
//! `--endpoint-addr`, serves the container-credentials endpoint
//! ([`endpoint`]); both listeners run within [`listen`]'s limits. [`app`]
//! ties these together for `tempcreds-sidecar run`;
//! [`explain`] turns STS errors into a likely cause and fix; [`probe`] reads
//! back what a previous run wrote (the exec probe, and adoption on restart);
//! [`status`] reads a running sidecar's `/metrics` back for people.
//!
//! `tempcreds-sidecar doctor` ([`doctor`]) checks a configuration step by
//! step: the token ([`token`]), its issuer's published keys ([`issuer`]), the
//! IAM policies it needs ([`policy`]) and the STS calls themselves.

pub mod app;
pub mod cli;
pub mod doctor;
pub mod endpoint;
pub mod explain;
pub mod health;
pub mod inputs;
pub mod issuer;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod probe;
pub mod refresh;
pub mod status;
pub mod sts;
pub mod token;
pub mod watch;
