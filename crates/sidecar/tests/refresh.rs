//! The long-running sidecar against moto: repeated atomic replacement under
//! concurrent readers, an STS outage, token and key rotation through the
//! kubelet's `..data` swap, readiness and SIGTERM.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tempcreds_tests::Moto;

const ID: &str = "AKIAROTATIONEXAMPLE1";
const SECRET: &str = "firstSecretAccessKeyValue+1";

/// Refreshes every ~5 s: moto honours DurationSeconds of at least 900.
/// `--refresh-before` must stay below the lifetime the sidecar sees, which is
/// 900 s less the call's latency and moto's rounding to whole seconds (or
/// the sidecar refreshes at half the lifetime, minutes away): 898 s left
/// only 2 s for both, which a loaded machine exceeded. 5 s of margin.
const FAST: [&str; 4] = ["--session-duration", "900", "--refresh-before", "895s"];

/// How long the waits below may take before the test fails: a guard
/// against a hung sidecar, far above what any wait takes on a loaded
/// machine, not a timing expectation.
const GUARD: Duration = Duration::from_secs(300);

fn secret_run(w: &World, keys: &KubeletDir, moto: &Moto, extra: &[&str]) -> Running {
    let mut args = secret_args(keys, &moto.url(), Some(&role("app")));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    w.spawn(&mut w.sidecar(&args))
}

fn assume_role_count(moto: &Moto) -> usize {
    moto.actions().iter().filter(|a| *a == "AssumeRole").count()
}

/// Is `ini` a complete credentials file as the sidecar writes it?
fn complete_ini(ini: &str) -> bool {
    ini.ends_with('\n')
        && [
            "aws_access_key_id = ASIA",
            "aws_secret_access_key = ",
            "aws_session_token = ",
        ]
        .iter()
        .all(|k| ini.contains(k))
}

