//! Temporary credentials and the formats the sidecar writes them in.
//!
//! Secret parts are held in [`SecretString`], whose `Debug` and `Display`
//! never show the value; the only way to read it is [`SecretString::expose`],
//! which the output writers call.
//!
//! Nothing from STS is written as it came: [`Credentials::validate`] checks
//! an answer as a whole (the access key ID's shape, secret key and session
//! token made of visible ASCII only and of bounded length, an expiry far
//! enough ahead) before the sidecar writes or serves anything, and the INI
//! writers refuse, rather than write, any value that could end a line, start
//! a section or be trimmed by a reader ([`check_ini_value`]). Errors name the
//! field and what is accepted, never a secret value.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

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

    /// The AWS shared-credentials file (INI), one profile. Refuses (writes
    /// nothing) when the profile or a value could not be read back as
    /// exactly that one profile with exactly these values
    /// ([`check_ini_value`]).
    pub fn to_ini(&self, profile: &str) -> Result<String, CredentialsError> {
        check_section_name("profile", profile)?;
        check_ini_value("AccessKeyId", &self.access_key_id, Shown::Value)?;
        check_ini_value(
            "SecretAccessKey",
            self.secret_access_key.expose(),
            Shown::Nothing,
        )?;
        check_ini_value("SessionToken", self.session_token.expose(), Shown::Nothing)?;
        Ok(format!(
            "# Written by tempcreds. Temporary credentials, expiring {exp}; replaced before then.\n\
             [{profile}]\n\
             aws_access_key_id = {id}\n\
             aws_secret_access_key = {secret}\n\
             aws_session_token = {token}\n",
            exp = self.expiration_rfc3339(),
            id = self.access_key_id,
            secret = self.secret_access_key.expose(),
            token = self.session_token.expose(),
        ))
    }

    /// Checks credentials as STS (or a previous run) gave them, as a whole,
    /// before anything is written or served: the shape of every field
    /// ([`Credentials::check_values`]) and an expiry at least
    /// [`MIN_REMAINING`] after `now` (the caller's clock, so tests pass a
    /// fixed one). Every problem is named, by field, none by secret value.
    pub fn validate(&self, now: OffsetDateTime) -> Result<(), CredentialsError> {
        let mut problems = match self.check_values() {
            Ok(()) => Vec::new(),
            Err(e) => e.problems,
        };
        if self.expiration < now + MIN_REMAINING {
            let left = self.expiration - now;
            let when = if left.is_negative() {
                "already expired".to_owned()
            } else {
                format!("expires in {}s", left.whole_seconds())
            };
            problems.push(Problem {
                field: "Expiration",
                message: format!(
                    "{} {when}; credentials must be valid for at least {}s more \
                     (STS issues sessions of 15 minutes or longer: this answer is stale, \
                     or the node's clock is wrong)",
                    self.expiration_rfc3339(),
                    MIN_REMAINING.as_secs()
                ),
            });
        }
        CredentialsError::from_problems(problems)
    }

    /// Checks the shape of every field, whatever the time: the access key ID
    /// is 16 to 128 of `[A-Za-z0-9_]` (STS's `[\w]*`), the secret access key
    /// and session token are visible ASCII (`!` to `~`, no white space or
    /// control characters) of at most [`SECRET_ACCESS_KEY_MAX`] and
    /// [`SESSION_TOKEN_MAX`] characters.
    pub fn check_values(&self) -> Result<(), CredentialsError> {
        let mut problems = Vec::new();
        let id = &self.access_key_id;
        let n = id.chars().count();
        if !ACCESS_KEY_ID_LEN.contains(&n) {
            problems.push(Problem {
                field: "AccessKeyId",
                message: format!(
                    "{} is {n} characters long; {} to {} letters, digits and _ are accepted",
                    shown(id),
                    ACCESS_KEY_ID_LEN.start(),
                    ACCESS_KEY_ID_LEN.end()
                ),
            });
        } else if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            problems.push(Problem {
                field: "AccessKeyId",
                message: format!(
                    "{} contains {}; only letters, digits and _ are accepted",
                    shown(id),
                    describe_char(c)
                ),
            });
        }
        for (field, value, max) in [
            (
                "SecretAccessKey",
                self.secret_access_key.expose(),
                SECRET_ACCESS_KEY_MAX,
            ),
            (
                "SessionToken",
                self.session_token.expose(),
                SESSION_TOKEN_MAX,
            ),
        ] {
            let n = value.chars().count();
            if n == 0 || n > max {
                problems.push(Problem {
                    field,
                    message: format!(
                        "is {n} characters long; 1 to {max} are accepted (value not shown)"
                    ),
                });
            } else if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
                problems.push(Problem {
                    field,
                    message: format!(
                        "contains {}; only visible ASCII characters (! to ~) are accepted \
                         (value not shown)",
                        describe_char(c)
                    ),
                });
            }
        }
        CredentialsError::from_problems(problems)
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
    /// classic sidecar) instead of calling STS again. The values must pass
    /// [`Credentials::check_values`], as STS's answers must. The error names
    /// the field that is missing or malformed, never a secret value.
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
        let creds = Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: SecretString::new(field("SecretAccessKey")?),
            session_token: SecretString::new(field("SessionToken")?),
            expiration,
        };
        creds.check_values().map_err(|e| e.to_string())?;
        Ok(creds)
    }
}

