//! The container-credentials endpoint (`--endpoint-addr`).
//!
//! Every current AWS SDK refreshes credentials by itself from an HTTP
//! endpoint named by `AWS_CONTAINER_CREDENTIALS_FULL_URI`, sending the
//! contents of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` as the
//! `Authorization` header. The sidecar serves that endpoint on loopback only
//! (the pod's containers share it; `validate()` refuses other addresses):
//!
//! - At start it draws a random token (32 bytes from the operating system's
//!   CSPRNG, hex-encoded) and writes it atomically to `endpoint-token` in
//!   the output directory, without a trailing newline, before listening.
//! - `GET /v1/credentials` answers the latest credentials of the first
//!   profile from memory, `GET /v1/credentials/NAME` those of the additional
//!   profile `NAME`, so an SDK (whose timeouts are 1 to 5 s) never waits on
//!   STS: 401 without an
//!   `Authorization` header, 403 with a wrong one (compared in constant
//!   time; logged without the value), 503 while no valid credentials exist.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tempcreds_core::{Credentials, SecretString, paths};
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::output;

/// Random bytes in the token.
pub const TOKEN_BYTES: usize = 32;

/// The latest credentials, shared between the refresh loop (which sets them
/// after writing the files) and the endpoint (which reads them).
#[derive(Clone, Default)]
pub struct Latest(Arc<RwLock<Option<Credentials>>>);

impl fmt::Debug for Latest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Latest").field(&self.get()).finish()
    }
}

impl Latest {
    /// Replaces the credentials.
    pub fn set(&self, creds: Credentials) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(creds);
    }

    /// The latest credentials, if any were obtained.
    pub fn get(&self) -> Option<Credentials> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The endpoint's authorization token. `Debug` does not show it.
#[derive(Debug, Clone)]
pub struct Token(SecretString);

impl Token {
    /// Draws a new token from the operating system's CSPRNG.
    pub fn generate() -> Result<Token, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Token(SecretString::new(hex)))
    }

    /// Writes the token to `dir/endpoint-token` atomically, readable by the
    /// application, with no trailing newline (SDKs send the file as is).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        output::write_atomic(dir, paths::ENDPOINT_TOKEN_FILE, self.0.expose().as_bytes())
    }

    /// Whether `presented` is the token, in time independent of where they
    /// differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.expose().as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[derive(Clone)]
struct Endpoint {
    token: Token,
    latest: Latest,
}

/// The endpoint's routes: each `(path, latest)` serves that profile's
/// credentials at its path ([`paths::endpoint_path`]).
pub fn router(token: Token, latest: Vec<(String, Latest)>) -> Router {
    latest
        .into_iter()
        .fold(Router::new(), |router, (path, latest)| {
            router.route(
                &path,
                get(credentials).with_state(Endpoint {
                    token: token.clone(),
                    latest,
                }),
            )
        })
}

async fn credentials(State(ep): State<Endpoint>, headers: HeaderMap) -> Response {
    let Some(presented) = headers.get(header::AUTHORIZATION) else {
        warn!(
            status = 401,
            "container-credentials request without an Authorization header refused; \
             set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE to the endpoint-token file"
        );
        return (
            StatusCode::UNAUTHORIZED,
            "missing Authorization header: send the contents of the endpoint-token file\n",
        )
            .into_response();
    };
    if !ep.token.matches(presented.as_bytes()) {
        warn!(
            status = 403,
            "container-credentials request with a wrong authorization token refused; \
             the token changes when the sidecar restarts: read the endpoint-token file on each request"
        );
        return (
            StatusCode::FORBIDDEN,
            "wrong authorization token: send the contents of the endpoint-token file\n",
        )
            .into_response();
    }
    match ep.latest.get() {
        Some(creds) if creds.expiration > OffsetDateTime::now_utc() => {
            debug!(access_key_id = %creds.access_key_id, "credentials served");
            (
                [(header::CONTENT_TYPE, "application/json")],
                creds.to_container_json(),
            )
                .into_response()
        }
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the last credentials have expired and STS has not answered since; the sidecar keeps retrying\n",
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no credentials obtained yet; the sidecar is calling STS\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::os::unix::fs::PermissionsExt;
    use tower::ServiceExt;

    fn creds(expiration: OffsetDateTime) -> Credentials {
        Credentials {
            access_key_id: "ASIAENDPOINT".into(),
            secret_access_key: SecretString::new("secret-value"),
            session_token: SecretString::new("session-value"),
            expiration,
        }
    }

    async fn get(router: &Router, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(paths::ENDPOINT_PATH);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn tokens_are_random_hex_written_without_newline() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.0.expose().len(), 2 * TOKEN_BYTES);
        assert!(a.0.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.0.expose(), b.0.expose());
        assert!(!format!("{a:?}").contains(a.0.expose()));
        let dir = tempfile::tempdir().unwrap();
        a.write(dir.path()).unwrap();
        let path = dir.path().join(paths::ENDPOINT_TOKEN_FILE);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), a.0.expose());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(a.matches(a.0.expose().as_bytes()));
        assert!(!a.matches(b.0.expose().as_bytes()));
        assert!(!a.matches(&a.0.expose().as_bytes()[1..]));
        assert!(!a.matches(b""));
    }

    #[tokio::test]
    async fn answers_only_with_the_token_and_only_valid_credentials() {
        let token = Token::generate().unwrap();
        let latest = Latest::default();
        let router = router(
            token.clone(),
            vec![(paths::ENDPOINT_PATH.to_owned(), latest.clone())],
        );
        let good = token.0.expose().to_owned();

        assert_eq!(get(&router, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&router, Some("nope")).await.0, StatusCode::FORBIDDEN);
        assert_eq!(
            get(&router, Some(&format!("{good}0"))).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(&router, Some(&format!("Bearer {good}"))).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(&router, Some(&good)).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        latest.set(creds(later));
        let (status, body) = get(&router, Some(&good)).await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["AccessKeyId"], "ASIAENDPOINT");
        assert_eq!(v["Token"], "session-value");
        assert!(v["Expiration"].as_str().unwrap().ends_with('Z'), "{v}");

        latest.set(creds(
            OffsetDateTime::now_utc() - time::Duration::seconds(1),
        ));
        assert_eq!(
            get(&router, Some(&good)).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(!format!("{latest:?}").contains("secret-value"));
    }
}
