//! The sidecar's configuration: its command line, environment variables and
//! the rules that tie the options together.
//!
//! [`SidecarConfig`] is both what `tempcreds-sidecar run` parses (every flag
//! is also read from `TEMPCREDS_<FLAG>`) and what the webhook renders into the
//! injected container's arguments with [`SidecarConfig::to_args`]. A test
//! parses the rendered arguments back, so the two sides cannot drift.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::arn::{PolicyArn, RoleArn};
use crate::duration::{format_duration, parse_duration};
use crate::paths;
use crate::sts::{
    self, CHAINED_SESSION_MAX, ExternalId, MAX_POLICY_ARNS, SessionName, SessionTag,
    SourceIdentity, StsCall,
};
use crate::sts_url::{StsUrlError, check_sts_url};
use crate::sts_variant::{FLAG_NAMES, Setting, Variant, check_variant};

/// Where the sidecar's first credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A projected service-account token and `AssumeRoleWithWebIdentity`.
    #[default]
    WebIdentity,
    /// Long-term keys from files (a Secret): `AssumeRole`, or
    /// `GetSessionToken` when no role is configured.
    Secret,
    /// The SDK's default credential chain (node role, EKS Pod Identity,
    /// environment), then `AssumeRole`.
    Ambient,
}

impl Source {
    /// Every source, as written in flags and annotations.
    pub const ALL: [Source; 3] = [Source::WebIdentity, Source::Secret, Source::Ambient];

    /// The name used in flags and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::WebIdentity => "web-identity",
            Source::Secret => "secret",
            Source::Ambient => "ambient",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a source; accepted: web-identity, secret, ambient")
            })
    }
}

/// How application containers receive credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// The shared-credentials file only (`AWS_SHARED_CREDENTIALS_FILE`); SDKs
    /// read it once per client.
    #[default]
    File,
    /// A config file whose profile runs `credential_process`
    /// (`AWS_CONFIG_FILE`); SDKs re-run it before expiry.
    Process,
    /// The container-credentials endpoint on loopback
    /// (`AWS_CONTAINER_CREDENTIALS_FULL_URI`); SDKs refresh from it.
    Endpoint,
}

impl Delivery {
    /// Every mode, as written in config and annotations.
    pub const ALL: [Delivery; 3] = [Delivery::File, Delivery::Process, Delivery::Endpoint];

    /// The name used in config and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::File => "file",
            Delivery::Process => "process",
            Delivery::Endpoint => "endpoint",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Delivery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Delivery::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a delivery mode; accepted: file, process, endpoint")
            })
    }
}

/// `s` quoted and escaped for a message (`"a\nb"`), at most about 100
/// characters of escaped text: a value may be hostile or huge.
pub fn quoted(s: &str) -> String {
    const MAX: usize = 100;
    let full = format!("{s:?}");
    if full.chars().count() <= MAX + 2 {
        return full;
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        let escaped: String = c.escape_debug().collect();
        if out.chars().count() + escaped.chars().count() > MAX {
            break;
        }
        out.push_str(&escaped);
    }
    format!("{out}\"... ({} characters)", s.chars().count())
}

/// The shortest `--refresh-before` accepted.
pub const MIN_REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// AWS SDKs refresh credentials with less than this left (botocore's
/// advisory window); a shorter `--refresh-before` gets a warning.
pub const SDK_REFRESH_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest profile name accepted.
pub const MAX_PROFILE_CHARS: usize = 64;

