//! The credential files, both ways:
//! - reading the inputs the kubelet mounts (`inputs::read_token`,
//!   `inputs::read_keys`) from files holding the input bytes: never a panic,
//!   and accepted values have no white space;
//! - writing credentials (`Credentials::to_process_json`, `to_ini`) holding
//!   arbitrary strings: the `credential_process` JSON always parses back to
//!   the same values, and the INI keeps one line per key.

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
    if ![id, secret, token].iter().any(|s| s.contains(['\n', '\r'])) {
        let ini = creds.to_ini("default");
        assert_eq!(ini.lines().filter(|l| l.starts_with("aws_")).count(), 3);
    }
});
