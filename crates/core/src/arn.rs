//! IAM role and managed-policy ARNs, parsed and validated.
//!
//! Only the forms STS accepts for the calls tempcreds makes are accepted:
//! `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME` for roles and
//! `arn:PARTITION:iam::(aws|ACCOUNT):policy/[PATH/]NAME` for managed policies.

use std::fmt;
use std::str::FromStr;

/// An AWS partition: the ARN prefix that scopes accounts, regions and
/// endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Commercial regions.
    Aws,
    /// China regions.
    AwsCn,
    /// GovCloud (US).
    AwsUsGov,
    /// US ISO regions.
    AwsIso,
    /// US ISOB regions.
    AwsIsoB,
    /// EU ISOE regions.
    AwsIsoE,
    /// US ISOF regions.
    AwsIsoF,
    /// European Sovereign Cloud.
    AwsEusc,
}

impl Partition {
    /// Every partition, in the order of [`Partition::as_str`] listings.
    pub const ALL: [Partition; 8] = [
        Partition::Aws,
        Partition::AwsCn,
        Partition::AwsUsGov,
        Partition::AwsIso,
        Partition::AwsIsoB,
        Partition::AwsIsoE,
        Partition::AwsIsoF,
        Partition::AwsEusc,
    ];

    /// The partition as written in ARNs.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
            Partition::AwsIso => "aws-iso",
            Partition::AwsIsoB => "aws-iso-b",
            Partition::AwsIsoE => "aws-iso-e",
            Partition::AwsIsoF => "aws-iso-f",
            Partition::AwsEusc => "aws-eusc",
        }
    }

    /// The partition a region belongs to, by its name prefix.
    pub fn of_region(region: &str) -> Partition {
        let prefixes = [
            ("cn-", Partition::AwsCn),
            ("us-gov-", Partition::AwsUsGov),
            ("us-isob-", Partition::AwsIsoB),
            ("us-isof-", Partition::AwsIsoF),
            ("us-iso-", Partition::AwsIso),
            ("eu-isoe-", Partition::AwsIsoE),
            ("eusc-", Partition::AwsEusc),
        ];
        prefixes
            .iter()
            .find(|(p, _)| region.starts_with(p))
            .map_or(Partition::Aws, |(_, partition)| *partition)
    }

    fn parse(s: &str) -> Option<Partition> {
        Partition::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an ARN was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} ARN {value:?}: {reason}; expected {expected}")]
pub struct ArnError {
    /// "role" or "policy".
    pub kind: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
    /// The accepted form.
    pub expected: &'static str,
}

const ROLE_FORM: &str = "arn:aws:iam::123456789012:role/NAME (or role/PATH/NAME)";
const POLICY_FORM: &str = "arn:aws:iam::123456789012:policy/NAME or arn:aws:iam::aws:policy/NAME";

/// An IAM role ARN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    raw: String,
    partition: Partition,
    account: String,
}

impl RoleArn {
    /// The partition of the role.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The 12-digit account ID owning the role.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The role's name (the part after the last `/`).
    pub fn name(&self) -> &str {
        self.raw.rsplit('/').next().unwrap_or_default()
    }

    /// The ARN as a string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// Splits `arn:PARTITION:iam::ACCOUNT:RESOURCE`, checking the fixed parts.
fn split_iam_arn<'a>(
    s: &'a str,
    kind: &'static str,
    expected: &'static str,
) -> Result<(Partition, &'a str, &'a str), ArnError> {
    let err = |reason: String| ArnError {
        kind,
        value: s.to_owned(),
        reason,
        expected,
    };
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(err(
            "it does not have the six ':'-separated parts of an ARN".into(),
        ));
    };
    if arn != "arn" {
        return Err(err("it does not start with \"arn:\"".into()));
    }
    let partition = Partition::parse(partition).ok_or_else(|| {
        let all: Vec<_> = Partition::ALL.iter().map(|p| p.as_str()).collect();
        err(format!(
            "unknown partition {partition:?} (known: {})",
            all.join(", ")
        ))
    })?;
    if service != "iam" {
        return Err(err(format!("the service is {service:?}, not \"iam\"")));
    }
    if !region.is_empty() {
        return Err(err("IAM ARNs have no region".into()));
    }
    Ok((partition, account, resource))
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an IAM `PATH/NAME` after the `role/` or `policy/` prefix.
fn check_path_and_name(rest: &str, max_name: usize) -> Result<(), String> {
    let name = rest.rsplit('/').next().unwrap_or_default();
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > max_name {
        return Err(format!("the name is longer than {max_name} characters"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
    if let Some(c) = rest.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "{c:?} is not allowed in a name (allowed: letters, digits and + = , . @ _ -)"
        ));
    }
    if rest.contains("//") {
        return Err("the path has an empty segment".into());
    }
    Ok(())
}