/// Whether `s` is a usable profile name: 1 to [`MAX_PROFILE_CHARS`] ASCII
/// letters, digits, `-`, `_` and `.` (it becomes an INI section header and
/// `AWS_PROFILE`).
pub fn is_profile_name(s: &str) -> bool {
    (1..=MAX_PROFILE_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether `s` has the shape of an AWS region name: a lower-case prefix of
/// 2 to 4 letters, one or more `-` parts of lower-case letters and digits,
/// and a `-` number (`eu-west-1`, `us-gov-west-1`, `cn-north-1`,
/// `eusc-de-east-1`); at most 50 characters.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lower_alnum = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.len() <= 50
        && parts.len() >= 3
        && (2..=4).contains(&parts[0].len())
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| lower_alnum(p))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// The sidecar's configuration (`tempcreds-sidecar run` and `doctor`).
///
/// Each flag is also read from the environment variable `TEMPCREDS_` followed
/// by the flag name in upper case with `_` for `-` (`--role-arn` is
/// `TEMPCREDS_ROLE_ARN`). Repeatable flags take a comma-separated list there.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SidecarConfig {
    /// Where the first credentials come from.
    #[arg(long, env = "TEMPCREDS_SOURCE", value_enum, default_value_t = Source::WebIdentity)]
    pub source: Source,

    /// The role to assume. Without it, `--source secret` calls GetSessionToken.
    #[arg(long, env = "TEMPCREDS_ROLE_ARN", value_name = "ARN")]
    pub role_arn: Option<RoleArn>,

    /// Further roles to assume in order after the first (role chaining).
    #[arg(
        long = "chain-role-arn",
        env = "TEMPCREDS_CHAIN_ROLE_ARN",
        value_name = "ARN",
        value_delimiter = ','
    )]
    pub chain_role_arns: Vec<RoleArn>,

    /// The projected service-account token (`--source web-identity`).
    #[arg(long, env = "TEMPCREDS_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// File holding the long-term access key ID (`--source secret`).
    #[arg(long, env = "TEMPCREDS_ACCESS_KEY_ID_FILE", value_name = "PATH")]
    pub access_key_id_file: Option<PathBuf>,

    /// File holding the long-term secret access key (`--source secret`).
    #[arg(long, env = "TEMPCREDS_SECRET_ACCESS_KEY_FILE", value_name = "PATH")]
    pub secret_access_key_file: Option<PathBuf>,

    /// Requested session lifetime (`900`, `15m`, `1h`). Default: STS's (1 h
    /// for roles, 12 h for GetSessionToken).
    #[arg(long, env = "TEMPCREDS_SESSION_DURATION", value_name = "DURATION", value_parser = duration_arg)]
    pub session_duration: Option<Duration>,

    /// RoleSessionName. Default: derived from `--pod-name`, the same on every
    /// refresh.
    #[arg(long, env = "TEMPCREDS_SESSION_NAME", value_name = "NAME")]
    pub session_name: Option<SessionName>,

    /// The pod's name (from the downward API), for the default session name.
    #[arg(long, env = "TEMPCREDS_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// ExternalId for AssumeRole.
    #[arg(long, env = "TEMPCREDS_EXTERNAL_ID", value_name = "ID")]
    pub external_id: Option<ExternalId>,

    /// SourceIdentity for AssumeRole.
    #[arg(long, env = "TEMPCREDS_SOURCE_IDENTITY", value_name = "ID")]
    pub source_identity: Option<SourceIdentity>,

    /// Managed session policies, applied to the final session.
    #[arg(
        long = "policy-arn",
        env = "TEMPCREDS_POLICY_ARN",
        value_name = "ARN",
        value_delimiter = ','
    )]
    pub policy_arns: Vec<PolicyArn>,

    /// Session tags `KEY=VALUE`, passed on the first AssumeRole.
    #[arg(
        long = "session-tag",
        env = "TEMPCREDS_SESSION_TAG",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub session_tags: Vec<SessionTag>,

    /// Also tag the first AssumeRole with this key and the pod's name
    /// (`--pod-name`, made of tag characters), e.g. `kubernetes-pod-name`.
    /// The webhook sets it for `tempcreds.io/session-tags-policy: simple`,
    /// since a pod created with `generateName` has no name at admission.
    #[arg(long, env = "TEMPCREDS_POD_NAME_TAG_KEY", value_name = "KEY")]
    pub pod_name_tag_key: Option<String>,

    /// Keys of session tags that pass on to chained roles.
    #[arg(
        long = "transitive-tag-key",
        env = "TEMPCREDS_TRANSITIVE_TAG_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub transitive_tag_keys: Vec<String>,

    /// AWS region; selects the regional STS endpoint.
    #[arg(long, env = "TEMPCREDS_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// A custom STS endpoint URL (VPC endpoints, tests): https://HOST[:PORT],
    /// or http:// to a loopback address.
    #[arg(long, env = "TEMPCREDS_STS_ENDPOINT", value_name = "URL")]
    pub sts_endpoint: Option<String>,

    /// Accept a plain http:// `--sts-endpoint` to a host that is not
    /// loopback (test setups only: the web-identity token and the signed
    /// requests then cross the network unencrypted).
    #[arg(long, env = "TEMPCREDS_ALLOW_HTTP_STS_ENDPOINT")]
    pub allow_http_sts_endpoint: bool,

    /// Call STS's FIPS endpoint, as the AWS SDK resolves it for the region
    /// (us-east-1, us-east-2, us-west-1, us-west-2 and GovCloud only).
    #[arg(long, env = "TEMPCREDS_USE_FIPS_ENDPOINT")]
    pub use_fips_endpoint: bool,

    /// Call STS's dual-stack (IPv4 and IPv6) endpoint, as the AWS SDK
    /// resolves it for the region (IPv6-only clusters).
    #[arg(long, env = "TEMPCREDS_USE_DUALSTACK_ENDPOINT")]
    pub use_dualstack_endpoint: bool,

    /// Where the credential files are written.
    #[arg(long, env = "TEMPCREDS_OUTPUT_DIR", value_name = "DIR", default_value = paths::OUTPUT_DIR)]
    pub output_dir: PathBuf,

    /// Profile name in the credentials file.
    #[arg(
        long,
        env = "TEMPCREDS_PROFILE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub profile: String,

    /// How long before expiry to refresh. Default: half the lifetime.
    #[arg(long, env = "TEMPCREDS_REFRESH_BEFORE", value_name = "DURATION", value_parser = duration_arg)]
    pub refresh_before: Option<Duration>,

    /// Address of `/healthz`, `/readyz` and `/metrics` (Prometheus).
    #[arg(long, env = "TEMPCREDS_HEALTH_ADDR", value_name = "ADDR", default_value = paths::DEFAULT_HEALTH_ADDR)]
    pub health_addr: SocketAddr,

    /// Serve the container-credentials endpoint (`GET /v1/credentials`) on
    /// this loopback address, e.g. `127.0.0.1:8098`, with a random
    /// authorization token written to `endpoint-token` in `--output-dir`.
    /// Applications point `AWS_CONTAINER_CREDENTIALS_FULL_URI` at it.
    #[arg(long, env = "TEMPCREDS_ENDPOINT_ADDR", value_name = "ADDR")]
    pub endpoint_addr: Option<SocketAddr>,
}

