//! The cluster operator's admission policy (`policy:` in the cluster
//! config): which credential sources pods may use at all, and which role
//! ARNs each namespace may assume.
//!
//! ```yaml
//! policy:
//!   allowedSources: [web-identity]          # default: all three
//!   roles:                                  # absent: any role, anywhere
//!   - namespaces: [payments, "team-*"]      # names or globs
//!     namespaceSelector:
//!       matchLabels: {tempcreds.io/team: payments}
//!     roleArns: ["arn:aws:iam::123456789012:role/payments-*"]
//! ```
//!
//! With `roles` present, a pod's role ARN and every chained role ARN must
//! match a `roleArns` glob of a rule that applies to the pod's namespace. A
//! rule applies when the namespace matches one of its `namespaces` (when
//! given) and its `namespaceSelector` (when given); each rule names at least
//! one of the two. Globs know `*` (any run of characters except `/`), `**`
//! (any run of characters, `/` included) and `?` (one character except `/`):
//! see [`glob_match`].
//!
//! The policy lives in the operator's config, not in namespace annotations,
//! so namespace owners cannot widen it. Namespace labels are not in the
//! admission request: the server reads them from its namespace cache and
//! passes them to the pure [`crate::mutate::mutate`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use tempcreds_core::Source;
use tempcreds_core::annotations as a;
use tempcreds_core::spec::InjectionSpec;

/// Labels of a namespace.
pub type Labels = BTreeMap<String, String>;

/// The `policy:` section of the cluster config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Sources pods may use (default: all). The secure setting is
    /// `[web-identity]`: no long-term keys in Secrets, no node credentials.
    #[serde(default = "all_sources")]
    pub allowed_sources: Vec<Source>,
    /// Which role ARNs each namespace may use; `None`: any role anywhere.
    #[serde(default)]
    pub roles: Option<Vec<RoleRule>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_sources: all_sources(),
            roles: None,
        }
    }
}

fn all_sources() -> Vec<Source> {
    Source::ALL.to_vec()
}

/// One rule of `policy.roles`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRule {
    /// Namespace names or globs.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces by label.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// Role ARN globs allowed in those namespaces.
    pub role_arns: Vec<String>,
}

/// A label selector (`matchLabels` only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Every label must be present with this value; empty matches all.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl RoleRule {
    fn applies_to(&self, namespace: &str, labels: &Labels) -> bool {
        let by_name = self
            .namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| glob_match(p, namespace)));
        let by_label = self.namespace_selector.as_ref().is_none_or(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
        });
        by_name && by_label
    }
}

