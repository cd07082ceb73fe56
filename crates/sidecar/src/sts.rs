//! The STS call chain: one chain per refresh, never more.
//!
//! | source | first call | signed with |
//! |---|---|---|
//! | `web-identity` | `AssumeRoleWithWebIdentity(role)` | unsigned; the token read from `--token-file` now |
//! | `secret` + role | `AssumeRole(role)` | the long-term keys read from their files now |
//! | `secret`, no role | `GetSessionToken` | the long-term keys |
//! | `ambient` | `AssumeRole(role)` | the SDK's default credential chain |
//!
//! Then each `--chain-role-arn` is assumed in order with the previous
//! credentials. `GetSessionToken` never follows `AssumeRole` (STS refuses it
//! with session credentials). Parameters: the session name on every
//! `AssumeRole*`; the duration on every call (capped at 1 h on chained
//! calls); the external ID on every `AssumeRole`; the source identity, session
//! tags and transitive tag keys on the first `AssumeRole` only (they pass
//! along the chain by themselves); policy ARNs on the last call.
//!
//! SDK retries are off: the refresh loop retries the whole chain with its own
//! backoff, so each attempt is exactly one chain of calls.

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use tempcreds_core::sts_variant::{FLAG_NAMES, Setting, Variant, check_variant};
use tempcreds_core::{Credentials, RoleArn, SecretString, SidecarConfig, Source};
use time::OffsetDateTime;

use crate::explain::{self, CallKind, Explanation};
use crate::inputs::{self, InputError};
use crate::metrics::Metrics;

/// How long to wait for a TCP connection to STS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one STS call may take in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Setting up the STS client failed (before any call).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No region from `--region` or the SDK's region chain.
    #[error(
        "--region: no region given and none found in AWS_REGION, the AWS config file or instance metadata; \
         set --region (regional STS endpoints are used)"
    )]
    NoRegion,
    /// The AWS SDK's endpoint resolver gave no STS endpoint for the region
    /// and variant.
    #[error(
        "{flag}: the AWS SDK resolves no {variant} STS endpoint for region {region:?} ({detail}); \
         check --region, --use-fips-endpoint and --use-dualstack-endpoint"
    )]
    Resolve {
        /// The flag of the variant asked for (`--region` for the regional
        /// endpoint).
        flag: &'static str,
        /// The variant asked for.
        variant: Variant,
        /// The region, from `--region` or the SDK's region chain.
        region: String,
        /// The resolver's error.
        detail: String,
    },
    /// The region came from the SDK's region chain and STS has no endpoint
    /// of the variant asked for there (the checks of
    /// [`SidecarConfig::validate`], applied to that region).
    #[error(
        "--{flag}: {message}, where the region comes from the SDK's region chain (AWS_REGION, the AWS \
         config file or instance metadata; the SDK would call {endpoint}, which AWS does not publish)"
    )]
    Variant {
        /// The flag at fault, without dashes.
        flag: &'static str,
        /// What is wrong and what is accepted.
        message: String,
        /// The URL the SDK's resolver gives.
        endpoint: String,
    },
}

/// One refresh attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A token or key file could not be used.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The SDK's default chain had no credentials (`--source ambient`).
    #[error(
        "--source ambient: the AWS SDK's default credential chain found no credentials ({detail}); \
         run on a node with an instance role or EKS Pod Identity, or use --source web-identity or secret"
    )]
    Ambient {
        /// What the chain reported.
        detail: String,
    },
    /// STS answered with an error.
    #[error("{0}")]
    Sts(Box<StsFailure>),
    /// STS could not be reached or did not answer.
    #[error("{0}")]
    Unreachable(Box<Unreachable>),
    /// The endpoint answered something tempcreds cannot use: a body that is
    /// not an STS answer (even with HTTP 200), or credentials that fail
    /// [`Credentials::validate`]. Nothing is written; the last good
    /// credentials stay and the attempt is retried with backoff.
    #[error(
        "{action} {target}: unusable answer from the STS endpoint ({detail}); nothing was written. \
         The endpoint is not STS, or it misbehaves: check --sts-endpoint and any proxy in between"
    )]
    Malformed {
        /// The STS action.
        action: &'static str,
        /// The role, or "with the long-term keys".
        target: String,
        /// What was wrong (text from the endpoint sanitised, see
        /// [`sanitize`]).
        detail: String,
    },
}

