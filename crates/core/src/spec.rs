//! Reading the `tempcreds.io/` annotations of a pod and its ServiceAccount
//! into a typed [`InjectionSpec`].
//!
//! The pod's annotations win over the same annotation on its ServiceAccount;
//! the ServiceAccount's give defaults for every pod using it. Every problem is
//! reported, each as an [`AnnotationError`] naming the annotation, the value
//! seen (and whether it came from the ServiceAccount) and what is accepted,
//! so a `kubectl` user can fix them all at once.
//!
//! [`InjectionSpec::sidecar_config`] turns the spec into the sidecar's
//! [`SidecarConfig`]; [`InjectionSpec::check`] runs the sidecar's own
//! validation on it and reports its flag-named errors under the annotation
//! the user actually wrote.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::annotations as a;
use crate::arn::{PolicyArn, RoleArn};
use crate::config::{ConfigError, Delivery, SidecarConfig, Source, quoted};
use crate::duration::parse_duration;
use crate::paths;
use crate::sts::{self, ExternalId, SessionName, SessionTag, SourceIdentity};
use crate::sts_url::{self, StsUrlError};

/// Annotations as Kubernetes stores them.
pub type Annotations = BTreeMap<String, String>;

/// The shortest projected-token lifetime the API server accepts.
pub const MIN_TOKEN_EXPIRATION_SECS: u64 = 600;
/// The longest projected-token lifetime the API server accepts (2^32 s).
pub const MAX_TOKEN_EXPIRATION_SECS: u64 = 1 << 32;
/// The longest value of any `tempcreds.io/` annotation, in bytes: room for
/// the longest lists STS accepts (10 policy ARNs, 50 session tags), far
/// below the API server's 256 KiB for all annotations together.
pub const MAX_ANNOTATION_BYTES: usize = 32 * 1024;
/// The longest `tempcreds.io/token-audience`, in characters.
pub const MAX_TOKEN_AUDIENCE_CHARS: usize = 256;

/// Where an annotation's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The pod's own annotations.
    Pod,
    /// The pod's ServiceAccount's annotations (a default).
    ServiceAccount,
}

/// A problem with one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    /// The annotation's full name (`tempcreds.io/...`, with the profile's
    /// suffix for an additional profile's: `tempcreds.io/role-arn.writer`).
    pub annotation: Cow<'static, str>,
    /// The value seen, or `None` when the annotation is missing.
    pub value: Option<String>,
    /// Where the value came from (meaningless when `value` is `None`).
    pub origin: Origin,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => {
                write!(f, "annotation {}={}", self.annotation, quoted(v))?;
                if self.origin == Origin::ServiceAccount {
                    f.write_str(" (from the ServiceAccount)")?;
                }
                write!(f, ": {}", self.message)
            }
            None => write!(f, "annotation {}: {}", self.annotation, self.message),
        }
    }
}

impl std::error::Error for AnnotationError {}

/// The tag key `session-tags-policy: simple` gives the pod's namespace.
pub const TAG_KEY_NAMESPACE: &str = "kubernetes-namespace";
/// The tag key `session-tags-policy: simple` gives the pod's ServiceAccount.
pub const TAG_KEY_SERVICE_ACCOUNT: &str = "kubernetes-service-account";
/// The tag key `session-tags-policy: simple` gives the pod's name (added by
/// the sidecar at run time: `--pod-name-tag-key`).
pub const TAG_KEY_POD_NAME: &str = "kubernetes-pod-name";
/// The tag keys tempcreds sets itself; `tempcreds.io/session-tags` cannot use
/// them, so an IAM policy can trust them (attribute-based access control).
pub const BUILT_IN_TAG_KEYS: [&str; 3] =
    [TAG_KEY_NAMESPACE, TAG_KEY_SERVICE_ACCOUNT, TAG_KEY_POD_NAME];

/// Which session tags the sidecar passes to STS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionTagsPolicy {
    /// No session tags.
    #[default]
    None,
    /// Tags naming the pod's namespace, service account and pod
    /// ([`BUILT_IN_TAG_KEYS`]), plus those of `tempcreds.io/session-tags`.
    Simple,
    /// The tags of `tempcreds.io/session-tags`.
    Custom,
}

impl SessionTagsPolicy {
    /// Every policy, as written in the annotation.
    pub const ALL: [SessionTagsPolicy; 3] = [
        SessionTagsPolicy::None,
        SessionTagsPolicy::Simple,
        SessionTagsPolicy::Custom,
    ];

    /// The name used in the annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionTagsPolicy::None => "none",
            SessionTagsPolicy::Simple => "simple",
            SessionTagsPolicy::Custom => "custom",
        }
    }
}

impl FromStr for SessionTagsPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionTagsPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| "accepted: none, simple, custom".to_owned())
    }
}

/// The Secret holding long-term keys (`tempcreds.io/source: secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The Secret's name, in the pod's namespace.
    pub name: String,
    /// The key holding the access key ID.
    pub access_key_id_key: String,
    /// The key holding the secret access key.
    pub secret_access_key_key: String,
}

/// One set of credentials the sidecar keeps fresh: a profile in the
/// credentials and config files, with its own source, role chain, session
/// settings and refresh schedule.
///
/// The default profile comes from the plain annotations
/// (`tempcreds.io/role-arn`); an additional profile `NAME` from the same
/// annotations with the suffix `.NAME` (`tempcreds.io/role-arn.NAME`), and
/// inherits nothing from the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    /// The profile's name in the files: `tempcreds.io/profile` (default
    /// `default`) for the default profile, the suffix for the others.
    pub name: String,
    /// The suffix of the profile's annotations; `None` for the default one.
    pub suffix: Option<String>,
    /// Where the sidecar's first credentials come from.
    pub source: Source,
    /// The role to assume (none: GetSessionToken with long-term keys).
    pub role_arn: Option<RoleArn>,
    /// Roles assumed in order after the first.
    pub chain_role_arns: Vec<RoleArn>,
    /// The Secret holding long-term keys, for `source: secret`.
    pub secret: Option<SecretRef>,
    /// Requested session lifetime.
    pub session_duration: Option<Duration>,
    /// RoleSessionName (default: the pod name, at run time).
    pub session_name: Option<SessionName>,
    /// ExternalId.
    pub external_id: Option<ExternalId>,
    /// SourceIdentity.
    pub source_identity: Option<SourceIdentity>,
    /// Managed session policies.
    pub policy_arns: Vec<PolicyArn>,
    /// Session tags of `tempcreds.io/session-tags` passed to STS (empty
    /// with the policy `none`); `simple` adds its own in
    /// [`InjectionSpec::sidecar_configs`].
    pub session_tags: Vec<SessionTag>,
    /// Transitive tag keys.
    pub transitive_tag_keys: Vec<String>,
    /// The session-tags policy.
    pub session_tags_policy: SessionTagsPolicy,
    /// How long before expiry to refresh.
    pub refresh_before: Option<Duration>,
}

impl ProfileSpec {
    /// The name of `annotation` for this profile: as is for the default
    /// profile, with `.NAME` appended for an additional one.
    pub fn annotation(&self, annotation: &'static str) -> Cow<'static, str> {
        profile_annotation(annotation, self.suffix.as_deref())
    }

    /// Where this profile's long-term keys are mounted in the sidecar
    /// (`source: secret`).
    pub fn secret_dir(&self) -> PathBuf {
        match &self.suffix {
            None => PathBuf::from(paths::SECRET_DIR),
            Some(name) => PathBuf::from(format!("{}-{name}", paths::SECRET_DIR)),
        }
    }
}

/// `annotation` with the suffix of an additional profile (`.NAME`).
fn profile_annotation(annotation: &'static str, suffix: Option<&str>) -> Cow<'static, str> {
    match suffix {
        None => Cow::Borrowed(annotation),
        Some(name) => Cow::Owned(format!("{annotation}.{name}")),
    }
}

/// What an opted-in pod asked for, with every annotation parsed and checked
/// on its own. Checks across annotations that the sidecar also makes live in
/// [`InjectionSpec::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionSpec {
    /// The profiles the sidecar keeps fresh: the default one first, then
    /// the additional ones in the order of their names.
    pub profiles: Vec<ProfileSpec>,
    /// Region from the annotation (the cluster default applies otherwise).
    pub region: Option<String>,
    /// STS endpoint from the annotation (the cluster default applies otherwise).
    pub sts_endpoint: Option<String>,
    /// `use-fips-endpoint` from the annotation (the cluster default applies
    /// otherwise).
    pub use_fips_endpoint: Option<bool>,
    /// `use-dualstack-endpoint` from the annotation (the cluster default
    /// applies otherwise).
    pub use_dualstack_endpoint: Option<bool>,
    /// Containers that get the volume and env (`None`: all).
    pub containers: Option<Vec<String>>,
    /// Containers that do not.
    pub skip_containers: Vec<String>,
    /// Projected token audience.
    pub token_audience: String,
    /// Projected token lifetime in seconds.
    pub token_expiration_secs: u64,
    /// How apps receive credentials (`None`: the cluster's default, see
    /// [`InjectionSpec::delivery`]).
    pub delivery: Option<Delivery>,
    /// Things that work but are probably not what was meant.
    pub warnings: Vec<String>,
}

/// The outcome of reading the annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Neither `role-arn` nor `inject: "true"`: the pod is not opted in.
    NotRequested,
    /// `inject: "false"`: opted out, whatever else is set.
    OptedOut,
    /// Opted in, with the parsed spec.
    Inject(Box<InjectionSpec>),
}

