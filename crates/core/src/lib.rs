//! Shared vocabulary of tempcreds.
//!
//! Everything the admission webhook and the credential sidecar must agree on
//! lives here, so the two cannot drift: annotation names, the sidecar's
//! configuration type and its command line, mount paths and file names, ARN
//! and duration parsing, STS parameter rules and the credential output
//! formats. This crate does no I/O and depends on neither the AWS SDK nor an
//! HTTP stack, so it is cheap to test, fuzz and benchmark.

pub mod annotations;
pub mod arn;
pub mod config;
pub mod credentials;
pub mod duration;
pub mod exposition;
pub mod paths;
pub mod spec;
pub mod sts;
pub mod sts_url;
pub mod sts_variant;

pub use arn::{Partition, PolicyArn, RoleArn};
pub use config::{ConfigError, Delivery, SidecarConfig, Source};
pub use credentials::{Credentials, SecretString};
pub use duration::parse_duration;