/// STS answered a call with an error.
#[derive(Debug, thiserror::Error)]
#[error("{action} {target}: {code}: {message}; {explanation}")]
pub struct StsFailure {
    /// The STS action.
    pub action: &'static str,
    /// The role, or "with the long-term keys" for GetSessionToken.
    pub target: String,
    /// STS's error code (sanitised, see [`sanitize`]).
    pub code: String,
    /// STS's error message (sanitised, see [`sanitize`]).
    pub message: String,
    /// What it most likely means.
    pub explanation: Explanation,
}

/// STS could not be reached or did not answer a call.
#[derive(Debug, thiserror::Error)]
#[error("{action} {target}: no answer from STS at {endpoint} ({detail}); {explanation}")]
pub struct Unreachable {
    /// The STS action.
    pub action: &'static str,
    /// The role, or "with the long-term keys".
    pub target: String,
    /// The endpoint tried.
    pub endpoint: String,
    /// The transport error.
    pub detail: String,
    /// What it most likely means.
    pub explanation: Explanation,
}

impl FetchError {
    /// The STS error code, when STS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            FetchError::Sts(f) => Some(&f.code),
            _ => None,
        }
    }
}

/// One successful call of a chain (for `doctor`): no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The STS action.
    pub action: &'static str,
    /// The role, or "with the long-term keys".
    pub target: String,
    /// The access key ID of the credentials it returned.
    pub access_key_id: String,
    /// Their expiry, RFC 3339 in UTC.
    pub expiration: String,
}

impl CallRecord {
    fn new(action: &'static str, target: String, creds: &Credentials) -> CallRecord {
        CallRecord {
            action,
            target,
            access_key_id: creds.access_key_id.clone(),
            expiration: creds.expiration_rfc3339(),
        }
    }
}

/// Who STS says signed a `GetCallerIdentity` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The account ID.
    pub account: String,
    /// The caller's ARN (a user, a role, or an assumed-role session).
    pub arn: String,
    /// The access key ID that signed the call.
    pub access_key_id: String,
}

/// Credentials used to sign the next call of the chain.
struct Signer {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl Signer {
    /// The values that sign calls, for redaction.
    fn secrets(&self) -> Vec<&str> {
        let mut v = vec![self.secret_access_key.expose()];
        v.extend(self.session_token.as_ref().map(SecretString::expose));
        v
    }
}

impl From<&Credentials> for Signer {
    fn from(c: &Credentials) -> Self {
        Signer {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: Some(c.session_token.clone()),
        }
    }
}

/// Per-call parameters of one `AssumeRole*` in the chain.
struct RoleCall<'a> {
    role: &'a RoleArn,
    kind: CallKind,
    duration: Option<Duration>,
    /// First `AssumeRole` of the chain: source identity, tags, transitive keys.
    first_assume_role: bool,
    /// Last call of the chain: policy ARNs.
    last: bool,
}

/// The STS side of the sidecar: builds clients and runs the call chain.
pub struct Sts {
    config: SidecarConfig,
    sdk: aws_config::SdkConfig,
    endpoint: String,
    /// The variant the SDK uses (`None`: a custom endpoint).
    variant: Option<Variant>,
    metrics: Option<Metrics>,
}

