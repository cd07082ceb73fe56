//! The credential files, both ways:
//! - reading the inputs the kubelet mounts (`inputs::read_token`,
//!   `inputs::read_keys`) from files holding the input bytes: never a panic,
//!   and accepted values have no white space;
//! - writing credentials (`Credentials::to_process_json`, `to_ini`) holding
//!   arbitrary strings: the `credential_process` JSON always parses back to
//!   the same values; the INI writer either refuses, or writes what an INI
//!   reader (botocore's rules) reads back as exactly one profile holding
//!   exactly those values; credentials that pass `Credentials::validate`
//!   are always written, and read back from `credentials.json` unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tempcreds_core::{Credentials, SecretString};
use tempcreds_sidecar::inputs;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = data.split_at(data.len() / 2);
    let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
    std::fs::write(&id, a).expect("write");
    std::fs::write(&secret, b).expect("write");
    if let Ok(keys) = inputs::read_keys(&id, &secret) {
        assert!(!keys.access_key_id.is_empty());
        assert!(!keys.secret_access_key.expose().contains(char::is_whitespace));
    }
    if let Ok(token) = inputs::read_token(&id) {
        assert!(!token.expose().contains(char::is_whitespace));
    }

    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let (id, secret, token) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let seconds = i64::from(data.len() as u32) * 1_000_003;
    let creds = Credentials {
        access_key_id: id.to_owned(),
        secret_access_key: SecretString::new(secret),
        session_token: SecretString::new(token),
        expiration: OffsetDateTime::from_unix_timestamp(seconds).expect("in range"),
    };
    let json: serde_json::Value =
        serde_json::from_str(&creds.to_process_json()).expect("credential_process JSON parses");
    assert_eq!(json["Version"], 1);
    assert_eq!(json["AccessKeyId"], id);
    assert_eq!(json["SecretAccessKey"], secret);
    assert_eq!(json["SessionToken"], token);
    let expiration = json["Expiration"].as_str().expect("Expiration");
    assert!(expiration.ends_with('Z'), "{expiration}");
    let valid = creds.validate(creds.expiration - time::Duration::hours(1)).is_ok();
    match creds.to_ini("default") {
        Ok(ini) => {
            let sections = parse_ini(&ini);
            assert_eq!(sections.len(), 1, "{ini:?}");
            assert_eq!(sections[0].0, "default");
            assert_eq!(
                sections[0].1,
                [
                    ("aws_access_key_id".to_owned(), id.to_owned()),
                    ("aws_secret_access_key".to_owned(), secret.to_owned()),
                    ("aws_session_token".to_owned(), token.to_owned()),
                ]
            );
        }
        Err(e) => {
            assert!(!valid, "valid credentials refused by the INI writer: {e}");
            let text = e.to_string();
            for s in [secret, token] {
                assert!(s.len() < 8 || id.contains(s) || !text.contains(s), "{text}");
            }
        }
    }
    if valid {
        let back = Credentials::from_process_json(&creds.to_process_json()).expect("adoptable");
        assert_eq!(back.access_key_id, id);
        assert_eq!(back.secret_access_key.expose(), secret);
        assert_eq!(back.session_token.expose(), token);
    }
});

/// Reads an INI file the way botocore's `configparser` does for these
/// files: `#`/`;` comment lines, `[section]` headers, `key = value` split at
/// the first `=` with both sides trimmed, a line starting with white space
/// continuing the previous value; any line break (`\n`, `\r`, and the
/// others Python's `splitlines` knows) ends a line.
fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let breaks = ['\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}'];
    for line in text.split(breaks) {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let last = sections.last_mut().and_then(|s| s.1.last_mut());
            last.expect("a continuation after a key").1.push_str(trimmed);
        } else if let Some(name) = trimmed.strip_prefix('[') {
            let name = name.split(']').next().unwrap_or_default();
            sections.push((name.trim().to_owned(), Vec::new()));
        } else {
            let (k, v) = trimmed.split_once('=').unwrap_or((trimmed, ""));
            sections
                .last_mut()
                .expect("a key before any section")
                .1
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    sections
}
