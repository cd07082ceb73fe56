//! The IAM policies a configuration needs, as JSON ready to paste (`doctor`).
//!
//! - `web-identity`: the role's trust policy, trusting the cluster's IAM OIDC
//!   provider (`arn:PARTITION:iam::ACCOUNT:oidc-provider/HOST/PATH` of the
//!   token's issuer) for `sts:AssumeRoleWithWebIdentity`, with `:aud` and
//!   `:sub` conditions naming the token's audience and service account.
//! - `secret` / `ambient` with a role: the caller's identity policy allowing
//!   `sts:AssumeRole` on the role (plus `sts:TagSession` with session tags and
//!   `sts:SetSourceIdentity` with a source identity), and the statement the
//!   role's trust policy needs for that caller.
//! - `secret` without a role: `sts:GetSessionToken`.
//! - Each `--chain-role-arn`: the previous role's identity policy and the
//!   next role's trust statement.

use serde::Serialize;
use serde_json::{Value, json};
use tempcreds_core::{RoleArn, SidecarConfig, Source};

/// What the web-identity token says, for its trust policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// The token's `iss`.
    pub issuer: String,
    /// The audience to trust.
    pub audience: String,
    /// The token's `sub`.
    pub subject: String,
}

/// A policy document and where it belongs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// `trust policy` (on a role) or `identity policy` (on the caller).
    pub kind: &'static str,
    /// The role or principal it belongs to.
    pub attach_to: String,
    /// Why it is needed.
    pub reason: String,
    /// The policy document.
    pub policy: Value,
}

/// The IAM OIDC provider's name for `issuer`: the URL without `https://` and
/// without a trailing slash. Condition keys start with it.
pub fn provider_path(issuer: &str) -> &str {
    issuer
        .strip_prefix("https://")
        .unwrap_or(issuer)
        .trim_end_matches('/')
}

/// The trust policy `role` needs to accept the token described by `web`.
pub fn web_identity_trust(role: &RoleArn, web: &WebIdentity) -> Value {
    let provider = provider_path(&web.issuer);
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {
                "Federated": format!(
                    "arn:{}:iam::{}:oidc-provider/{provider}",
                    role.partition().as_str(),
                    role.account()
                )
            },
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    format!("{provider}:aud"): web.audience,
                    format!("{provider}:sub"): web.subject,
                }
            }
        }]
    })
}

/// The IAM principal of a caller ARN: an assumed-role session becomes its
/// role (`arn:aws:sts::A:assumed-role/R/S` is `arn:aws:iam::A:role/R`; a
/// role path, if any, is not in the session ARN and must be added by hand).
pub fn principal_of(caller_arn: &str) -> String {
    let parts: Vec<&str> = caller_arn.splitn(6, ':').collect();
    if let [_, partition, "sts", _, account, resource] = parts.as_slice()
        && let Some(rest) = resource.strip_prefix("assumed-role/")
    {
        let role = rest.split('/').next().unwrap_or(rest);
        return format!("arn:{partition}:iam::{account}:role/{role}");
    }
    caller_arn.to_owned()
}

/// The actions an `AssumeRole` call needs, given what it carries.
fn assume_actions(tags: bool, source_identity: bool) -> Value {
    let mut actions = vec!["sts:AssumeRole"];
    if tags {
        actions.push("sts:TagSession");
    }
    if source_identity {
        actions.push("sts:SetSourceIdentity");
    }
    if actions.len() == 1 {
        json!("sts:AssumeRole")
    } else {
        json!(actions)
    }
}

fn identity_policy(actions: &Value, resource: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": resource }]
    })
}

fn trust_statement(actions: &Value, principal: &str, external_id: Option<&str>) -> Value {
    let mut statement = json!({
        "Effect": "Allow",
        "Principal": { "AWS": principal },
        "Action": actions,
    });
    if let Some(id) = external_id {
        statement["Condition"] = json!({ "StringEquals": { "sts:ExternalId": id } });
    }
    json!({ "Version": "2012-10-17", "Statement": [statement] })
}