/// Defaults that come from the cluster operator, not from annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDefaults {
    /// Region used when no annotation names one.
    pub region: Option<String>,
    /// STS endpoint used when no annotation names one.
    pub sts_endpoint: Option<String>,
    /// Whether a plain `http://` STS endpoint to a host that is not loopback
    /// is accepted (test clusters only).
    pub allow_http_sts_endpoint: bool,
    /// Whether the sidecar calls STS's FIPS endpoint when no annotation says.
    pub use_fips_endpoint: bool,
    /// Whether the sidecar calls STS's dual-stack endpoint when no
    /// annotation says.
    pub use_dualstack_endpoint: bool,
    /// Port of the sidecar's health endpoints.
    pub health_port: u16,
    /// Delivery mode used when no annotation names one.
    pub delivery: Delivery,
    /// Loopback port of the container-credentials endpoint
    /// (`delivery: endpoint`).
    pub endpoint_port: u16,
}

impl Default for ClusterDefaults {
    fn default() -> Self {
        ClusterDefaults {
            region: None,
            sts_endpoint: None,
            allow_http_sts_endpoint: false,
            use_fips_endpoint: false,
            use_dualstack_endpoint: false,
            health_port: paths::DEFAULT_HEALTH_PORT,
            delivery: Delivery::File,
            endpoint_port: paths::DEFAULT_ENDPOINT_PORT,
        }
    }
}

/// What the webhook knows of the pod at admission that the sidecar
/// configuration needs (for `session-tags-policy: simple`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRef<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's ServiceAccount.
    pub service_account: &'a str,
}

/// The pod's and the ServiceAccount's annotations, pod first.
struct Merged<'a> {
    pod: &'a Annotations,
    sa: &'a Annotations,
}

impl<'a> Merged<'a> {
    fn get(&self, name: &str) -> Option<(&'a str, Origin)> {
        if let Some(v) = self.pod.get(name) {
            return Some((v.as_str(), Origin::Pod));
        }
        self.sa
            .get(name)
            .map(|v| (v.as_str(), Origin::ServiceAccount))
    }
}

/// Collects errors while parsing.
struct Parser<'a> {
    merged: Merged<'a>,
    errors: Vec<AnnotationError>,
    /// The additional profile being parsed: lookups and errors use
    /// `ANNOTATION.SUFFIX`.
    suffix: Option<String>,
}

/// `message` with long quoted copies of `value` (or of an item of its
/// list) cut as [`quoted`] cuts them, and at most [`MAX_MESSAGE_CHARS`]
/// characters: an error about a huge or hostile value stays readable.
fn bounded(message: String, value: Option<&str>) -> String {
    let mut message = message;
    if let Some(value) = value {
        for part in std::iter::once(value)
            .chain(value.split(','))
            .chain(split_list(value))
        {
            let full = format!("{part:?}");
            if full.chars().count() > 102 && message.contains(&full) {
                message = message.replace(&full, &quoted(part));
            }
        }
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        message = format!("{cut}... (message cut)");
    }
    message
}

/// The longest message of an [`AnnotationError`], in characters.
const MAX_MESSAGE_CHARS: usize = 1024;

impl<'a> Parser<'a> {
    /// The name of `annotation` for the profile being parsed.
    fn name(&self, annotation: &'static str) -> Cow<'static, str> {
        profile_annotation(annotation, self.suffix.as_deref())
    }

    fn err(&mut self, annotation: &'static str, message: impl Into<String>) {
        let annotation = self.name(annotation);
        self.err_named(annotation, message);
    }

    /// Reports a problem with the annotation named exactly `annotation`.
    fn err_named(&mut self, annotation: Cow<'static, str>, message: impl Into<String>) {
        let (value, origin) = match self.merged.get(&annotation) {
            Some((v, o)) => (Some(v.to_owned()), o),
            None => (None, Origin::Pod),
        };
        let message = bounded(message.into(), value.as_deref());
        self.errors.push(AnnotationError {
            annotation,
            value,
            origin,
            message,
        });
    }

    /// The trimmed value, or `None` when absent.
    fn raw(&self, annotation: &'static str) -> Option<&'a str> {
        self.merged
            .get(&self.name(annotation))
            .map(|(v, _)| v.trim())
    }

    /// Parses a single value with `FromStr`, reporting its error.
    fn one<T: FromStr>(&mut self, annotation: &'static str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let raw = self.raw(annotation)?;
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(annotation, e.to_string());
                None
            }
        }
    }

    /// Parses a comma-separated list, reporting each bad item.
    fn list<T: FromStr>(&mut self, annotation: &'static str) -> Vec<T>
    where
        T::Err: fmt::Display,
    {
        let Some(raw) = self.raw(annotation) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in split_list(raw) {
            match item.parse::<T>() {
                Ok(v) => out.push(v),
                Err(e) => self.err(annotation, e.to_string()),
            }
        }
        out
    }

    /// `"true"` or `"false"`, reporting anything else.
    fn boolean(&mut self, annotation: &'static str) -> Option<bool> {
        match self.raw(annotation)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.err(annotation, "accepted: \"true\" or \"false\"");
                None
            }
        }
    }

    fn duration(&mut self, annotation: &'static str) -> Option<Duration> {
        let raw = self.raw(annotation)?;
        match parse_duration(raw) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(annotation, e.to_string());
                None
            }
        }
    }
}

/// Splits a comma-separated annotation value, trimming items and dropping
/// empty ones.
pub fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Whether `s` is a valid Kubernetes object name (DNS subdomain, RFC 1123).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `s` is a valid key of a Secret's data (`[-._a-zA-Z0-9]+`, at
/// most 253, not `.`, `..` nor starting with `..`: the kubelet keeps its
/// own `..data` and `..TIMESTAMP` entries in a Secret volume).
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && !s.starts_with("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// The first control character (`\n`, `\t`, ...) of `s`, if any.
pub fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control())
}

/// Whether `s` is a valid container name (DNS label).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The annotations an additional profile takes with its `.NAME` suffix:
/// everything about obtaining its credentials. The others (region, STS
/// endpoint, delivery, containers, token) apply to the whole pod.
pub const PROFILE_ANNOTATIONS: &[&str] = &[
    a::ROLE_ARN,
    a::SOURCE,
    a::SECRET_NAME,
    a::SECRET_ACCESS_KEY_ID_KEY,
    a::SECRET_SECRET_ACCESS_KEY_KEY,
    a::CHAIN_ROLE_ARNS,
    a::SESSION_DURATION,
    a::SESSION_NAME,
    a::EXTERNAL_ID,
    a::SOURCE_IDENTITY,
    a::POLICY_ARNS,
    a::SESSION_TAGS,
    a::TRANSITIVE_TAG_KEYS,
    a::SESSION_TAGS_POLICY,
    a::REFRESH_BEFORE,
];

/// The most additional profiles a pod may ask for.
pub const MAX_ADDITIONAL_PROFILES: usize = 8;
/// The longest additional profile name: the longest per-profile annotation
/// with its suffix stays within the 63 characters Kubernetes allows in an
/// annotation's name.
pub const MAX_PROFILE_SUFFIX_CHARS: usize = 32;

/// Whether `s` is a usable additional profile name: 1 to
/// [`MAX_PROFILE_SUFFIX_CHARS`] lower-case letters, digits and `-`, starting
/// and ending with a letter or digit (a suffix of annotation names, a
/// volume name and a URL path segment).
pub fn is_profile_suffix(s: &str) -> bool {
    s.len() <= MAX_PROFILE_SUFFIX_CHARS && is_dns_label(s)
}

/// The additional profiles the annotations declare (`role-arn.NAME` or
/// `source.NAME`), and errors for suffixed annotations that are not
/// per-profile, name a profile no `role-arn`/`source` declares, or use a
/// name that is not usable.
fn additional_profiles(p: &mut Parser<'_>) -> BTreeSet<String> {
    let keys: BTreeSet<&str> = p
        .merged
        .pod
        .keys()
        .chain(p.merged.sa.keys())
        .filter_map(|k| k.strip_prefix(a::PREFIX))
        .filter(|k| k.contains('.'))
        .collect();
    let mut declared = BTreeSet::new();
    for key in &keys {
        let Some((base, suffix)) = key.split_once('.') else {
            continue;
        };
        if (base == &a::ROLE_ARN[a::PREFIX.len()..] || base == &a::SOURCE[a::PREFIX.len()..])
            && is_profile_suffix(suffix)
        {
            declared.insert(suffix.to_owned());
        }
    }
    let per_profile = || {
        PROFILE_ANNOTATIONS
            .iter()
            .map(|n| &n[a::PREFIX.len()..])
            .collect::<Vec<_>>()
            .join(", ")
    };
    for key in keys {
        let Some((base, suffix)) = key.split_once('.') else {
            continue;
        };
        let full: Cow<'static, str> = Cow::Owned(format!("{}{key}", a::PREFIX));
        let known = PROFILE_ANNOTATIONS
            .iter()
            .any(|n| &n[a::PREFIX.len()..] == base);
        if !known {
            let message = if a::USER_ANNOTATIONS
                .iter()
                .any(|n| &n[a::PREFIX.len()..] == base)
            {
                format!(
                    "{}{base} applies to the whole pod and takes no profile suffix;                      an additional profile takes: {}",
                    a::PREFIX,
                    per_profile()
                )
            } else {
                format!(
                    "is not a tempcreds annotation; an additional profile NAME takes                      tempcreds.io/ANNOTATION.NAME with ANNOTATION one of: {}",
                    per_profile()
                )
            };
            p.err_named(full, message);
        } else if !is_profile_suffix(suffix) {
            p.err_named(
                full,
                format!(
                    "{} is not a usable profile name; accepted: 1 to {MAX_PROFILE_SUFFIX_CHARS}                      lower-case letters, digits and '-', starting and ending with a letter or digit",
                    quoted(suffix)
                ),
            );
        } else if !declared.contains(suffix) {
            p.err_named(
                full,
                format!(
                    "no profile {suffix:?} is declared: an additional profile starts with                      tempcreds.io/role-arn.{suffix} (or tempcreds.io/source.{suffix}){}",
                    if declared.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; declared: {}",
                            declared.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                ),
            );
        }
    }
    declared
}

