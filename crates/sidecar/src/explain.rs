//! What an STS failure most likely means, and what to do about it.
//!
//! STS error codes are terse (`AccessDenied`, `InvalidIdentityToken`) and the
//! same code has several causes. [`explain`] maps an error code and message to
//! the likely cause and the fix, so a log line or `doctor` report tells the
//! operator what to change rather than only what AWS said. It is a pure
//! function of its inputs: `doctor` reuses it, and the tests below pin it.

use std::fmt;

/// The STS call that failed, as far as the explanation depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `AssumeRoleWithWebIdentity` with the projected service-account token.
    WebIdentity,
    /// `AssumeRole` signed with long-term keys or ambient credentials.
    AssumeRole,
    /// `AssumeRole` signed with the previous role's credentials (chaining).
    ChainedAssumeRole,
    /// `GetSessionToken` with long-term keys.
    GetSessionToken,
    /// `GetCallerIdentity` (`doctor`), which any valid credentials may call.
    GetCallerIdentity,
}

/// A likely cause and the fix for an STS failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// What most likely went wrong, in the operator's terms.
    pub cause: &'static str,
    /// What to change so the call succeeds.
    pub fix: &'static str,
    /// Whether retrying unchanged can succeed (throttling, outages). Other
    /// failures are retried too, but need someone to change something.
    pub transient: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "likely cause: {}; fix: {}", self.cause, self.fix)
    }
}

const fn permanent(cause: &'static str, fix: &'static str) -> Explanation {
    Explanation {
        cause,
        fix,
        transient: false,
    }
}

const fn transient(cause: &'static str, fix: &'static str) -> Explanation {
    Explanation {
        cause,
        fix,
        transient: true,
    }
}