#[test]
fn files_are_replaced_repeatedly_and_readers_never_see_a_torn_or_empty_file() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut sidecar = secret_run(&w, &keys, &moto, &FAST);
    sidecar.wait_ready();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let torn = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let readers: Vec<_> = ["credentials", "credentials.json"]
        .into_iter()
        .map(|name| {
            let path = w.out.join(name);
            let (stop, reads, torn, seen) =
                (stop.clone(), reads.clone(), torn.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    reads.fetch_add(1, Ordering::Relaxed);
                    let id = if name == "credentials" {
                        complete_ini(&text).then(|| ini_value(&text, "aws_access_key_id").unwrap())
                    } else {
                        serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .filter(|v| v["Version"] == 1 && v["SessionToken"].is_string())
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

    // At least 4 replacements after the first write.
    let before = assume_role_count(&moto);
    wait_until("4 refreshes", GUARD, || {
        assume_role_count(&moto) >= before + 4
    });
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let torn = torn.lock().unwrap();
    assert!(
        torn.is_empty(),
        "{} torn reads: {:?}",
        torn.len(),
        &torn[..torn.len().min(3)]
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(
        seen.lock().unwrap().len() >= 4,
        "readers saw {:?}",
        seen.lock().unwrap()
    );
    // Still one AssumeRole per refresh, never GetSessionToken.
    assert!(!moto.actions().iter().any(|a| a == "GetSessionToken"));
    // No temporary files are left behind.
    let names: HashSet<_> = std::fs::read_dir(&w.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with(".credentials") && !n.starts_with(".config"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // No secret ever reached the logs.
    let logs = sidecar.logs();
    let ini = w.credentials();
    assert_no_secrets(
        &logs,
        &[
            SECRET,
            &ini_value(&ini, "aws_secret_access_key").unwrap(),
            &ini_value(&ini, "aws_session_token").unwrap(),
        ],
    );
}

#[test]
fn an_sts_outage_keeps_the_last_credentials_and_recovers_by_itself() {
    let mut moto = Moto::start();
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut sidecar = secret_run(&w, &keys, &moto, &FAST);
    sidecar.wait_ready();
    moto.stop();
    let during = w.written_key_id().unwrap();
    let ini = w.credentials();
    // Let the refresh come due and fail a few times, backing off.
    wait_until("three failed attempts", GUARD, || {
        sidecar
            .logs()
            .matches("refreshing credentials failed")
            .count()
            >= 3
    });
    assert_eq!(w.credentials(), ini, "the last credentials stay in place");
    assert_eq!(
        sidecar.probe("/readyz"),
        Some(200),
        "still valid, so still ready"
    );
    assert_eq!(sidecar.probe("/healthz"), Some(200));
    let logs = sidecar.logs();
    assert!(
        logs.contains("no answer from STS") && logs.contains("likely cause"),
        "{logs}"
    );
    assert!(
        logs.contains("\"attempt\":2"),
        "each failure logged with its attempt: {logs}"
    );

    let calls_before = assume_role_count(&moto);
    moto.restart();
    wait_until("a refresh after the outage", GUARD, || {
        w.written_key_id().is_some_and(|id| id != during)
    });
    assert!(assume_role_count(&moto) > calls_before);
    assert_eq!(sidecar.probe("/readyz"), Some(200));
}

#[test]
fn rotated_keys_are_used_for_the_next_call_right_away() {
    let moto = Moto::start();
    let w = World::new();
    let mut keys = w.keys(ID, SECRET);
    // Default refresh: half an hour away, so only the rotation causes a call.
    let mut sidecar = secret_run(&w, &keys, &moto, &[]);
    sidecar.wait_ready();
    assert_eq!(moto.sts_requests()[0].signing_key_id(), Some(ID));
    keys.update(&[
        ("aws_access_key_id", "AKIAROTATEDEXAMPLE2"),
        ("aws_secret_access_key", "secondSecretAccessKeyValue+2"),
    ]);
    wait_until("an AssumeRole with the new keys", GUARD, || {
        moto.sts_requests().len() >= 2
    });
    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["AssumeRole", "AssumeRole"]);
    assert_eq!(calls[1].signing_key_id(), Some("AKIAROTATEDEXAMPLE2"));
    assert_no_secrets(&sidecar.logs(), &[SECRET, "secondSecretAccessKeyValue+2"]);
}

#[test]
fn a_rotated_token_is_sent_on_the_next_call_right_away_and_sigterm_exits_zero() {
    let moto = Moto::start();
    let w = World::new();
    let first = fake_jwt("system:serviceaccount:ns:app");
    let mut token = w.token(&first);
    let token_file = token.path("token").display().to_string();
    let role = role("web");
    let url = moto.url();
    let mut sidecar = w.spawn(&mut w.sidecar(&web_identity_args(&role, &token_file, &url)));
    sidecar.wait_ready();
    let second = fake_jwt("system:serviceaccount:ns:app");
    token.update(&[("token", &second)]);
    wait_until("a call with the new token", GUARD, || {
        moto.sts_requests().len() >= 2
    });
    let calls = moto.sts_requests();
    assert_eq!(calls[0].param("WebIdentityToken"), Some(first.as_str()));
    assert_eq!(calls[1].param("WebIdentityToken"), Some(second.as_str()));

    sidecar.signal("TERM");
    wait_until("exit after SIGTERM", GUARD, || {
        sidecar.child.try_wait().unwrap().is_some()
    });
    let status = sidecar.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_no_secrets(&sidecar.logs(), &[&first, &second]);
    // The credentials stay for the application after the sidecar stops.
    assert!(w.written_key_id().is_some());
}

#[test]
fn not_ready_until_credentials_are_written() {
    let mut moto = Moto::start();
    moto.stop();
    let w = World::new();
    let keys = w.keys(ID, SECRET);
    let mut sidecar = secret_run(&w, &keys, &moto, &[]);
    wait_until("a failed first attempt", GUARD, || {
        sidecar.logs().contains("refreshing credentials failed")
    });
    assert_eq!(sidecar.probe("/healthz"), Some(200));
    assert_eq!(sidecar.probe("/readyz"), Some(503));
    assert!(w.written_key_id().is_none());
    moto.restart();
    sidecar.wait_ready();
    assert!(w.written_key_id().is_some());
}
