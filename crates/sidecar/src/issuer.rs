//! The token issuer's OpenID discovery, as STS uses it (`doctor` only).
//!
//! For `AssumeRoleWithWebIdentity`, STS fetches
//! `<iss>/.well-known/openid-configuration` anonymously over HTTPS, follows
//! its `jwks_uri`, picks the key whose `kid` is in the token's header and
//! verifies the signature. This module does the same from inside the pod,
//! with the system's trust roots plus an optional extra CA (`--issuer-ca-file`),
//! and tells apart "not reachable from here" from "reachable but wrong".
//!
//! The HTTP client is the hyper + rustls stack the AWS SDK already links,
//! built only when `doctor` runs.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::token::Jwt;

/// How long one discovery or JWKS request may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document or JWKS read.
const MAX_BODY: usize = 1 << 20;

type Body = Empty<hyper::body::Bytes>;

/// Building the HTTP client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA file could not be read or holds no certificate.
    #[error("--issuer-ca-file {}: {problem}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Fetching a document failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    /// The URL is not one the client can fetch.
    #[error("{url}: not a usable URL ({detail})")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// No HTTP answer: DNS, connection, TLS or timeout.
    #[error("{url}: no answer ({detail})")]
    Unreachable {
        /// The URL.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// An HTTP answer other than 200.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A 200 answer that is not the JSON expected.
    #[error("{url}: not the expected JSON ({detail})")]
    NotJson {
        /// The URL.
        url: String,
        /// What the parser said.
        detail: String,
    },
}

impl FetchFailure {
    /// Whether the server asked for authentication (401/403).
    pub fn needs_auth(&self) -> bool {
        matches!(
            self,
            FetchFailure::Status {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// The parts of the discovery document STS uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// Where the signing keys are.
    pub jwks_uri: String,
    /// The algorithms the issuer signs with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// A public key in a JWKS (RSA or EC; other members ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA` or `EC`.
    pub kty: String,
    /// Key ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm, if stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing)]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default, skip_serializing)]
    pub e: Option<String>,
    /// EC curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC point x.
    #[serde(default, skip_serializing)]
    pub x: Option<String>,
    /// EC point y.
    #[serde(default, skip_serializing)]
    pub y: Option<String>,
}

impl Jwks {
    /// The key with `kid`; with no `kid` in the token, the only key if there
    /// is exactly one.
    pub fn find(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }

    /// Every published key ID.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The algorithm or key type is not one this check knows.
    #[error("algorithm {0} with this key type is not checked here")]
    Unsupported(&'static str),
    /// The published key is malformed.
    #[error("the published key is malformed")]
    BadKey,
    /// The signature is wrong.
    #[error("the signature does not verify")]
    Invalid,
}

/// Verifies `jwt`'s signature with `key` (RS256/384/512, ES256/384).
pub fn verify(jwt: &Jwt, key: &Jwk) -> Result<(), VerifyError> {
    use aws_lc_rs::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
    let b64 = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(VerifyError::BadKey)
    };
    let msg = jwt.signing_input.as_bytes();
    match (jwt.header.alg.as_str(), key.kty.as_str()) {
        (alg @ ("RS256" | "RS384" | "RS512"), "RSA") => {
            let params = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                _ => &sig::RSA_PKCS1_2048_8192_SHA512,
            };
            RsaPublicKeyComponents {
                n: b64(&key.n)?,
                e: b64(&key.e)?,
            }
            .verify(params, msg, &jwt.signature)
            .map_err(|_| VerifyError::Invalid)
        }
        (alg @ ("ES256" | "ES384"), "EC") => {
            let params = if alg == "ES256" {
                &sig::ECDSA_P256_SHA256_FIXED
            } else {
                &sig::ECDSA_P384_SHA384_FIXED
            };
            let mut point = vec![0x04];
            point.extend(b64(&key.x)?);
            point.extend(b64(&key.y)?);
            UnparsedPublicKey::new(params, point)
                .verify(msg, &jwt.signature)
                .map_err(|_| VerifyError::Invalid)
        }
        ("RS256" | "RS384" | "RS512", _) => Err(VerifyError::Unsupported("RSA")),
        ("ES256" | "ES384", _) => Err(VerifyError::Unsupported("ECDSA")),
        _ => Err(VerifyError::Unsupported("other")),
    }
}

/// The discovery document's URL for `issuer`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Whether STS could plausibly reach `url`'s host from the internet: not a
/// loopback, private, link-local or cluster-internal name or address.
pub fn is_public(url: &str) -> bool {
    let Some(host) = host_of(url) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => {
                !(v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
            }
            IpAddr::V6(v6) => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || (v6.segments()[0] & 0xfe00) == 0xfc00
                    || (v6.segments()[0] & 0xffc0) == 0xfe80)
            }
        };
    }
    let host = host.to_ascii_lowercase();
    host.contains('.')
        && ![
            ".local",
            ".internal",
            ".svc",
            ".cluster.local",
            ".localhost",
        ]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// The host (and no port) of an `http(s)://` URL.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next();
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

