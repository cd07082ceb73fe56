//! The sidecar's `/metrics` on its health listener, against moto: counters
//! after a successful refresh, after failed ones (STS unreachable, an
//! unusable token) and after recovery; the expiry gauge in range; no secret,
//! key ID, role, session name or token in the output; nothing bound with
//! `--no-health-server`.

mod common;

use std::time::Duration;

use common::*;
use tempcreds_tests::Moto;

const ID: &str = "AKIAMETRICSEXAMPLE01";
const SECRET: &str = "metricsSecretAccessKeyValue+1";
const SESSION: &str = "metrics-test-session";

/// A guard against a hung sidecar, not a timing expectation.
const GUARD: Duration = Duration::from_secs(300);

/// The value of the sample `series` (name and labels, exactly as written)
/// in the Prometheus text format.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

/// `/metrics` in the Prometheus text format (no `Accept` header).
fn scrape(sidecar: &Running) -> String {
    let (status, body) = sidecar
        .get("/metrics", None)
        .expect("the health listener answers");
    assert_eq!(status, 200, "{body}");
    body
}

fn failures(text: &str, kind: &str) -> f64 {
    sample(
        text,
        &format!("tempcreds_sidecar_refresh_failures_total{{profile=\"default\",kind=\"{kind}\"}}"),
    )
    .unwrap_or_else(|| panic!("no failure counter of kind {kind} in\n{text}"))
}

fn refreshes(text: &str) -> f64 {
    sample(
        text,
        "tempcreds_sidecar_refreshes_total{profile=\"default\"}",
    )
    .unwrap_or_else(|| panic!("no refresh counter in\n{text}"))
}

fn expires_in(text: &str) -> f64 {
    sample(
        text,
        "tempcreds_sidecar_credentials_expires_in_seconds{profile=\"default\"}",
    )
    .unwrap_or_else(|| panic!("no expiry gauge in\n{text}"))
}

