//! The sidecar's reading of STS answers: an AssumeRole call whose HTTP
//! answer (status and body) comes from the input, through the AWS SDK's
//! response parsing, then the sidecar's explanation of the error code and
//! message (`explain::explain`). The SDK is configured as the sidecar
//! configures it (no retries). Never a panic.
//!
//! The sidecar's own `sts::convert` and `xml_element` are private; the
//! SDK's parser is what turns STS's XML into the values they read.

#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sts::error::ProvideErrorMetadata as _;
use aws_smithy_types::body::SdkBody;
use libfuzzer_sys::fuzz_target;
use tempcreds_sidecar::explain::{self, CallKind};

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
            .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "fuzz"))
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
            if let Some(c) = out.credentials() {
                let _ = (c.access_key_id(), c.expiration().secs());
            }
        }
        Err(e) => {
            let code = e.code().unwrap_or_default().to_owned();
            let message = e.message().unwrap_or_default().to_owned();
            for kind in [CallKind::AssumeRole, CallKind::WebIdentity, CallKind::GetSessionToken] {
                let _ = explain::explain(kind, &code, &message).to_string();
            }
        }
    }
});