/// An anonymous HTTPS client for discovery, trusting the system's roots and
/// `--issuer-ca-file`.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client.
    pub fn new(extra_ca: Option<&Path>) -> Result<Client, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        // Missing or unreadable system roots only matter for public issuers,
        // whose fetch then fails with a TLS error naming the problem.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            let ca_err = |problem: String| ClientError::CaFile {
                path: path.to_owned(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs = rustls_pemfile::certs(&mut io::Cursor::new(pem))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(format!("not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(https),
        })
    }

    /// GETs `url` anonymously and parses the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, FetchFailure> {
        let uri: hyper::Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| FetchFailure::BadUrl {
                    url: url.to_owned(),
                    detail: e.to_string(),
                })?;
        let unreachable = |detail: String| FetchFailure::Unreachable {
            url: url.to_owned(),
            detail,
        };
        // Kubernetes serves the JWKS as application/jwk-set+json and answers
        // 406 to a narrower Accept.
        let request = hyper::Request::get(uri)
            .header(hyper::header::ACCEPT, "*/*")
            .body(Body::new())
            .map_err(|e| FetchFailure::BadUrl {
                url: url.to_owned(),
                detail: e.to_string(),
            })?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.inner.request(request))
            .await
            .map_err(|_| unreachable(format!("timed out after {}s", FETCH_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchFailure::Status {
                url: url.to_owned(),
                status,
            });
        }
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(response.into_body(), MAX_BODY).collect(),
        )
        .await
        .map_err(|_| unreachable("timed out reading the body".into()))?
        .map_err(|e| unreachable(format!("reading the body: {e}")))?
        .to_bytes();
        serde_json::from_slice(&body).map_err(|e| FetchFailure::NotJson {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_issuers_and_private_ones() {
        for public in [
            "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC",
            "https://my-bucket.s3.amazonaws.com",
            "https://8.8.8.8/x",
        ] {
            assert!(is_public(public), "{public}");
        }
        for private in [
            "https://127.0.0.1:6443",
            "https://kubernetes.default.svc",
            "https://kubernetes.default.svc.cluster.local",
            "https://10.0.0.1",
            "https://192.168.1.2:443/x",
            "https://[::1]:6443",
            "https://localhost:6443",
            "https://api.internal",
            "not a url",
        ] {
            assert!(!is_public(private), "{private}");
        }
        assert_eq!(
            discovery_url("https://a.example/x/"),
            "https://a.example/x/.well-known/openid-configuration"
        );
    }

    #[test]
    fn keys_are_found_by_kid_or_alone() {
        let key = |kid: Option<&str>| Jwk {
            kty: "RSA".into(),
            kid: kid.map(str::to_owned),
            alg: None,
            n: None,
            e: None,
            crv: None,
            x: None,
            y: None,
        };
        let one = Jwks {
            keys: vec![key(Some("a"))],
        };
        assert!(one.find(Some("a")).is_some());
        assert!(one.find(Some("b")).is_none());
        assert!(one.find(None).is_some());
        let two = Jwks {
            keys: vec![key(Some("a")), key(Some("b"))],
        };
        assert!(two.find(None).is_none());
        assert_eq!(two.kids(), ["a", "b"]);
    }

    #[test]
    fn es256_signatures_verify_and_forgeries_do_not() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("k".into()),
            alg: Some("ES256".into()),
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&point[33..])),
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
        );
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let jwt = Jwt::decode(&token).unwrap();
        assert_eq!(verify(&jwt, &jwk), Ok(()));
        let mut forged = jwt.clone();
        forged.signing_input.push('x');
        assert_eq!(verify(&forged, &jwk), Err(VerifyError::Invalid));
        let rsa = Jwk {
            kty: "RSA".into(),
            ..jwk
        };
        assert_eq!(verify(&jwt, &rsa), Err(VerifyError::Unsupported("ECDSA")));
    }
}
