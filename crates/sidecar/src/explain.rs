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
            if msg.contains("durationseconds") || msg.contains("maxsessionduration") {
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
    }
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
    fn transient_failures_are_marked() {
        assert!(explain(CallKind::AssumeRole, "Throttling", "Rate exceeded").transient);
        assert!(explain(CallKind::WebIdentity, "IDPCommunicationError", "").transient);
        assert!(explain_unreachable(true).transient);
        assert!(explain_unreachable(false).fix.contains("--sts-endpoint"));
        assert!(!explain(CallKind::AssumeRole, "SomethingNew", "").transient);
    }
}
