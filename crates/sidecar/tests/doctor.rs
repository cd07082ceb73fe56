//! `tempcreds-sidecar doctor` against the real kube-apiserver (its issuer
//! discovery document and keys, real TokenRequest tokens) and moto's STS.
//!
//! Run with the control plane up: `make test`, or
//! `hack/with-control-plane.sh cargo test -p tempcreds-sidecar --test doctor`.
//!
//! STS fetches an issuer's discovery document anonymously; the API server
//! serves it only to subjects bound to `system:service-account-issuer-discovery`.
//! These tests bind that role to `system:unauthenticated` (idempotently, on
//! the throw-away test control plane), which is what a self-hosted cluster
//! whose API server is its own public issuer must do too. The token's issuer
//! is `https://127.0.0.1:PORT`, signed by the control plane's own CA, given
//! to doctor with `--issuer-ca-file`.

mod common;

use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::Value;
use tempcreds_tests::{ControlPlane, Moto};

const AUDIENCE: &str = "sts.amazonaws.com";

/// The control plane with anonymous issuer discovery allowed, and a fresh
/// namespace with a service account `app`.
fn cluster() -> (ControlPlane, String) {
    let cp = ControlPlane::from_env();
    let binding = cp
        .kubectl(&[
            "create",
            "clusterrolebinding",
            "tempcreds-test-anonymous-issuer-discovery",
            "--clusterrole=system:service-account-issuer-discovery",
            "--group=system:unauthenticated",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .unwrap();
    // Once per test process (the tests run in parallel, and two concurrent
    // `kubectl apply` of a new object race to create it); a binding left by
    // an earlier run is fine.
    static BOUND: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BOUND.get_or_init(|| {
        if let Err(e) = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&binding)) {
            assert!(e.to_string().contains("AlreadyExists"), "{e}");
        }
    });
    let ns = cp.create_namespace("doctor", &[]).unwrap();
    cp.kubectl(&["-n", &ns, "create", "serviceaccount", "app"])
        .unwrap();
    (cp, ns)
}

/// A real token for `app` from the TokenRequest API.
fn token(cp: &ControlPlane, ns: &str, audience: &str) -> String {
    cp.kubectl(&["-n", ns, "create", "token", "app", "--audience", audience])
        .unwrap()
        .trim()
        .to_owned()
}

fn parts(token: &str) -> (Value, Value) {
    let json = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let mut p = token.split('.');
    (json(p.next().unwrap()), json(p.next().unwrap()))
}