/// The AWS config file pointing a profile at `credential_process`, which
/// prints `process_json` (an absolute path; botocore runs the command without
/// a shell).
/// Refuses (writes nothing) when the profile or a path could break the file's
/// lines or sections.
pub fn config_file_for_process(
    profile: &str,
    cat: &str,
    process_json: &str,
) -> Result<String, CredentialsError> {
    config_file_for_processes(&[(profile, process_json)], cat)
}

/// [`config_file_for_process`] for several profiles: one section per
/// `(profile, process_json)`, in order.
pub fn config_file_for_processes(
    profiles: &[(&str, &str)],
    cat: &str,
) -> Result<String, CredentialsError> {
    check_ini_value("credential_process command", cat, Shown::Value)?;
    let mut out = "# Written by tempcreds. SDKs run the command below whenever their cached\n\
                   # credentials near expiry, so they always see the newest ones.\n"
        .to_owned();
    for (profile, process_json) in profiles {
        check_section_name("profile", profile)?;
        check_ini_value("credential_process file", process_json, Shown::Value)?;
        let section = if *profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        out.push_str(&format!(
            "[{section}]\ncredential_process = {cat} {process_json}\n"
        ));
    }
    Ok(out)
}

/// Access key ID lengths STS documents (`AccessKeyId`: 16 to 128 of `[\w]`).
pub const ACCESS_KEY_ID_LEN: RangeInclusive<usize> = 16..=128;
/// Longest secret access key accepted (AWS's are 40 characters).
pub const SECRET_ACCESS_KEY_MAX: usize = 256;
/// Longest session token accepted. STS gives no maximum; real tokens are a
/// few hundred to a few thousand characters, larger with many session tags.
pub const SESSION_TOKEN_MAX: usize = 32 * 1024;
/// Shortest validity left that credentials must have to be written or
/// served: STS never issues sessions shorter than 15 minutes, so less means
/// a stale or forged answer (or a wrong clock).
pub const MIN_REMAINING: Duration = Duration::from_secs(30);

/// One field of credentials and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as STS names it (`AccessKeyId`, `SecretAccessKey`,
    /// `SessionToken`, `Expiration`) or the written file's part.
    pub field: &'static str,
    /// What is wrong and what is accepted; never a secret value.
    pub message: String,
}

/// Credentials that are refused: nothing is written or served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.iter().map(|p| format!("{} {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
pub struct CredentialsError {
    /// Every problem found, in field order.
    pub problems: Vec<Problem>,
}

impl CredentialsError {
    fn from_problems(problems: Vec<Problem>) -> Result<(), CredentialsError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CredentialsError { problems })
        }
    }

    fn one(field: &'static str, message: String) -> CredentialsError {
        CredentialsError {
            problems: vec![Problem { field, message }],
        }
    }

    /// The fields named, in order.
    pub fn fields(&self) -> Vec<&'static str> {
        self.problems.iter().map(|p| p.field).collect()
    }
}

