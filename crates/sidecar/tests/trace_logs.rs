//! No secret in the logs at any level: every flow (web identity, long-term
//! keys with and without a role, a role chain, ambient credentials with a
//! session token, `doctor`, the credentials endpoint) runs with
//! `RUST_LOG=trace` against moto, and the full stdout and stderr are
//! searched for every secret involved: the web-identity token, the
//! long-term secret key, the ambient secret key and session token, every
//! SecretAccessKey and SessionToken STS returned (intermediate sessions of a
//! chain included: a recording proxy in front of moto captures every
//! answer), and the endpoint's authorization token.
//!
//! Run with moto installed: `make test`, or
//! `hack/with-control-plane.sh cargo test -p tempcreds-sidecar --test trace_logs`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tempcreds_tests::{Moto, free_port};

const LONG_TERM_ID: &str = "AKIATRACEEXAMPLE0001";
const LONG_TERM_SECRET: &str = "traceLongTermSecretKey/Example+123";
const AMBIENT_SECRET: &str = "traceAmbientSecretKeyValue123";
const AMBIENT_TOKEN: &str = "traceAmbientSessionTokenValue456";

/// A TCP proxy in front of moto that keeps a copy of every answer.
struct RecordingProxy {
    port: u16,
    answers: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    fn start(upstream: u16) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let recorded = answers.clone();
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
                let recorded = recorded.clone();
                std::thread::spawn(move || {
                    let mut buf = [0; 16 * 1024];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        RecordingProxy { port, answers }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every `SecretAccessKey` and `SessionToken` in the answers so far.
    fn issued_secrets(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.answers.lock().unwrap()).into_owned();
        let mut found = Vec::new();
        for element in ["SecretAccessKey", "SessionToken"] {
            let (open, close) = (format!("<{element}>"), format!("</{element}>"));
            let mut rest = text.as_str();
            while let Some(i) = rest.find(&open) {
                let after = &rest[i + open.len()..];
                let Some(j) = after.find(&close) else { break };
                found.push(after[..j].to_owned());
                rest = &after[j..];
            }
        }
        found
    }
}

/// stdout and stderr of `cmd` at `RUST_LOG=trace`, bounded.
fn traced(w: &World, cmd: &mut Command) -> String {
    let out = w.once_with(cmd.env("RUST_LOG", "trace"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn doctor(w: &World, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tempcreds-sidecar"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", w.tmp.path())
        .env("AWS_CONFIG_FILE", w.path("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", w.path("aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("doctor")
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn http_get(port: u16, path: &str, auth: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn no_flow_logs_a_secret_at_trace() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.port());
    let url = proxy.url();
    let w = World::new();
    let jwt = fake_jwt("system:serviceaccount:ns:app");
    let token = w.token(&jwt);
    let token_file = token.path("token").display().to_string();
    let keys = w.keys(LONG_TERM_ID, LONG_TERM_SECRET);
    let id_file = keys.path("aws_access_key_id").display().to_string();
    let secret_file = keys.path("aws_secret_access_key").display().to_string();
    let (app, next) = (role("app"), role("next"));
    let common = ["--region", "us-east-1", "--sts-endpoint", &url];
    let web_identity = [
        ["--source", "web-identity", "--role-arn", &app].as_slice(),
        &["--token-file", &token_file],
        &common,
    ]
    .concat();
    let secret = [
        ["--source", "secret", "--access-key-id-file", &id_file].as_slice(),
        &["--secret-access-key-file", &secret_file],
        &common,
    ]
    .concat();
    let with_role = [secret.as_slice(), &["--role-arn", &app]].concat();
    let chained = [with_role.as_slice(), &["--chain-role-arn", &next]].concat();
    let web_chained = [web_identity.as_slice(), &["--chain-role-arn", &next]].concat();

    let mut logs = Vec::new();
    let mut log = |name: &str, text: String| logs.push((name.to_owned(), text));
    for (name, args) in [
        ("web identity, chained", &web_chained),
        ("secret without role", &secret),
        ("secret with role, chained", &chained),
    ] {
        let mut cmd = w.sidecar(args);
        log(name, traced(&w, cmd.arg("--once")));
        assert!(w.written_key_id().is_some(), "{name}: nothing written");
    }
    let mut ambient = w.sidecar(&[
        "--source",
        "ambient",
        "--role-arn",
        &app,
        "--chain-role-arn",
        &next,
        "--sts-endpoint",
        &url,
        "--once",
    ]);
    ambient
        .env("AWS_ACCESS_KEY_ID", "AKIATRACEAMBIENT0001")
        .env("AWS_SECRET_ACCESS_KEY", AMBIENT_SECRET)
        .env("AWS_SESSION_TOKEN", AMBIENT_TOKEN)
        .env("AWS_REGION", "us-east-1");
    log("ambient, chained", traced(&w, &mut ambient));
    log("doctor, secret", traced(&w, &mut doctor(&w, &chained)));
    log(
        "doctor, web identity",
        traced(&w, &mut doctor(&w, &web_chained)),
    );

    // The endpoint: served once with the right token.
    let port = free_port();
    let endpoint_addr = format!("127.0.0.1:{port}");
    let mut served_args = with_role.clone();
    served_args.extend(["--endpoint-addr", &endpoint_addr]);
    let mut cmd = w.sidecar(&served_args);
    let mut sidecar = w.spawn(cmd.env("RUST_LOG", "trace"));
    sidecar.wait_ready();
    let endpoint_token = std::fs::read_to_string(w.out.join("endpoint-token")).unwrap();
    let answer = http_get(port, "/v1/credentials", &endpoint_token);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let wrong = http_get(port, "/v1/credentials", &format!("{endpoint_token}0"));
    assert!(wrong.starts_with("HTTP/1.1 403"), "{wrong}");
    sidecar.signal("TERM");
    wait_until("exit after SIGTERM", Duration::from_secs(120), || {
        sidecar.child.try_wait().unwrap().is_some()
    });
    log("endpoint", sidecar.logs());

    let issued = proxy.issued_secrets();
    // At least: 2 calls (web identity), 1, 2, 2 (ambient), 2 + 1 (doctor's
    // chain and its GetCallerIdentity do not issue), 1 (endpoint).
    assert!(
        issued.len() >= 2 * 9,
        "only {} secrets issued",
        issued.len()
    );
    let mut secrets: Vec<&str> = vec![
        &jwt,
        LONG_TERM_SECRET,
        AMBIENT_SECRET,
        AMBIENT_TOKEN,
        &endpoint_token,
    ];
    secrets.extend(issued.iter().map(String::as_str));
    for (name, text) in &logs {
        // Tracing was really on: tempcreds' own debug and trace events, and
        // the SDK's info, are there.
        assert!(!text.is_empty(), "{name}: no output");
        for s in &secrets {
            assert!(s.len() >= 8, "secret {s:?} too short to check meaningfully");
            assert!(
                !text.contains(s),
                "{name}: a secret ({} characters, starting {:?}) appeared in the output at trace:\n{text}",
                s.len(),
                &s[..4]
            );
        }
    }
    let endpoint_log = &logs.last().unwrap().1;
    assert!(
        endpoint_log.contains("credentials served"),
        "tempcreds' debug events missing at trace: {endpoint_log}"
    );
}