/// A token with `header` and `claims`, signed ES256 by a key generated here,
/// which no issuer publishes.
fn forge(header: &Value, claims: &Value) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `tempcreds-sidecar doctor ARGS` in a clean environment.
fn doctor(w: &World, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tempcreds-sidecar"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", w.tmp.path())
        .env("AWS_CONFIG_FILE", w.path("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", w.path("aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("doctor")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// doctor for `token` with web identity against `moto`.
fn web_identity_doctor(
    w: &World,
    cp: &ControlPlane,
    moto: &Moto,
    token: &str,
    extra: &[&str],
) -> (Output, String) {
    let dir = KubeletDir::new(
        w.path(&format!("token-{}", tempcreds_tests::unique_suffix())),
        &[("token", token)],
    );
    let token_file = dir.path("token").display().to_string();
    let (role, ca, url) = (role("app"), cp.ca_file.display().to_string(), moto.url());
    let mut args = vec![
        "--role-arn",
        &role,
        "--token-file",
        &token_file,
        "--region",
        "us-east-1",
        "--sts-endpoint",
        &url,
        "--session-name",
        "doctor",
        "--issuer-ca-file",
        &ca,
    ];
    args.extend_from_slice(extra);
    let out = doctor(w, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The token is a credential: never printed.
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !stdout.contains(signature) && !stderr(&out).contains(signature),
        "the token was printed"
    );
    (out, stdout)
}

fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{n:?} missing from:\n{text}");
    }
}

#[test]
fn a_real_token_passes_every_check_and_sts_answers() {
    let (cp, ns) = cluster();
    let moto = Moto::start();
    let w = World::new();
    let token = token(&cp, &ns, AUDIENCE);
    let (header, _) = parts(&token);
    let kid = header["kid"].as_str().unwrap();
    let (out, text) = web_identity_doctor(&w, &cp, &moto, &token, &[]);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    let provider = cp.issuer.trim_start_matches("https://");
    assert_contains(
        &text,
        &[
            &format!("kid {kid}"),
            &format!("iss {}", cp.issuer),
            &format!("sub system:serviceaccount:{ns}:app (namespace {ns}, service account app)"),
            &format!("the token's kid {kid} is published"),
            "the signature verifies with the published key",
            // The local issuer works for this test but could never work for AWS.
            "is not a public address: AWS STS cannot reach it",
            &format!("\"Federated\": \"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}\""),
            &format!("\"{provider}:aud\": \"{AUDIENCE}\""),
            &format!("\"{provider}:sub\": \"system:serviceaccount:{ns}:app\""),
            "\"Action\": \"sts:AssumeRoleWithWebIdentity\"",
            &format!("AssumeRoleWithWebIdentity {}", role("app")),
            &format!(
                "GetCallerIdentity with the new credentials: arn:aws:sts::{ACCOUNT}:assumed-role/app/doctor"
            ),
            "Result: OK (0 failed, 1 warning)",
        ],
    );
    // The calls, one by one: the unsigned web-identity call, then
    // GetCallerIdentity signed with its result.
    let requests = moto.sts_requests();
    let actions: Vec<_> = requests.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["AssumeRoleWithWebIdentity", "GetCallerIdentity"]);
    assert_eq!(requests[0].param("WebIdentityToken"), Some(token.as_str()));
    assert!(requests[0].authorization.is_none());
    assert!(requests[1].signing_key_id().unwrap().starts_with("ASIA"));
    // Nothing written.
    assert!(w.written_key_id().is_none());

    // The same as JSON.
    let (out, json) = web_identity_doctor(&w, &cp, &moto, &token, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], true);
    let ids: Vec<_> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["config", "token", "issuer", "policies", "sts"]);
    assert_eq!(v["steps"][1]["details"]["header"]["kid"], kid);
    assert_eq!(
        v["steps"][1]["details"]["claims"]["kubernetes.io"]["namespace"],
        ns.as_str()
    );
    assert_eq!(v["steps"][2]["details"]["published_kids"][0], kid);
    assert_eq!(
        v["steps"][3]["policies"][0]["policy"]["Statement"][0]["Principal"]["Federated"],
        format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}")
    );
}

