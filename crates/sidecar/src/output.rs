//! Atomic writes of the credential files into the shared volume.
//!
//! Each file is written to a temporary file in the same directory whose mode
//! is set to its final value first, then written, flushed to disk, renamed over
//! the old file, and the directory is flushed. A reader therefore sees either
//! the old file or the new one, never a partial or empty one; a failed write
//! leaves the old file in place.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tempcreds_core::{Credentials, credentials, paths};

/// Mode of the written files: the application runs as another user and
/// mounts the volume read-only, so it must be able to read them; only the
/// sidecar can write.
pub const FILE_MODE: u32 = 0o644;

/// The `cat` an application's SDK runs for `credential_process`.
pub const CAT: &str = "/bin/cat";

/// Writing an output file failed.
#[derive(Debug, thiserror::Error)]
#[error("--output-dir {}: writing {name} failed: {source}", dir.display())]
pub struct WriteError {
    /// The output directory.
    pub dir: PathBuf,
    /// The file's name.
    pub name: &'static str,
    /// What the operating system said.
    pub source: io::Error,
}

/// The output directory and what goes into it.
#[derive(Debug, Clone)]
pub struct Output {
    dir: PathBuf,
    profile: String,
}

impl Output {
    /// Files go into `dir`, the INI section is `profile`.
    pub fn new(dir: impl Into<PathBuf>, profile: impl Into<String>) -> Output {
        Output {
            dir: dir.into(),
            profile: profile.into(),
        }
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `credentials` (INI), `credentials.json` (`credential_process`)
    /// and `config` (a profile running `cat credentials.json`), each
    /// atomically. The INI is written last of the two credential files, so a
    /// reader of either never sees credentials older than the other's.
    pub fn write(&self, creds: &Credentials) -> Result<(), WriteError> {
        let json = self.dir.join(paths::PROCESS_JSON_FILE);
        let config =
            credentials::config_file_for_process(&self.profile, CAT, &json.display().to_string());
        self.write_file(paths::PROCESS_JSON_FILE, creds.to_process_json().as_bytes())?;
        self.write_file(
            paths::CREDENTIALS_FILE,
            creds.to_ini(&self.profile).as_bytes(),
        )?;
        self.write_file(paths::CONFIG_FILE, config.as_bytes())
    }

    fn write_file(&self, name: &'static str, contents: &[u8]) -> Result<(), WriteError> {
        write_atomic(&self.dir, name, contents).map_err(|source| WriteError {
            dir: self.dir.clone(),
            name,
            source,
        })
    }
}

/// Writes `contents` to `dir/name` atomically with mode [`FILE_MODE`].
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode given at creation is reduced by the umask; set it exactly,
        // before the file becomes visible under its final name.
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempcreds_core::SecretString;
    use time::OffsetDateTime;

    fn creds(id: &str) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: SecretString::new("secret"),
            session_token: SecretString::new("token"),
            expiration: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn writes_all_files_readable_by_others_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path(), "app");
        out.write(&creds("ASIAONE")).unwrap();
        out.write(&creds("ASIATWO")).unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["config", "credentials", "credentials.json"]);
        for name in &names {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, FILE_MODE, "{name}");
        }
        let ini = fs::read_to_string(dir.path().join("credentials")).unwrap();
        assert!(
            ini.contains("[app]\naws_access_key_id = ASIATWO\n"),
            "{ini}"
        );
        let config = fs::read_to_string(dir.path().join("config")).unwrap();
        assert!(
            config.contains("[profile app]\ncredential_process = /bin/cat /"),
            "{config}"
        );
    }

    #[test]
    fn a_failed_write_names_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path().join("missing"), "default");
        let e = out.write(&creds("ASIAONE")).unwrap_err().to_string();
        assert!(
            e.contains("--output-dir") && e.contains("credentials.json"),
            "{e}"
        );
    }
}
