//! STS request parameters and the limits STS puts on them.
//!
//! Each type here is validated on construction (`FromStr`), so a value that
//! exists is one STS accepts; the error names the value and what is accepted.
//! The limits are STS's own (see the AssumeRole, AssumeRoleWithWebIdentity and
//! GetSessionToken API references).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// The STS call that obtains credentials; durations are limited per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsCall {
    /// `AssumeRole`, with long-term keys, ambient credentials or a previous role.
    AssumeRole,
    /// `AssumeRoleWithWebIdentity`, with a projected service-account token.
    AssumeRoleWithWebIdentity,
    /// `GetSessionToken`, with long-term keys and no role.
    GetSessionToken,
}

/// The longest session STS grants to a role assumed with role credentials
/// (role chaining), whatever the role's MaxSessionDuration.
pub const CHAINED_SESSION_MAX: Duration = Duration::from_secs(3600);

/// Most session tags on one call.
pub const MAX_SESSION_TAGS: usize = 50;
/// Most managed policy ARNs on one call.
pub const MAX_POLICY_ARNS: usize = 10;

impl StsCall {
    /// The `DurationSeconds` range STS accepts for this call.
    pub fn duration_range(self) -> RangeInclusive<u64> {
        match self {
            StsCall::AssumeRole | StsCall::AssumeRoleWithWebIdentity => 900..=43_200,
            StsCall::GetSessionToken => 900..=129_600,
        }
    }

    /// The action name as STS spells it.
    pub fn action(self) -> &'static str {
        match self {
            StsCall::AssumeRole => "AssumeRole",
            StsCall::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
            StsCall::GetSessionToken => "GetSessionToken",
        }
    }

    /// Checks a requested session duration against this call's range.
    pub fn check_duration(self, d: Duration) -> Result<(), String> {
        let range = self.duration_range();
        if range.contains(&d.as_secs()) {
            Ok(())
        } else {
            Err(format!(
                "{}s is outside {}'s range of {}s to {}s",
                d.as_secs(),
                self.action(),
                range.start(),
                range.end()
            ))
        }
    }
}

/// Why an STS parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParamError {
    /// The parameter, as STS names it.
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

fn check_chars(
    what: &'static str,
    value: &str,
    len: RangeInclusive<usize>,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), ParamError> {
    let err = |reason: String| ParamError {
        what,
        value: value.to_owned(),
        reason,
    };
    let n = value.chars().count();
    if !len.contains(&n) {
        return Err(err(format!(
            "it is {n} characters long; {} to {} are accepted, of {allowed_text}",
            len.start(),
            len.end()
        )));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(err(format!(
            "{c:?} is not accepted; allowed are {allowed_text}"
        )));
    }
    Ok(())
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

const NAME_CHARS: &str = "letters, digits and _ + = , . @ -";

macro_rules! string_param {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_param!(
    /// `RoleSessionName`: 2–64 of `[\w+=,.@-]`; it appears in CloudTrail and in
    /// the assumed-role ARN. tempcreds keeps it the same on every refresh.
    SessionName
);

impl FromStr for SessionName {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_chars(
            "session name",
            s,
            2..=64,
            |c| is_word(c) || "+=,.@-".contains(c),
            NAME_CHARS,
        )?;
        Ok(SessionName(s.to_owned()))
    }
}

impl SessionName {
    /// Derives a valid session name from a pod name (or any text): characters
    /// STS refuses become `-`, the result is cut to 64 characters and padded
    /// to at least 2. The same input always gives the same name.
    pub fn sanitized(input: &str) -> SessionName {
        let mut s: String = input
            .chars()
            .map(|c| {
                if is_word(c) || "+=,.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        if s.is_empty() {
            s.push_str("tempcreds");
        }
        while s.len() < 2 {
            s.push('-');
        }
        SessionName(s)
    }
}

string_param!(
    /// `ExternalId`: 2–1224 of `[\w+=,.@:/-]`.
    ExternalId
);

impl FromStr for ExternalId {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_chars(
            "external ID",
            s,
            2..=1224,
            |c| is_word(c) || "+=,.@:/-".contains(c),
            "letters, digits and _ + = , . @ : / -",
        )?;
        Ok(ExternalId(s.to_owned()))
    }
}

string_param!(
    /// `SourceIdentity`: 2–64 of `[\w+=,.@-]`, not starting with `aws:`.
    SourceIdentity
);

impl FromStr for SourceIdentity {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.to_ascii_lowercase().starts_with("aws:") {
            return Err(ParamError {
                what: "source identity",
                value: s.to_owned(),
                reason: "values starting with \"aws:\" are reserved by AWS".into(),
            });
        }
        check_chars(
            "source identity",
            s,
            2..=64,
            |c| is_word(c) || "+=,.@-".contains(c),
            NAME_CHARS,
        )?;
        Ok(SourceIdentity(s.to_owned()))
    }
}

/// Characters STS accepts in tag keys and values (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`):
/// Unicode letters, digits, space separators and `_ . : / = + - @`. Space
/// separators are white space that is not a control character: a tab, a
/// newline or a carriage return is refused.
fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

const TAG_CHARS: &str = "letters, digits, spaces and _ . : / = + - @";

/// Validates a session tag key: 1–128 tag characters, not starting with `aws:`.
pub fn check_tag_key(key: &str) -> Result<(), ParamError> {
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(ParamError {
            what: "session tag key",
            value: key.to_owned(),
            reason: "keys starting with \"aws:\" are reserved by AWS".into(),
        });
    }
    check_chars("session tag key", key, 1..=128, is_tag_char, TAG_CHARS)
}