impl FromStr for RoleArn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ArnError {
            kind: "role",
            value: s.to_owned(),
            reason,
            expected: ROLE_FORM,
        };
        let (partition, account, resource) = split_iam_arn(s, "role", ROLE_FORM)?;
        if !is_account_id(account) {
            return Err(err(format!("the account {account:?} is not 12 digits")));
        }
        let rest = resource.strip_prefix("role/").ok_or_else(|| {
            err(format!(
                "the resource {resource:?} does not start with \"role/\""
            ))
        })?;
        check_path_and_name(rest, 64).map_err(err)?;
        Ok(RoleArn {
            raw: s.to_owned(),
            partition,
            account: account.to_owned(),
        })
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A managed IAM policy ARN (AWS-managed or customer-managed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyArn {
    raw: String,
    partition: Partition,
}

impl PolicyArn {
    /// The partition of the policy.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The ARN as a string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl FromStr for PolicyArn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ArnError {
            kind: "policy",
            value: s.to_owned(),
            reason,
            expected: POLICY_FORM,
        };
        let (partition, account, resource) = split_iam_arn(s, "policy", POLICY_FORM)?;
        if account != "aws" && !is_account_id(account) {
            return Err(err(format!(
                "the account {account:?} is neither \"aws\" nor 12 digits"
            )));
        }
        let rest = resource.strip_prefix("policy/").ok_or_else(|| {
            err(format!(
                "the resource {resource:?} does not start with \"policy/\""
            ))
        })?;
        check_path_and_name(rest, 128).map_err(err)?;
        Ok(PolicyArn {
            raw: s.to_owned(),
            partition,
        })
    }
}

impl fmt::Display for PolicyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_roles_with_and_without_paths() {
        let r: RoleArn = "arn:aws:iam::123456789012:role/app".parse().unwrap();
        assert_eq!(r.account(), "123456789012");
        assert_eq!(r.name(), "app");
        assert_eq!(r.partition(), Partition::Aws);
        let r: RoleArn = "arn:aws-cn:iam::123456789012:role/team/a/app-reader"
            .parse()
            .unwrap();
        assert_eq!(r.name(), "app-reader");
        assert_eq!(r.partition(), Partition::AwsCn);
    }

    #[test]
    fn refuses_bad_roles_naming_the_problem() {
        let cases = [
            ("arn:aws:iam::12345:role/x", "12 digits"),
            ("arn:aws:s3::123456789012:role/x", "not \"iam\""),
            ("arn:aws:iam::123456789012:user/x", "role/"),
            ("arn:aws:iam::123456789012:role/", "name is empty"),
            ("arn:foo:iam::123456789012:role/x", "unknown partition"),
            ("arn:aws:iam:us-east-1:123456789012:role/x", "no region"),
            ("role/x", "six"),
            ("arn:aws:iam::123456789012:role/a b", "not allowed"),
        ];
        for (arn, needle) in cases {
            let e = arn.parse::<RoleArn>().unwrap_err().to_string();
            assert!(e.contains(needle), "{arn}: {e}");
            assert!(e.contains(arn), "{arn}: {e}");
            assert!(e.contains("arn:aws:iam::123456789012:role/NAME"), "{e}");
        }
    }

    #[test]
    fn parses_policies() {
        assert!(
            "arn:aws:iam::aws:policy/ReadOnlyAccess"
                .parse::<PolicyArn>()
                .is_ok()
        );
        assert!(
            "arn:aws:iam::123456789012:policy/x/y"
                .parse::<PolicyArn>()
                .is_ok()
        );
        assert!(
            "arn:aws:iam::123456789012:role/x"
                .parse::<PolicyArn>()
                .is_err()
        );
    }

    #[test]
    fn maps_regions_to_partitions() {
        assert_eq!(Partition::of_region("eu-west-1"), Partition::Aws);
        assert_eq!(Partition::of_region("cn-north-1"), Partition::AwsCn);
        assert_eq!(Partition::of_region("us-gov-west-1"), Partition::AwsUsGov);
        assert_eq!(Partition::of_region("us-isob-east-1"), Partition::AwsIsoB);
        assert_eq!(Partition::of_region("us-iso-east-1"), Partition::AwsIso);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<RoleArn>();
            let _ = s.parse::<PolicyArn>();
        }
    }
}
