//! The sidecar's reading of STS answers: an AssumeRole call whose HTTP
//! answer (status and body) comes from the input, through the AWS SDK's
//! response parsing, then the sidecar's own checks (`sts::accept_answer`)
//! and its explanation of the error code and message (`explain::explain`),
//! sanitised as it logs them (`sts::sanitize`). The SDK is configured as the
//! sidecar configures it (no retries). Never a panic; accepted credentials
//! are always written as exactly one profile with the same values; logged
//! text never holds the signing secret, a control character, or more than
//! `sts::REMOTE_TEXT_MAX` characters (plus the note of the cut).

#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sts::error::ProvideErrorMetadata as _;
use aws_smithy_types::body::SdkBody;
use libfuzzer_sys::fuzz_target;
use tempcreds_sidecar::explain::{self, CallKind};
use tempcreds_sidecar::sts;

thread_local! {
    static ANSWER: RefCell<(u16, Vec<u8>)> = const { RefCell::new((200, Vec::new())) };
}

struct World {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sts::Client,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let http = aws_smithy_http_client::test_util::infallible_client_fn(|_request| {
            ANSWER.with(|a| {
                let (status, body) = a.borrow().clone();
                http::Response::builder()
                    .status(status)
                    .header("content-type", "text/xml")
                    .body(SdkBody::from(body))
                    .expect("response")
            })
        });
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                SIGNING_SECRET,
                Some(SIGNING_TOKEN.to_owned()),
                None,
                "fuzz",
            ))
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime"),
            client: aws_sdk_sts::Client::from_conf(config),
        }
    })
}

const STATUSES: [u16; 6] = [200, 400, 403, 500, 503, 302];
const SIGNING_SECRET: &str = "fuzzSigningSecretAccessKey";
const SIGNING_TOKEN: &str = "fuzzSigningSessionToken";

fn check_logged(text: &str) {
    assert!(!text.contains(SIGNING_SECRET) && !text.contains(SIGNING_TOKEN), "{text}");
    assert!(!text.contains(char::is_control), "{text:?}");
    assert!(text.chars().count() <= sts::REMOTE_TEXT_MAX + 40, "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let (first, body) = data.split_first().unwrap_or((&0, &[]));
    let status = STATUSES[*first as usize % STATUSES.len()];
    ANSWER.with(|a| *a.borrow_mut() = (status, body.to_vec()));
    let result = w.runtime.block_on(
        w.client
            .assume_role()
            .role_arn("arn:aws:iam::123456789012:role/app")
            .role_session_name("fuzz")
            .send(),
    );
    match result {
        Ok(out) => {
            let arn = out.assumed_role_user().map(|u| u.arn());
            match sts::accept_answer("AssumeRole", "r".into(), out.credentials(), arn) {
                Ok(creds) => {
                    let ini = creds.to_ini("default").expect("accepted credentials are writable");
                    let lines: Vec<&str> = ini.lines().filter(|l| !l.starts_with('#')).collect();
                    assert_eq!(lines.len(), 4, "{ini:?}");
                    assert_eq!(lines[0], "[default]");
                }
                Err(e) => {
                    let text = e.to_string();
                    if let Some(c) = out.credentials() {
                        let shown = format!("{}{}", c.access_key_id(), arn.unwrap_or_default());
                        for s in [c.secret_access_key(), c.session_token()] {
                            assert!(s.len() < 8 || shown.contains(s) || !text.contains(s), "{text}");
                        }
                    }
                }
            }
        }
        Err(e) => {
            let code = sts::sanitize(e.code().unwrap_or_default(), &[SIGNING_SECRET, SIGNING_TOKEN]);
            let message =
                sts::sanitize(e.message().unwrap_or_default(), &[SIGNING_SECRET, SIGNING_TOKEN]);
            check_logged(&code);
            check_logged(&message);
            for kind in [CallKind::AssumeRole, CallKind::WebIdentity, CallKind::GetSessionToken] {
                let _ = explain::explain(kind, &code, &message).to_string();
            }
        }
    }
});