/// Explains an STS error response from its `code` and `message`.
pub fn explain(call: CallKind, code: &str, message: &str) -> Explanation {
    let msg = message.to_ascii_lowercase();
    match code {
        "AccessDenied" | "AccessDeniedException" => access_denied(call, &msg),
        "ExpiredToken" | "ExpiredTokenException" => match call {
            CallKind::WebIdentity => permanent(
                "the service-account token in --token-file has expired; the kubelet refreshes projected \
                 tokens at 80% of their lifetime, so the file is not a projected token or the kubelet stopped refreshing it",
                "mount a projected serviceAccountToken volume (as the webhook injects) and point --token-file at it",
            ),
            CallKind::ChainedAssumeRole => transient(
                "the previous role's session expired before the chained AssumeRole",
                "none needed if it recurs rarely; otherwise check the node's clock",
            ),
            _ => permanent(
                "the keys that signed the call are expired temporary credentials",
                "put long-term keys (AKIA...) in the Secret, or use --source ambient or web-identity",
            ),
        },
        "InvalidIdentityToken" | "InvalidIdentityTokenException" => {
            if msg.contains("verification key") || msg.contains("jwks") {
                permanent(
                    "STS could not fetch the token issuer's signing keys: the cluster's OIDC issuer \
                     (discovery document and JWKS) is not reachable over public HTTPS",
                    "publish the issuer's /.well-known/openid-configuration and keys (e.g. in an S3 bucket) \
                     and set the API server's --service-account-issuer to that URL; `tempcreds-sidecar doctor` checks it",
                )
            } else if msg.contains("no openidconnect provider") || msg.contains("provider found") {
                permanent(
                    "no IAM OIDC identity provider exists for the token's issuer in the role's account",
                    "create an IAM OIDC provider whose URL is the token's `iss` claim and whose audience is the token's `aud`",
                )
            } else if msg.contains("audience") {
                permanent(
                    "the token's audience is not a client ID of the IAM OIDC provider",
                    "add the audience to the OIDC provider, or set the tempcreds.io/token-audience annotation \
                     to one it lists (default sts.amazonaws.com)",
                )
            } else if msg.contains("expired")
                || msg.contains("not yet valid")
                || msg.contains("iat")
            {
                permanent(
                    "the service-account token is expired or not yet valid (clock skew)",
                    "check the node clock and that --token-file is the projected token the kubelet refreshes",
                )
            } else {
                permanent(
                    "STS refused the service-account token (issuer, audience or signature)",
                    "run `tempcreds-sidecar doctor` to decode the token and check its issuer and keys",
                )
            }
        }
        "IDPCommunicationError" | "IDPCommunicationErrorException" => transient(
            "STS could not reach the token issuer's discovery document or keys",
            "make sure the issuer URL answers over public HTTPS; tempcreds retries meanwhile",
        ),
        "IDPRejectedClaim" | "IDPRejectedClaimException" => permanent(
            "the identity provider rejected the token's claims",
            "check the token's `sub` and `aud` against the role's trust policy conditions",
        ),
        "RegionDisabledException" => permanent(
            "STS is not activated in this region for the account",
            "activate the region under IAM > Account settings > Security Token Service, or choose another --region",
        ),
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException" => transient(
            "STS is throttling this account's requests",
            "none needed: tempcreds backs off; if it persists, fewer pods should share the account's STS quota",
        ),
        "InvalidClientTokenId" | "UnrecognizedClientException" => permanent(
            "STS does not know the access key ID: it was deleted or deactivated, mistyped, or belongs to \
             another partition (or a region not enabled for it)",
            "put a current access key ID in the file given by --access-key-id-file",
        ),
        "RequestExpired" | "RequestTimeTooSkewed" => clock_skew(),
        "SignatureDoesNotMatch" | "InvalidSignatureException"
            if msg.contains("signature expired") || msg.contains("time too skewed") =>
        {
            clock_skew()
        }
        "SignatureDoesNotMatch" | "IncompleteSignature" => permanent(
            "the secret access key does not match the access key ID (or the clock is far off)",
            "check the file given by --secret-access-key-file (a stray character or newline in the Secret) and the node clock",
        ),
        "MalformedPolicyDocument" | "MalformedPolicyDocumentException" => permanent(
            "a session policy was refused",
            "check the --policy-arn values: they must be existing managed policies",
        ),
        "PackedPolicyTooLarge" | "PackedPolicyTooLargeException" => permanent(
            "the session policies and session tags together exceed STS's packed size limit",
            "pass fewer or shorter --session-tag and --policy-arn values",
        ),
        "ValidationError" => {
            if msg.contains("role chaining")
                || (call == CallKind::ChainedAssumeRole && msg.contains("durationseconds"))
            {
                permanent(
                    "the requested session duration is above 1 hour, and STS limits role chaining to 1 hour: \
                     the credentials that signed this AssumeRole are themselves a role session (a \
                     --chain-role-arn, or --source ambient running with a node or pod role)",
                    "set --session-duration to 1h (3600) or less; tempcreds already caps the calls it \
                     knows are chained (--chain-role-arn)",
                )
            } else if msg.contains("durationseconds") || msg.contains("maxsessionduration") {
                permanent(
                    "the requested session duration exceeds the role's MaxSessionDuration",
                    "lower --session-duration, or raise the role's maximum session duration in IAM",
                )
            } else {
                permanent(
                    "STS refused a request parameter",
                    "check the flag the message names against STS's limits",
                )
            }
        }
        "ServiceUnavailable"
        | "InternalFailure"
        | "InternalError"
        | "ServiceUnavailableException" => transient(
            "STS had a temporary failure",
            "none needed: tempcreds keeps the last credentials and retries",
        ),
        c if c.starts_with("HTTP ") => permanent(
            "the endpoint answered with an HTTP error but no STS error code: --sts-endpoint \
             is not STS, or a proxy or load balancer in between answered instead",
            "check --sts-endpoint (annotation tempcreds.io/sts-endpoint) and any proxy between the pod and STS",
        ),
        _ => permanent(
            "STS refused the request",
            "read STS's message above; `tempcreds-sidecar doctor` checks the common causes",
        ),
    }
}