/// Whether `annotations` hold a `tempcreds.io/role-arn.NAME`: the first key
/// after `tempcreds.io/role-arn.` in order starts with it when any does.
fn has_profile_role(annotations: &Annotations) -> bool {
    const ROLE_ARN_DOT: &str = "tempcreds.io/role-arn.";
    annotations
        .range::<str, _>((
            std::ops::Bound::Included(ROLE_ARN_DOT),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .is_some_and(|(k, _)| k.starts_with(ROLE_ARN_DOT))
}

/// Reads the annotations of a pod and its ServiceAccount.
///
/// Returns every problem found when the pod is opted in; annotations of a
/// pod that is not opted in are not checked (only `inject` itself, whose
/// misspelling would otherwise silently leave a pod without credentials).
/// A pod asking only for an additional profile (`role-arn.NAME`) is opted in
/// and told that the default profile needs a role too.
pub fn resolve(pod: &Annotations, sa: &Annotations) -> Result<Decision, Vec<AnnotationError>> {
    let mut p = Parser {
        merged: Merged { pod, sa },
        errors: Vec::new(),
        suffix: None,
    };
    let inject = match p.raw(a::INJECT) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            p.err(a::INJECT, "accepted: \"true\" or \"false\"");
            return Err(p.errors);
        }
    };
    if inject == Some(false) {
        return Ok(Decision::OptedOut);
    }
    let has_role = p.raw(a::ROLE_ARN).is_some();
    // Every pod's admission passes here: the additional-profile check is one
    // ordered lookup per map, and only when nothing else opted the pod in.
    if !has_role && inject != Some(true) && !has_profile_role(pod) && !has_profile_role(sa) {
        return Ok(Decision::NotRequested);
    }

    // Sizes first: a huge value is reported once, cut, and not parsed.
    let names: BTreeSet<&String> = pod
        .keys()
        .chain(sa.keys())
        .filter(|k| k.starts_with(a::PREFIX))
        .collect();
    for name in names {
        if let Some((v, _)) = p.merged.get(name)
            && v.len() > MAX_ANNOTATION_BYTES
        {
            p.err_named(
                Cow::Owned(name.clone()),
                format!(
                    "is {} bytes long; tempcreds accepts at most {MAX_ANNOTATION_BYTES} bytes in an annotation",
                    v.len()
                ),
            );
        }
    }
    if !p.errors.is_empty() {
        return Err(p.errors);
    }

    let mut warnings = Vec::new();
    let default_name = p.raw(a::PROFILE).unwrap_or("default").to_owned();
    let declared = additional_profiles(&mut p);
    if declared.len() > MAX_ADDITIONAL_PROFILES {
        p.err_named(
            Cow::Owned(format!("{}.{}", a::ROLE_ARN, declared.iter().next_back().cloned().unwrap_or_default())),
            format!(
                "the pod declares {} additional profiles ({}); tempcreds accepts at most {MAX_ADDITIONAL_PROFILES}",
                declared.len(),
                declared.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if declared.contains(&default_name) {
        p.err_named(
            Cow::Owned(format!("{}.{default_name}", a::ROLE_ARN)),
            format!(
                "names the profile {default_name:?}, which is the default profile's name \
                 (tempcreds.io/profile); choose another name"
            ),
        );
    }
    let mut profiles = vec![parse_profile(&mut p, default_name, None, &mut warnings)];
    for name in declared {
        p.suffix = Some(name.clone());
        let spec = parse_profile(&mut p, name.clone(), Some(name), &mut warnings);
        p.suffix = None;
        profiles.push(spec);
    }

    let region = p.raw(a::REGION).map(str::to_owned);
    let sts_endpoint = p.raw(a::STS_ENDPOINT).map(str::to_owned);
    let use_fips_endpoint = p.boolean(a::USE_FIPS_ENDPOINT);
    let use_dualstack_endpoint = p.boolean(a::USE_DUALSTACK_ENDPOINT);

    let containers: Option<Vec<String>> = p
        .raw(a::CONTAINERS)
        .map(|raw| split_list(raw).map(str::to_owned).collect());
    let skip_containers: Vec<String> = p
        .raw(a::SKIP_CONTAINERS)
        .map(|raw| split_list(raw).map(str::to_owned).collect())
        .unwrap_or_default();
    for (annotation, names) in [
        (a::CONTAINERS, containers.clone().unwrap_or_default()),
        (a::SKIP_CONTAINERS, skip_containers.clone()),
    ] {
        if let Some(bad) = names.iter().find(|n| !is_dns_label(n)) {
            p.err(
                annotation,
                format!("{bad:?} is not a container name; expected a comma-separated list of container names"),
            );
        }
    }
    if matches!(&containers, Some(list) if list.is_empty()) {
        p.err(
            a::CONTAINERS,
            "names no container; remove it to select every container",
        );
    }

    let token_audience = p
        .raw(a::TOKEN_AUDIENCE)
        .unwrap_or(a::DEFAULT_TOKEN_AUDIENCE)
        .to_owned();
    if token_audience.is_empty() {
        p.err(
            a::TOKEN_AUDIENCE,
            format!(
                "is empty; the usual audience is {}",
                a::DEFAULT_TOKEN_AUDIENCE
            ),
        );
    } else if token_audience.chars().count() > MAX_TOKEN_AUDIENCE_CHARS
        || token_audience
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        p.err(
            a::TOKEN_AUDIENCE,
            format!(
                "is not an audience; accepted: 1 to {MAX_TOKEN_AUDIENCE_CHARS} characters without spaces \
                 or control characters, usually {}",
                a::DEFAULT_TOKEN_AUDIENCE
            ),
        );
    }
    let token_expiration_secs = match p.duration(a::TOKEN_EXPIRATION) {
        None => a::DEFAULT_TOKEN_EXPIRATION_SECS,
        Some(d) => {
            let secs = d.as_secs();
            if !(MIN_TOKEN_EXPIRATION_SECS..=MAX_TOKEN_EXPIRATION_SECS).contains(&secs) {
                p.err(
                    a::TOKEN_EXPIRATION,
                    format!(
                        "the API server accepts {MIN_TOKEN_EXPIRATION_SECS}s (10m) to {MAX_TOKEN_EXPIRATION_SECS}s"
                    ),
                );
            }
            secs
        }
    };
    if !profiles.iter().any(|p| p.source == Source::WebIdentity) {
        for ann in [a::TOKEN_AUDIENCE, a::TOKEN_EXPIRATION] {
            if p.raw(ann).is_some() {
                warnings.push(format!(
                    "{ann} is ignored: no profile uses {}=web-identity",
                    a::SOURCE
                ));
            }
        }
    }

    let delivery = match p.raw(a::DELIVERY) {
        None => None,
        Some(raw) => match raw.parse::<Delivery>() {
            Ok(d) => Some(d),
            Err(e) => {
                p.err(a::DELIVERY, e);
                None
            }
        },
    };
    if delivery == Some(Delivery::Endpoint) && p.raw(a::PROFILE).is_some() {
        warnings.push(format!(
            "{} is ignored with {}=endpoint: SDKs get credentials from the endpoint, not from a profile",
            a::PROFILE,
            a::DELIVERY
        ));
    }

    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    Ok(Decision::Inject(Box::new(InjectionSpec {
        profiles,
        region,
        sts_endpoint,
        use_fips_endpoint,
        use_dualstack_endpoint,
        containers,
        skip_containers,
        token_audience,
        token_expiration_secs,
        delivery,
        warnings,
    })))
}

/// Parses one profile's annotations (with `p.suffix` set for an additional
/// profile).
fn parse_profile(
    p: &mut Parser<'_>,
    name: String,
    suffix: Option<String>,
    warnings: &mut Vec<String>,
) -> ProfileSpec {
    let role_arn: Option<RoleArn> = p.one(a::ROLE_ARN);
    let chain_role_arns: Vec<RoleArn> = p.list(a::CHAIN_ROLE_ARNS);

    // The Secret.
    let secret_name = p.raw(a::SECRET_NAME).map(str::to_owned);
    if let Some(name) = &secret_name
        && !is_dns_subdomain(name)
    {
        p.err(
            a::SECRET_NAME,
            "is not a Secret name; accepted: lower-case letters, digits, '-' and '.', at most 253",
        );
    }
    fn secret_key(p: &mut Parser<'_>, annotation: &'static str, default: &str) -> String {
        let key = p.raw(annotation).unwrap_or(default).to_owned();
        if !is_secret_key(&key) {
            p.err(
                annotation,
                "is not a Secret key; accepted: letters, digits, '-', '_' and '.', at most 253, \
                 not \".\" and not starting with \"..\"",
            );
        }
        key
    }
    let access_key_id_key = secret_key(
        p,
        a::SECRET_ACCESS_KEY_ID_KEY,
        a::DEFAULT_SECRET_ACCESS_KEY_ID_KEY,
    );
    let secret_access_key_key = secret_key(
        p,
        a::SECRET_SECRET_ACCESS_KEY_KEY,
        a::DEFAULT_SECRET_SECRET_ACCESS_KEY_KEY,
    );
    if access_key_id_key == secret_access_key_key {
        p.err(
            a::SECRET_SECRET_ACCESS_KEY_KEY,
            format!(
                "names the same key as {}; the access key ID and the secret access key are two keys",
                a::SECRET_ACCESS_KEY_ID_KEY
            ),
        );
    }

    // The source.
    let source = match p.raw(a::SOURCE) {
        Some(raw) => match raw.parse::<Source>() {
            Ok(s) => s,
            Err(e) => {
                p.err(a::SOURCE, e);
                Source::default()
            }
        },
        None if secret_name.is_some() => Source::Secret,
        None => Source::WebIdentity,
    };
    let secret = match (source, secret_name) {
        (Source::Secret, Some(name)) => Some(SecretRef {
            name,
            access_key_id_key,
            secret_access_key_key,
        }),
        (Source::Secret, None) => {
            p.err(
                a::SECRET_NAME,
                "is required with tempcreds.io/source=secret: name the Secret (in the pod's namespace) holding the long-term keys",
            );
            None
        }
        (other, Some(_)) => {
            warnings.push(format!(
                "{} is ignored with {}={other}",
                a::SECRET_NAME,
                a::SOURCE
            ));
            None
        }
        (_, None) => None,
    };
    let has_role = p.raw(a::ROLE_ARN).is_some();
    if role_arn.is_none() && !has_role && source != Source::Secret {
        p.err(
            a::ROLE_ARN,
            format!(
                "is required: {}=\"true\" without a role works only with long-term keys \
                 ({}=secret and {}), which call GetSessionToken",
                a::INJECT,
                a::SOURCE,
                a::SECRET_NAME
            ),
        );
    }

    let session_duration = p.duration(a::SESSION_DURATION);
    let session_name: Option<SessionName> = p.one(a::SESSION_NAME);
    let external_id: Option<ExternalId> = p.one(a::EXTERNAL_ID);
    let source_identity: Option<SourceIdentity> = p.one(a::SOURCE_IDENTITY);
    let policy_arns: Vec<PolicyArn> = p.list(a::POLICY_ARNS);
    let mut session_tags: Vec<SessionTag> = Vec::new();
    if let Some(raw) = p.raw(a::SESSION_TAGS) {
        for item in raw.split(',').map(str::trim) {
            match item.split_once('=') {
                _ if item.is_empty() => p.err(
                    a::SESSION_TAGS,
                    "has an empty entry (two commas, or one at the start or end); \
                     expected KEY=VALUE,KEY2=VALUE2",
                ),
                Some((key, _)) if key.trim().is_empty() => p.err(
                    a::SESSION_TAGS,
                    format!("{item:?} has an empty key; expected KEY=VALUE"),
                ),
                Some((key, value)) if value.trim().is_empty() => p.err(
                    a::SESSION_TAGS,
                    format!(
                        "tag {:?} has an empty value; give it a value or remove it",
                        key.trim()
                    ),
                ),
                Some((key, value)) if control_char(item).is_some() => p.err(
                    a::SESSION_TAGS,
                    format!(
                        "tag {} contains the control character {:?}; STS accepts in tags only \
                         letters, digits, spaces and _ . : / = + - @",
                        quoted(&format!("{}={}", key.trim(), value.trim())),
                        control_char(item).unwrap_or_default()
                    ),
                ),
                Some((key, value)) => match SessionTag::new(key.trim(), value.trim()) {
                    Ok(tag) => {
                        if let Some(b) = BUILT_IN_TAG_KEYS
                            .iter()
                            .find(|b| b.eq_ignore_ascii_case(&tag.key))
                        {
                            p.err(
                                a::SESSION_TAGS,
                                format!(
                                    "tag key {:?} is reserved: tempcreds sets {b} itself with \
                                     {}=simple, so IAM policies can trust it; choose another key",
                                    tag.key,
                                    a::SESSION_TAGS_POLICY
                                ),
                            );
                        } else {
                            session_tags.push(tag);
                        }
                    }
                    Err(e) => p.err(a::SESSION_TAGS, e.to_string()),
                },
                None => p.err(a::SESSION_TAGS, format!("{item:?} is not KEY=VALUE")),
            }
        }
    }
    let transitive_tag_keys: Vec<String> = p
        .raw(a::TRANSITIVE_TAG_KEYS)
        .map(|raw| split_list(raw).map(str::to_owned).collect())
        .unwrap_or_default();
    for key in &transitive_tag_keys {
        if let Err(e) = sts::check_tag_key(key) {
            p.err(a::TRANSITIVE_TAG_KEYS, e.to_string());
        }
    }

    let session_tags_policy = match p.raw(a::SESSION_TAGS_POLICY) {
        None if session_tags.is_empty() => SessionTagsPolicy::None,
        None => SessionTagsPolicy::Custom,
        Some(raw) => match raw.parse::<SessionTagsPolicy>() {
            Ok(policy) => policy,
            Err(e) => {
                p.err(a::SESSION_TAGS_POLICY, e);
                SessionTagsPolicy::None
            }
        },
    };
    if session_tags_policy == SessionTagsPolicy::None && !session_tags.is_empty() {
        warnings.push(format!(
            "{} is ignored because {}=none",
            a::SESSION_TAGS,
            a::SESSION_TAGS_POLICY
        ));
        session_tags.clear();
    }
    if session_tags_policy == SessionTagsPolicy::Custom && session_tags.is_empty() {
        warnings.push(format!(
            "{}=custom but {} is empty: no session tags are passed",
            a::SESSION_TAGS_POLICY,
            a::SESSION_TAGS
        ));
    }

    if session_tags_policy == SessionTagsPolicy::Simple {
        if role_arn.is_none() && source == Source::Secret {
            p.err(
                a::SESSION_TAGS_POLICY,
                format!(
                    "\"simple\" needs {}: session tags go on AssumeRole, and without a role \
                     tempcreds calls GetSessionToken, which takes none",
                    a::ROLE_ARN
                ),
            );
        } else if source == Source::WebIdentity && chain_role_arns.is_empty() {
            p.err(
                a::SESSION_TAGS_POLICY,
                format!(
                    "\"simple\" tags the first AssumeRole, but this pod only calls \
                     AssumeRoleWithWebIdentity ({}=web-identity), which takes no session tags: \
                     there they come from the token's claims, which Kubernetes does not let \
                     you choose. Add {} to assume a further role that gets the tags, or use \
                     {}=secret or ambient",
                    a::SOURCE,
                    a::CHAIN_ROLE_ARNS,
                    a::SOURCE
                ),
            );
        }
    }

    let refresh_before = p.duration(a::REFRESH_BEFORE);
    ProfileSpec {
        name,
        suffix,
        source,
        role_arn,
        chain_role_arns,
        secret,
        session_duration,
        session_name,
        external_id,
        source_identity,
        policy_arns,
        session_tags,
        transitive_tag_keys,
        session_tags_policy,
        refresh_before,
    }
}

/// The annotation a sidecar flag comes from, for reporting
/// [`SidecarConfig::validate`]'s errors to a pod's author.
pub fn annotation_for_flag(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "source" => a::SOURCE,
        "role-arn" => a::ROLE_ARN,
        "chain-role-arn" => a::CHAIN_ROLE_ARNS,
        "token-file" => a::TOKEN_AUDIENCE,
        "access-key-id-file" | "secret-access-key-file" => a::SECRET_NAME,
        "session-duration" => a::SESSION_DURATION,
        "session-name" => a::SESSION_NAME,
        "external-id" => a::EXTERNAL_ID,
        "source-identity" => a::SOURCE_IDENTITY,
        "policy-arn" => a::POLICY_ARNS,
        "session-tag" => a::SESSION_TAGS,
        "pod-name-tag-key" => a::SESSION_TAGS_POLICY,
        "transitive-tag-key" => a::TRANSITIVE_TAG_KEYS,
        "region" => a::REGION,
        "sts-endpoint" => a::STS_ENDPOINT,
        "use-fips-endpoint" => a::USE_FIPS_ENDPOINT,
        "use-dualstack-endpoint" => a::USE_DUALSTACK_ENDPOINT,
        "refresh-before" => a::REFRESH_BEFORE,
        "profile" => a::PROFILE,
        _ => return None,
    })
}

