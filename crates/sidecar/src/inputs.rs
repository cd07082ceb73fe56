//! The files the sidecar authenticates with: the projected service-account
//! token and the long-term keys from a Secret.
//!
//! They are read afresh on every attempt (the kubelet replaces them in place
//! by swapping a `..data` symlink), never cached. [`fingerprint`] tells the
//! refresh loop whether a file event actually changed them.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use tempcreds_core::{SecretString, SidecarConfig, Source};

/// A credential input file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("--{flag} {}: cannot read it ({source}){hint}", path.display())]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
        /// A suggestion for common cases, starting with "; ".
        hint: &'static str,
    },
    /// The file holds nothing usable.
    #[error("--{flag} {}: {problem}", path.display())]
    Invalid {
        /// The flag naming the file.
        flag: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong with the contents (never the contents).
        problem: &'static str,
    },
}

/// Long-term keys read from their files.
#[derive(Debug)]
pub struct LongTermKeys {
    /// The access key ID.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

fn read(flag: &'static str, path: &Path) -> Result<String, InputError> {
    let bytes = std::fs::read(path).map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => {
                "; the volume is not mounted at that path, or the Secret or token projection lacks that key"
            }
            io::ErrorKind::PermissionDenied => {
                "; the sidecar's user may not read it (check the volume's defaultMode and fsGroup)"
            }
            _ => "",
        };
        InputError::Read {
            flag,
            path: path.to_owned(),
            source,
            hint,
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|_| InputError::Invalid {
        flag,
        path: path.to_owned(),
        problem: "it is not UTF-8 text",
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InputError::Invalid {
            flag,
            path: path.to_owned(),
            problem: "it is empty",
        });
    }
    Ok(trimmed.to_owned())
}

/// Reads the projected service-account token (surrounding white space removed).
pub fn read_token(path: &Path) -> Result<SecretString, InputError> {
    let token = read("token-file", path)?;
    if token.chars().any(char::is_whitespace) || token.split('.').count() != 3 {
        return Err(InputError::Invalid {
            flag: "token-file",
            path: path.to_owned(),
            problem: "it is not a JWT (three dot-separated parts); expected a projected service-account token",
        });
    }
    Ok(SecretString::new(token))
}

/// Reads the long-term keys (surrounding white space removed: Secrets are
/// often created from files ending in a newline).
pub fn read_keys(id_path: &Path, secret_path: &Path) -> Result<LongTermKeys, InputError> {
    let access_key_id = read("access-key-id-file", id_path)?;
    if !access_key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(InputError::Invalid {
            flag: "access-key-id-file",
            path: id_path.to_owned(),
            problem: "it is not an access key ID (letters and digits, like AKIA...)",
        });
    }
    let secret = read("secret-access-key-file", secret_path)?;
    if secret.chars().any(char::is_whitespace) {
        return Err(InputError::Invalid {
            flag: "secret-access-key-file",
            path: secret_path.to_owned(),
            problem: "it contains white space inside; expected one secret access key",
        });
    }
    Ok(LongTermKeys {
        access_key_id,
        secret_access_key: SecretString::new(secret),
    })
}

/// The input files of `config`'s source: the token file, or both key files.
pub fn files(config: &SidecarConfig) -> Vec<PathBuf> {
    match config.source {
        Source::WebIdentity => config.token_file.iter().cloned().collect(),
        Source::Secret => config
            .access_key_id_file
            .iter()
            .chain(&config.secret_access_key_file)
            .cloned()
            .collect(),
        Source::Ambient => Vec::new(),
    }
}

/// A hash of the input files' current contents (a missing file hashes as
/// missing), to tell a real change from an unrelated directory event. The
/// hash stays in memory and is never logged.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_trimmed_and_must_look_like_a_jwt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "aaa.bbb.ccc\n").unwrap();
        assert_eq!(read_token(&p).unwrap().expose(), "aaa.bbb.ccc");
        std::fs::write(&p, "\n").unwrap();
        let e = read_token(&p).unwrap_err().to_string();
        assert!(e.contains("--token-file") && e.contains("empty"), "{e}");
        std::fs::write(&p, "not-a-jwt").unwrap();
        let e = read_token(&p).unwrap_err().to_string();
        assert!(e.contains("JWT") && !e.contains("not-a-jwt"), "{e}");
        let e = read_token(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--token-file") && e.contains("not mounted"),
            "{e}"
        );
        let e = read_token(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }

    #[test]
    fn keys_are_trimmed_and_errors_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        std::fs::write(&id, "AKIAEXAMPLE\n").unwrap();
        std::fs::write(&secret, "s3cr3t/value+x\n").unwrap();
        let keys = read_keys(&id, &secret).unwrap();
        assert_eq!(keys.access_key_id, "AKIAEXAMPLE");
        assert_eq!(keys.secret_access_key.expose(), "s3cr3t/value+x");
        std::fs::write(&secret, "two words").unwrap();
        let e = read_keys(&id, &secret).unwrap_err().to_string();
        assert!(
            e.contains("--secret-access-key-file") && !e.contains("words"),
            "{e}"
        );
    }

    #[test]
    fn fingerprint_follows_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        let files = vec![p.clone()];
        let missing = fingerprint(&files);
        std::fs::write(&p, "a").unwrap();
        let a = fingerprint(&files);
        assert_ne!(missing, a);
        assert_eq!(a, fingerprint(&files));
        std::fs::write(&p, "b").unwrap();
        assert_ne!(a, fingerprint(&files));
    }
}