/// Every policy `config` needs. `web` describes the token (web identity);
/// `caller_arn` is what `GetCallerIdentity` said for the source's
/// credentials (`secret`, `ambient`), when known.
pub fn advice(
    config: &SidecarConfig,
    web: Option<&WebIdentity>,
    caller_arn: Option<&str>,
) -> Vec<Advice> {
    let mut out = Vec::new();
    let tags = !config.effective_session_tags().is_empty();
    let source_identity = config.source_identity.is_some();
    let external_id = config.external_id.as_ref().map(ToString::to_string);
    let caller = match (config.source, caller_arn) {
        (_, Some(arn)) => principal_of(arn),
        (Source::Ambient, None) => "the principal of the default credential chain".to_owned(),
        _ => "the IAM user owning the access key".to_owned(),
    };
    match (config.source, &config.role_arn) {
        (Source::WebIdentity, Some(role)) => {
            if let Some(web) = web {
                out.push(Advice {
                    kind: "trust policy",
                    attach_to: role.to_string(),
                    reason: format!(
                        "lets the service-account token (sub {}, aud {}) assume the role",
                        web.subject, web.audience
                    ),
                    policy: web_identity_trust(role, web),
                });
            }
        }
        (Source::Secret | Source::Ambient, Some(role)) => {
            let actions = assume_actions(tags, source_identity);
            out.push(Advice {
                kind: "identity policy",
                attach_to: caller.clone(),
                reason: "lets the caller call AssumeRole on the role".into(),
                policy: identity_policy(&actions, role.as_str()),
            });
            out.push(Advice {
                kind: "trust policy",
                attach_to: role.to_string(),
                reason: "lets the caller assume the role (merge into the role's trust policy)"
                    .into(),
                policy: trust_statement(&actions, &caller, external_id.as_deref()),
            });
        }
        (Source::Secret, None) => out.push(Advice {
            kind: "identity policy",
            attach_to: caller.clone(),
            reason: "lets the IAM user call GetSessionToken (its keys must be long-term keys)"
                .into(),
            policy: identity_policy(&json!("sts:GetSessionToken"), "*"),
        }),
        (Source::WebIdentity | Source::Ambient, None) => {}
    }
    let mut previous = config.role_arn.clone();
    for (i, next) in config.chain_role_arns.iter().enumerate() {
        let Some(prev) = previous else { break };
        // Tags and a source identity travel along the chain: transitive tags
        // and the source identity need the matching permission on every hop.
        let first_assume_role = i == 0 && config.source == Source::WebIdentity;
        let hop_tags = (first_assume_role && tags) || !config.transitive_tag_keys.is_empty();
        let actions = assume_actions(hop_tags, source_identity);
        out.push(Advice {
            kind: "identity policy",
            attach_to: prev.to_string(),
            reason: format!("lets {} assume the next role of the chain", prev.name()),
            policy: identity_policy(&actions, next.as_str()),
        });
        out.push(Advice {
            kind: "trust policy",
            attach_to: next.to_string(),
            reason: format!(
                "lets {} assume it (merge into the role's trust policy)",
                prev.name()
            ),
            policy: trust_statement(&actions, prev.as_str(), external_id.as_deref()),
        });
        previous = Some(next.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn role(name: &str) -> RoleArn {
        format!("arn:aws:iam::123456789012:role/{name}")
            .parse()
            .unwrap()
    }

    #[test]
    fn web_identity_trust_policy_names_the_provider_and_conditions() {
        let web = WebIdentity {
            issuer: "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC/".into(),
            audience: "sts.amazonaws.com".into(),
            subject: "system:serviceaccount:shop:web".into(),
        };
        let p = web_identity_trust(&role("app"), &web);
        let s = &p["Statement"][0];
        assert_eq!(
            s["Principal"]["Federated"],
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"
        );
        assert_eq!(s["Action"], "sts:AssumeRoleWithWebIdentity");
        let eq = &s["Condition"]["StringEquals"];
        assert_eq!(
            eq["oidc.eks.eu-west-1.amazonaws.com/id/ABC:aud"],
            "sts.amazonaws.com"
        );
        assert_eq!(
            eq["oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub"],
            "system:serviceaccount:shop:web"
        );
    }

    #[test]
    fn secret_source_needs_assume_role_and_tag_session_with_tags() {
        let mut c = SidecarConfig::new(Source::Secret);
        c.role_arn = Some(role("app"));
        c.access_key_id_file = Some(PathBuf::from("/k/id"));
        c.pod_name_tag_key = Some("kubernetes-pod-name".into());
        let a = advice(&c, None, None);
        let stmt = &a[0].policy["Statement"][0];
        assert_eq!(stmt["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
        c.pod_name_tag_key = None;
        c.session_tags = vec!["team=a".parse().unwrap()];
        c.external_id = Some("ext-1".parse().unwrap());
        let a = advice(&c, None, Some("arn:aws:iam::111111111111:user/ci"));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].kind, "identity policy");
        assert_eq!(a[0].attach_to, "arn:aws:iam::111111111111:user/ci");
        let stmt = &a[0].policy["Statement"][0];
        assert_eq!(stmt["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
        assert_eq!(stmt["Resource"], "arn:aws:iam::123456789012:role/app");
        let trust = &a[1].policy["Statement"][0];
        assert_eq!(
            trust["Principal"]["AWS"],
            "arn:aws:iam::111111111111:user/ci"
        );
        assert_eq!(
            trust["Condition"]["StringEquals"]["sts:ExternalId"],
            "ext-1"
        );

        c.role_arn = None;
        c.session_tags.clear();
        c.external_id = None;
        let a = advice(&c, None, None);
        assert_eq!(a[0].policy["Statement"][0]["Action"], "sts:GetSessionToken");
    }

    #[test]
    fn chains_and_assumed_role_callers() {
        assert_eq!(
            principal_of("arn:aws:sts::123456789012:assumed-role/node/i-0abc"),
            "arn:aws:iam::123456789012:role/node"
        );
        let mut c = SidecarConfig::new(Source::Ambient);
        c.role_arn = Some(role("first"));
        c.chain_role_arns = vec![role("second")];
        c.source_identity = Some("alice".parse().unwrap());
        let a = advice(
            &c,
            None,
            Some("arn:aws:sts::123456789012:assumed-role/node/i-0abc"),
        );
        assert_eq!(a.len(), 4);
        assert_eq!(
            a[1].policy["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::123456789012:role/node"
        );
        assert_eq!(a[2].attach_to, "arn:aws:iam::123456789012:role/first");
        assert_eq!(
            a[3].policy["Statement"][0]["Action"],
            json!(["sts:AssumeRole", "sts:SetSourceIdentity"])
        );
    }
}