/// A configuration problem, naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {message}")]
pub struct ConfigError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl SidecarConfig {
    /// A configuration with every option at its default, for `source`.
    pub fn new(source: Source) -> SidecarConfig {
        SidecarConfig {
            source,
            role_arn: None,
            chain_role_arns: Vec::new(),
            token_file: None,
            access_key_id_file: None,
            secret_access_key_file: None,
            session_duration: None,
            session_name: None,
            pod_name: None,
            external_id: None,
            source_identity: None,
            policy_arns: Vec::new(),
            session_tags: Vec::new(),
            pod_name_tag_key: None,
            transitive_tag_keys: Vec::new(),
            region: None,
            sts_endpoint: None,
            allow_http_sts_endpoint: false,
            use_fips_endpoint: false,
            use_dualstack_endpoint: false,
            output_dir: PathBuf::from(paths::OUTPUT_DIR),
            profile: "default".to_owned(),
            refresh_before: None,
            health_addr: paths::DEFAULT_HEALTH_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], paths::DEFAULT_HEALTH_PORT))),
            endpoint_addr: None,
        }
    }

    /// The STS endpoint variant asked for (`--use-fips-endpoint`,
    /// `--use-dualstack-endpoint`).
    pub fn sts_variant(&self) -> Variant {
        Variant {
            fips: self.use_fips_endpoint,
            dual_stack: self.use_dualstack_endpoint,
        }
    }

    /// The STS call that obtains the first credentials.
    pub fn first_call(&self) -> StsCall {
        match (self.source, &self.role_arn) {
            (Source::WebIdentity, _) => StsCall::AssumeRoleWithWebIdentity,
            (Source::Secret, None) => StsCall::GetSessionToken,
            _ => StsCall::AssumeRole,
        }
    }

    /// The session name used on every call: `--session-name`, else derived
    /// from `--pod-name`, else `tempcreds`.
    pub fn effective_session_name(&self) -> SessionName {
        match (&self.session_name, &self.pod_name) {
            (Some(name), _) => name.clone(),
            (None, Some(pod)) => SessionName::sanitized(pod),
            (None, None) => SessionName::sanitized("tempcreds"),
        }
    }

    /// The session tags of the first AssumeRole: `--session-tag`s, then
    /// `--pod-name-tag-key` with the pod's name made of tag characters
    /// (`pod` stands in when `--pod-name` is unset, for validation).
    pub fn effective_session_tags(&self) -> Vec<SessionTag> {
        let mut tags = self.session_tags.clone();
        if let Some(key) = &self.pod_name_tag_key {
            let pod = self.pod_name.as_deref().unwrap_or("pod");
            tags.push(SessionTag {
                key: key.clone(),
                value: sts::tag_value_sanitized(pod),
            });
        }
        tags
    }

    /// The duration to request on chained calls: the requested one capped at
    /// STS's 1 h limit for role chaining.
    pub fn chained_duration(&self) -> Option<Duration> {
        self.session_duration.map(|d| d.min(CHAINED_SESSION_MAX))
    }

    /// Checks the options together. Returns warnings (the configuration works
    /// but probably not as meant) or every problem found, each naming its flag.
    pub fn validate(&self) -> Result<Vec<String>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut err = |flag, message: String| errors.push(ConfigError { flag, message });
        let call = self.first_call();

        match self.source {
            Source::WebIdentity => {
                if self.role_arn.is_none() {
                    err("role-arn", "is required with --source web-identity".into());
                }
                if self.token_file.is_none() {
                    err(
                        "token-file",
                        "is required with --source web-identity (the projected service-account token)".into(),
                    );
                }
            }
            Source::Secret => {
                if self.access_key_id_file.is_none() {
                    err(
                        "access-key-id-file",
                        "is required with --source secret".into(),
                    );
                }
                if self.secret_access_key_file.is_none() {
                    err(
                        "secret-access-key-file",
                        "is required with --source secret".into(),
                    );
                }
            }
            Source::Ambient => {
                if self.role_arn.is_none() {
                    err("role-arn", "is required with --source ambient".into());
                }
            }
        }

        if call == StsCall::GetSessionToken {
            let role_only = [
                ("chain-role-arn", !self.chain_role_arns.is_empty()),
                ("external-id", self.external_id.is_some()),
                ("source-identity", self.source_identity.is_some()),
                ("policy-arn", !self.policy_arns.is_empty()),
                ("session-tag", !self.session_tags.is_empty()),
                ("pod-name-tag-key", self.pod_name_tag_key.is_some()),
                ("transitive-tag-key", !self.transitive_tag_keys.is_empty()),
            ];
            for (flag, set) in role_only {
                if set {
                    err(
                        flag,
                        "needs --role-arn: without a role tempcreds calls GetSessionToken, which does not take it".into(),
                    );
                }
            }
        }
        if call == StsCall::AssumeRoleWithWebIdentity && self.chain_role_arns.is_empty() {
            let assume_role_only = [
                ("external-id", self.external_id.is_some()),
                ("source-identity", self.source_identity.is_some()),
                ("session-tag", !self.session_tags.is_empty()),
                ("pod-name-tag-key", self.pod_name_tag_key.is_some()),
                ("transitive-tag-key", !self.transitive_tag_keys.is_empty()),
            ];
            for (flag, set) in assume_role_only {
                if set {
                    err(
                        flag,
                        "AssumeRoleWithWebIdentity does not take it (session tags come from the token's claims); \
                         it applies only to AssumeRole, e.g. with --chain-role-arn"
                            .into(),
                    );
                }
            }
        }

        if let Some(d) = self.session_duration {
            if let Err(e) = call.check_duration(d) {
                err("session-duration", e);
            } else if !self.chain_role_arns.is_empty() && d > CHAINED_SESSION_MAX {
                warnings.push(format!(
                    "--session-duration {}: chained role sessions last at most 1h; \
                     the chained calls request 1h",
                    format_duration(d)
                ));
            }
        }
        if self.policy_arns.len() > MAX_POLICY_ARNS {
            err(
                "policy-arn",
                format!(
                    "{} given; STS accepts at most {MAX_POLICY_ARNS}",
                    self.policy_arns.len()
                ),
            );
        }
        for key in &self.transitive_tag_keys {
            if let Err(e) = sts::check_tag_key(key) {
                err("transitive-tag-key", e.to_string());
            }
        }
        if let Some(key) = &self.pod_name_tag_key
            && let Err(e) = sts::check_tag_key(key)
        {
            err("pod-name-tag-key", e.to_string());
        }
        if let Err(e) =
            sts::check_tag_set(&self.effective_session_tags(), &self.transitive_tag_keys)
        {
            err("session-tag", e);
        }
        if !is_profile_name(&self.profile) {
            err(
                "profile",
                format!(
                    "{} is not a usable profile name; accepted: 1 to {MAX_PROFILE_CHARS} letters, digits, '-', '_' and '.'",
                    quoted(&self.profile)
                ),
            );
        }
        if let Some(region) = &self.region
            && !is_region(region)
        {
            err(
                "region",
                format!(
                    "{} is not a region name such as eu-west-1 or us-gov-west-1",
                    quoted(region)
                ),
            );
        }
        for tag in &self.session_tags {
            if let Some(c) = tag
                .key
                .chars()
                .chain(tag.value.chars())
                .find(|c| c.is_control())
            {
                err(
                    "session-tag",
                    format!(
                        "{} contains the control character {c:?}; STS accepts in tags only letters, digits, \
                         spaces and _ . : / = + - @",
                        quoted(&tag.to_string())
                    ),
                );
            }
        }
        if let Some(endpoint) = &self.sts_endpoint
            && let Err(e) = check_sts_url(endpoint, self.allow_http_sts_endpoint)
        {
            let hint = match e {
                StsUrlError::PlainHttp { .. } => {
                    "; --allow-http-sts-endpoint allows it (test setups only)"
                }
                StsUrlError::Invalid(_) => "",
            };
            err("sts-endpoint", format!("{} {e}{hint}", quoted(endpoint)));
        }
        for e in check_variant(
            self.sts_variant(),
            self.region.as_deref(),
            self.sts_endpoint.as_deref(),
            &FLAG_NAMES,
        ) {
            match e.setting {
                Setting::Fips => err("use-fips-endpoint", e.message),
                Setting::DualStack => err("use-dualstack-endpoint", e.message),
            }
        }
        if let (Some(role), Some(region)) = (&self.role_arn, &self.region) {
            let want = crate::arn::Partition::of_region(region);
            if role.partition() != want {
                warnings.push(format!(
                    "--role-arn is in partition {} but --region {region} is in {want}; STS will refuse it",
                    role.partition()
                ));
            }
        }
        if let Some(addr) = self.endpoint_addr
            && !addr.ip().is_loopback()
        {
            err(
                "endpoint-addr",
                format!(
                    "{addr} is not a loopback address; the credentials endpoint serves secrets and \
                     listens only on loopback (127.0.0.1:PORT or [::1]:PORT), which every container \
                     of the pod shares"
                ),
            );
        }
        if let Some(before) = self.refresh_before {
            if before < MIN_REFRESH_BEFORE {
                err(
                    "refresh-before",
                    format!(
                        "{} is too short: credentials would be renewed only as they expire, and apps would \
                         get expired ones while STS answers; accepted: 1m or more, and less than the session duration",
                        format_duration(before)
                    ),
                );
            } else if before < SDK_REFRESH_WINDOW {
                warnings.push(format!(
                    "--refresh-before {}: AWS SDKs refresh credentials with less than 15m left, so between then and \
                     the sidecar's refresh they fetch the same credentials again on every call (endpoint and \
                     process delivery); 15m or more avoids that",
                    format_duration(before)
                ));
            }
        }
        if self.source == Source::Ambient
            && self.chain_role_arns.is_empty()
            && let Some(d) = self.session_duration
            && d > CHAINED_SESSION_MAX
            && call.check_duration(d).is_ok()
        {
            warnings.push(format!(
                "--session-duration {}: with --source ambient the sidecar's own credentials may be a role's \
                 (a node role, EKS Pod Identity); STS then treats the AssumeRole as role chaining and refuses \
                 durations above 1h. If they are, request 1h or less",
                format_duration(d)
            ));
        }
        if let (Some(before), Some(d)) = (self.refresh_before, self.session_duration)
            && before >= d
        {
            err(
                "refresh-before",
                format!(
                    "{} is not shorter than --session-duration {}; credentials would be refreshed as soon as they arrive",
                    format_duration(before),
                    format_duration(d)
                ),
            );
        }

        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(errors)
        }
    }

    /// The command-line arguments that reproduce this configuration, after
    /// the `run` subcommand. Options at their default are left out.
    pub fn to_args(&self) -> Vec<String> {
        let defaults = SidecarConfig::new(self.source);
        let mut args = vec!["--source".to_owned(), self.source.to_string()];
        // `--flag VALUE` reads best in a pod spec, but a value starting with
        // `-` would be taken for a flag: those are written `--flag=VALUE`.
        let mut push = |flag: &str, value: String| {
            if value.starts_with('-') {
                args.push(format!("--{flag}={value}"));
            } else {
                args.push(format!("--{flag}"));
                args.push(value);
            }
        };
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(v) = &self.role_arn {
            push("role-arn", v.to_string());
        }
        for v in &self.chain_role_arns {
            push("chain-role-arn", v.to_string());
        }
        if let Some(v) = &self.token_file {
            push("token-file", path(v));
        }
        if let Some(v) = &self.access_key_id_file {
            push("access-key-id-file", path(v));
        }
        if let Some(v) = &self.secret_access_key_file {
            push("secret-access-key-file", path(v));
        }
        if let Some(v) = self.session_duration {
            push("session-duration", format_duration(v));
        }
        if let Some(v) = &self.session_name {
            push("session-name", v.to_string());
        }
        if let Some(v) = &self.pod_name {
            push("pod-name", v.clone());
        }
        if let Some(v) = &self.external_id {
            push("external-id", v.to_string());
        }
        if let Some(v) = &self.source_identity {
            push("source-identity", v.to_string());
        }
        for v in &self.policy_arns {
            push("policy-arn", v.to_string());
        }
        for v in &self.session_tags {
            push("session-tag", v.to_string());
        }
        if let Some(v) = &self.pod_name_tag_key {
            push("pod-name-tag-key", v.clone());
        }
        for v in &self.transitive_tag_keys {
            push("transitive-tag-key", v.clone());
        }
        if let Some(v) = &self.region {
            push("region", v.clone());
        }
        if let Some(v) = &self.sts_endpoint {
            push("sts-endpoint", v.clone());
        }
        if self.output_dir != defaults.output_dir {
            push("output-dir", path(&self.output_dir));
        }
        if self.profile != defaults.profile {
            push("profile", self.profile.clone());
        }
        if let Some(v) = self.refresh_before {
            push("refresh-before", format_duration(v));
        }
        if self.health_addr != defaults.health_addr {
            push("health-addr", self.health_addr.to_string());
        }
        if let Some(v) = self.endpoint_addr {
            push("endpoint-addr", v.to_string());
        }
        if self.allow_http_sts_endpoint {
            args.push("--allow-http-sts-endpoint".to_owned());
        }
        if self.use_fips_endpoint {
            args.push("--use-fips-endpoint".to_owned());
        }
        if self.use_dualstack_endpoint {
            args.push("--use-dualstack-endpoint".to_owned());
        }
        args
    }
}