#[test]
fn a_wrong_audience_fails_and_names_the_fix() {
    let (cp, ns) = cluster();
    let moto = Moto::start();
    let w = World::new();
    let token = token(&cp, &ns, "vault");
    let (out, text) = web_identity_doctor(&w, &cp, &moto, &token, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_contains(
        &text,
        &[
            "FAIL  aud [\"vault\"] does not contain \"sts.amazonaws.com\"",
            "Incorrect token audience",
            "tempcreds.io/token-audience",
            // The rest is still checked.
            "the signature verifies with the published key",
            "Result: FAILED (1 failed, 1 warning)",
        ],
    );
    // The audience the provider lists can be given.
    let (out, text) = web_identity_doctor(&w, &cp, &moto, &token, &["--token-audience", "vault"]);
    assert_eq!(out.status.code(), Some(0), "{text}");
}

#[test]
fn an_expired_token_signed_by_an_unpublished_key_is_reported_on_both_counts() {
    let (cp, ns) = cluster();
    let moto = Moto::start();
    let w = World::new();
    // The API server will not issue tokens shorter than 10 minutes: take a
    // real one's claims, move them into the past, and sign with a new key.
    let (_, mut claims) = parts(&token(&cp, &ns, AUDIENCE));
    let t = now();
    claims["iat"] = (t - 7200).into();
    claims["nbf"] = (t - 7200).into();
    claims["exp"] = (t - 3600).into();
    let header = serde_json::json!({"alg": "ES256", "kid": "forged-key", "typ": "JWT"});
    let forged = forge(&header, &claims);
    let (out, text) = web_identity_doctor(&w, &cp, &moto, &forged, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // The expiry as a time, not as a distance from now: how long ago depends
    // on when doctor runs (1h, or 1h1s on a loaded machine). The relative
    // text is pinned by doctor's unit test with a fixed clock.
    let expired_at = time::OffsetDateTime::from_unix_timestamp(t - 3600)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expired_line = format!("FAIL  expired at {expired_at} (");
    assert_contains(
        &text,
        &[
            expired_line.as_str(),
            " ago)",
            "the token has expired",
            "FAIL  the token's kid forged-key is not among the published keys",
            "the token comes from another cluster or signing key",
            "Result: FAILED (2 failed, 1 warning)",
        ],
    );
    let (_, json) = web_identity_doctor(&w, &cp, &moto, &forged, &["--output", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failures"], 2);
}

#[test]
fn an_altered_token_fails_the_signature_check() {
    let (cp, ns) = cluster();
    let moto = Moto::start();
    let w = World::new();
    // A real token whose subject was changed: the kid is published, the
    // signature no longer matches.
    let real = token(&cp, &ns, AUDIENCE);
    let (_, mut claims) = parts(&real);
    claims["sub"] = format!("system:serviceaccount:{ns}:admin").into();
    let pieces: Vec<_> = real.split('.').collect();
    let altered = format!(
        "{}.{}.{}",
        pieces[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        pieces[2]
    );
    let (out, text) = web_identity_doctor(&w, &cp, &moto, &altered, &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_contains(
        &text,
        &[
            "is published",
            "FAIL  the signature does not verify with the published key",
            "the token was altered",
        ],
    );
}

#[test]
fn an_issuer_unreachable_from_here_is_said_plainly() {
    let (cp, ns) = cluster();
    let moto = Moto::start();
    let w = World::new();
    let (header, mut claims) = parts(&token(&cp, &ns, AUDIENCE));
    let closed = tempcreds_tests::free_port();
    claims["iss"] = format!("https://127.0.0.1:{closed}").into();
    let (out, text) = web_identity_doctor(&w, &cp, &moto, &forge(&header, &claims), &[]);
    // Not reachable from here is a warning (it may be this pod's egress);
    // STS itself (moto) does not check the token, so the calls succeed.
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_contains(
        &text,
        &[
            "WARN  the discovery document is not reachable from here",
            "AWS STS must reach it publicly",
            "Couldn't retrieve verification key",
        ],
    );
}

#[test]
fn secret_source_shows_who_calls_and_explains_access_denied_as_run_does() {
    let w = World::new();
    let (moto, id, secret) = moto_with_auth(&w);
    let keys = w.keys(&id, &secret);
    let (idf, sf, role, url) = (
        keys.path("aws_access_key_id").display().to_string(),
        keys.path("aws_secret_access_key").display().to_string(),
        role("app"),
        moto.url(),
    );
    let args = [
        "--source",
        "secret",
        "--role-arn",
        &role,
        "--access-key-id-file",
        &idf,
        "--secret-access-key-file",
        &sf,
        "--session-tag",
        "team=payments",
        "--region",
        "us-east-1",
        "--sts-endpoint",
        &url,
    ];
    let out = doctor(&w, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    let user = format!("arn:aws:iam::{ACCOUNT}:user/nobody");
    assert_contains(
        &text,
        &[
            &format!("ok    GetCallerIdentity with the source's credentials ({id}): {user}"),
            &format!("FAIL  AssumeRole {role}: AccessDenied"),
            "likely cause: the caller may not assume the role",
            &format!("Identity policy of {user}"),
            "\"sts:AssumeRole\",\n",
            "\"sts:TagSession\"",
            &format!("\"Resource\": \"{role}\""),
            &format!("Trust policy of {role}"),
            &format!("\"AWS\": \"{user}\""),
        ],
    );
    assert_no_secrets(&format!("{text}{}", stderr(&out)), &[&secret]);

    // `run` logs the same explanation when a refresh fails, and keeps going.
    let mut run = w.sidecar(&args);
    let running = w.spawn(&mut run);
    wait_until(
        "a failed refresh in the log",
        std::time::Duration::from_secs(30),
        || running.logs().contains("refreshing credentials failed"),
    );
    let logs = running.logs();
    assert_contains(
        &logs,
        &[
            "AccessDenied",
            "likely cause: the caller may not assume the role",
            "fix: allow the caller in the role's trust policy",
        ],
    );
    assert_no_secrets(&logs, &[&secret]);
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    let w = World::new();
    let out = doctor(&w, &["--source", "web-identity"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_contains(&stderr(&out), &["--role-arn", "--token-file"]);
    let out = doctor(&w, &["--output", "yaml"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_contains(&stderr(&out), &["--output", "text, json"]);
    let out = doctor(
        &w,
        &[
            "--source",
            "ambient",
            "--role-arn",
            &role("x"),
            "--issuer-ca-file",
            "/nonexistent/ca.crt",
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_contains(&stderr(&out), &["--issuer-ca-file", "/nonexistent/ca.crt"]);
}