fn access_denied(call: CallKind, msg: &str) -> Explanation {
    if msg.contains("getsessiontoken with session credentials") {
        return permanent(
            "GetSessionToken was called with temporary credentials; STS accepts only long-term keys for it",
            "put long-term keys (AKIA...) in the Secret, or set --role-arn to assume a role instead",
        );
    }
    if msg.contains("sts:tagsession") {
        return permanent(
            "session tags need sts:TagSession, which the role's trust policy does not allow the caller",
            "add sts:TagSession to the trust policy statement, or drop --session-tag",
        );
    }
    if msg.contains("sts:setsourceidentity") {
        return permanent(
            "a source identity needs sts:SetSourceIdentity, which the role's trust policy does not allow the caller",
            "add sts:SetSourceIdentity to the trust policy statement, or drop --source-identity",
        );
    }
    match call {
        CallKind::WebIdentity => permanent(
            "the role's trust policy does not allow this service account's token: the Federated principal \
             must be the cluster's OIDC provider, and its `:sub` condition must name \
             system:serviceaccount:NAMESPACE:SERVICEACCOUNT and `:aud` the token's audience",
            "fix the trust policy; `tempcreds-sidecar doctor` prints the one this pod needs",
        ),
        CallKind::AssumeRole => permanent(
            "the caller may not assume the role: the role's trust policy must name the caller as principal, \
             the caller's own policy must allow sts:AssumeRole on the role, and with --external-id the \
             trust policy's sts:ExternalId condition must match",
            "allow the caller in the role's trust policy and sts:AssumeRole in the caller's policy, and check --external-id",
        ),
        CallKind::ChainedAssumeRole => permanent(
            "the previous role may not assume the next --chain-role-arn: its trust policy must name the \
             previous role and the previous role's policy must allow sts:AssumeRole on it",
            "allow the previous role in the chained role's trust policy and sts:AssumeRole in the previous role's policy",
        ),
        CallKind::GetSessionToken => permanent(
            "the keys' IAM user may not call sts:GetSessionToken (an explicit deny or an SCP)",
            "allow sts:GetSessionToken for the user, or set --role-arn to assume a role",
        ),
        CallKind::GetCallerIdentity => permanent(
            "GetCallerIdentity needs no permission, so STS refused the credentials themselves \
             (an SCP or a permissions boundary denying everything, or a revoked session)",
            "check the account's service control policies and the role's revoked sessions",
        ),
    }
}

fn clock_skew() -> Explanation {
    permanent(
        "the request's signature time is more than 5 minutes off STS's clock: the node's clock is wrong",
        "synchronise the node's clock (chrony or systemd-timesyncd against an NTP server, or the \
         cloud's time service); `date -u` on the node shows the offset",
    )
}

/// Explains a failure to reach STS at all (no HTTP response).
pub fn explain_unreachable(timed_out: bool) -> Explanation {
    if timed_out {
        transient(
            "STS did not answer in time: egress to the STS endpoint is blocked or slow \
             (a NetworkPolicy, a firewall, a proxy, or a VPC endpoint without the right security group)",
            "allow egress from the pod to the STS endpoint on port 443, or set --sts-endpoint to a reachable VPC endpoint",
        )
    } else {
        transient(
            "the STS endpoint could not be reached (DNS, connection refused, or TLS failure)",
            "check --region and --sts-endpoint, the cluster's DNS, and that the pod may open connections to it",
        )
    }
}

/// What `doctor` finds wrong before calling STS, with the STS error it
/// would cause, the likely cause and the fix.
pub mod finding {
    use super::{Explanation, permanent};

    /// The token's `exp` is in the past.
    pub const TOKEN_EXPIRED: Explanation = permanent(
        "the token has expired (STS answers ExpiredTokenException); projected tokens are refreshed by the \
         kubelet at 80% of their lifetime, so --token-file is not a projected token, the kubelet stopped \
         refreshing it, or the node's clock is wrong",
        "mount a projected serviceAccountToken volume (as the webhook injects) and point --token-file at it",
    );