impl Policy {
    /// Every problem, each naming its field (`policy.roles[1].roleArns`).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.allowed_sources.is_empty() {
            errors.push(
                "policy.allowedSources: is empty, which refuses every pod; \
                 accepted: a list of web-identity, secret, ambient"
                    .to_owned(),
            );
        }
        for (i, rule) in self.roles.iter().flatten().enumerate() {
            let field = format!("policy.roles[{i}]");
            if rule.namespaces.is_none() && rule.namespace_selector.is_none() {
                errors.push(format!(
                    "{field}: names neither namespaces nor namespaceSelector; \
                     write namespaces: [\"*\"] for every namespace"
                ));
            }
            if let Some(list) = &rule.namespaces {
                if list.is_empty() {
                    errors.push(format!(
                        "{field}.namespaces: is empty, so the rule applies nowhere"
                    ));
                }
                for n in list.iter().filter(|n| n.trim().is_empty()) {
                    errors.push(format!(
                        "{field}.namespaces: {n:?} is not a namespace name or glob"
                    ));
                }
            }
            if rule.role_arns.is_empty() {
                errors.push(format!(
                    "{field}.roleArns: is empty; list role ARN globs such as \
                     arn:aws:iam::123456789012:role/team-a-*"
                ));
            }
            for arn in &rule.role_arns {
                if !arn.starts_with("arn:") || arn.chars().any(char::is_whitespace) {
                    errors.push(format!(
                        "{field}.roleArns: {arn:?} is not a role ARN glob such as \
                         arn:aws:iam::123456789012:role/team-a-*"
                    ));
                }
            }
        }
        errors
    }

    /// Whether deciding needs the namespace's labels.
    pub fn needs_namespace_labels(&self) -> bool {
        self.roles
            .iter()
            .flatten()
            .any(|r| r.namespace_selector.is_some())
    }

    /// Checks what `spec` asks for against the policy, for a pod in
    /// `namespace` with `labels`; the error names the rule set, the value
    /// and the namespace.
    pub fn check(
        &self,
        spec: &InjectionSpec,
        namespace: &str,
        labels: &Labels,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        let applicable: Option<Vec<(usize, &RoleRule)>> = self.roles.as_ref().map(|rules| {
            rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.applies_to(namespace, labels))
                .collect()
        });
        for profile in &spec.profiles {
            if !self.allowed_sources.contains(&profile.source) {
                problems.push(format!(
                    "{}={} is not allowed by the cluster's policy (policy.allowedSources: {})",
                    profile.annotation(a::SOURCE),
                    profile.source,
                    join(self.allowed_sources.iter().map(ToString::to_string))
                ));
            }
            let Some(applicable) = &applicable else {
                continue;
            };
            let asked = profile
                .role_arn
                .iter()
                .map(|r| (profile.annotation(a::ROLE_ARN), r))
                .chain(
                    profile
                        .chain_role_arns
                        .iter()
                        .map(|r| (profile.annotation(a::CHAIN_ROLE_ARNS), r)),
                );
            for (annotation, arn) in asked {
                let arn = arn.to_string();
                let allowed = applicable
                    .iter()
                    .any(|(_, r)| r.role_arns.iter().any(|p| glob_match(p, &arn)));
                if allowed {
                    continue;
                }
                let mut message = format!(
                    "{annotation} {arn} is not allowed in namespace {namespace} by the cluster's policy"
                );
                if applicable.is_empty() {
                    let _ = write!(
                        message,
                        " (no rule of policy.roles applies to this namespace)"
                    );
                } else {
                    let here = applicable.iter().map(|(i, r)| {
                        format!("{} by policy.roles[{i}]", join(r.role_arns.iter().cloned()))
                    });
                    let _ = write!(
                        message,
                        " (allowed here: {})",
                        here.collect::<Vec<_>>().join("; ")
                    );
                }
                problems.push(message);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters other than `/` (also empty), `**` any run of characters, `/`
/// included, and `?` exactly one character other than `/`; everything else
/// matches itself.
///
/// `/` separates an IAM role's path from its name, so
/// `arn:aws:iam::123456789012:role/payments-*` admits `role/payments-api`
/// but not `role/payments-/OrganizationAccountAccessRole`; a rule that means
/// every path says so with `**` (`role/payments/**`). A dynamic program over
/// pattern and text (at most their product in steps), so no pattern is slow.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // The literal parts before the first and after the last wildcard match
    // only themselves: a pattern that is an ARN prefix and one `*` (the
    // usual rule) is mostly decided by two comparisons, and the dynamic
    // program only runs on what lies between. This runs for every rule at
    // every admission.
    let is_wild = |c: char| matches!(c, '*' | '?');
    let Some(first) = pattern.find(is_wild) else {
        return pattern == text;
    };
    let Some(text) = text.strip_prefix(&pattern[..first]) else {
        return false;
    };
    let pattern = &pattern[first..];
    let last = pattern.rfind(is_wild).unwrap_or(0);
    let Some(text) = text.strip_suffix(&pattern[last + 1..]) else {
        return false;
    };
    wildcard_match(&pattern[..=last], text)
}

/// [`glob_match`] of the part of a pattern from its first wildcard to its
/// last, against the text between the literal head and tail.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    enum Tok {
        Char(char),
        One,
        Star,
        DoubleStar,
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Tok::DoubleStar
            }
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Char(c),
        });
    }
    let t: Vec<char> = text.chars().collect();
    // row[j]: the tokens so far match the first j characters of the text.
    let mut row = vec![false; t.len() + 1];
    let mut next = vec![false; t.len() + 1];
    row[0] = true;
    for tok in &toks {
        for j in 0..=t.len() {
            next[j] = match tok {
                Tok::Star => row[j] || (j > 0 && next[j - 1] && t[j - 1] != '/'),
                Tok::DoubleStar => row[j] || (j > 0 && next[j - 1]),
                Tok::One => j > 0 && row[j - 1] && t[j - 1] != '/',
                Tok::Char(c) => j > 0 && row[j - 1] && t[j - 1] == *c,
            };
        }
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempcreds_core::spec::{Annotations, Decision, resolve};

    #[test]
    fn globs() {
        for (p, t) in [
            ("*", ""),
            ("*", "anything:at:all"),
            ("**", "anything/at:all"),
            (
                "arn:aws:iam::123456789012:role/**",
                "arn:aws:iam::123456789012:role/a/b/c",
            ),
            ("role/*/*", "role/path/name"),
            ("a/**/b", "a/x/y/b"),
            ("a/**/b", "a//b"),
            ("team-*", "team-a"),
            ("team-?", "team-b"),
            (
                "arn:aws:iam::123456789012:role/team-a-*",
                "arn:aws:iam::123456789012:role/team-a-reader",
            ),
            (
                "arn:aws:iam::*:role/ci",
                "arn:aws:iam::210987654321:role/ci",
            ),
            ("a*b*c", "aXbYbZc"),
            ("exact", "exact"),
        ] {
            assert!(glob_match(p, t), "{p} {t}");
        }
        for (p, t) in [
            ("team-?", "team-ab"),
            ("team-*", "xteam-a"),
            (
                "arn:aws:iam::123456789012:role/team-a-*",
                "arn:aws:iam::123456789012:role/team-b-x",
            ),
            ("exact", "exact2"),
            ("a*b", "acb-"),
            ("", "x"),
            ("*", "a/b"),
            ("role/?", "role//"),
            ("a/**/b", "a/b"),
        ] {
            assert!(!glob_match(p, t), "{p} {t}");
        }
        // Many stars against a long text stay fast.
        let long = "a".repeat(10_000);
        assert!(!glob_match("*a*a*a*a*a*b", &long));
        assert!(!glob_match("**a**a**a**a**a**b", &long));
    }

    /// Issue 12: `role/payments-*` admitted a role named
    /// OrganizationAccountAccessRole under the path `/payments-/`.
    #[test]
    fn a_star_in_a_role_glob_does_not_reach_through_the_role_path() {
        let p = policy(
            r#"
roles:
- namespaces: [payments]
  roleArns: ["arn:aws:iam::123456789012:role/payments-*"]
"#,
        );
        let none = Labels::new();
        let s = spec(&[(
            "tempcreds.io/role-arn",
            "arn:aws:iam::123456789012:role/payments-/OrganizationAccountAccessRole",
        )]);
        assert_eq!(
            p.check(&s, "payments", &none).unwrap_err(),
            "tempcreds.io/role-arn arn:aws:iam::123456789012:role/payments-/OrganizationAccountAccessRole \
             is not allowed in namespace payments by the cluster's policy (allowed here: \
             arn:aws:iam::123456789012:role/payments-* by policy.roles[0])"
        );
        let s = spec(&[(
            "tempcreds.io/role-arn",
            "arn:aws:iam::123456789012:role/payments-api",
        )]);
        assert_eq!(p.check(&s, "payments", &none), Ok(()));
        // A rule that means every path says so with `**`.
        let p = policy(
            r#"
roles:
- namespaces: [payments]
  roleArns: ["arn:aws:iam::123456789012:role/payments/**"]
"#,
        );
        let s = spec(&[(
            "tempcreds.io/role-arn",
            "arn:aws:iam::123456789012:role/payments/batch/reader",
        )]);
        assert_eq!(p.check(&s, "payments", &none), Ok(()));
    }

    /// A plain recursive reading of the glob rules, to compare with.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p {
            [] => t.is_empty(),
            ['*', '*', rest @ ..] => {
                let rest = {
                    let mut r = rest;
                    while let ['*', more @ ..] = r {
                        r = more;
                    }
                    r
                };
                (0..=t.len()).any(|k| reference(rest, &t[k..]))
            }
            ['*', rest @ ..] => (0..=t.len())
                .take_while(|&k| k == 0 || t[k - 1] != '/')
                .any(|k| reference(rest, &t[k..])),
            ['?', rest @ ..] => !t.is_empty() && t[0] != '/' && reference(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn globs_agree_with_the_reference(pattern in "[ab/*?]{0,8}", text in "[ab/]{0,8}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            proptest::prop_assert_eq!(glob_match(&pattern, &text), reference(&p, &t));
        }

        #[test]
        fn a_single_star_never_matches_a_slash(prefix in "[a-z:/-]{0,12}", tail in "\\PC{0,12}") {
            let pattern = format!("{prefix}*");
            let text = format!("{prefix}{tail}");
            proptest::prop_assert_eq!(glob_match(&pattern, &text), !tail.contains('/'));
            let pattern = format!("{prefix}**");
            proptest::prop_assert!(glob_match(&pattern, &text));
        }

        #[test]
        fn a_pattern_without_wildcards_matches_only_itself(p in "[^*?]{0,12}", t in "[^*?]{0,12}") {
            proptest::prop_assert!(glob_match(&p, &p));
            proptest::prop_assert_eq!(glob_match(&p, &t), p == t);
        }
    }

    fn spec(pairs: &[(&str, &str)]) -> InjectionSpec {
        let pod: Annotations = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        match resolve(&pod, &Annotations::new()) {
            Ok(Decision::Inject(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn policy(yaml: &str) -> Policy {
        let p: Policy = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(p.validate(), Vec::<String>::new());
        p
    }

    #[test]
    fn roles_by_namespace_name_and_label() {
        let p = policy(
            r#"
roles:
- namespaces: [payments]
  roleArns: ["arn:aws:iam::123456789012:role/payments-*"]
- namespaceSelector: {matchLabels: {team: data}}
  roleArns: ["arn:aws:iam::123456789012:role/data-*"]
"#,
        );
        let none = Labels::new();
        let data = Labels::from([("team".into(), "data".into())]);
        let s = spec(&[(
            "tempcreds.io/role-arn",
            "arn:aws:iam::123456789012:role/payments-api",
        )]);
        assert_eq!(p.check(&s, "payments", &none), Ok(()));
        let e = p.check(&s, "analytics", &data).unwrap_err();
        assert_eq!(
            e,
            "tempcreds.io/role-arn arn:aws:iam::123456789012:role/payments-api is not allowed in \
             namespace analytics by the cluster's policy (allowed here: \
             arn:aws:iam::123456789012:role/data-* by policy.roles[1])"
        );
        let e = p.check(&s, "other", &none).unwrap_err();
        assert!(e.contains("no rule of policy.roles applies"), "{e}");
        // Every chained role is checked too.
        let s = spec(&[
            (
                "tempcreds.io/role-arn",
                "arn:aws:iam::123456789012:role/data-reader",
            ),
            (
                "tempcreds.io/chain-role-arns",
                "arn:aws:iam::999999999999:role/admin",
            ),
        ]);
        let e = p.check(&s, "analytics", &data).unwrap_err();
        assert!(
            e.starts_with("tempcreds.io/chain-role-arns arn:aws:iam::999999999999:role/admin"),
            "{e}"
        );
        // Without roles, any role is allowed.
        assert_eq!(Policy::default().check(&s, "x", &none), Ok(()));
        assert!(p.needs_namespace_labels());
        assert!(!Policy::default().needs_namespace_labels());
    }

    #[test]
    fn sources() {
        let p = policy("allowedSources: [web-identity]");
        let s = spec(&[("tempcreds.io/role-arn", "arn:aws:iam::123456789012:role/x")]);
        assert_eq!(p.check(&s, "ns", &Labels::new()), Ok(()));
        let s = spec(&[
            ("tempcreds.io/inject", "true"),
            ("tempcreds.io/secret-name", "keys"),
        ]);
        let e = p.check(&s, "ns", &Labels::new()).unwrap_err();
        assert_eq!(
            e,
            "tempcreds.io/source=secret is not allowed by the cluster's policy (policy.allowedSources: web-identity)"
        );
    }

    #[test]
    fn bad_policies_name_the_field() {
        let p: Policy = serde_yaml::from_str(
            "allowedSources: []\nroles:\n- roleArns: []\n- namespaces: []\n  roleArns: [team-a]",
        )
        .unwrap();
        let e = p.validate().join("\n");
        for field in [
            "policy.allowedSources",
            "policy.roles[0]: names neither",
            "policy.roles[0].roleArns: is empty",
            "policy.roles[1].namespaces",
            "policy.roles[1].roleArns: \"team-a\"",
        ] {
            assert!(e.contains(field), "{field}: {e}");
        }
        let e = serde_yaml::from_str::<Policy>("roles: [{namespace: [a], roleArns: [x]}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("namespace"), "{e}");
        let e = serde_yaml::from_str::<Policy>("allowedSources: [node]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("web-identity"), "{e}");
    }
}
