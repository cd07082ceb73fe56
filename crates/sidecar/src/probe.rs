//! What a previous run left in the output directory: `tempcreds-sidecar
//! probe` (the exec probe of pods without a health listener) and the
//! adoption of still-fresh credentials when the sidecar starts.
//!
//! Adoption is what lets a restarted sidecar (SIGKILL, OOM, a node hiccup)
//! and a classic sidecar after its run-once init container keep serving the
//! credentials on disk without a second STS call chain. The directory is the
//! sidecar's own volume: application containers mount it read-only, so what
//! is read back was written by this pod's sidecar with the same settings.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tempcreds_core::{Credentials, paths};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::cli::ProbeArgs;
use crate::refresh::refresh_delay;

/// The credentials file a previous run wrote, and when it was written.
#[derive(Debug)]
pub struct Written {
    /// The credentials, read back from `credentials.json`.
    pub credentials: Credentials,
    /// The file's modification time: when they were fetched and written.
    pub written_at: SystemTime,
}

/// Reads the `credential_process` JSON file `file` (`credentials.json` for
/// the first profile) in `dir`. The error says what is wrong with the file,
/// never a secret.
pub fn read_written(dir: &Path, file: &str) -> Result<Written, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let written_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let credentials =
        Credentials::from_process_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Written {
        credentials,
        written_at,
    })
}

/// Whether `written` can be served now, and until when the refresh can wait:
/// `Some(due)` when its scheduled refresh point (the same rule as after a
/// fetch: `refresh_before` before expiry, else half the lifetime counted from
/// the write) is still ahead, `None` when it is due or past.
pub fn adoptable(written: &Written, refresh_before: Option<Duration>) -> Option<Instant> {
    let now = OffsetDateTime::now_utc();
    let written_at = OffsetDateTime::from(written.written_at);
    let expiration = written.credentials.expiration;
    let lifetime = Duration::try_from(expiration - written_at).ok()?;
    let due = written_at + refresh_delay(lifetime, refresh_before);
    let wait = Duration::try_from(due - now)
        .ok()
        .filter(|d| !d.is_zero())?;
    Some(Instant::now() + wait)
}

/// Runs `tempcreds-sidecar probe`: 0 when credentials that have not expired
/// are on disk, 1 otherwise, with one line saying which.
pub fn run(args: ProbeArgs) -> ExitCode {
    match read_written(&args.output_dir, paths::PROCESS_JSON_FILE) {
        Ok(w) if w.credentials.expiration > OffsetDateTime::now_utc() => {
            println!(
                "ready: credentials valid until {}",
                w.credentials.expiration_rfc3339()
            );
            ExitCode::SUCCESS
        }
        Ok(w) => {
            println!(
                "not ready: the credentials on disk expired at {}",
                w.credentials.expiration_rfc3339()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("not ready: no valid credentials written yet ({e})");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempcreds_core::SecretString;

    fn write(dir: &Path, expires_in: time::Duration) {
        let creds = Credentials {
            access_key_id: "ASIAPROBE00000000001".into(),
            secret_access_key: SecretString::new("s"),
            session_token: SecretString::new("t"),
            expiration: OffsetDateTime::now_utc() + expires_in,
        };
        crate::output::Output::new(dir, "default")
            .write(&creds)
            .unwrap();
    }

    #[test]
    fn fresh_credentials_are_adopted_until_their_refresh_point() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), time::Duration::hours(1));
        let w = read_written(dir.path(), paths::PROCESS_JSON_FILE).unwrap();
        assert_eq!(w.credentials.access_key_id, "ASIAPROBE00000000001");
        // Half the lifetime (30 min) is ahead.
        let due = adoptable(&w, None).expect("fresh credentials are adoptable");
        let wait = due - Instant::now();
        assert!(
            wait > Duration::from_secs(29 * 60) && wait <= Duration::from_secs(30 * 60),
            "{wait:?}"
        );
        // With refresh-before 59 min the refresh point is one minute after the write.
        let due = adoptable(&w, Some(Duration::from_secs(59 * 60))).unwrap();
        assert!(due - Instant::now() <= Duration::from_secs(60));
        // Written 130 minutes before its 1 h of validity left: past the
        // half-life point, due now.
        let file = std::fs::File::options()
            .append(true)
            .open(dir.path().join(paths::PROCESS_JSON_FILE))
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(130 * 60))
            .unwrap();
        let w = read_written(dir.path(), paths::PROCESS_JSON_FILE).unwrap();
        assert!(adoptable(&w, None).is_none());
        // Unless the refresh is set to 10 minutes before expiry.
        assert!(adoptable(&w, Some(Duration::from_secs(10 * 60))).is_some());
    }

    #[test]
    fn expired_or_missing_credentials_are_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_written(dir.path(), paths::PROCESS_JSON_FILE).is_err());
        write(dir.path(), time::Duration::seconds(-5));
        let w = read_written(dir.path(), paths::PROCESS_JSON_FILE).unwrap();
        assert!(adoptable(&w, None).is_none());
    }
}