/// The argument that starts an additional profile's flags on the sidecar's
/// command line: `run FLAGS --and-profile NAME FLAGS --and-profile NAME2 ...`.
pub const AND_PROFILE: &str = "--and-profile";

/// Flags that configure the whole sidecar, not a profile: refused after
/// [`AND_PROFILE`].
pub const SIDECAR_WIDE_FLAGS: [&str; 4] = ["output-dir", "profile", "health-addr", "endpoint-addr"];

/// Splits a sidecar command line at each [`AND_PROFILE`]: the arguments
/// before the first, then each additional profile's (its name first).
/// Rendered arguments never hold `--and-profile` as a value:
/// [`SidecarConfig::to_args`] writes values starting with `-` as
/// `--flag=VALUE`.
pub fn split_profiles<T: AsRef<std::ffi::OsStr>>(args: Vec<T>) -> (Vec<T>, Vec<Vec<T>>) {
    let mut head = Vec::new();
    let mut profiles: Vec<Vec<T>> = Vec::new();
    for arg in args {
        if arg.as_ref() == AND_PROFILE {
            profiles.push(Vec::new());
        } else if let Some(current) = profiles.last_mut() {
            current.push(arg);
        } else {
            head.push(arg);
        }
    }
    (head, profiles)
}

/// Parses additional profiles' arguments (each: `NAME FLAGS...`, from
/// [`split_profiles`]) into full configurations: the flags of `first` that
/// configure the whole sidecar, the region, STS endpoint, plain-HTTP
/// allowance, FIPS/dual-stack settings and pod name from `first` unless set,
/// and the rest from the profile's own flags only (no `TEMPCREDS_*`
/// environment variable: those are the first profile's). The error is
/// clap's, naming the profile and the flag.
pub fn parse_additional(
    first: &SidecarConfig,
    profiles: &[Vec<std::ffi::OsString>],
) -> Result<Vec<SidecarConfig>, clap::Error> {
    use clap::FromArgMatches;
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    names.insert(first.profile.clone());
    for args in profiles {
        let Some(name) = args.first().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Err(usage_error(format!(
                "{AND_PROFILE} needs a profile name, then that profile's flags"
            )));
        };
        // clap's own message, with the profile named: the first line
        // without its `error: ` prefix.
        let named = |e: clap::Error| {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or_default();
            usage_error(format!(
                "{AND_PROFILE} {name}: {}",
                line.trim_start_matches("error: ")
            ))
        };
        let matches = profile_command()
            .try_get_matches_from(&args[1..])
            .map_err(named)?;
        let mut config = SidecarConfig::from_arg_matches(&matches).map_err(named)?;
        let set =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        let ids = |flag: &str| flag.replace('-', "_");
        if let Some(flag) = SIDECAR_WIDE_FLAGS.iter().find(|f| set(&ids(f))) {
            return Err(usage_error(format!(
                "{AND_PROFILE} {name}: --{flag} configures the whole sidecar; give it before the first {AND_PROFILE}"
            )));
        }
        if !is_profile_name(&name) || !names.insert(name.clone()) {
            return Err(usage_error(format!(
                "{AND_PROFILE} {}: not a usable profile name, or one given twice; accepted: 1 to \
                 {MAX_PROFILE_CHARS} letters, digits, '-', '_' and '.', each profile once",
                quoted(&name)
            )));
        }
        config.profile = name;
        config.output_dir = first.output_dir.clone();
        config.health_addr = first.health_addr;
        config.endpoint_addr = first.endpoint_addr;
        if !set("region") {
            config.region = first.region.clone();
        }
        if !set("sts_endpoint") {
            config.sts_endpoint = first.sts_endpoint.clone();
        }
        if !set("allow_http_sts_endpoint") {
            config.allow_http_sts_endpoint = first.allow_http_sts_endpoint;
        }
        if !set("use_fips_endpoint") {
            config.use_fips_endpoint = first.use_fips_endpoint;
        }
        if !set("use_dualstack_endpoint") {
            config.use_dualstack_endpoint = first.use_dualstack_endpoint;
        }
        if !set("pod_name") {
            config.pod_name = first.pod_name.clone();
        }
        out.push(config);
    }
    Ok(out)
}