impl fmt::Debug for Sts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sts")
            .field("source", &self.config.source)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Sts {
    /// Loads the SDK configuration: the region (`--region`, else the SDK's
    /// region chain), the endpoint (`--sts-endpoint`, else regional STS, or
    /// its FIPS or dual-stack variant with `--use-fips-endpoint`,
    /// `--use-dualstack-endpoint`: the SDK's own settings, whose URL its
    /// endpoint resolver chooses), and for `--source ambient` the default
    /// credential chain.
    pub async fn new(config: &SidecarConfig) -> Result<Sts, SetupError> {
        Sts::sharing(config, None).await
    }

    /// [`Sts::new`], with the HTTP client (its connection pool and TLS
    /// configuration, root certificates included) of `other` when given:
    /// the profiles of one sidecar share one, so each additional profile
    /// costs its settings, not another TLS stack.
    pub async fn sharing(config: &SidecarConfig, other: Option<&Sts>) -> Result<Sts, SetupError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.sts_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if config.use_fips_endpoint {
            loader = loader.use_fips(true);
        }
        if config.use_dualstack_endpoint {
            loader = loader.use_dual_stack(true);
        }
        if config.source != Source::Ambient {
            loader = loader.no_credentials();
        }
        if let Some(http) = other.and_then(|o| o.sdk.http_client()) {
            loader = loader.http_client(http);
        }
        let sdk = loader.load().await;
        let region = sdk.region().ok_or(SetupError::NoRegion)?.to_string();
        if let Some(url) = sdk.endpoint_url() {
            return Ok(Sts {
                config: config.clone(),
                endpoint: url.to_owned(),
                variant: None,
                sdk,
                metrics: None,
            });
        }
        // The SDK's own settings, which may also come from its environment
        // (AWS_USE_FIPS_ENDPOINT, AWS_USE_DUALSTACK_ENDPOINT).
        let variant = Variant {
            fips: sdk.use_fips().unwrap_or(false),
            dual_stack: sdk.use_dual_stack().unwrap_or(false),
        };
        let endpoint = resolve_endpoint(&region, variant).await?;
        if config.region.is_none()
            && let Some(e) = check_variant(variant, Some(&region), None, &FLAG_NAMES)
                .into_iter()
                .next()
        {
            return Err(SetupError::Variant {
                flag: match e.setting {
                    Setting::Fips => "use-fips-endpoint",
                    Setting::DualStack => "use-dualstack-endpoint",
                },
                message: e.message,
                endpoint,
            });
        }
        Ok(Sts {
            config: config.clone(),
            sdk,
            endpoint,
            variant: Some(variant),
            metrics: None,
        })
    }

    /// Records the time of every STS call from now on in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Sts {
        self.metrics = Some(metrics);
        self
    }

    /// Records one call of `action` that started at `started`.
    fn observe(&self, action: &'static str, started: std::time::Instant) {
        if let Some(m) = &self.metrics {
            m.sts_call(action, started.elapsed());
        }
    }

    /// Where the calls go: the `--sts-endpoint` URL, else the URL the AWS
    /// SDK's endpoint resolver gives for the region and variant.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What kind of endpoint [`Sts::endpoint`] is: `custom` (`--sts-endpoint`),
    /// `regional`, `FIPS`, `dual-stack` or `FIPS dual-stack`.
    pub fn endpoint_kind(&self) -> &'static str {
        self.variant.map_or("custom", Variant::describe)
    }

    /// Runs one call chain and returns the final credentials.
    pub async fn fetch(&self) -> Result<Credentials, FetchError> {
        self.fetch_traced(&mut Vec::new()).await
    }

    /// Like [`Sts::fetch`], recording each successful call in `trace` (for
    /// `doctor`, which shows the chain call by call; a failing call is the
    /// error returned).
    pub async fn fetch_traced(
        &self,
        trace: &mut Vec<CallRecord>,
    ) -> Result<Credentials, FetchError> {
        let cfg = &self.config;
        let first_duration = cfg.session_duration;
        let chained = cfg.chained_duration();
        let chain = &cfg.chain_role_arns;
        let mut creds = match (cfg.source, &cfg.role_arn) {
            (Source::WebIdentity, Some(role)) => {
                let path = cfg
                    .token_file
                    .as_deref()
                    .expect("validate() requires --token-file with --source web-identity");
                let token = inputs::read_token(path)?;
                let creds = self
                    .assume_role_with_web_identity(role, &token, chain.is_empty())
                    .await?;
                trace.push(CallRecord::new(
                    "AssumeRoleWithWebIdentity",
                    role.to_string(),
                    &creds,
                ));
                creds
            }
            (Source::Secret, role) => {
                let keys = inputs::read_keys(
                    cfg.access_key_id_file
                        .as_deref()
                        .expect("validate() requires --access-key-id-file with --source secret"),
                    cfg.secret_access_key_file.as_deref().expect(
                        "validate() requires --secret-access-key-file with --source secret",
                    ),
                )?;
                let signer = Signer {
                    access_key_id: keys.access_key_id,
                    secret_access_key: keys.secret_access_key,
                    session_token: None,
                };
                match role {
                    Some(role) => {
                        let call = RoleCall {
                            role,
                            kind: CallKind::AssumeRole,
                            duration: first_duration,
                            first_assume_role: true,
                            last: chain.is_empty(),
                        };
                        let creds = self.assume_role(&signer, call).await?;
                        trace.push(CallRecord::new("AssumeRole", role.to_string(), &creds));
                        creds
                    }
                    None => {
                        let creds = self.get_session_token(&signer).await?;
                        trace.push(CallRecord::new(
                            "GetSessionToken",
                            "with the long-term keys".into(),
                            &creds,
                        ));
                        creds
                    }
                }
            }
            (Source::Ambient, Some(role)) => {
                let signer = self.ambient().await?;
                let call = RoleCall {
                    role,
                    kind: CallKind::AssumeRole,
                    duration: first_duration,
                    first_assume_role: true,
                    last: chain.is_empty(),
                };
                let creds = self.assume_role(&signer, call).await?;
                trace.push(CallRecord::new("AssumeRole", role.to_string(), &creds));
                creds
            }
            (Source::WebIdentity | Source::Ambient, None) => {
                unreachable!(
                    "validate() requires --role-arn with --source {}",
                    cfg.source
                )
            }
        };
        for (i, role) in chain.iter().enumerate() {
            let call = RoleCall {
                role,
                kind: CallKind::ChainedAssumeRole,
                duration: chained,
                first_assume_role: i == 0 && cfg.source == Source::WebIdentity,
                last: i + 1 == chain.len(),
            };
            creds = self.assume_role(&Signer::from(&creds), call).await?;
            trace.push(CallRecord::new("AssumeRole", role.to_string(), &creds));
        }
        Ok(creds)
    }

    /// `GetCallerIdentity` signed the way the first call of the chain is:
    /// with the long-term keys (`secret`) or the default chain's credentials
    /// (`ambient`). `None` for `web-identity`, whose first call is unsigned.
    pub async fn source_caller_identity(&self) -> Option<Result<CallerIdentity, FetchError>> {
        let cfg = &self.config;
        let signer = match cfg.source {
            Source::WebIdentity => return None,
            Source::Ambient => self.ambient().await,
            Source::Secret => match (&cfg.access_key_id_file, &cfg.secret_access_key_file) {
                (Some(id), Some(secret)) => inputs::read_keys(id, secret)
                    .map(|keys| Signer {
                        access_key_id: keys.access_key_id,
                        secret_access_key: keys.secret_access_key,
                        session_token: None,
                    })
                    .map_err(FetchError::from),
                _ => return None,
            },
        };
        let target = match cfg.source {
            Source::Ambient => "with the default credential chain",
            _ => "with the long-term keys",
        };
        Some(match signer {
            Ok(signer) => self.get_caller_identity(&signer, target.into()).await,
            Err(e) => Err(e),
        })
    }

    /// `GetCallerIdentity` signed with `creds` (the chain's result).
    pub async fn caller_identity(&self, creds: &Credentials) -> Result<CallerIdentity, FetchError> {
        self.get_caller_identity(&Signer::from(creds), "with the new credentials".into())
            .await
    }

    async fn get_caller_identity(
        &self,
        signer: &Signer,
        target: String,
    ) -> Result<CallerIdentity, FetchError> {
        let action = "GetCallerIdentity";
        let started = std::time::Instant::now();
        let sent = self.client(Some(signer)).get_caller_identity().send().await;
        self.observe(action, started);
        let out = sent.map_err(|e| {
            self.sdk_error(
                action,
                target.clone(),
                CallKind::GetCallerIdentity,
                &signer.secrets(),
                e,
            )
        })?;
        let clean = |s: Option<&str>| sanitize(s.unwrap_or_default(), &signer.secrets());
        Ok(CallerIdentity {
            account: clean(out.account()),
            arn: clean(out.arn()),
            access_key_id: signer.access_key_id.clone(),
        })
    }

    fn client(&self, signer: Option<&Signer>) -> aws_sdk_sts::Client {
        let mut builder = aws_sdk_sts::config::Builder::from(&self.sdk);
        if let Some(s) = signer {
            // Static credentials need no cache. The SdkConfig's shared lazy
            // identity cache would keep a partition for every new provider,
            // credentials included, for the life of the process: memory that
            // grew with every refresh.
            builder = builder.identity_cache(aws_sdk_sts::config::IdentityCache::no_cache());
            builder = builder.credentials_provider(aws_sdk_sts::config::Credentials::new(
                s.access_key_id.clone(),
                s.secret_access_key.expose().to_owned(),
                s.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "tempcreds",
            ));
        }
        aws_sdk_sts::Client::from_conf(builder.build())
    }

    async fn ambient(&self) -> Result<Signer, FetchError> {
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| FetchError::Ambient {
                detail: "no credential provider configured".into(),
            })?;
        let c = provider
            .provide_credentials()
            .await
            .map_err(|e| FetchError::Ambient {
                detail: sanitize(
                    &aws_sdk_sts::error::DisplayErrorContext(&e).to_string(),
                    &[],
                ),
            })?;
        Ok(Signer {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: SecretString::new(c.secret_access_key()),
            session_token: c.session_token().map(SecretString::new),
        })
    }

    async fn assume_role_with_web_identity(
        &self,
        role: &RoleArn,
        token: &SecretString,
        last: bool,
    ) -> Result<Credentials, FetchError> {
        let cfg = &self.config;
        let action = "AssumeRoleWithWebIdentity";
        let mut req = self
            .client(None)
            .assume_role_with_web_identity()
            .role_arn(role.to_string())
            .role_session_name(cfg.effective_session_name().as_str())
            .web_identity_token(token.expose())
            .set_duration_seconds(cfg.session_duration.map(duration_seconds));
        if last {
            req = req.set_policy_arns(policy_arns(cfg));
        }
        let started = std::time::Instant::now();
        let sent = req.send().await;
        self.observe(action, started);
        let out = sent.map_err(|e| {
            self.sdk_error(
                action,
                role.to_string(),
                CallKind::WebIdentity,
                &[token.expose()],
                e,
            )
        })?;
        accept_answer(
            action,
            role.to_string(),
            out.credentials(),
            out.assumed_role_user().map(|u| u.arn()),
        )
    }

    async fn assume_role(
        &self,
        signer: &Signer,
        call: RoleCall<'_>,
    ) -> Result<Credentials, FetchError> {
        let cfg = &self.config;
        let action = "AssumeRole";
        let mut req = self
            .client(Some(signer))
            .assume_role()
            .role_arn(call.role.to_string())
            .role_session_name(cfg.effective_session_name().as_str())
            .set_duration_seconds(call.duration.map(duration_seconds))
            .set_external_id(cfg.external_id.as_ref().map(ToString::to_string));
        if call.first_assume_role {
            req = req
                .set_source_identity(cfg.source_identity.as_ref().map(ToString::to_string))
                .set_tags(session_tags(cfg)?)
                .set_transitive_tag_keys(
                    (!cfg.transitive_tag_keys.is_empty()).then(|| cfg.transitive_tag_keys.clone()),
                );
        }
        if call.last {
            req = req.set_policy_arns(policy_arns(cfg));
        }
        let started = std::time::Instant::now();
        let sent = req.send().await;
        self.observe(action, started);
        let out = sent.map_err(|e| {
            self.sdk_error(
                action,
                call.role.to_string(),
                call.kind,
                &signer.secrets(),
                e,
            )
        })?;
        accept_answer(
            action,
            call.role.to_string(),
            out.credentials(),
            out.assumed_role_user().map(|u| u.arn()),
        )
    }

    async fn get_session_token(&self, signer: &Signer) -> Result<Credentials, FetchError> {
        let action = "GetSessionToken";
        let target = "with the long-term keys".to_owned();
        let started = std::time::Instant::now();
        let sent = self
            .client(Some(signer))
            .get_session_token()
            .set_duration_seconds(self.config.session_duration.map(duration_seconds))
            .send()
            .await;
        self.observe(action, started);
        let out = sent.map_err(|e| {
            self.sdk_error(
                action,
                target.clone(),
                CallKind::GetSessionToken,
                &signer.secrets(),
                e,
            )
        })?;
        accept_answer(action, target, out.credentials(), None)
    }

    /// Classifies a failed call. `sent` are the secrets the call carried
    /// (the web-identity token, the signing keys and session token): an
    /// endpoint that echoes the request must not get them into the logs.
    fn sdk_error<E>(
        &self,
        action: &'static str,
        target: String,
        kind: CallKind,
        sent: &[&str],
        err: SdkError<E, HttpResponse>,
    ) -> FetchError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        match &err {
            SdkError::ServiceError(ctx) => {
                // Some STS-compatible servers (and proxies) answer in a shape
                // the SDK does not parse; fall back to reading the body.
                let body = ctx
                    .raw()
                    .body()
                    .bytes()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let status = ctx.raw().status();
                if status.is_success() {
                    // A success status whose body the SDK could not read as
                    // the action's answer: not a refusal, a broken answer.
                    return FetchError::Malformed {
                        action,
                        target,
                        detail: format!(
                            "HTTP {} with a body that is not an STS {action} answer: {}",
                            status.as_u16(),
                            quoted_excerpt(&body, sent)
                        ),
                    };
                }
                let code = err
                    .code()
                    .map(str::to_owned)
                    .or_else(|| xml_element(&body, "Code"))
                    .map(|c| sanitize(&c, sent))
                    .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
                let message = err
                    .message()
                    .map(str::to_owned)
                    .or_else(|| xml_element(&body, "Message"))
                    .map(|m| sanitize(&m, sent))
                    .unwrap_or_else(|| {
                        if body.trim().is_empty() {
                            String::new()
                        } else {
                            format!("no STS error in the body: {}", quoted_excerpt(&body, sent))
                        }
                    });
                FetchError::Sts(Box::new(StsFailure {
                    action,
                    explanation: explain::explain(kind, &code, &message),
                    target,
                    code,
                    message,
                }))
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
                let timed_out = match &err {
                    SdkError::TimeoutError(_) => true,
                    SdkError::DispatchFailure(d) => d.is_timeout(),
                    _ => false,
                };
                FetchError::Unreachable(Box::new(Unreachable {
                    action,
                    target,
                    endpoint: self.endpoint.clone(),
                    detail: sanitize(&error_chain(&err), sent),
                    explanation: explain::explain_unreachable(timed_out),
                }))
            }
            _ => FetchError::Malformed {
                action,
                target,
                detail: sanitize(&error_chain(&err), sent),
            },
        }
    }
}