/// `input` as a session tag value: characters STS does not accept become
/// `-`, cut to 256 characters.
pub fn tag_value_sanitized(input: &str) -> String {
    input
        .chars()
        .map(|c| if is_tag_char(c) { c } else { '-' })
        .take(256)
        .collect()
}

/// A session tag, written `KEY=VALUE`: key 1–128 and value 0–256 of letters,
/// digits, spaces and `_ . : / = + - @`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionTag {
    /// The tag key.
    pub key: String,
    /// The tag value (may be empty, as STS allows).
    pub value: String,
}

impl SessionTag {
    /// Builds a tag, checking key and value.
    pub fn new(key: &str, value: &str) -> Result<SessionTag, ParamError> {
        check_tag_key(key)?;
        check_chars("session tag value", value, 0..=256, is_tag_char, TAG_CHARS)?;
        Ok(SessionTag {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl FromStr for SessionTag {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s.split_once('=').ok_or_else(|| ParamError {
            what: "session tag",
            value: s.to_owned(),
            reason: "expected KEY=VALUE".into(),
        })?;
        SessionTag::new(key, value)
    }
}

impl fmt::Display for SessionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Checks a set of session tags and transitive keys together: at most 50
/// tags, keys unique ignoring case (as STS compares them), and every
/// transitive key naming one of the tags.
pub fn check_tag_set(tags: &[SessionTag], transitive: &[String]) -> Result<(), String> {
    if tags.len() > MAX_SESSION_TAGS {
        return Err(format!(
            "{} session tags given; STS accepts at most {MAX_SESSION_TAGS}",
            tags.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        if !seen.insert(t.key.to_lowercase()) {
            return Err(format!(
                "session tag key {:?} is given twice (STS compares keys ignoring case)",
                t.key
            ));
        }
    }
    for k in transitive {
        if !seen.contains(&k.to_lowercase()) {
            return Err(format!(
                "transitive tag key {k:?} is not one of the session tags; \
                 a transitive key must name a tag passed on the same call"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn session_names_follow_sts_rules() {
        assert!("my-pod-7d9f".parse::<SessionName>().is_ok());
        assert!("a".parse::<SessionName>().is_err());
        let e = "bad name".parse::<SessionName>().unwrap_err().to_string();
        assert!(e.contains("\"bad name\"") && e.contains("' '"), "{e}");
        assert!("x".repeat(65).parse::<SessionName>().is_err());
    }

    #[test]
    fn sanitizes_pod_names() {
        assert_eq!(SessionName::sanitized("web-7d9f8").as_str(), "web-7d9f8");
        assert_eq!(SessionName::sanitized("a").as_str(), "a-");
        assert_eq!(SessionName::sanitized("").as_str(), "tempcreds");
        assert_eq!(SessionName::sanitized("ns/pod:1").as_str(), "ns-pod-1");
        assert_eq!(SessionName::sanitized(&"p".repeat(100)).as_str().len(), 64);
    }

    #[test]
    fn durations_per_call() {
        let d = Duration::from_secs(50_000);
        assert!(StsCall::AssumeRole.check_duration(d).is_err());
        assert!(StsCall::GetSessionToken.check_duration(d).is_ok());
        let e = StsCall::AssumeRole
            .check_duration(Duration::from_secs(60))
            .unwrap_err();
        assert!(e.contains("900s to 43200s"), "{e}");
    }

    #[test]
    fn tags_and_transitive_keys() {
        let t: SessionTag = "team=payments".parse().unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("team", "payments"));
        assert!("team=".parse::<SessionTag>().is_ok());
        assert!("=x".parse::<SessionTag>().is_err());
        assert!("aws:x=y".parse::<SessionTag>().is_err());
        assert!("noequals".parse::<SessionTag>().is_err());
        assert!("k=a;b".parse::<SessionTag>().is_err());
        assert!("k=a b\u{a0}c".parse::<SessionTag>().is_ok());
        for bad in ["k=a\nb", "k=a\tb", "k=a\rb", "k\t=v", "k=\u{85}"] {
            let e = bad.parse::<SessionTag>().unwrap_err().to_string();
            assert!(
                e.contains("is not accepted; allowed are letters, digits, spaces"),
                "{e}"
            );
        }
        assert_eq!(tag_value_sanitized("a\tb\nc d"), "a-b-c d");
        let tags = vec![t.clone(), "Team=x".parse().unwrap()];
        assert!(check_tag_set(&tags, &[]).unwrap_err().contains("twice"));
        assert!(check_tag_set(std::slice::from_ref(&t), &["team".into()]).is_ok());
        assert!(check_tag_set(&[t], &["other".into()]).is_err());
    }

    #[test]
    fn external_id_and_source_identity() {
        assert!("arn:aws:x/y".parse::<ExternalId>().is_ok());
        assert!("a".parse::<ExternalId>().is_err());
        assert!("alice@example.com".parse::<SourceIdentity>().is_ok());
        assert!("aws:x".parse::<SourceIdentity>().is_err());
    }

    proptest! {
        #[test]
        fn sanitized_names_are_always_valid(s in "\\PC*") {
            let n = SessionName::sanitized(&s);
            prop_assert!(n.as_str().parse::<SessionName>().is_ok());
            prop_assert_eq!(n, SessionName::sanitized(&s));
        }
    }
}