fn sts_calls(text: &str, action: &str) -> f64 {
    sample(
        text,
        &format!("tempcreds_sidecar_sts_request_duration_seconds_count{{action=\"{action}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn metrics_count_refreshes_and_failures_and_show_the_time_left() {
    let mut moto = Moto::start();
    let w = World::new();
    let mut keys = w.keys(ID, SECRET);
    let mut args = secret_args(&keys, &moto.url(), Some(&role("metrics")));
    // An hour's credentials, refreshed at half their lifetime: only the key
    // rotation below causes a second attempt.
    args.extend(["--session-duration", "3600", "--session-name", SESSION].map(str::to_owned));
    let mut sidecar = w.spawn(&mut w.sidecar(&args));
    sidecar.wait_ready();
    let mut scraped = Vec::new();

    // After the first refresh.
    let text = scrape(&sidecar);
    assert_eq!(refreshes(&text), 1.0, "{text}");
    for kind in [
        "token_unreadable",
        "keys_unreadable",
        "ambient_unavailable",
        "sts_unreachable",
        "sts_denied",
        "sts_transient",
        "bad_answer",
        "write_failed",
    ] {
        assert_eq!(failures(&text, kind), 0.0, "{text}");
    }
    // Written moments ago for an hour; the refresh comes at half the
    // lifetime at the earliest, so at least half of it is left whenever
    // this runs (less a margin for moto's whole seconds).
    let left = expires_in(&text);
    assert!((1700.0..=3600.0).contains(&left), "{left}: {text}");
    assert_eq!(sts_calls(&text, "AssumeRole"), 1.0, "{text}");
    assert!(
        text.contains("# TYPE tempcreds_sidecar_sts_request_duration_seconds histogram"),
        "{text}"
    );
    let first_ini = w.credentials();
    scraped.push(text);

    // OpenMetrics for Prometheus.
    let (status, open) = sidecar
        .get(
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3"),
        )
        .unwrap();
    assert_eq!(status, 200);
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# UNIT tempcreds_sidecar_credentials_expires_in_seconds seconds"),
        "{open}"
    );
    scraped.push(open);

    // STS unreachable: rotated keys make the sidecar try again at once.
    moto.stop();
    keys.update(&[
        ("aws_access_key_id", "AKIAMETRICSEXAMPLE02"),
        ("aws_secret_access_key", "metricsSecretAccessKeyValue+2"),
    ]);
    wait_until("a failed attempt in /metrics", GUARD, || {
        failures(&scrape(&sidecar), "sts_unreachable") >= 1.0
    });
    let text = scrape(&sidecar);
    assert_eq!(refreshes(&text), 1.0, "no refresh succeeded: {text}");
    assert_eq!(failures(&text, "sts_denied"), 0.0, "{text}");
    assert_eq!(failures(&text, "keys_unreadable"), 0.0, "{text}");
    // The last good credentials stay, and so does their expiry.
    assert_eq!(w.credentials(), first_ini);
    let during = expires_in(&text);
    assert!(
        (1700.0..=left).contains(&during),
        "{during} after {left}: {text}"
    );
    // Calls that got no answer are timed too.
    assert!(sts_calls(&text, "AssumeRole") >= 2.0, "{text}");
    scraped.push(text);

    // Recovery by itself.
    moto.restart();
    wait_until("a second refresh in /metrics", GUARD, || {
        refreshes(&scrape(&sidecar)) >= 2.0
    });
    let text = scrape(&sidecar);
    assert!((1700.0..=3600.0).contains(&expires_in(&text)), "{text}");
    scraped.push(text);

    // Nothing from the inputs, the answers or the configuration in any
    // scrape: secrets, key IDs, the role, the session name.
    let ini = w.credentials();
    let all = scraped.join("\n");
    assert_no_secrets(
        &all,
        &[
            SECRET,
            "metricsSecretAccessKeyValue+2",
            &ini_value(&first_ini, "aws_secret_access_key").unwrap(),
            &ini_value(&first_ini, "aws_session_token").unwrap(),
            &ini_value(&ini, "aws_secret_access_key").unwrap(),
            &ini_value(&ini, "aws_session_token").unwrap(),
            ID,
            "AKIAMETRICSEXAMPLE02",
            &ini_value(&first_ini, "aws_access_key_id").unwrap(),
            &ini_value(&ini, "aws_access_key_id").unwrap(),
            SESSION,
            &role("metrics"),
        ],
    );
}

#[test]
fn an_unusable_token_is_counted_and_the_token_never_appears() {
    let moto = Moto::start();
    let w = World::new();
    let first = fake_jwt("system:serviceaccount:ns:metrics");
    let mut token = w.token(&first);
    let token_file = token.path("token").display().to_string();
    let url = moto.url();
    let role = role("web");
    let mut sidecar = w.spawn(&mut w.sidecar(&web_identity_args(&role, &token_file, &url)));
    sidecar.wait_ready();
    let text = scrape(&sidecar);
    assert_eq!(refreshes(&text), 1.0, "{text}");
    assert_eq!(sts_calls(&text, "AssumeRoleWithWebIdentity"), 1.0, "{text}");

    // The kubelet writes something that is not a JWT: the attempt fails
    // before any STS call.
    token.update(&[("token", "not a token")]);
    wait_until("a token failure in /metrics", GUARD, || {
        failures(&scrape(&sidecar), "token_unreadable") >= 1.0
    });
    let after = scrape(&sidecar);
    assert_eq!(failures(&after, "sts_unreachable"), 0.0, "{after}");
    assert_eq!(
        sts_calls(&after, "AssumeRoleWithWebIdentity"),
        1.0,
        "{after}"
    );

    let ini = w.credentials();
    assert_no_secrets(
        &format!("{text}\n{after}"),
        &[
            &first,
            &ini_value(&ini, "aws_secret_access_key").unwrap(),
            &ini_value(&ini, "aws_session_token").unwrap(),
            &ini_value(&ini, "aws_access_key_id").unwrap(),
            &role,
        ],
    );
}

#[test]
fn no_health_server_means_no_metrics_either() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut args = secret_args(&keys, &moto.url(), Some(&role("metrics")));
    args.push("--no-health-server".to_owned());
    let mut sidecar = w.spawn(&mut w.sidecar(&args));
    wait_until("credentials written", GUARD, || {
        if let Some(status) = sidecar.child.try_wait().unwrap() {
            panic!(
                "the sidecar exited with {status}; logs:\n{}",
                sidecar.logs()
            );
        }
        w.written_key_id().is_some()
    });
    assert_eq!(sidecar.get("/metrics", None), None, "nothing is bound");
    assert_eq!(sidecar.probe("/healthz"), None);
}