/// Whether an error may show the value it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Not a secret: shown escaped and cut to 40 characters.
    Value,
    /// A secret: only its length and the offending character are named.
    Nothing,
}

/// `value` escaped (control characters and quotes as `\n`, `\u{..}`) and cut
/// to 40 characters, for messages about values that are not secret but may
/// be hostile.
pub fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let cut: String = value.chars().take(MAX).collect();
    let more = value.chars().count() > MAX;
    format!("{:?}{}", cut, if more { "…" } else { "" })
}

fn describe_char(c: char) -> String {
    format!("{c:?} (U+{:04X})", u32::from(c))
}

/// Checks a value for one `key = value` line of an INI file (the AWS
/// shared-credentials and config files) so that every reader (botocore, the
/// AWS CLI, the Rust, Go and Java SDKs) reads back exactly that value on that
/// key: it must be non-empty, and hold no control character (a `\n` or `\r`
/// would start a new line, and with it a new key or `[section]`), no white
/// space (readers trim it, and ` #`/` ;` starts a comment for some), and not
/// start with `[`.
pub fn check_ini_value(
    field: &'static str,
    value: &str,
    shown_as: Shown,
) -> Result<(), CredentialsError> {
    let what = |rest: String| {
        let v = match shown_as {
            Shown::Value => format!("{} ", shown(value)),
            Shown::Nothing => String::new(),
        };
        let hidden = match shown_as {
            Shown::Value => "",
            Shown::Nothing => " (value not shown)",
        };
        CredentialsError::one(
            field,
            format!("{v}{rest}; it cannot be written into an INI file{hidden}"),
        )
    };
    if value.is_empty() {
        return Err(what("is empty".into()));
    }
    if let Some(c) = value.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(what(format!(
            "contains {}, a control or white-space character",
            describe_char(c)
        )));
    }
    // A value always follows `key = ` on its line, so `[` in it (even
    // first) never starts a section: it is written as it is.
    Ok(())
}

