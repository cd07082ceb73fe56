//! The `tempcreds.io/` annotation API (see the README's annotation reference).
//!
//! Pod annotations win over the same annotation on the pod's ServiceAccount;
//! ServiceAccount annotations give defaults for every pod using it.

/// The prefix of every tempcreds annotation.
pub const PREFIX: &str = "tempcreds.io/";

/// Role to assume; its presence opts the pod in.
pub const ROLE_ARN: &str = "tempcreds.io/role-arn";
/// `"true"` opts in without a role; `"false"` opts out even if the SA has a role.
pub const INJECT: &str = "tempcreds.io/inject";
/// `web-identity`, `secret` or `ambient`.
pub const SOURCE: &str = "tempcreds.io/source";
/// Secret (in the pod's namespace) holding long-term keys.
pub const SECRET_NAME: &str = "tempcreds.io/secret-name";
/// Key of the access key ID in the Secret (default `aws_access_key_id`).
pub const SECRET_ACCESS_KEY_ID_KEY: &str = "tempcreds.io/secret-access-key-id-key";
/// Key of the secret access key in the Secret (default `aws_secret_access_key`).
pub const SECRET_SECRET_ACCESS_KEY_KEY: &str = "tempcreds.io/secret-secret-access-key-key";
/// Further roles to assume in order, comma-separated.
pub const CHAIN_ROLE_ARNS: &str = "tempcreds.io/chain-role-arns";
/// Session lifetime (`900`, `15m`, `1h`).
pub const SESSION_DURATION: &str = "tempcreds.io/session-duration";
/// RoleSessionName (default: the pod name).
pub const SESSION_NAME: &str = "tempcreds.io/session-name";
/// ExternalId.
pub const EXTERNAL_ID: &str = "tempcreds.io/external-id";
/// SourceIdentity.
pub const SOURCE_IDENTITY: &str = "tempcreds.io/source-identity";
/// Managed session policy ARNs, comma-separated.
pub const POLICY_ARNS: &str = "tempcreds.io/policy-arns";
/// Session tags, `k1=v1,k2=v2`.
pub const SESSION_TAGS: &str = "tempcreds.io/session-tags";
/// Transitive tag keys, comma-separated.
pub const TRANSITIVE_TAG_KEYS: &str = "tempcreds.io/transitive-tag-keys";
/// `none`, `simple` or `custom`.
pub const SESSION_TAGS_POLICY: &str = "tempcreds.io/session-tags-policy";
/// AWS region.
pub const REGION: &str = "tempcreds.io/region";
/// Custom STS endpoint URL.
pub const STS_ENDPOINT: &str = "tempcreds.io/sts-endpoint";
/// `"true"`: the sidecar calls STS's FIPS endpoint (default `"false"`).
pub const USE_FIPS_ENDPOINT: &str = "tempcreds.io/use-fips-endpoint";
/// `"true"`: the sidecar calls STS's dual-stack (IPv4 and IPv6) endpoint
/// (default `"false"`).
pub const USE_DUALSTACK_ENDPOINT: &str = "tempcreds.io/use-dualstack-endpoint";
/// How long before expiry to refresh.
pub const REFRESH_BEFORE: &str = "tempcreds.io/refresh-before";
/// Profile name in the credentials file.
pub const PROFILE: &str = "tempcreds.io/profile";
/// Containers that get the volume and env, comma-separated (default: all).
pub const CONTAINERS: &str = "tempcreds.io/containers";
/// Containers that do not get the volume and env, comma-separated.
pub const SKIP_CONTAINERS: &str = "tempcreds.io/skip-containers";
/// Projected token audience (default `sts.amazonaws.com`).
pub const TOKEN_AUDIENCE: &str = "tempcreds.io/token-audience";
/// Projected token lifetime (default 86400 s).
pub const TOKEN_EXPIRATION: &str = "tempcreds.io/token-expiration";
/// How apps receive credentials: `file`, `process` or `endpoint`.
pub const DELIVERY: &str = "tempcreds.io/delivery";
/// Written by the webhook; makes injection idempotent.
pub const INJECTED: &str = "tempcreds.io/injected";

/// Every annotation a user may set (all but [`INJECTED`]).
pub const USER_ANNOTATIONS: &[&str] = &[
    ROLE_ARN,
    INJECT,
    SOURCE,
    SECRET_NAME,
    SECRET_ACCESS_KEY_ID_KEY,
    SECRET_SECRET_ACCESS_KEY_KEY,
    CHAIN_ROLE_ARNS,
    SESSION_DURATION,
    SESSION_NAME,
    EXTERNAL_ID,
    SOURCE_IDENTITY,
    POLICY_ARNS,
    SESSION_TAGS,
    TRANSITIVE_TAG_KEYS,
    SESSION_TAGS_POLICY,
    REGION,
    STS_ENDPOINT,
    USE_FIPS_ENDPOINT,
    USE_DUALSTACK_ENDPOINT,
    REFRESH_BEFORE,
    PROFILE,
    CONTAINERS,
    SKIP_CONTAINERS,
    TOKEN_AUDIENCE,
    TOKEN_EXPIRATION,
    DELIVERY,
];

/// Default projected-token audience.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "sts.amazonaws.com";
/// Default projected-token lifetime in seconds.
pub const DEFAULT_TOKEN_EXPIRATION_SECS: u64 = 86_400;
/// Default Secret key of the access key ID.
pub const DEFAULT_SECRET_ACCESS_KEY_ID_KEY: &str = "aws_access_key_id";
/// Default Secret key of the secret access key.
pub const DEFAULT_SECRET_SECRET_ACCESS_KEY_KEY: &str = "aws_secret_access_key";