    /// The token's `nbf` or `iat` is in the future.
    pub const TOKEN_NOT_YET_VALID: Explanation = permanent(
        "the token is not valid yet: this machine's clock is behind the API server's",
        "synchronise the node's clock",
    );

    /// The token's `aud` lacks the expected audience.
    pub const AUDIENCE_MISMATCH: Explanation = permanent(
        "the token's audience is not the one the IAM OIDC provider lists (STS answers \
         InvalidIdentityToken: Incorrect token audience)",
        "request the token with the right audience (tempcreds.io/token-audience, default sts.amazonaws.com), \
         or add the token's audience as a client ID of the IAM OIDC provider",
    );

    /// The token's issuer is not an `https://` URL.
    pub const ISSUER_NOT_HTTPS: Explanation = permanent(
        "STS fetches the issuer's keys over HTTPS only, and the IAM OIDC provider's URL must start with https://",
        "set the API server's --service-account-issuer to an https:// URL that serves the discovery document",
    );

    /// The issuer's host is not publicly routable.
    pub const ISSUER_NOT_PUBLIC: Explanation = permanent(
        "STS fetches the discovery document and keys from the public internet; a loopback, private or \
         cluster-internal issuer is unreachable for it (InvalidIdentityToken: Couldn't retrieve verification key)",
        "publish /.well-known/openid-configuration and the JWKS at a public HTTPS URL (an S3 bucket or the \
         managed cluster's OIDC URL) and set the API server's --service-account-issuer to it",
    );

    /// The discovery document or keys could not be fetched from here.
    pub const ISSUER_UNREACHABLE: Explanation = permanent(
        "the issuer's discovery document could not be fetched from here; this may be only this pod's \
         egress, but STS must reach the same URL anonymously over the public internet, or it answers \
         InvalidIdentityToken: Couldn't retrieve verification key",
        "check that `curl <iss>/.well-known/openid-configuration` works from outside the cluster without credentials",
    );

    /// The issuer wants authentication for discovery.
    pub const DISCOVERY_NEEDS_AUTH: Explanation = permanent(
        "the issuer refused an anonymous request; STS fetches the discovery document and keys anonymously. \
         The Kubernetes API server serves them only to clients bound to system:service-account-issuer-discovery",
        "allow anonymous discovery (kubectl create clusterrolebinding oidc-discovery \
         --clusterrole=system:service-account-issuer-discovery --group=system:unauthenticated) or publish \
         the documents elsewhere (an S3 bucket) as the issuer",
    );

    /// The discovery document's `issuer` differs from the token's `iss`.
    pub const ISSUER_MISMATCH: Explanation = permanent(
        "the discovery document names a different issuer than the token's iss claim; OIDC clients, STS \
         included, refuse that",
        "make --service-account-issuer and the published discovery document agree exactly (scheme, host, path, no trailing slash)",
    );

    /// The token's `kid` is not among the issuer's published keys.
    pub const KID_NOT_PUBLISHED: Explanation = permanent(
        "the key that signed the token is not among the issuer's published keys (STS answers \
         InvalidIdentityToken): the token comes from another cluster or signing key, the keys were \
         rotated without republishing the JWKS, or the token was forged",
        "publish the API server's current service-account public keys in the JWKS (kubectl get --raw \
         /openid/v1/jwks shows them) and use a token from this cluster",
    );

