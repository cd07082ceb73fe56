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
use std::sync::{Arc, Mutex};

use tempcreds_core::credentials::CredentialsError;
use tempcreds_core::{Credentials, credentials, paths};

/// Mode of the written files: the application runs as another user and
/// mounts the volume read-only, so it must be able to read them; only the
/// sidecar can write.
pub const FILE_MODE: u32 = 0o644;

/// The `cat` an application's SDK runs for `credential_process`.
pub const CAT: &str = "/bin/cat";

/// Writing the output files failed, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The operating system refused a write.
    #[error("--output-dir {}: writing {name} failed: {source}", dir.display())]
    Io {
        /// The output directory.
        dir: PathBuf,
        /// The file's name.
        name: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// A value could not be written safely into the INI files; nothing was
    /// written.
    #[error("--output-dir {}: nothing written: {source}", dir.display())]
    Refused {
        /// The output directory.
        dir: PathBuf,
        /// The field and what is wrong with it.
        source: CredentialsError,
    },
}

/// One profile's place in the files.
#[derive(Debug)]
struct Slot {
    /// The profile's name (its INI section).
    name: String,
    /// Its `credential_process` JSON file, in the output directory.
    json: String,
    /// The credentials last written (or adopted) for it.
    credentials: Option<Credentials>,
}

/// The output directory and what one profile writes into it.
///
/// The profiles of one sidecar share the `credentials` and `config` files:
/// each profile's [`Output`] (from [`Output::profiles`]) rewrites them whole
/// with every profile's latest credentials, under one lock, so a refresh of
/// one profile keeps the others' sections, and a profile that has none yet
/// (or fails) leaves the others' untouched.
#[derive(Debug, Clone)]
pub struct Output {
    dir: PathBuf,
    slots: Arc<Mutex<Vec<Slot>>>,
    index: usize,
}

impl Output {
    /// Files go into `dir`, the INI section is `profile`: a sidecar with one
    /// profile.
    pub fn new(dir: impl Into<PathBuf>, profile: impl Into<String>) -> Output {
        let mut outputs = Output::profiles(dir, &[profile.into()]);
        outputs.remove(0)
    }

    /// One output per profile of `names` (the first is the default
    /// profile, whose `credential_process` file is `credentials.json`), all
    /// writing the same files in `dir`.
    pub fn profiles(dir: impl Into<PathBuf>, names: &[String]) -> Vec<Output> {
        let dir = dir.into();
        let slots: Vec<Slot> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Slot {
                name: name.clone(),
                json: paths::process_json_file((i > 0).then_some(name.as_str())),
                credentials: None,
            })
            .collect();
        let slots = Arc::new(Mutex::new(slots));
        (0..names.len())
            .map(|index| Output {
                dir: dir.clone(),
                slots: slots.clone(),
                index,
            })
            .collect()
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name of this profile's `credential_process` JSON file.
    pub fn process_json_file(&self) -> String {
        self.lock()[self.index].json.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records credentials a previous run wrote for this profile (still on
    /// disk), so that other profiles' writes keep its section.
    pub fn adopt(&self, creds: &Credentials) {
        self.lock()[self.index].credentials = Some(creds.clone());
    }

    /// Writes this profile's `credential_process` JSON, then `credentials`
    /// (INI, a section per profile that has credentials) and `config` (a
    /// profile per profile running `cat` on its JSON), each atomically. The
    /// INI is written after the JSON, so a reader of either never sees
    /// credentials older than the other's.
    ///
    /// All three are formatted before any is written: credentials whose
    /// values could not be written safely ([`Credentials::check_values`],
    /// and the INI writers' own checks) leave every file as it was.
    pub fn write(&self, creds: &Credentials) -> Result<(), WriteError> {
        let refused = |source| WriteError::Refused {
            dir: self.dir.clone(),
            source,
        };
        creds.check_values().map_err(refused)?;
        let mut slots = self.lock();
        let jsons: Vec<String> = slots
            .iter()
            .map(|s| self.dir.join(&s.json).display().to_string())
            .collect();
        let sections: Vec<(&str, &str)> = slots
            .iter()
            .zip(&jsons)
            .map(|(s, json)| (s.name.as_str(), json.as_str()))
            .collect();
        let config = credentials::config_file_for_processes(&sections, CAT).map_err(refused)?;
        let mut ini = String::new();
        for (i, slot) in slots.iter().enumerate() {
            let section = match (i == self.index, &slot.credentials) {
                (true, _) => creds.to_ini(&slot.name),
                (false, Some(other)) => other.to_ini(&slot.name),
                (false, None) => continue,
            };
            ini.push_str(&section.map_err(refused)?);
        }
        let json = slots[self.index].json.clone();
        self.write_file(&json, creds.to_process_json().as_bytes())?;
        self.write_file(paths::CREDENTIALS_FILE, ini.as_bytes())?;
        self.write_file(paths::CONFIG_FILE, config.as_bytes())?;
        slots[self.index].credentials = Some(creds.clone());
        Ok(())
    }

    fn write_file(&self, name: &str, contents: &[u8]) -> Result<(), WriteError> {
        write_atomic(&self.dir, name, contents).map_err(|source| WriteError::Io {
            dir: self.dir.clone(),
            name: name.to_owned(),
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
            access_key_id: format!("{id}0000000000"),
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
            ini.contains("[app]\naws_access_key_id = ASIATWO0000000000\n"),
            "{ini}"
        );
        let config = fs::read_to_string(dir.path().join("config")).unwrap();
        assert!(
            config.contains("[profile app]\ncredential_process = /bin/cat /"),
            "{config}"
        );
    }

    #[test]
    fn unsafe_values_leave_every_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path(), "app");
        out.write(&creds("ASIAONE")).unwrap();
        let before: Vec<_> = ["config", "credentials", "credentials.json"]
            .iter()
            .map(|n| fs::read(dir.path().join(n)).unwrap())
            .collect();
        let mut hostile = creds("ASIATWO");
        hostile.access_key_id = "ASIATWO0000000000\n[evil]\ncredential_process = /bin/sh".into();
        let e = out.write(&hostile).unwrap_err().to_string();
        assert!(
            e.starts_with("--output-dir ") && e.contains(": nothing written: AccessKeyId "),
            "{e}"
        );
        let mut hostile = creds("ASIATWO");
        hostile.session_token = SecretString::new("token\n[evil]");
        let e = out.write(&hostile).unwrap_err().to_string();
        assert!(e.contains("SessionToken") && !e.contains("evil"), "{e}");
        let after: Vec<_> = ["config", "credentials", "credentials.json"]
            .iter()
            .map(|n| fs::read(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(before, after);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
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