/// The STS endpoint URL the AWS SDK's own resolver gives for `region` and
/// `variant` (what the client built from the same settings calls).
pub async fn resolve_endpoint(region: &str, variant: Variant) -> Result<String, SetupError> {
    let failed = |detail: String| {
        let flag = match (variant.fips, variant.dual_stack) {
            (true, _) => "--use-fips-endpoint",
            (false, true) => "--use-dualstack-endpoint",
            (false, false) => "--region",
        };
        SetupError::Resolve {
            flag,
            variant,
            region: region.to_owned(),
            detail,
        }
    };
    let params = Params::builder()
        .region(region)
        .use_fips(variant.fips)
        .use_dual_stack(variant.dual_stack)
        .use_global_endpoint(false)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map(|endpoint| endpoint.url().to_owned())
        .map_err(|e| failed(aws_sdk_sts::error::DisplayErrorContext(&*e).to_string()))
}

/// The text of the first `<name>` element in `xml`, if any.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    let text = xml[start..start + len].trim();
    (!text.is_empty()).then(|| {
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

/// The error and its sources on one line, without repeating the SDK's
/// generic "dispatch failure" prefix alone.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn policy_arns(cfg: &SidecarConfig) -> Option<Vec<PolicyDescriptorType>> {
    (!cfg.policy_arns.is_empty()).then(|| {
        cfg.policy_arns
            .iter()
            .map(|p| PolicyDescriptorType::builder().arn(p.to_string()).build())
            .collect()
    })
}

fn session_tags(cfg: &SidecarConfig) -> Result<Option<Vec<Tag>>, FetchError> {
    let tags = cfg.effective_session_tags();
    if tags.is_empty() {
        return Ok(None);
    }
    tags.iter()
        .map(|t| {
            Tag::builder()
                .key(&t.key)
                .value(&t.value)
                .build()
                .map_err(|e| FetchError::Malformed {
                    action: "AssumeRole",
                    target: "session tags".into(),
                    detail: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Longest text from the endpoint put into a message.
pub const REMOTE_TEXT_MAX: usize = 300;

/// What replaces a secret in text from the endpoint.
pub const REDACTED: &str = "** redacted **";

/// Text from the STS endpoint (an error code or message, a body, a
/// transport error) made safe to log: every value in `sent` (the secrets the
/// call carried), also form-encoded, and anything shaped like a JWT is
/// replaced by [`REDACTED`]; control characters become spaces; the result is
/// cut to [`REMOTE_TEXT_MAX`] characters. An endpoint that echoes the
/// request therefore cannot put the token or a key into the logs.
pub fn sanitize(text: &str, sent: &[&str]) -> String {
    let redact = |mut t: String| {
        for secret in sent.iter().filter(|s| s.len() >= 4) {
            let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            for variant in [*secret, encoded.as_str()] {
                if t.contains(variant) {
                    t = t.replace(variant, REDACTED);
                }
            }
        }
        redact_jwts(&t)
    };
    let once = redact(text.to_owned());
    let flat: String = once
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = redact(flat);
    let n = clean.chars().count();
    if n > REMOTE_TEXT_MAX {
        let cut: String = clean.chars().take(REMOTE_TEXT_MAX).collect();
        format!("{cut}… ({n} characters in all)")
    } else {
        clean
    }
}

/// `body` sanitised and quoted, or "an empty body".
fn quoted_excerpt(body: &str, sent: &[&str]) -> String {
    if body.trim().is_empty() {
        "an empty body".to_owned()
    } else {
        format!("{:?}", sanitize(body, sent))
    }
}

/// Replaces every run of JWT characters shaped like a JWT (starting `eyJ`,
/// the base64 of `{"`, with at least two dots) by [`REDACTED`].
fn redact_jwts(text: &str) -> String {
    let is_jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("eyJ") {
        out.push_str(&rest[..i]);
        let run = &rest[i..];
        let len = run.find(|c: char| !is_jwt_char(c)).unwrap_or(run.len());
        if run[..len].matches('.').count() >= 2 {
            out.push_str(REDACTED);
        } else {
            out.push_str(&run[..len]);
        }
        rest = &run[len..];
    }
    out.push_str(rest);
    out
}

/// Turns an STS answer into credentials, or refuses it as a whole
/// ([`Credentials::validate`] against the current time, and the assumed-role
/// ARN's shape): a refused answer is a failed attempt, retried with backoff
/// while the last good credentials stay.
pub fn accept_answer(
    action: &'static str,
    target: String,
    c: Option<&aws_sdk_sts::types::Credentials>,
    assumed_role_arn: Option<&str>,
) -> Result<Credentials, FetchError> {
    let malformed = |detail: String| FetchError::Malformed {
        action,
        target: target.clone(),
        detail,
    };
    let c = c.ok_or_else(|| malformed("no Credentials element".into()))?;
    let expiration = OffsetDateTime::from_unix_timestamp(c.expiration().secs())
        .map_err(|_| malformed("Expiration out of range".into()))?;
    let creds = Credentials {
        access_key_id: c.access_key_id().to_owned(),
        secret_access_key: SecretString::new(c.secret_access_key()),
        session_token: SecretString::new(c.session_token()),
        expiration,
    };
    let mut problems = match creds.validate(OffsetDateTime::now_utc()) {
        Ok(()) => Vec::new(),
        Err(e) => vec![e.to_string()],
    };
    if let Some(arn) = assumed_role_arn
        && let Err(e) = check_assumed_role_arn(arn)
    {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(creds)
    } else {
        Err(malformed(format!(
            "credentials refused: {}",
            sanitize(&problems.join("; "), &creds.secrets())
        )))
    }
}

/// `AssumedRoleUser.Arn`: `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`
/// of visible ASCII, at most 2048 characters (STS's limit).
fn check_assumed_role_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = arn.len() <= 2048
        && arn.chars().all(|c| c.is_ascii_graphic())
        && parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sts"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].starts_with("assumed-role/");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "AssumedRoleUser.Arn {} is not arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION",
            tempcreds_core::credentials::shown(arn)
        ))
    }
}

trait Secrets {
    fn secrets(&self) -> Vec<&str>;
}

impl Secrets for Credentials {
    fn secrets(&self) -> Vec<&str> {
        vec![self.secret_access_key.expose(), self.session_token.expose()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(region: Option<&str>, fips: bool, dual_stack: bool) -> SidecarConfig {
        let mut c = SidecarConfig::new(Source::WebIdentity);
        c.region = region.map(str::to_owned);
        c.use_fips_endpoint = fips;
        c.use_dualstack_endpoint = dual_stack;
        c
    }

    /// The URLs as AWS publishes them: the regional and FIPS hosts in
    /// botocore's endpoints.json (service sts: the `fips` variants of
    /// us-east-1 and us-gov-west-1) and the IAM User Guide's "AWS STS
    /// Regions and endpoints"; the dual-stack hosts in its "Dual-stack
    /// endpoint support" (`sts.REGION.api.aws`, `sts-fips.REGION.api.aws`
    /// in commercial regions, `api.amazonwebservices.com.cn` in China).
    #[tokio::test]
    async fn the_sdk_resolves_the_variant_asked_for() {
        for (region, fips, dual_stack, url, kind) in [
            (
                "eu-west-1",
                false,
                false,
                "https://sts.eu-west-1.amazonaws.com",
                "regional",
            ),
            (
                "us-east-1",
                true,
                false,
                "https://sts-fips.us-east-1.amazonaws.com",
                "FIPS",
            ),
            (
                "us-west-2",
                true,
                false,
                "https://sts-fips.us-west-2.amazonaws.com",
                "FIPS",
            ),
            (
                "us-east-1",
                false,
                true,
                "https://sts.us-east-1.api.aws",
                "dual-stack",
            ),
            (
                "us-east-1",
                true,
                true,
                "https://sts-fips.us-east-1.api.aws",
                "FIPS dual-stack",
            ),
            (
                "us-gov-west-1",
                true,
                false,
                "https://sts.us-gov-west-1.amazonaws.com",
                "FIPS",
            ),
            (
                "cn-north-1",
                false,
                true,
                "https://sts.cn-north-1.api.amazonwebservices.com.cn",
                "dual-stack",
            ),
        ] {
            let sts = Sts::new(&config(Some(region), fips, dual_stack))
                .await
                .unwrap();
            assert_eq!(
                sts.endpoint(),
                url,
                "{region} fips {fips} dual-stack {dual_stack}"
            );
            assert_eq!(sts.endpoint_kind(), kind);
        }
        let mut custom = config(Some("us-east-1"), false, false);
        custom.sts_endpoint = Some("http://127.0.0.1:5000".into());
        let sts = Sts::new(&custom).await.unwrap();
        assert_eq!(
            (sts.endpoint(), sts.endpoint_kind()),
            ("http://127.0.0.1:5000", "custom")
        );
    }

    #[tokio::test]
    async fn resolver_errors_name_the_flag_and_region() {
        // The SDK's partition data gives every partition FIPS and
        // dual-stack endpoints, so it refuses only what is no host label;
        // its reason is kept, with the flag.
        let e = resolve_endpoint(
            "not a region",
            Variant {
                fips: true,
                dual_stack: false,
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "--use-fips-endpoint: the AWS SDK resolves no FIPS STS endpoint for region \"not a region\""
            ) && e.contains("must be a valid host label"),
            "{e}"
        );
    }

    #[test]
    fn error_code_and_message_are_read_from_unusual_shapes() {
        let body = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code>\
                    <Message>User: a&amp;b is not authorized</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_element(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_element(body, "Message").as_deref(),
            Some("User: a&b is not authorized")
        );
        assert_eq!(xml_element("<html>403</html>", "Code"), None);
        assert_eq!(xml_element("<Code></Code>", "Code"), None);
    }

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";

    #[test]
    fn echoed_secrets_control_characters_and_long_text_are_cleaned() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let echoed = format!(
            "Bad request: WebIdentityToken={JWT}&x=1\nSecret {secret} or {}\r\n\u{1b}[31mred",
            "wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY"
        );
        let clean = sanitize(&echoed, &[secret]);
        assert_eq!(
            clean,
            "Bad request: WebIdentityToken=** redacted **&x=1 Secret ** redacted ** or \
             ** redacted **   [31mred"
        );
        // Any JWT-shaped text, not only the one sent.
        let other = "eyJ0eXAiOiJKV1QifQ.eyJpc3MiOiJ4In0.AAAA";
        assert_eq!(
            sanitize(&format!("got {other}."), &[]),
            "got ** redacted **"
        );
        assert_eq!(sanitize("eyJust a word", &[]), "eyJust a word");
        let long = sanitize(&"x".repeat(5000), &[]);
        assert!(long.ends_with("… (5000 characters in all)"), "{long}");
        assert_eq!(
            long.chars().count(),
            REMOTE_TEXT_MAX + "… (5000 characters in all)".len() - 2
        );
    }

    fn sts_creds(id: &str, expiration: OffsetDateTime) -> aws_sdk_sts::types::Credentials {
        aws_sdk_sts::types::Credentials::builder()
            .access_key_id(id)
            .secret_access_key("answerSecretKeyValue")
            .session_token("answerSessionTokenValue")
            .expiration(aws_sdk_sts::primitives::DateTime::from_secs(
                expiration.unix_timestamp(),
            ))
            .build()
            .unwrap()
    }

    #[test]
    fn answers_are_refused_as_a_whole_naming_the_field() {
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let arn = "arn:aws:sts::123456789012:assumed-role/app/s";
        let ok = accept_answer(
            "AssumeRole",
            "r".into(),
            Some(&sts_creds("ASIA0123456789ABCDEF", later)),
            Some(arn),
        );
        assert_eq!(ok.unwrap().access_key_id, "ASIA0123456789ABCDEF");

        let hostile = "ASIA0123456789ABCDEF\n[evil]\ncredential_process = /bin/sh";
        let e = accept_answer(
            "AssumeRole",
            "r".into(),
            Some(&sts_creds(hostile, later)),
            Some(arn),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "AssumeRole r: unusable answer from the STS endpoint (credentials refused: \
                 AccessKeyId \"ASIA0123456789ABCDEF\\n[evil]\\ncredential_p\"… contains '\\n'"
            ),
            "{e}"
        );
        assert!(e.contains("nothing was written"), "{e}");

        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(400);
        let e = accept_answer(
            "AssumeRole",
            "r".into(),
            Some(&sts_creds("ASIA0123456789ABCDEF", long_ago)),
            Some("arn:aws:sts::1:assumed-role/\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Expiration ") && e.contains(" already expired"),
            "{e}"
        );
        assert!(
            e.contains("AssumedRoleUser.Arn \"arn:aws:sts::1:assumed-role/\\n\""),
            "{e}"
        );
        assert!(!e.contains("answerSecretKeyValue") && !e.contains("answerSessionTokenValue"));
    }
}