/// The parser of an additional profile's flags: [`SidecarConfig`]'s, without
/// their environment variables.
fn profile_command() -> clap::Command {
    use clap::Args;
    SidecarConfig::augment_args(clap::Command::new("and-profile"))
        .no_binary_name(true)
        .mut_args(|a| a.env(None))
}

fn usage_error(message: String) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::ArgumentConflict,
        format!("{message}\n"),
    )
}

/// The sidecar's arguments (after `run` or `doctor`) for every profile:
/// the first profile's flags, then [`AND_PROFILE`], the name and the flags
/// of each further one, without the flags it takes from the first.
pub fn render_profiles(configs: &[SidecarConfig]) -> Vec<String> {
    let Some((first, rest)) = configs.split_first() else {
        return Vec::new();
    };
    let mut args = first.to_args();
    for config in rest {
        let mut own = config.clone();
        // What the profile would inherit anyway is left out.
        own.output_dir = PathBuf::from(paths::OUTPUT_DIR);
        own.profile = "default".to_owned();
        own.health_addr = SidecarConfig::new(own.source).health_addr;
        own.endpoint_addr = None;
        if own.region == first.region {
            own.region = None;
        }
        if own.sts_endpoint == first.sts_endpoint {
            own.sts_endpoint = None;
        }
        if own.allow_http_sts_endpoint == first.allow_http_sts_endpoint {
            own.allow_http_sts_endpoint = false;
        }
        if own.use_fips_endpoint == first.use_fips_endpoint {
            own.use_fips_endpoint = false;
        }
        if own.use_dualstack_endpoint == first.use_dualstack_endpoint {
            own.use_dualstack_endpoint = false;
        }
        if own.pod_name == first.pod_name {
            own.pod_name = None;
        }
        args.push(AND_PROFILE.to_owned());
        args.push(config.profile.clone());
        args.extend(own.to_args());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: SidecarConfig,
    }

    fn parse(args: &[String]) -> Result<SidecarConfig, clap::Error> {
        let argv = std::iter::once("tempcreds-sidecar".to_owned()).chain(args.iter().cloned());
        Cli::try_parse_from(argv).map(|c| c.config)
    }

    fn full() -> SidecarConfig {
        let mut c = SidecarConfig::new(Source::Secret);
        c.role_arn = Some("arn:aws:iam::123456789012:role/first".parse().unwrap());
        c.chain_role_arns = vec!["arn:aws:iam::210987654321:role/second".parse().unwrap()];
        c.access_key_id_file = Some("/keys/id".into());
        c.secret_access_key_file = Some("/keys/secret".into());
        c.session_duration = Some(Duration::from_secs(5400));
        c.session_name = Some("my-session".parse().unwrap());
        c.pod_name = Some("web-0".into());
        c.external_id = Some("ext-123".parse().unwrap());
        c.source_identity = Some("alice".parse().unwrap());
        c.policy_arns = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".parse().unwrap()];
        c.session_tags = vec![
            "team=pay ments".parse().unwrap(),
            "env=prod".parse().unwrap(),
        ];
        c.pod_name_tag_key = Some("kubernetes-pod-name".into());
        c.transitive_tag_keys = vec!["team".into()];
        c.region = Some("eu-west-1".into());
        c.sts_endpoint = Some("http://10.0.0.1:5000".into());
        c.allow_http_sts_endpoint = true;
        c.output_dir = "/out".into();
        c.profile = "app".into();
        c.refresh_before = Some(Duration::from_secs(600));
        c.health_addr = "127.0.0.1:9000".parse().unwrap();
        c.endpoint_addr = Some("127.0.0.1:8098".parse().unwrap());
        c
    }

    fn profile_args(args: &[&str]) -> Result<(SidecarConfig, Vec<SidecarConfig>), String> {
        let argv: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let (head, rest) = split_profiles(argv);
        let first = parse(&head).map_err(|e| e.to_string())?;
        let rest: Vec<Vec<std::ffi::OsString>> = rest
            .into_iter()
            .map(|p| p.into_iter().map(Into::into).collect())
            .collect();
        let extra = parse_additional(&first, &rest).map_err(|e| e.to_string())?;
        Ok((first, extra))
    }

    #[test]
    fn additional_profiles_render_and_parse_back() {
        let first = full();
        let mut writer = SidecarConfig::new(Source::WebIdentity);
        writer.role_arn = Some("arn:aws:iam::210987654321:role/writer".parse().unwrap());
        writer.token_file = Some("/t".into());
        writer.session_tags = vec!["note=--and-profile".parse().unwrap()];
        writer.profile = "writer".into();
        writer.output_dir = first.output_dir.clone();
        writer.health_addr = first.health_addr;
        writer.endpoint_addr = first.endpoint_addr;
        writer.region = first.region.clone();
        writer.sts_endpoint = first.sts_endpoint.clone();
        writer.allow_http_sts_endpoint = first.allow_http_sts_endpoint;
        writer.pod_name = first.pod_name.clone();
        let mut other_region = writer.clone();
        other_region.profile = "us".into();
        other_region.region = Some("us-east-1".into());
        let configs = vec![first.clone(), writer.clone(), other_region.clone()];
        let args = render_profiles(&configs);
        assert_eq!(
            args.iter().filter(|a| *a == AND_PROFILE).count(),
            2,
            "{args:?}"
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (parsed_first, extra) = profile_args(&refs).unwrap();
        assert_eq!(parsed_first, first);
        assert_eq!(extra, [writer, other_region]);
    }

    #[test]
    fn additional_profile_mistakes_name_the_profile() {
        let base = [
            "--role-arn",
            "arn:aws:iam::123456789012:role/a",
            "--token-file",
            "/t",
        ];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            profile_args(&v).unwrap_err()
        };
        let e = with(&["--and-profile", "w", "--output-dir", "/x"]);
        assert!(
            e.contains("--and-profile w: --output-dir configures the whole sidecar"),
            "{e}"
        );
        let e = with(&["--and-profile", "w", "--role-arn", "nope"]);
        assert!(e.contains("--and-profile w:") && e.contains("nope"), "{e}");
        let e = with(&[
            "--and-profile",
            "default",
            "--role-arn",
            "arn:aws:iam::123456789012:role/b",
        ]);
        assert!(e.contains("given twice"), "{e}");
        let e = with(&["--and-profile"]);
        assert!(e.contains("needs a profile name"), "{e}");
    }

    #[test]
    fn additional_profiles_ignore_the_first_profiles_environment() {
        // TEMPCREDS_ROLE_ARN and the like configure the first profile only
        // (the environment cannot be set here: the crate has no unsafe code).
        let first = <SidecarConfig as clap::Args>::augment_args(clap::Command::new("x"));
        assert!(first.get_arguments().any(|a| a.get_env().is_some()));
        assert!(
            profile_command()
                .get_arguments()
                .all(|a| a.get_env().is_none())
        );
    }

    /// A web-identity configuration in `region` with the given variant.
    fn variant(region: Option<&str>, fips: bool, dual_stack: bool) -> SidecarConfig {
        let mut c = SidecarConfig::new(Source::WebIdentity);
        let partition = crate::Partition::of_region(region.unwrap_or_default());
        c.role_arn = Some(
            format!("arn:{partition}:iam::123456789012:role/r")
                .parse()
                .unwrap(),
        );
        c.token_file = Some("/t".into());
        c.region = region.map(str::to_owned);
        c.use_fips_endpoint = fips;
        c.use_dualstack_endpoint = dual_stack;
        c
    }

    #[test]
    fn rendered_args_parse_back_to_the_same_config() {
        for c in [
            full(),
            SidecarConfig::new(Source::WebIdentity),
            SidecarConfig::new(Source::Ambient),
            variant(Some("us-east-1"), true, false),
            variant(Some("eu-west-1"), false, true),
            variant(None, true, true),
        ] {
            assert_eq!(parse(&c.to_args()).unwrap(), c);
        }
        let args = variant(Some("us-west-2"), true, true).to_args();
        assert!(
            args.ends_with(&[
                "--use-fips-endpoint".to_owned(),
                "--use-dualstack-endpoint".to_owned()
            ]),
            "{args:?}"
        );
        assert!(
            !variant(Some("us-west-2"), false, false)
                .to_args()
                .iter()
                .any(|a| a.contains("fips") || a.contains("dualstack"))
        );
    }

    #[test]
    fn endpoint_variants_are_checked_against_the_region_and_a_custom_endpoint() {
        for (region, fips, dual_stack) in [
            (Some("us-east-1"), true, false),
            (Some("us-east-2"), true, true),
            (Some("us-west-1"), true, false),
            (Some("us-west-2"), true, true),
            (Some("us-gov-west-1"), true, false),
            (Some("us-gov-east-1"), false, true),
            (Some("eu-west-1"), false, true),
            (Some("cn-north-1"), false, true),
            (None, true, true),
        ] {
            assert_eq!(
                variant(region, fips, dual_stack).validate(),
                Ok(vec![]),
                "{region:?} fips {fips} dual-stack {dual_stack}"
            );
        }
        for (region, fips, dual_stack, flag, needle) in [
            (
                "eu-west-1",
                true,
                false,
                "use-fips-endpoint",
                "STS has no FIPS endpoint in --region \"eu-west-1\" (partition aws); accepted: --region one of \
                 us-east-1, us-east-2, us-west-1, us-west-2, us-gov-east-1, us-gov-west-1",
            ),
            (
                "cn-northwest-1",
                true,
                false,
                "use-fips-endpoint",
                "--region \"cn-northwest-1\" (partition aws-cn)",
            ),
            (
                "us-iso-east-1",
                false,
                true,
                "use-dualstack-endpoint",
                "STS has no dual-stack endpoint in --region \"us-iso-east-1\" (partition aws-iso)",
            ),
            (
                "us-gov-east-1",
                true,
                true,
                "use-fips-endpoint",
                "together with --use-dualstack-endpoint",
            ),
        ] {
            let errs = variant(Some(region), fips, dual_stack)
                .validate()
                .unwrap_err();
            assert_eq!(errs.len(), 1, "{region}: {errs:?}");
            assert_eq!(errs[0].flag, flag);
            let text = errs[0].to_string();
            assert!(
                text.starts_with(&format!("--{flag}: ")) && text.contains(needle),
                "{text}"
            );
        }
        let mut c = variant(Some("us-east-1"), true, true);
        c.sts_endpoint = Some("https://sts.example.com".into());
        let errs = c.validate().unwrap_err();
        let flags: Vec<_> = errs.iter().map(|e| e.flag).collect();
        assert_eq!(flags, ["use-fips-endpoint", "use-dualstack-endpoint"]);
        assert!(
            errs[0]
                .to_string()
                .starts_with("--use-fips-endpoint: cannot be combined with --sts-endpoint \"https://sts.example.com\""),
            "{}",
            errs[0]
        );
    }

    proptest::proptest! {
        /// Whatever the region, `validate` answers with both variants on
        /// and never panics; a region it accepts has a FIPS dual-stack STS
        /// endpoint.
        #[test]
        fn variant_validation_never_panics(region in "\\PC{0,60}|[a-z]{2,5}(-[a-z0-9]{1,8}){1,3}-[0-9]{1,2}") {
            let c = variant(Some(&region), true, true);
            if c.validate().is_ok() {
                proptest::prop_assert!(crate::sts_variant::has_fips_dual_stack(&region), "{}", region);
            }
        }
    }

    #[test]
    fn bad_flag_values_name_the_flag_and_value() {
        let e = parse(&["--role-arn".into(), "arn:aws:iam::1:role/x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--role-arn") && e.contains("12 digits"), "{e}");
        let e = parse(&["--session-duration".into(), "10x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--session-duration") && e.contains("15m"), "{e}");
        let e = parse(&["--source".into(), "magic".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("web-identity"), "{e}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_flag() {
        let mut c = SidecarConfig::new(Source::Secret);
        c.session_tags = vec!["a=b".parse().unwrap()];
        c.session_duration = Some(Duration::from_secs(60));
        let errs = c.validate().unwrap_err();
        let flags: Vec<_> = errs.iter().map(|e| e.flag).collect();
        assert_eq!(
            flags,
            [
                "access-key-id-file",
                "secret-access-key-file",
                "session-tag",
                "session-duration"
            ]
        );
        assert!(errs[2].to_string().contains("GetSessionToken"));
    }

    #[test]
    fn chained_duration_above_an_hour_is_a_warning_not_an_error() {
        let c = full();
        let warnings = c.validate().unwrap();
        assert!(warnings.iter().any(|w| w.contains("1h")), "{warnings:?}");
        assert_eq!(c.chained_duration(), Some(CHAINED_SESSION_MAX));
    }

    #[test]
    fn web_identity_rejects_assume_role_only_parameters() {
        let mut c = SidecarConfig::new(Source::WebIdentity);
        c.role_arn = Some("arn:aws:iam::123456789012:role/r".parse().unwrap());
        c.token_file = Some("/t".into());
        assert_eq!(c.validate(), Ok(vec![]));
        c.external_id = Some("abc".parse().unwrap());
        assert_eq!(c.validate().unwrap_err()[0].flag, "external-id");
    }

    #[test]
    fn endpoint_address_must_be_loopback() {
        let mut c = full();
        c.endpoint_addr = Some("[::1]:8098".parse().unwrap());
        assert!(c.validate().is_ok());
        assert_eq!(parse(&c.to_args()).unwrap(), c);
        c.endpoint_addr = Some("0.0.0.0:8098".parse().unwrap());
        let errs = c.validate().unwrap_err();
        assert_eq!(errs[0].flag, "endpoint-addr");
        assert!(errs[0].to_string().contains("0.0.0.0:8098"), "{}", errs[0]);
        c.endpoint_addr = Some("10.1.2.3:8098".parse().unwrap());
        assert_eq!(c.validate().unwrap_err()[0].flag, "endpoint-addr");
    }

    #[test]
    fn pod_name_tag_joins_the_session_tags() {
        let mut c = full();
        c.pod_name = Some("api-5c9d/x".into());
        let tags = c.effective_session_tags();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags[2].to_string(), "kubernetes-pod-name=api-5c9d/x");
        c.pod_name = Some("a;b".into());
        assert_eq!(c.effective_session_tags()[2].value, "a-b");
        c.session_tags = vec!["kubernetes-pod-name=mine".parse().unwrap()];
        let errs = c.validate().unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.flag == "session-tag" && e.message.contains("twice")),
            "{errs:?}"
        );
        let mut w = SidecarConfig::new(Source::WebIdentity);
        w.role_arn = Some("arn:aws:iam::123456789012:role/r".parse().unwrap());
        w.token_file = Some("/t".into());
        w.pod_name_tag_key = Some("kubernetes-pod-name".into());
        assert_eq!(w.validate().unwrap_err()[0].flag, "pod-name-tag-key");
    }

    #[test]
    fn session_name_is_stable_and_derived_from_the_pod() {
        let mut c = SidecarConfig::new(Source::Ambient);
        c.pod_name = Some("api-5c9d/x".into());
        assert_eq!(c.effective_session_name().as_str(), "api-5c9d-x");
        assert_eq!(c.effective_session_name(), c.effective_session_name());
    }
}
