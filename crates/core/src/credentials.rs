//! Temporary credentials and the formats the sidecar writes them in.
//!
//! Secret parts are held in [`SecretString`], whose `Debug` and `Display`
//! never show the value; the only way to read it is [`SecretString::expose`],
//! which the output writers call.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A string that must not appear in logs, errors or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret value. Call only where it is written to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"** redacted **\"")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

/// A set of temporary AWS credentials with their expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key ID (`ASIA…` for temporary credentials). Not secret: it
    /// is logged to tell sessions apart.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token.
    pub session_token: SecretString,
    /// When STS says the credentials expire.
    pub expiration: OffsetDateTime,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expiration", &self.expiration_rfc3339())
            .finish()
    }
}

impl Credentials {
    /// The expiry in UTC as RFC 3339 ending in `Z`, with whole seconds
    /// (`2026-01-02T03:04:05Z`): the form every SDK parses (botocore fails on
    /// a missing offset, the Rust SDK on a numeric one).
    pub fn expiration_rfc3339(&self) -> String {
        let t = self
            .expiration
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(self.expiration);
        t.format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
    }

    /// The AWS shared-credentials file (INI), one profile.
    pub fn to_ini(&self, profile: &str) -> String {
        format!(
            "# Written by tempcreds. Temporary credentials, expiring {exp}; replaced before then.\n\
             [{profile}]\n\
             aws_access_key_id = {id}\n\
             aws_secret_access_key = {secret}\n\
             aws_session_token = {token}\n",
            exp = self.expiration_rfc3339(),
            id = self.access_key_id,
            secret = self.secret_access_key.expose(),
            token = self.session_token.expose(),
        )
    }

    /// The `credential_process` output: `Version` 1, keys, token and
    /// `Expiration` (without which no SDK refreshes).
    pub fn to_process_json(&self) -> String {
        serde_json::json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.expose(),
            "SessionToken": self.session_token.expose(),
            "Expiration": self.expiration_rfc3339(),
        })
        .to_string()
    }

    /// The container-credentials endpoint's answer
    /// (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
    pub fn to_container_json(&self) -> String {
        serde_json::json!({
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.expose(),
            "Token": self.session_token.expose(),
            "Expiration": self.expiration_rfc3339(),
        })
        .to_string()
    }

    /// Reads back what [`Credentials::to_process_json`] wrote: the sidecar
    /// adopts the credentials a previous run of its own left in the shared
    /// volume (after a restart, or from the run-once init container of a
    /// classic sidecar) instead of calling STS again. The error names the
    /// field that is missing or malformed, never a value.
    pub fn from_process_json(json: &str) -> Result<Credentials, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        if v["Version"] != 1 {
            return Err("Version is not 1".into());
        }
        let field = |name: &str| {
            v[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} is missing or not a string"))
        };
        let expiration = OffsetDateTime::parse(&field("Expiration")?, &Rfc3339)
            .map_err(|_| "Expiration is not an RFC 3339 time".to_owned())?;
        Ok(Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: SecretString::new(field("SecretAccessKey")?),
            session_token: SecretString::new(field("SessionToken")?),
            expiration,
        })
    }
}

/// The AWS config file pointing a profile at `credential_process`, which
/// prints `process_json` (an absolute path; botocore runs the command without
/// a shell).
pub fn config_file_for_process(profile: &str, cat: &str, process_json: &str) -> String {
    let section = if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    };
    format!(
        "# Written by tempcreds. SDKs run the command below whenever their cached\n\
         # credentials near expiry, so they always see the newest ones.\n\
         [{section}]\n\
         credential_process = {cat} {process_json}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::new("very-secret"),
            session_token: SecretString::new("token-secret"),
            expiration: datetime!(2026-01-02 03:04:05.678 +01:00),
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let dbg = format!("{:?} {}", creds(), creds().secret_access_key);
        assert!(
            !dbg.contains("very-secret") && !dbg.contains("token-secret"),
            "{dbg}"
        );
        assert!(dbg.contains("ASIAEXAMPLE"));
    }

    #[test]
    fn unreadable_process_json_names_the_field_not_the_value() {
        for (json, field) in [
            ("{", "not JSON"),
            (r#"{"Version":2}"#, "Version"),
            (
                r#"{"Version":1,"Expiration":"2026-01-02T02:04:05Z","AccessKeyId":"A","SecretAccessKey":"s3cr3t"}"#,
                "SessionToken",
            ),
            (
                r#"{"Version":1,"Expiration":"tomorrow","AccessKeyId":"A","SecretAccessKey":"s3cr3t","SessionToken":"t0k"}"#,
                "Expiration",
            ),
        ] {
            let err = Credentials::from_process_json(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
            assert!(!err.contains("s3cr3t") && !err.contains("t0k"), "{err}");
        }
    }

    #[test]
    fn expiration_is_utc_with_z() {
        assert_eq!(creds().expiration_rfc3339(), "2026-01-02T02:04:05Z");
    }

    #[test]
    fn formats() {
        let ini = creds().to_ini("prod");
        assert!(ini.contains("[prod]\naws_access_key_id = ASIAEXAMPLE\n"));
        assert!(ini.contains("aws_secret_access_key = very-secret\n"));
        assert!(ini.contains("aws_session_token = token-secret\n"));
        let v: serde_json::Value = serde_json::from_str(&creds().to_process_json()).unwrap();
        assert_eq!(v["Version"], 1);
        assert_eq!(v["Expiration"], "2026-01-02T02:04:05Z");
        assert_eq!(v["SessionToken"], "token-secret");
        let v: serde_json::Value = serde_json::from_str(&creds().to_container_json()).unwrap();
        assert_eq!(v["Token"], "token-secret");
        let back = Credentials::from_process_json(&creds().to_process_json()).unwrap();
        assert_eq!(back.access_key_id, "ASIAEXAMPLE");
        assert_eq!(back.session_token.expose(), "token-secret");
        assert_eq!(back.expiration_rfc3339(), "2026-01-02T02:04:05Z");
        let cfg = config_file_for_process("prod", "/bin/cat", "/x/credentials.json");
        assert!(
            cfg.contains("[profile prod]\ncredential_process = /bin/cat /x/credentials.json\n")
        );
    }
}