/// The annotation a sidecar flag of the profile `suffix` comes from:
/// per-profile annotations get the suffix of an additional profile.
fn profile_annotation_for_flag(flag: &str, suffix: Option<&str>) -> Option<Cow<'static, str>> {
    let annotation = annotation_for_flag(flag)?;
    Some(if PROFILE_ANNOTATIONS.contains(&annotation) {
        profile_annotation(annotation, suffix)
    } else {
        Cow::Borrowed(annotation)
    })
}

/// Rewrites `--flag` mentions in a sidecar message about the profile
/// `suffix` into annotation names.
fn flags_to_annotations(message: &str, suffix: Option<&str>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("--") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(after.len());
        let flag = &after[..len];
        match profile_annotation_for_flag(flag, suffix) {
            Some(ann) => out.push_str(&ann),
            None if flag == "allow-http-sts-endpoint" => {
                out.push_str("allowHttpStsEndpoint in the webhook's config");
            }
            None => {
                out.push_str("--");
                out.push_str(flag);
            }
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

impl InjectionSpec {
    /// How apps receive credentials: the annotation's mode, else the
    /// cluster's default.
    pub fn delivery(&self, defaults: &ClusterDefaults) -> Delivery {
        self.delivery.unwrap_or(defaults.delivery)
    }

    /// The default profile (the plain annotations).
    pub fn default_profile(&self) -> &ProfileSpec {
        &self.profiles[0]
    }

    /// The sidecar configuration of each profile, the default one first,
    /// with the cluster's defaults and the mount paths the webhook uses:
    /// [`tempcreds_core::config::render_profiles`](crate::config::render_profiles)
    /// turns them into the sidecar's arguments. The pod name is left out:
    /// the sidecar reads it from `TEMPCREDS_POD_NAME` (downward API), since
    /// a pod created with `generateName` has none at admission; for
    /// `session-tags-policy: simple` the namespace and ServiceAccount tags
    /// come from `pod` and the pod-name tag from `--pod-name-tag-key`.
    pub fn sidecar_configs(
        &self,
        defaults: &ClusterDefaults,
        pod: PodRef<'_>,
    ) -> Vec<SidecarConfig> {
        self.profiles
            .iter()
            .map(|profile| self.profile_config(profile, defaults, pod))
            .collect()
    }

    fn profile_config(
        &self,
        profile: &ProfileSpec,
        defaults: &ClusterDefaults,
        pod: PodRef<'_>,
    ) -> SidecarConfig {
        let mut c = SidecarConfig::new(profile.source);
        c.role_arn = profile.role_arn.clone();
        c.chain_role_arns = profile.chain_role_arns.clone();
        match profile.source {
            Source::WebIdentity => {
                c.token_file = Some(PathBuf::from(paths::TOKEN_DIR).join(paths::TOKEN_FILE));
            }
            Source::Secret => {
                let dir = profile.secret_dir();
                c.access_key_id_file = Some(dir.join(paths::ACCESS_KEY_ID_FILE));
                c.secret_access_key_file = Some(dir.join(paths::SECRET_ACCESS_KEY_FILE));
            }
            Source::Ambient => {}
        }
        c.session_duration = profile.session_duration;
        c.session_name = profile.session_name.clone();
        c.external_id = profile.external_id.clone();
        c.source_identity = profile.source_identity.clone();
        c.policy_arns = profile.policy_arns.clone();
        c.session_tags = Vec::new();
        if profile.session_tags_policy == SessionTagsPolicy::Simple {
            c.session_tags.extend([
                SessionTag {
                    key: TAG_KEY_NAMESPACE.to_owned(),
                    value: sts::tag_value_sanitized(pod.namespace),
                },
                SessionTag {
                    key: TAG_KEY_SERVICE_ACCOUNT.to_owned(),
                    value: sts::tag_value_sanitized(pod.service_account),
                },
            ]);
            c.pod_name_tag_key = Some(TAG_KEY_POD_NAME.to_owned());
        }
        c.session_tags.extend(profile.session_tags.iter().cloned());
        c.transitive_tag_keys = profile.transitive_tag_keys.clone();
        c.region = self.region.clone().or_else(|| defaults.region.clone());
        c.sts_endpoint = self
            .sts_endpoint
            .clone()
            .or_else(|| defaults.sts_endpoint.clone());
        // The sidecar is told to accept plain HTTP only when the operator
        // allows it and this endpoint needs it.
        c.allow_http_sts_endpoint = defaults.allow_http_sts_endpoint
            && c.sts_endpoint.as_deref().is_some_and(|e| {
                matches!(
                    sts_url::check_sts_url(e, false),
                    Err(StsUrlError::PlainHttp { .. })
                )
            });
        c.use_fips_endpoint = self.use_fips_endpoint.unwrap_or(defaults.use_fips_endpoint);
        c.use_dualstack_endpoint = self
            .use_dualstack_endpoint
            .unwrap_or(defaults.use_dualstack_endpoint);
        c.profile = profile.name.clone();
        c.refresh_before = profile.refresh_before;
        c.health_addr = SocketAddr::from(([0, 0, 0, 0], defaults.health_port));
        if self.delivery(defaults) == Delivery::Endpoint {
            c.endpoint_addr = Some(SocketAddr::from(([127, 0, 0, 1], defaults.endpoint_port)));
        }
        c
    }

    /// Runs the sidecar's own validation on each profile's configuration
    /// (from [`InjectionSpec::sidecar_configs`], in the same order) and
    /// reports its errors under the annotations the user wrote (with the
    /// profile's suffix). Returns the warnings (the spec's own and the
    /// sidecar's) when every profile is accepted.
    pub fn check(
        &self,
        configs: &[SidecarConfig],
        pod: &Annotations,
        sa: &Annotations,
    ) -> Result<Vec<String>, Vec<AnnotationError>> {
        let merged = Merged { pod, sa };
        let mut warnings = self.warnings.clone();
        let mut errors = Vec::new();
        for (profile, config) in self.profiles.iter().zip(configs) {
            let suffix = profile.suffix.as_deref();
            match config.validate() {
                Ok(sidecar_warnings) => warnings.extend(
                    sidecar_warnings
                        .iter()
                        .map(|w| flags_to_annotations(w, suffix)),
                ),
                Err(e) => errors.extend(
                    e.iter()
                        .map(|e| config_error_to_annotation(e, suffix, &merged)),
                ),
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(errors)
        }
    }
}

fn config_error_to_annotation(
    e: &ConfigError,
    suffix: Option<&str>,
    merged: &Merged<'_>,
) -> AnnotationError {
    let mapped = profile_annotation_for_flag(e.flag, suffix);
    let annotation = mapped.clone().unwrap_or(Cow::Borrowed(a::INJECT));
    let (value, origin) = match merged.get(&annotation) {
        Some((v, o)) => (Some(v.to_owned()), o),
        None => (None, Origin::Pod),
    };
    let mut message = flags_to_annotations(&e.message, suffix);
    if mapped.is_none() {
        message = format!("sidecar option --{}: {message}", e.flag);
    }
    let cluster_key = match e.flag {
        "use-fips-endpoint" => Some("useFipsEndpoint"),
        "use-dualstack-endpoint" => Some("useDualstackEndpoint"),
        _ => None,
    };
    if let (None, Some(key)) = (&value, cluster_key) {
        message = format!(
            "{message} (the webhook config's {key} is true; {annotation}: \"false\" turns it off for this pod)"
        );
    }
    let message = bounded(message, value.as_deref());
    AnnotationError {
        annotation,
        value,
        origin,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/app";
    const POD: PodRef<'static> = PodRef {
        namespace: "team-a",
        service_account: "reporter",
    };

    fn spec(pod: &[(&str, &str)], sa: &[(&str, &str)]) -> InjectionSpec {
        match resolve(&ann(pod), &ann(sa)) {
            Ok(Decision::Inject(s)) => *s,
            other => panic!("not injected: {other:?}"),
        }
    }

    fn errors(pod: &[(&str, &str)], sa: &[(&str, &str)]) -> Vec<String> {
        match resolve(&ann(pod), &ann(sa)) {
            Err(e) => e.iter().map(ToString::to_string).collect(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn opt_in_and_out() {
        let none = ann(&[]);
        assert_eq!(resolve(&none, &none), Ok(Decision::NotRequested));
        assert_eq!(
            resolve(&ann(&[(a::REGION, "eu-west-1")]), &none),
            Ok(Decision::NotRequested)
        );
        assert_eq!(
            resolve(&ann(&[(a::INJECT, "false")]), &ann(&[(a::ROLE_ARN, ROLE)])),
            Ok(Decision::OptedOut)
        );
        let s = spec(&[], &[(a::ROLE_ARN, ROLE)]);
        assert_eq!(s.profiles[0].source, Source::WebIdentity);
        let s = spec(&[(a::INJECT, "true"), (a::SECRET_NAME, "keys")], &[]);
        assert_eq!(s.profiles[0].source, Source::Secret);
        assert!(s.profiles[0].role_arn.is_none());
        assert_eq!(
            s.profiles[0].secret.as_ref().unwrap().access_key_id_key,
            "aws_access_key_id"
        );
    }

    #[test]
    fn pod_wins_over_service_account() {
        let s = spec(
            &[(a::REGION, "eu-west-1")],
            &[
                (a::ROLE_ARN, ROLE),
                (a::REGION, "us-east-1"),
                (a::PROFILE, "x"),
            ],
        );
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.profiles[0].name, "x");
    }

    #[test]
    fn errors_name_annotation_value_origin_and_what_is_accepted() {
        let e = errors(&[(a::SESSION_DURATION, "10x")], &[(a::ROLE_ARN, "nope")]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("tempcreds.io/role-arn=\"nope\" (from the ServiceAccount)"));
        assert!(e[0].contains("arn:aws:iam::123456789012:role/NAME"));
        assert!(e[1].contains("tempcreds.io/session-duration=\"10x\": "));
        assert!(e[1].contains("15m"));
        let e = errors(&[(a::INJECT, "yes"), (a::ROLE_ARN, ROLE)], &[]);
        assert!(e[0].contains("\"true\" or \"false\""), "{e:?}");
        let e = errors(&[(a::INJECT, "true")], &[]);
        assert!(e[0].contains("tempcreds.io/role-arn: is required"), "{e:?}");
        let e = errors(&[(a::ROLE_ARN, ROLE), (a::SOURCE, "secret")], &[]);
        assert!(
            e[0].contains("tempcreds.io/secret-name: is required"),
            "{e:?}"
        );
        let e = errors(&[(a::ROLE_ARN, ROLE), (a::DELIVERY, "socket")], &[]);
        assert!(e[0].contains("accepted: file, process, endpoint"), "{e:?}");
        let e = errors(
            &[(a::ROLE_ARN, ROLE), (a::SESSION_TAGS_POLICY, "simple")],
            &[],
        );
        assert!(
            e[0].contains("AssumeRoleWithWebIdentity") && e[0].contains("chain-role-arns"),
            "{e:?}"
        );
        let e = errors(&[(a::ROLE_ARN, ROLE), (a::TOKEN_EXPIRATION, "60")], &[]);
        assert!(e[0].contains("600s"), "{e:?}");
        let e = errors(&[(a::ROLE_ARN, ROLE), (a::CONTAINERS, "App")], &[]);
        assert!(e[0].contains("\"App\" is not a container name"), "{e:?}");
    }

    #[test]
    fn lists_and_tags_are_parsed() {
        let s = spec(
            &[
                (a::ROLE_ARN, ROLE),
                (a::SOURCE, "ambient"),
                (a::SESSION_TAGS, "team=pay, env=prod"),
                (a::TRANSITIVE_TAG_KEYS, "team"),
                (a::CONTAINERS, "app, worker,"),
                (a::POLICY_ARNS, "arn:aws:iam::aws:policy/ReadOnlyAccess"),
            ],
            &[],
        );
        assert_eq!(s.profiles[0].session_tags_policy, SessionTagsPolicy::Custom);
        assert_eq!(s.profiles[0].session_tags.len(), 2);
        assert_eq!(s.containers, Some(vec!["app".into(), "worker".into()]));
        assert_eq!(s.profiles[0].policy_arns.len(), 1);
        let s = spec(
            &[
                (a::ROLE_ARN, ROLE),
                (a::SESSION_TAGS, "a=b"),
                (a::SESSION_TAGS_POLICY, "none"),
            ],
            &[],
        );
        assert!(s.profiles[0].session_tags.is_empty());
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn sidecar_errors_are_reported_under_the_annotation() {
        let pod = ann(&[
            (a::ROLE_ARN, ROLE),
            (a::SESSION_DURATION, "20h"),
            (a::EXTERNAL_ID, "abc"),
        ]);
        let none = ann(&[]);
        let Ok(Decision::Inject(s)) = resolve(&pod, &none) else {
            panic!()
        };
        let config = s
            .sidecar_configs(&ClusterDefaults::default(), POD)
            .remove(0);
        let errs: Vec<String> = s
            .check(std::slice::from_ref(&config), &pod, &none)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errs.iter().any(
                |e| e.starts_with("annotation tempcreds.io/external-id=\"abc\": ")
                    && e.contains("tempcreds.io/chain-role-arns")
                    && !e.contains("--")
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("annotation tempcreds.io/session-duration=\"20h\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn sidecar_config_uses_cluster_defaults_and_paths() {
        let s = spec(&[(a::ROLE_ARN, ROLE)], &[]);
        let d = ClusterDefaults {
            region: Some("eu-west-1".into()),
            sts_endpoint: None,
            health_port: 9000,
            ..ClusterDefaults::default()
        };
        let c = s.sidecar_configs(&d, POD).remove(0);
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            c.token_file.as_deref(),
            Some(std::path::Path::new(
                "/var/run/secrets/tempcreds/serviceaccount/token"
            ))
        );
        assert_eq!(c.health_addr.port(), 9000);
        assert_eq!(
            s.check(
                std::slice::from_ref(&c),
                &ann(&[(a::ROLE_ARN, ROLE)]),
                &ann(&[])
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn delivery_modes_and_the_cluster_default() {
        let s = spec(&[(a::ROLE_ARN, ROLE)], &[]);
        assert_eq!(s.delivery, None);
        let mut d = ClusterDefaults::default();
        assert_eq!(s.sidecar_configs(&d, POD).remove(0).endpoint_addr, None);
        d.delivery = Delivery::Endpoint;
        d.endpoint_port = 9100;
        assert_eq!(s.delivery(&d), Delivery::Endpoint);
        let c = s.sidecar_configs(&d, POD).remove(0);
        assert_eq!(c.endpoint_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            s.check(
                std::slice::from_ref(&c),
                &ann(&[(a::ROLE_ARN, ROLE)]),
                &ann(&[])
            ),
            Ok(vec![])
        );
        let s = spec(&[(a::ROLE_ARN, ROLE), (a::DELIVERY, "process")], &[]);
        assert_eq!(s.delivery(&d), Delivery::Process);
        assert_eq!(s.sidecar_configs(&d, POD).remove(0).endpoint_addr, None);
        let s = spec(
            &[
                (a::ROLE_ARN, ROLE),
                (a::DELIVERY, "endpoint"),
                (a::PROFILE, "x"),
            ],
            &[],
        );
        assert!(
            s.warnings[0].contains("tempcreds.io/profile is ignored"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn simple_session_tags() {
        let pod = [
            (a::ROLE_ARN, ROLE),
            (a::SOURCE, "ambient"),
            (a::SESSION_TAGS_POLICY, "simple"),
            (a::SESSION_TAGS, "team=pay"),
            (a::TRANSITIVE_TAG_KEYS, "kubernetes-namespace"),
        ];
        let s = spec(&pod, &[]);
        let c = s
            .sidecar_configs(&ClusterDefaults::default(), POD)
            .remove(0);
        let tags: Vec<String> = c.session_tags.iter().map(ToString::to_string).collect();
        assert_eq!(
            tags,
            [
                "kubernetes-namespace=team-a",
                "kubernetes-service-account=reporter",
                "team=pay"
            ]
        );
        assert_eq!(c.pod_name_tag_key.as_deref(), Some(TAG_KEY_POD_NAME));
        assert_eq!(
            s.check(std::slice::from_ref(&c), &ann(&pod), &ann(&[])),
            Ok(vec![])
        );
        // With web identity, tags go on the first chained AssumeRole.
        let s = spec(
            &[
                (a::ROLE_ARN, ROLE),
                (a::CHAIN_ROLE_ARNS, "arn:aws:iam::123456789012:role/next"),
                (a::SESSION_TAGS_POLICY, "simple"),
            ],
            &[],
        );
        assert_eq!(s.profiles[0].session_tags_policy, SessionTagsPolicy::Simple);
        let e = errors(
            &[
                (a::INJECT, "true"),
                (a::SECRET_NAME, "k"),
                (a::SESSION_TAGS_POLICY, "simple"),
            ],
            &[],
        );
        assert!(e[0].contains("GetSessionToken"), "{e:?}");
    }

    #[test]
    fn custom_tags_reject_empty_parts_and_built_in_keys() {
        let base = [(a::ROLE_ARN, ROLE), (a::SOURCE, "ambient")];
        for (tags, needle) in [
            ("team=", "tag \"team\" has an empty value"),
            ("=x", "has an empty key"),
            ("a=b,,c=d", "empty entry"),
            ("a=b,", "empty entry"),
            ("novalue", "is not KEY=VALUE"),
            ("Kubernetes-Namespace=prod", "reserved"),
        ] {
            let mut pod = base.to_vec();
            pod.push((a::SESSION_TAGS, tags));
            let e = errors(&pod, &[]);
            assert!(
                e.len() == 1 && e[0].contains("tempcreds.io/session-tags") && e[0].contains(needle),
                "{tags}: {e:?}"
            );
        }
    }

    /// The sidecar's validation errors under the annotations, for an
    /// opted-in pod whose annotations `resolve` accepts.
    fn check_errors(pod: &[(&str, &str)]) -> Vec<String> {
        let pod = ann(pod);
        let none = ann(&[]);
        let s = match resolve(&pod, &none) {
            Ok(Decision::Inject(s)) => s,
            Err(e) => return e.iter().map(ToString::to_string).collect(),
            other => panic!("{other:?}"),
        };
        let c = s
            .sidecar_configs(&ClusterDefaults::default(), POD)
            .remove(0);
        match s.check(std::slice::from_ref(&c), &pod, &none) {
            Err(e) => e.iter().map(ToString::to_string).collect(),
            Ok(w) => panic!("accepted, warnings {w:?}"),
        }
    }

    /// Issue 12, item 8: each of these was admitted without a word.
    #[test]
    fn what_issue_12_found_in_annotations_is_refused_naming_annotation_and_value() {
        let big = "a".repeat(64 * 1024);
        for (pod, want) in [
            (
                vec![(a::REGION, "---")],
                "annotation tempcreds.io/region=\"---\": \"---\" is not a region name such as eu-west-1 or us-gov-west-1",
            ),
            (
                vec![
                    (a::SECRET_NAME, "keys"),
                    (a::SECRET_ACCESS_KEY_ID_KEY, "..data"),
                ],
                "annotation tempcreds.io/secret-access-key-id-key=\"..data\": is not a Secret key; accepted: \
                 letters, digits, '-', '_' and '.', at most 253, not \".\" and not starting with \"..\"",
            ),
            (
                vec![(a::REFRESH_BEFORE, "0")],
                "annotation tempcreds.io/refresh-before=\"0\": 0s is too short: credentials would be renewed only \
                 as they expire, and apps would get expired ones while STS answers; accepted: 1m or more, and \
                 less than the session duration",
            ),
            (
                vec![(a::SOURCE, "ambient"), (a::SESSION_TAGS, "team=a\nb")],
                "annotation tempcreds.io/session-tags=\"team=a\\nb\": tag \"team=a\\nb\" contains the control \
                 character '\\n'; STS accepts in tags only letters, digits, spaces and _ . : / = + - @",
            ),
            (
                vec![(a::SOURCE, "ambient"), (a::SESSION_TAGS, "team=a\tb")],
                "contains the control character '\\t'",
            ),
            (
                vec![(a::TOKEN_AUDIENCE, big.as_str())],
                "annotation tempcreds.io/token-audience=\"aaaaaaaaaa",
            ),
            (
                vec![(a::PROFILE, big.as_str())],
                "(65536 characters): is 65536 bytes long; tempcreds accepts at most 32768 bytes in an annotation",
            ),
            (
                vec![(a::PROFILE, "a b")],
                "annotation tempcreds.io/profile=\"a b\": \"a b\" is not a usable profile name; accepted: 1 to 64 \
                 letters, digits, '-', '_' and '.'",
            ),
            (
                vec![(a::PROFILE, &big[..65])],
                "is not a usable profile name",
            ),
            (
                vec![(a::TOKEN_AUDIENCE, "sts.amazonaws.com extra")],
                "annotation tempcreds.io/token-audience=\"sts.amazonaws.com extra\": is not an audience; accepted: \
                 1 to 256 characters without spaces or control characters, usually sts.amazonaws.com",
            ),
            (
                vec![(a::STS_ENDPOINT, "http://sts.example.com")],
                "annotation tempcreds.io/sts-endpoint=\"http://sts.example.com\": \"http://sts.example.com\" is plain \
                 http:// to sts.example.com, which would send the pod's web-identity token and signed requests \
                 unencrypted; use https:// (plain http:// is accepted only to a loopback address such as \
                 127.0.0.1, unless the cluster operator allows it); allowHttpStsEndpoint in the webhook's \
                 config allows it (test setups only)",
            ),
            (
                vec![(a::STS_ENDPOINT, "https://exa mple.com")],
                "annotation tempcreds.io/sts-endpoint=\"https://exa mple.com\": \"https://exa mple.com\" contains \
                 the character ' '; a URL has no whitespace or control characters; expected https://HOST[:PORT][/PATH]",
            ),
            (
                vec![(a::STS_ENDPOINT, "http://169.254.169.254/latest/meta-data")],
                "a link-local address (the instance metadata service lives there), not at STS",
            ),
        ] {
            let mut pod = pod;
            pod.push((a::ROLE_ARN, ROLE));
            let errs = check_errors(&pod);
            assert!(
                errs.len() == 1 && errs[0].contains(want),
                "{pod:.80?}:\n{errs:#?}\nwanted {want}"
            );
            assert!(errs[0].len() < 2048, "message of {} bytes", errs[0].len());
        }
    }

    #[test]
    fn plain_http_sts_endpoints_need_the_cluster_setting() {
        let pod = ann(&[
            (a::ROLE_ARN, ROLE),
            (a::STS_ENDPOINT, "http://10.0.0.1:5000"),
        ]);
        let none = ann(&[]);
        let Ok(Decision::Inject(s)) = resolve(&pod, &none) else {
            panic!()
        };
        let allow = ClusterDefaults {
            allow_http_sts_endpoint: true,
            ..ClusterDefaults::default()
        };
        let c = s.sidecar_configs(&allow, POD).remove(0);
        assert!(c.allow_http_sts_endpoint);
        assert!(
            c.to_args()
                .contains(&"--allow-http-sts-endpoint".to_owned())
        );
        assert_eq!(s.check(std::slice::from_ref(&c), &pod, &none), Ok(vec![]));
        // Loopback needs no setting, and gets no flag.
        let pod = ann(&[
            (a::ROLE_ARN, ROLE),
            (a::STS_ENDPOINT, "http://127.0.0.1:5000"),
        ]);
        let Ok(Decision::Inject(s)) = resolve(&pod, &none) else {
            panic!()
        };
        let c = s.sidecar_configs(&allow, POD).remove(0);
        assert!(!c.allow_http_sts_endpoint);
        let c = s
            .sidecar_configs(&ClusterDefaults::default(), POD)
            .remove(0);
        assert_eq!(s.check(std::slice::from_ref(&c), &pod, &none), Ok(vec![]));
    }

    #[test]
    fn endpoint_variant_annotations_pod_over_service_account_over_cluster() {
        let cluster = ClusterDefaults {
            region: Some("us-east-1".into()),
            use_fips_endpoint: true,
            ..ClusterDefaults::default()
        };
        let config = |pod: &[(&str, &str)], sa: &[(&str, &str)], d: &ClusterDefaults| {
            let c = spec(pod, sa).sidecar_configs(d, POD).remove(0);
            (c.use_fips_endpoint, c.use_dualstack_endpoint)
        };
        let role = (a::ROLE_ARN, ROLE);
        assert_eq!(config(&[role], &[], &cluster), (true, false));
        assert_eq!(
            config(&[role], &[], &ClusterDefaults::default()),
            (false, false)
        );
        // An annotation "false" turns off the cluster's "true".
        assert_eq!(
            config(&[role, (a::USE_FIPS_ENDPOINT, "false")], &[], &cluster),
            (false, false)
        );
        assert_eq!(
            config(&[role], &[(a::USE_FIPS_ENDPOINT, "false")], &cluster),
            (false, false)
        );
        // The pod's wins over its ServiceAccount's.
        assert_eq!(
            config(
                &[role, (a::USE_DUALSTACK_ENDPOINT, "true")],
                &[(a::USE_DUALSTACK_ENDPOINT, "false")],
                &ClusterDefaults::default()
            ),
            (false, true)
        );
        assert_eq!(
            config(
                &[role, (a::USE_FIPS_ENDPOINT, " true ")],
                &[(a::USE_DUALSTACK_ENDPOINT, "true")],
                &ClusterDefaults::default()
            ),
            (true, true)
        );
        for value in ["yes", "True", "1", ""] {
            for ann in [a::USE_FIPS_ENDPOINT, a::USE_DUALSTACK_ENDPOINT] {
                let e = errors(&[role, (ann, value)], &[]);
                assert_eq!(
                    e,
                    [format!(
                        "annotation {ann}=\"{value}\": accepted: \"true\" or \"false\""
                    )]
                );
            }
        }
        let e = errors(&[role], &[(a::USE_FIPS_ENDPOINT, "on")]);
        assert_eq!(
            e,
            [
                "annotation tempcreds.io/use-fips-endpoint=\"on\" (from the ServiceAccount): \
              accepted: \"true\" or \"false\""
            ]
        );
    }

    #[test]
    fn endpoint_variants_that_cannot_work_are_refused_under_the_annotation() {
        for (pod, want) in [
            (
                vec![(a::REGION, "eu-west-1"), (a::USE_FIPS_ENDPOINT, "true")],
                "annotation tempcreds.io/use-fips-endpoint=\"true\": STS has no FIPS endpoint in \
                 tempcreds.io/region \"eu-west-1\" (partition aws); accepted: tempcreds.io/region one of \
                 us-east-1, us-east-2, us-west-1, us-west-2, us-gov-east-1, us-gov-west-1",
            ),
            (
                vec![(a::REGION, "cn-north-1"), (a::USE_FIPS_ENDPOINT, "true")],
                "(partition aws-cn)",
            ),
            (
                vec![
                    (a::REGION, "us-isob-east-1"),
                    (a::USE_DUALSTACK_ENDPOINT, "true"),
                ],
                "annotation tempcreds.io/use-dualstack-endpoint=\"true\": STS has no dual-stack endpoint \
                 in tempcreds.io/region \"us-isob-east-1\" (partition aws-iso-b)",
            ),
            (
                vec![
                    (a::STS_ENDPOINT, "https://sts.example.com"),
                    (a::USE_FIPS_ENDPOINT, "true"),
                ],
                "annotation tempcreds.io/use-fips-endpoint=\"true\": cannot be combined with \
                 tempcreds.io/sts-endpoint \"https://sts.example.com\"",
            ),
        ] {
            let mut pod = pod;
            pod.push((a::ROLE_ARN, ROLE));
            let errs = check_errors(&pod);
            assert!(
                errs.len() == 1 && errs[0].contains(want) && !errs[0].contains("--"),
                "{pod:?}:\n{errs:#?}\nwanted {want}"
            );
        }
        // The GovCloud FIPS endpoint is accepted.
        let pod = ann(&[
            (a::ROLE_ARN, "arn:aws-us-gov:iam::123456789012:role/app"),
            (a::REGION, "us-gov-west-1"),
            (a::USE_FIPS_ENDPOINT, "true"),
        ]);
        let Ok(Decision::Inject(s)) = resolve(&pod, &ann(&[])) else {
            panic!()
        };
        let c = s
            .sidecar_configs(&ClusterDefaults::default(), POD)
            .remove(0);
        assert_eq!(
            s.check(std::slice::from_ref(&c), &pod, &ann(&[])),
            Ok(vec![])
        );
        assert!(c.to_args().contains(&"--use-fips-endpoint".to_owned()));
    }

    proptest! {
        /// However long or strange a value, a message quotes at most a
        /// bounded part of it.
        #[test]
        fn messages_stay_short_whatever_the_value(
            key in 0..a::USER_ANNOTATIONS.len(),
            unit in "\\PC{1,3}",
            repeat in prop_oneof![1usize..50, 1000usize..12000],
        ) {
            let value = unit.repeat(repeat);
            let mut pod = Annotations::new();
            pod.insert(a::ROLE_ARN.into(), ROLE.into());
            pod.insert(a::USER_ANNOTATIONS[key].to_owned(), value.clone());
            let errors = match resolve(&pod, &Annotations::new()) {
                Err(e) => e,
                Ok(Decision::Inject(s)) => {
                    let c = s.sidecar_configs(&ClusterDefaults::default(), POD).remove(0);
                    s.check(std::slice::from_ref(&c), &pod, &Annotations::new()).err().unwrap_or_default()
                }
                Ok(_) => Vec::new(),
            };
            for e in errors {
                let text = e.to_string();
                prop_assert!(text.chars().count() <= 1400, "{} characters: {:.300}", text.chars().count(), text);
            }
        }
    }

    const WRITER: &str = "arn:aws:iam::210987654321:role/writer";

    #[test]
    fn additional_profiles_take_their_own_annotations_and_inherit_none() {
        let s = spec(
            &[
                (a::ROLE_ARN, ROLE),
                (a::SESSION_DURATION, "2h"),
                (a::REGION, "eu-west-1"),
                ("tempcreds.io/role-arn.writer", WRITER),
                ("tempcreds.io/session-duration.writer", "15m"),
                ("tempcreds.io/secret-name.audit", "audit-keys"),
                ("tempcreds.io/source.audit", "secret"),
            ],
            &[("tempcreds.io/refresh-before.writer", "5m")],
        );
        let names: Vec<_> = s.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "audit", "writer"]);
        let writer = &s.profiles[2];
        assert_eq!(writer.suffix.as_deref(), Some("writer"));
        assert_eq!(
            writer.role_arn.as_ref().map(ToString::to_string).as_deref(),
            Some(WRITER)
        );
        assert_eq!(writer.session_duration, Some(Duration::from_secs(900)));
        assert_eq!(writer.refresh_before, Some(Duration::from_secs(300)));
        assert_eq!(writer.source, Source::WebIdentity);
        let audit = &s.profiles[1];
        assert_eq!(audit.source, Source::Secret);
        assert!(audit.role_arn.is_none());
        assert_eq!(audit.session_duration, None, "nothing is inherited");
        let configs = s.sidecar_configs(&ClusterDefaults::default(), POD);
        assert_eq!(
            configs[1].access_key_id_file.as_deref(),
            Some(std::path::Path::new(
                "/var/run/secrets/tempcreds/aws-keys-audit/aws_access_key_id"
            ))
        );
        assert_eq!(
            configs[2].region.as_deref(),
            Some("eu-west-1"),
            "the region is the pod's"
        );
        assert_eq!(configs[2].profile, "writer");
        // The sidecar's warnings name the profile's annotation.
        let warnings = s.check(&configs, &ann(&[]), &ann(&[])).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("tempcreds.io/refresh-before.writer 5m: "),
            "{warnings:?}"
        );
    }

    #[test]
    fn profile_annotation_mistakes_name_the_annotation() {
        let e = errors(
            &[
                (a::ROLE_ARN, ROLE),
                ("tempcreds.io/role-arn.writer", WRITER),
                ("tempcreds.io/session-duration.writr", "1h"),
                ("tempcreds.io/region.writer", "eu-west-1"),
                ("tempcreds.io/rol-arn.writer", WRITER),
                ("tempcreds.io/role-arn.Bad_Name", WRITER),
            ],
            &[],
        );
        assert_eq!(e.len(), 4, "{e:?}");
        let joined = e.join("\n");
        for want in [
            "annotation tempcreds.io/role-arn.Bad_Name=",
            "\"Bad_Name\" is not a usable profile name",
            "tempcreds.io/region applies to the whole pod",
            "tempcreds.io/rol-arn.writer=",
            "is not a tempcreds annotation",
            "tempcreds.io/session-duration.writr=\"1h\": no profile \"writr\" is declared",
            "declared: writer",
        ] {
            assert!(joined.contains(want), "{want} not in {joined}");
        }
        // A bad value is reported under the suffixed annotation.
        let e = errors(
            &[
                (a::ROLE_ARN, ROLE),
                ("tempcreds.io/role-arn.writer", "nope"),
            ],
            &[],
        );
        assert!(
            e[0].starts_with("annotation tempcreds.io/role-arn.writer=\"nope\": "),
            "{e:?}"
        );
        // The default profile's name cannot be taken twice.
        let e = errors(
            &[
                (a::ROLE_ARN, ROLE),
                (a::PROFILE, "writer"),
                ("tempcreds.io/role-arn.writer", WRITER),
            ],
            &[],
        );
        assert!(e[0].contains("the default profile's name"), "{e:?}");
        // An additional profile alone opts in, and the default needs a role.
        let e = errors(&[("tempcreds.io/role-arn.writer", WRITER)], &[]);
        assert!(e[0].contains("tempcreds.io/role-arn: is required"), "{e:?}");
        let e = errors(&[], &[("tempcreds.io/role-arn.writer", WRITER)]);
        assert!(e[0].contains("tempcreds.io/role-arn: is required"), "{e:?}");
        // A key that sorts right after the prefix but is not a profile's.
        let none = ann(&[("tempcreds.io/role-arnz", WRITER)]);
        assert_eq!(resolve(&none, &none), Ok(Decision::NotRequested));
        let many: Vec<(String, String)> = (0..=MAX_ADDITIONAL_PROFILES)
            .map(|i| (format!("tempcreds.io/role-arn.p{i}"), WRITER.to_owned()))
            .collect();
        let mut pairs: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push((a::ROLE_ARN, ROLE));
        let e = errors(&pairs, &[]);
        assert!(e[0].contains("at most 8"), "{e:?}");
    }

    #[test]
    fn sidecar_errors_of_a_profile_name_its_annotations() {
        let pod = ann(&[
            (a::ROLE_ARN, ROLE),
            ("tempcreds.io/role-arn.writer", WRITER),
            ("tempcreds.io/external-id.writer", "x-1"),
        ]);
        let Ok(Decision::Inject(s)) = resolve(&pod, &ann(&[])) else {
            panic!("not injected")
        };
        let configs = s.sidecar_configs(&ClusterDefaults::default(), POD);
        let e = s.check(&configs, &pod, &ann(&[])).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].annotation, "tempcreds.io/external-id.writer");
        assert!(e[0].to_string().contains("\"x-1\""), "{}", e[0]);
    }

    proptest! {
        #[test]
        fn never_panics(keys in proptest::collection::vec(0..a::USER_ANNOTATIONS.len(), 0..8),
                        suffixes in proptest::collection::vec(
                            prop_oneof![Just(String::new()), Just(".w".to_owned()), "\\.\\PC{0,12}"], 8),
                        values in proptest::collection::vec("\\PC{0,20}", 8),
                        inject in proptest::bool::ANY) {
            let mut pod = Annotations::new();
            if inject { pod.insert(a::ROLE_ARN.into(), ROLE.into()); }
            for ((k, suffix), v) in keys.iter().zip(&suffixes).zip(values.iter()) {
                pod.insert(format!("{}{suffix}", a::USER_ANNOTATIONS[*k]), v.clone());
            }
            if let Ok(Decision::Inject(s)) = resolve(&pod, &Annotations::new()) {
                let configs = s.sidecar_configs(&ClusterDefaults::default(), POD);
                prop_assert_eq!(configs.len(), s.profiles.len());
                if s.check(&configs, &pod, &Annotations::new()).is_ok() {
                    // What the webhook renders, the sidecar parses back.
                    let args = crate::config::render_profiles(&configs);
                    let (_, rest) = crate::config::split_profiles(args.iter().map(std::ffi::OsString::from).collect());
                    let extra = crate::config::parse_additional(&configs[0], &rest);
                    prop_assert_eq!(extra.map_err(|e| e.to_string()), Ok(configs[1..].to_vec()));
                }
            }
        }
    }
}