/// Checks a profile name for a `[section]` header: non-empty, no control or
/// white-space characters, no `[` or `]`.
fn check_section_name(field: &'static str, name: &str) -> Result<(), CredentialsError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '[' || c == ']')
    {
        return Err(CredentialsError::one(
            field,
            format!(
                "{} is not usable as an INI section name; letters, digits, - and _ are",
                shown(name)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "ASIAEXAMPLE00000001".into(),
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
        assert!(dbg.contains("ASIAEXAMPLE00000001"));
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

    /// Reads an INI file the way botocore's `configparser` and the AWS SDKs
    /// do for these files: `#`/`;` comment lines, `[section]` headers,
    /// `key = value` split at the first `=` with both sides trimmed, and a
    /// line starting with white space continuing the previous value.
    fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.split(['\n', '\r']) {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                let last = sections.last_mut().and_then(|s| s.1.last_mut());
                last.expect("a continuation line after a key")
                    .1
                    .push_str(trimmed);
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

    fn creds_with(id: &str, secret: &str, token: &str) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: SecretString::new(secret),
            session_token: SecretString::new(token),
            expiration: datetime!(2026-01-02 03:04:05 UTC),
        }
    }

    const NOW: OffsetDateTime = datetime!(2026-01-02 02:00:00 UTC);

    #[test]
    fn a_profile_injected_through_the_access_key_id_is_refused_before_writing() {
        let hostile = "ASIAAAAAAAAAAAAAAAAA\n[evil]\ncredential_process = /bin/sh -c id";
        let c = creds_with(hostile, "very-secret", "token-secret");
        let e = c.validate(NOW).unwrap_err();
        assert_eq!(e.fields(), ["AccessKeyId"]);
        let text = e.to_string();
        assert!(
            text.starts_with("AccessKeyId \"ASIAAAAAAAAAAAAAAAAA\\n[evil]"),
            "{text}"
        );
        assert!(
            text.contains("only letters, digits and _ are accepted"),
            "{text}"
        );
        // The writer refuses it by itself too.
        let e = c.to_ini("default").unwrap_err().to_string();
        assert!(
            e.contains("AccessKeyId") && e.contains("'\\n' (U+000A)"),
            "{e}"
        );
    }

    /// Found by the credential_files fuzz target: a session token
    /// starting with `[` passed the answer check but the writer refused it.
    /// After `key = ` a `[` starts no section: it is written and read back.
    #[test]
    fn a_value_starting_with_a_bracket_is_written_and_read_back() {
        let c = creds_with("ASIAAAAAAAAAAAAAAAAA", "[secret", "[token]");
        c.validate(NOW).unwrap();
        let ini = c.to_ini("default").unwrap();
        let sections = parse_ini(&ini);
        assert_eq!(sections.len(), 1, "{ini}");
        assert_eq!(
            sections[0].1,
            [
                (
                    "aws_access_key_id".to_owned(),
                    "ASIAAAAAAAAAAAAAAAAA".to_owned()
                ),
                ("aws_secret_access_key".to_owned(), "[secret".to_owned()),
                ("aws_session_token".to_owned(), "[token]".to_owned()),
            ]
        );
    }

    #[test]
    fn hostile_secrets_are_refused_without_showing_them() {
        for (secret, token, field) in [
            ("s3cr3t\n[evil]", "tok3n-value", "SecretAccessKey"),
            (
                "s3cr3t-value",
                "tok3n\r\ncredential_process=x",
                "SessionToken",
            ),
            ("s3cr3t value", "tok3n-value", "SecretAccessKey"),
            ("s3cr3t-value", "tok3n\u{7f}", "SessionToken"),
            ("s3cr3t-value", "tok3n-välue", "SessionToken"),
            ("s3cr3t-value", "", "SessionToken"),
        ] {
            let c = creds_with("ASIAAAAAAAAAAAAAAAAA", secret, token);
            let e = c.validate(NOW).unwrap_err();
            assert_eq!(e.fields(), [field], "{e}");
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("s3cr3t") && !text.contains("tok3n"),
                "{text}"
            );
            assert!(text.contains("value not shown"), "{text}");
            if let Err(e) = c.to_ini("default") {
                let text = e.to_string();
                assert!(
                    !text.contains("s3cr3t") && !text.contains("tok3n"),
                    "{text}"
                );
            }
        }
        let long = "x".repeat(SESSION_TOKEN_MAX + 1);
        let e = creds_with("ASIAAAAAAAAAAAAAAAAA", "s", &long)
            .validate(NOW)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("is 32769 characters long; 1 to 32768"),
            "{e}"
        );
    }

    #[test]
    fn expired_or_nearly_expired_credentials_are_refused() {
        let mut c = creds_with("ASIAAAAAAAAAAAAAAAAA", "secret", "token");
        assert!(c.validate(NOW).is_ok());
        c.expiration = NOW - time::Duration::hours(1);
        let e = c.validate(NOW).unwrap_err().to_string();
        assert_eq!(
            e,
            "Expiration 2026-01-02T01:00:00Z already expired; credentials must be valid for at \
             least 30s more (STS issues sessions of 15 minutes or longer: this answer is stale, \
             or the node's clock is wrong)"
        );
        c.expiration = NOW + time::Duration::seconds(29);
        let e = c.validate(NOW).unwrap_err().to_string();
        assert!(e.contains("expires in 29s"), "{e}");
        c.expiration = NOW + time::Duration::seconds(30);
        assert!(c.validate(NOW).is_ok());
        // Shape problems and the expiry are reported together.
        c.access_key_id = "short".into();
        c.expiration = NOW;
        assert_eq!(
            c.validate(NOW).unwrap_err().fields(),
            ["AccessKeyId", "Expiration"]
        );
    }

    #[test]
    fn access_key_ids_follow_sts_pattern() {
        for ok in [
            "ASIA0123456789ABCDEF",
            "AKIA_abc_0123456789",
            &"A".repeat(128),
        ] {
            assert!(creds_with(ok, "s", "t").check_values().is_ok(), "{ok}");
        }
        for bad in [
            "ASIA012345678",
            "ASIA-0123456789ABCDEF",
            &"A".repeat(129),
            "",
        ] {
            assert!(creds_with(bad, "s", "t").check_values().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_config_file_refuses_hostile_profiles_and_paths() {
        assert!(config_file_for_process("a]\n[b", "/bin/cat", "/x").is_err());
        let e = config_file_for_process("app", "/bin/cat", "/x\ncredential_process = /bin/sh")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credential_process file") && e.contains("\\n"),
            "{e}"
        );
        assert!(creds().to_ini("").is_err());
    }

    #[test]
    fn process_json_with_hostile_values_is_not_adopted() {
        let mut c = creds();
        c.access_key_id = "ASIAEXAMPLE00000001\n[evil]".into();
        let e = Credentials::from_process_json(&c.to_process_json()).unwrap_err();
        assert!(e.contains("AccessKeyId"), "{e}");
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[A-Z0-9]{16,24}",
            "[ -~]{1,40}",
            "[A-Za-z0-9+/=\\[\\]\n\r\t #;:\u{0}\u{85}\u{2028}]{0,40}",
        ]
    }

    proptest! {
        /// Arbitrary strings in every field: refused, or written as exactly
        /// one profile holding exactly those values (and valid answers are
        /// always writable).
        #[test]
        fn written_ini_reads_back_as_one_profile_with_the_same_values(
            id in field(), secret in field(), token in field(),
            profile in prop_oneof![Just("default".to_owned()), "[a-z0-9_-]{1,12}", any::<String>()],
        ) {
            let c = creds_with(&id, &secret, &token);
            let valid = c.validate(NOW).is_ok();
            match c.to_ini(&profile) {
                Ok(ini) => {
                    let sections = parse_ini(&ini);
                    prop_assert_eq!(sections.len(), 1, "{}", ini);
                    prop_assert_eq!(&sections[0].0, &profile);
                    let expected = vec![
                        ("aws_access_key_id".to_owned(), id.clone()),
                        ("aws_secret_access_key".to_owned(), secret.clone()),
                        ("aws_session_token".to_owned(), token.clone()),
                    ];
                    prop_assert_eq!(&sections[0].1, &expected);
                }
                Err(e) => {
                    prop_assert!(!valid || profile.is_empty() || profile.contains(|c: char| c.is_whitespace() || c.is_control() || c == '[' || c == ']'), "{}", e);
                    let text = e.to_string();
                    prop_assert!(secret.len() < 8 || id.contains(&secret) || profile.contains(&secret) || !text.contains(&secret));
                    prop_assert!(token.len() < 8 || id.contains(&token) || profile.contains(&token) || !text.contains(&token));
                }
            }
            if valid {
                let back = Credentials::from_process_json(&c.to_process_json());
                prop_assert_eq!(back.ok(), Some(c.clone()));
                let v: serde_json::Value = serde_json::from_str(&c.to_container_json()).unwrap();
                prop_assert_eq!(v["Token"].as_str(), Some(token.as_str()));
            }
        }
    }

    #[test]
    fn expiration_is_utc_with_z() {
        assert_eq!(creds().expiration_rfc3339(), "2026-01-02T02:04:05Z");
    }

    #[test]
    fn formats() {
        let ini = creds().to_ini("prod").unwrap();
        assert!(ini.contains("[prod]\naws_access_key_id = ASIAEXAMPLE00000001\n"));
        assert!(ini.contains("aws_secret_access_key = very-secret\n"));
        assert!(ini.contains("aws_session_token = token-secret\n"));
        let v: serde_json::Value = serde_json::from_str(&creds().to_process_json()).unwrap();
        assert_eq!(v["Version"], 1);
        assert_eq!(v["Expiration"], "2026-01-02T02:04:05Z");
        assert_eq!(v["SessionToken"], "token-secret");
        let v: serde_json::Value = serde_json::from_str(&creds().to_container_json()).unwrap();
        assert_eq!(v["Token"], "token-secret");
        let back = Credentials::from_process_json(&creds().to_process_json()).unwrap();
        assert_eq!(back.access_key_id, "ASIAEXAMPLE00000001");
        assert_eq!(back.session_token.expose(), "token-secret");
        assert_eq!(back.expiration_rfc3339(), "2026-01-02T02:04:05Z");
        let cfg = config_file_for_process("prod", "/bin/cat", "/x/credentials.json").unwrap();
        assert!(
            cfg.contains("[profile prod]\ncredential_process = /bin/cat /x/credentials.json\n")
        );
    }
}
