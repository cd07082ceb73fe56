//! Decoding a service-account token (a JWT) without verifying it, for
//! `doctor`: its header (`alg`, `kid`) and the claims STS looks at (`iss`,
//! `aud`, `sub`, `exp`, `iat`, `nbf`) plus the Kubernetes claims naming the
//! namespace, service account and pod.
//!
//! The signature is checked separately against the issuer's published keys
//! ([`crate::issuer`]), as STS does. The token itself is a secret: nothing
//! here logs or prints it, only the decoded claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize};

/// Why a token could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three dot-separated parts.
    #[error("it is not a JWT (three dot-separated parts)")]
    NotJwt,
    /// A part is not base64url.
    #[error("its {0} is not base64url")]
    Base64(&'static str),
    /// A part is not the JSON expected.
    #[error("its {part} is not valid JSON: {detail}")]
    Json {
        /// `header` or `claims`.
        part: &'static str,
        /// What the parser said (never the token).
        detail: String,
    },
}

/// The JWT header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Signature algorithm (`RS256` for Kubernetes by default).
    pub alg: String,
    /// Key ID: which of the issuer's published keys signed the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Type, usually `JWT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// The `kubernetes.io` claim of a service-account token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serviceaccount: Option<NamedObject>,
    /// The pod the token is bound to, for projected tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<NamedObject>,
}

/// A Kubernetes object reference inside the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedObject {
    /// Its name.
    pub name: String,
    /// Its UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The claims STS and `doctor` care about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer URL: STS looks up the IAM OIDC provider by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audiences (a string or a list in the token; always a list here).
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Subject: `system:serviceaccount:NAMESPACE:NAME` for Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Kubernetes' own claims.
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A decoded, unverified JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// The header.
    pub header: Header,
    /// The claims.
    pub claims: Claims,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub signing_input: String,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl Jwt {
    /// Decodes `token` without verifying it.
    pub fn decode(token: &str) -> Result<Jwt, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotJwt);
        };
        let b64 = |part: &'static str, text: &str| {
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| TokenError::Base64(part))
        };
        let json = |part: &'static str, e: serde_json::Error| TokenError::Json {
            part,
            detail: e.to_string(),
        };
        let header = serde_json::from_slice(&b64("header", h)?).map_err(|e| json("header", e))?;
        let claims = serde_json::from_slice(&b64("claims", c)?).map_err(|e| json("claims", e))?;
        Ok(Jwt {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature: b64("signature", s)?,
        })
    }

    /// `(namespace, service account)` from the Kubernetes claims, else from a
    /// `system:serviceaccount:NS:NAME` subject.
    pub fn service_account(&self) -> Option<(String, String)> {
        let k = self.claims.kubernetes.as_ref();
        if let (Some(ns), Some(sa)) = (
            k.and_then(|k| k.namespace.clone()),
            k.and_then(|k| k.serviceaccount.as_ref().map(|s| s.name.clone())),
        ) {
            return Some((ns, sa));
        }
        let rest = self
            .claims
            .sub
            .as_deref()?
            .strip_prefix(SA_SUBJECT_PREFIX)?;
        let (ns, sa) = rest.split_once(':')?;
        Some((ns.to_owned(), sa.to_owned()))
    }
}

/// How Kubernetes names a service account in a token's `sub`.
pub const SA_SUBJECT_PREFIX: &str = "system:serviceaccount:";

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    #[test]
    fn decodes_a_kubernetes_token() {
        let t = jwt(
            r#"{"alg":"RS256","kid":"abc"}"#,
            r#"{"aud":["sts.amazonaws.com"],"exp":1700000600,"iat":1700000000,"iss":"https://kubernetes.default.svc",
               "kubernetes.io":{"namespace":"shop","pod":{"name":"web-0","uid":"u1"},"serviceaccount":{"name":"web","uid":"u2"}},
               "nbf":1700000000,"sub":"system:serviceaccount:shop:web"}"#,
        );
        let j = Jwt::decode(&t).unwrap();
        assert_eq!(j.header.kid.as_deref(), Some("abc"));
        assert_eq!(j.claims.aud, ["sts.amazonaws.com"]);
        assert_eq!(j.claims.exp, Some(1_700_000_600));
        assert_eq!(j.service_account(), Some(("shop".into(), "web".into())));
        assert_eq!(j.signature, b"sig");
        assert_eq!(j.signing_input, t.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn audience_may_be_a_string_and_claims_may_be_missing() {
        let j = Jwt::decode(&jwt(
            r#"{"alg":"ES256"}"#,
            r#"{"aud":"x","sub":"system:serviceaccount:a:b"}"#,
        ))
        .unwrap();
        assert_eq!(j.claims.aud, ["x"]);
        assert_eq!(j.service_account(), Some(("a".into(), "b".into())));
        let j = Jwt::decode(&jwt(r#"{"alg":"ES256"}"#, "{}")).unwrap();
        assert!(j.claims.aud.is_empty() && j.service_account().is_none());
    }

    #[test]
    fn bad_tokens_say_which_part_is_wrong() {
        assert_eq!(Jwt::decode("a.b").unwrap_err(), TokenError::NotJwt);
        assert_eq!(Jwt::decode("a.b.c.d").unwrap_err(), TokenError::NotJwt);
        assert_eq!(
            Jwt::decode("!!.e30.e30").unwrap_err(),
            TokenError::Base64("header")
        );
        let e = Jwt::decode(&jwt("[]", "{}")).unwrap_err();
        assert!(matches!(e, TokenError::Json { part: "header", .. }), "{e}");
    }
}
