//! `tempcreds-sidecar status` against a real sidecar refreshing from moto:
//! the profile, the role and a future expiry, in both formats, exit 0; and
//! against an address where nothing listens: a clear error, exit 1. No
//! secret or key ID is printed.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;
use tempcreds_tests::{Moto, free_port};

const ID: &str = "AKIASTATUSEXAMPLE001";
const SECRET: &str = "statusSecretAccessKeyValue+1";

/// `tempcreds-sidecar status ARGS` in a clean environment.
fn status(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tempcreds-sidecar"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("status")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn status_shows_the_profile_the_role_and_a_future_expiry() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let reader = role("status-reader");
    let mut args = secret_args(&keys, &moto.url(), Some(&reader));
    args.extend(["--session-duration", "3600", "--profile", "app"].map(str::to_owned));
    let mut sidecar = w.spawn(&mut w.sidecar(&args));
    sidecar.wait_ready();
    args.extend([
        "--health-addr".to_owned(),
        format!("127.0.0.1:{}", sidecar.health_port),
    ]);

    let out = status(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("PROFILE"), "{text}");
    let row: Vec<&str> = lines[1].split("   ").map(str::trim).collect();
    assert_eq!(row[0], "app", "{text}");
    assert!(lines[1].contains(" secret "), "{text}");
    assert!(lines[1].contains(&reader), "{text}");
    assert!(lines[1].contains(" ago"), "last refresh: {text}");
    // An hour's credentials, written moments ago.
    assert!(
        lines[1].contains(" 59m") || lines[1].contains(" 1h "),
        "{text}"
    );
    assert_no_secrets(&text, &[ID, SECRET]);

    let out = status(&[args.clone(), vec!["--output".into(), "json".into()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["profile"], "app");
    assert_eq!(rows[0]["source"], "secret");
    assert_eq!(rows[0]["role"], reader.as_str());
    assert_eq!(rows[0]["valid"], true);
    let left = rows[0]["expires_in_seconds"].as_f64().unwrap();
    assert!((1700.0..=3600.0).contains(&left), "{json}");
    assert_eq!(rows[0]["refreshes"], 1);
    assert_eq!(rows[0]["refresh_failures"], 0);
    assert!(rows[0]["last_refresh"].is_string(), "{json}");
    assert_no_secrets(&json.to_string(), &[ID, SECRET]);
}

#[test]
fn status_with_nothing_listening_says_so_and_exits_1() {
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut args = secret_args(&keys, "http://127.0.0.1:1", None);
    let addr = format!("127.0.0.1:{}", free_port());
    args.extend(["--health-addr".to_owned(), addr.clone()]);
    let out = status(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot connect to the sidecar's health listener at {addr}"
        )),
        "{err}"
    );
    assert!(err.contains("--no-health-server"), "{err}");

    // Bad flags: 64.
    let out = status(&["--health-addr".to_owned(), "nowhere".to_owned()]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}