    /// The signature does not verify with the published key of that `kid`.
    pub const SIGNATURE_INVALID: Explanation = permanent(
        "the token's signature does not verify with the published key of the same kid: the token was \
         altered, or another key was published under that kid",
        "use the token the kubelet projects, unchanged, and republish the API server's public keys",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_session_token_with_session_credentials_is_named() {
        let e = explain(
            CallKind::GetSessionToken,
            "AccessDenied",
            "Cannot call GetSessionToken with session credentials",
        );
        assert!(e.cause.contains("temporary credentials"), "{e}");
        assert!(e.fix.contains("long-term keys"), "{e}");
        assert!(!e.transient);
    }

    #[test]
    fn access_denied_depends_on_the_call() {
        let web = explain(
            CallKind::WebIdentity,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
        assert!(web.cause.contains("system:serviceaccount"), "{web}");
        let role = explain(
            CallKind::AssumeRole,
            "AccessDenied",
            "User: x is not authorized",
        );
        assert!(role.cause.contains("--external-id"), "{role}");
        let chained = explain(CallKind::ChainedAssumeRole, "AccessDenied", "");
        assert!(chained.cause.contains("--chain-role-arn"), "{chained}");
        let tags = explain(
            CallKind::AssumeRole,
            "AccessDenied",
            "not authorized to perform: sts:TagSession",
        );
        assert!(tags.fix.contains("--session-tag"), "{tags}");
    }

    #[test]
    fn web_identity_token_problems() {
        let keys = explain(
            CallKind::WebIdentity,
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider",
        );
        assert!(
            keys.cause.contains("JWKS") && keys.fix.contains("doctor"),
            "{keys}"
        );
        let aud = explain(
            CallKind::WebIdentity,
            "InvalidIdentityToken",
            "Incorrect token audience",
        );
        assert!(aud.fix.contains("token-audience"), "{aud}");
        let provider = explain(
            CallKind::WebIdentity,
            "InvalidIdentityToken",
            "No OpenIDConnect provider found in your account for https://x",
        );
        assert!(provider.fix.contains("IAM OIDC provider"), "{provider}");
        let expired = explain(
            CallKind::WebIdentity,
            "ExpiredTokenException",
            "Token expired",
        );
        assert!(expired.cause.contains("--token-file"), "{expired}");
    }

    #[test]
    fn keys_and_regions() {
        let expired = explain(
            CallKind::AssumeRole,
            "ExpiredToken",
            "The security token included in the request is expired",
        );
        assert!(expired.fix.contains("AKIA"), "{expired}");
        let region = explain(CallKind::AssumeRole, "RegionDisabledException", "");
        assert!(region.fix.contains("--region"), "{region}");
        let id = explain(CallKind::AssumeRole, "InvalidClientTokenId", "");
        assert!(id.fix.contains("--access-key-id-file"), "{id}");
        let sig = explain(CallKind::GetSessionToken, "SignatureDoesNotMatch", "");
        assert!(sig.fix.contains("--secret-access-key-file"), "{sig}");
        let duration = explain(
            CallKind::AssumeRole,
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        );
        assert!(duration.fix.contains("--session-duration"), "{duration}");
    }

    #[test]
    fn chained_duration_and_clock_skew() {
        let chained = explain(
            CallKind::AssumeRole,
            "ValidationError",
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        );
        assert!(
            chained.cause.contains("1 hour") && chained.fix.contains("3600"),
            "{chained}"
        );
        let max = explain(
            CallKind::AssumeRole,
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        );
        assert!(max.cause.contains("MaxSessionDuration"), "{max}");
        let skew = explain(
            CallKind::AssumeRole,
            "SignatureDoesNotMatch",
            "Signature expired: 20240101T000000Z is now earlier than 20240101T001500Z (20240101T002000Z - 5 min.)",
        );
        assert!(skew.cause.contains("clock"), "{skew}");
        assert!(
            explain(CallKind::GetSessionToken, "RequestExpired", "")
                .fix
                .contains("clock")
        );
        let denied = explain(CallKind::GetCallerIdentity, "AccessDenied", "");
        assert!(denied.cause.contains("needs no permission"), "{denied}");
    }

    #[test]
    fn transient_failures_are_marked() {
        assert!(explain(CallKind::AssumeRole, "Throttling", "Rate exceeded").transient);
        assert!(explain(CallKind::WebIdentity, "IDPCommunicationError", "").transient);
        assert!(explain_unreachable(true).transient);
        assert!(explain_unreachable(false).fix.contains("--sts-endpoint"));
        assert!(!explain(CallKind::AssumeRole, "SomethingNew", "").transient);
    }
}
