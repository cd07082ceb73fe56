//! `tempcreds-sidecar doctor`: checks a configuration step by step and says
//! what is wrong and how to fix it.
//!
//! 1. **Token** (`web-identity`): decodes the projected token without
//!    verifying it and checks its expiry, issuer and audience.
//! 2. **Issuer**: fetches `<iss>/.well-known/openid-configuration` and its
//!    `jwks_uri` anonymously, as STS does, checks the token's `kid` is
//!    published and its signature verifies; says plainly when the issuer is
//!    not reachable from here or not public (STS must reach it publicly).
//! 3. **Policies**: the trust policy the role needs for this token, or the
//!    identity and trust policies for `secret`/`ambient` callers and chains,
//!    as JSON ready to paste.
//! 4. **STS**: `GetCallerIdentity` with the source's credentials (signed
//!    sources), each call of the chain, then `GetCallerIdentity` with the
//!    result. Errors carry the same explanations as `run`'s log lines.
//!
//! Nothing is written to the output directory, and no secret is printed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tempcreds_core::duration::format_duration;
use tempcreds_core::{SidecarConfig, Source};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{DoctorArgs, OutputFormat};
use crate::explain::{Explanation, finding};
use crate::issuer::{self, Client, Discovery, FetchFailure, Jwks, VerifyError};
use crate::policy::{self, Advice, WebIdentity};
use crate::sts::{FetchError, Sts};
use crate::token::Jwt;
use crate::{app, inputs};

/// How far a token's `iat`/`nbf` may lie in the future (clock differences).
const CLOCK_LEEWAY: i64 = 60;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Ok,
    /// Something worth knowing.
    Info,
    /// Works from here but probably not as meant (or cannot be checked).
    Warn,
    /// Will fail.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The outcome.
    pub status: Status,
    /// What was checked and seen.
    pub message: String,
    /// The likely cause, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The fix, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, message: impl Into<String>) -> Check {
        Check {
            status,
            message: message.into(),
            cause: None,
            fix: None,
        }
    }

    fn explained(status: Status, message: impl Into<String>, e: &Explanation) -> Check {
        Check {
            cause: Some(e.cause.to_owned()),
            fix: Some(e.fix.to_owned()),
            ..Check::new(status, message)
        }
    }
}

/// One step of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// `config`, `token`, `issuer`, `policies` or `sts`.
    pub id: &'static str,
    /// The heading.
    pub title: String,
    /// What was found.
    pub checks: Vec<Check>,
    /// Policies to paste (the `policies` step).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Advice>,
    /// Decoded data (the token's header and claims, the issuer's key IDs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Step {
    fn new(id: &'static str, title: impl Into<String>) -> Step {
        Step {
            id,
            title: title.into(),
            checks: Vec::new(),
            policies: Vec::new(),
            details: None,
        }
    }

    fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    /// How many checks failed.
    pub failures: usize,
    /// How many warnings.
    pub warnings: usize,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Report {
    fn new(steps: Vec<Step>) -> Report {
        let count = |s: Status| {
            steps
                .iter()
                .flat_map(|st| &st.checks)
                .filter(|c| c.status == s)
                .count()
        };
        let failures = count(Status::Fail);
        Report {
            ok: failures == 0,
            failures,
            warnings: count(Status::Warn),
            steps,
        }
    }

    /// The report for a person to read.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "{}. {}", i + 1, step.title);
            for c in &step.checks {
                let _ = writeln!(out, "   {}  {}", c.status.label(), c.message);
                if let Some(cause) = &c.cause {
                    let _ = writeln!(out, "         likely cause: {cause}");
                }
                if let Some(fix) = &c.fix {
                    let _ = writeln!(out, "         fix: {fix}");
                }
            }
            for p in &step.policies {
                let _ = writeln!(
                    out,
                    "   {} of {}: {}",
                    capitalized(p.kind),
                    p.attach_to,
                    p.reason
                );
                let json = serde_json::to_string_pretty(&p.policy).unwrap_or_default();
                for line in json.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "Result: {} ({} failed, {} warning{})",
            if self.ok { "OK" } else { "FAILED" },
            self.failures,
            self.warnings,
            if self.warnings == 1 { "" } else { "s" }
        );
        out
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Runs `tempcreds-sidecar doctor` and returns the exit code: 0 when every
/// check of every profile passed (warnings allowed), 1 when one failed, 64
/// for bad flags.
///
/// With additional profiles (`--and-profile`), each profile is checked in
/// turn: the text report has a `Profile NAME` heading per profile, the JSON
/// report is an array of reports, each with its `profile`.
pub fn run(args: DoctorArgs) -> ExitCode {
    let configs: Vec<&SidecarConfig> = std::iter::once(&args.config)
        .chain(&args.additional)
        .collect();
    let mut invalid = false;
    for cfg in &configs {
        if let Err(errors) = cfg.validate() {
            for e in &errors {
                if configs.len() > 1 {
                    eprintln!("error: profile {}: {e}", cfg.profile);
                } else {
                    eprintln!("error: {e}");
                }
            }
            invalid = true;
        }
    }
    if invalid {
        eprintln!("invalid configuration; see `tempcreds-sidecar doctor --help`");
        return ExitCode::from(app::EXIT_CONFIG);
    }
    let client = match Client::new(args.issuer_ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(app::EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(app::EXIT_FAILURE);
        }
    };
    let mut reports = Vec::new();
    for cfg in &configs {
        reports.push(runtime.block_on(diagnose(&args, cfg, &client)));
    }
    let several = configs.len() > 1;
    match (args.output, several) {
        (OutputFormat::Text, false) => print!("{}", reports[0].to_text()),
        (OutputFormat::Text, true) => {
            for (cfg, report) in configs.iter().zip(&reports) {
                println!("Profile {}\n", cfg.profile);
                print!("{}", report.to_text());
                println!();
            }
        }
        (OutputFormat::Json, false) => println!(
            "{}",
            serde_json::to_string_pretty(&reports[0]).unwrap_or_default()
        ),
        (OutputFormat::Json, true) => {
            let named: Vec<serde_json::Value> = configs
                .iter()
                .zip(&reports)
                .map(|(cfg, report)| {
                    let mut v = serde_json::to_value(report).unwrap_or_default();
                    v["profile"] = serde_json::Value::String(cfg.profile.clone());
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&named).unwrap_or_default()
            );
        }
    }
    if reports.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(app::EXIT_FAILURE)
    }
}

/// Runs every step for the profile `cfg` (`args.config` or one of
/// `args.additional`).
pub async fn diagnose(args: &DoctorArgs, cfg: &SidecarConfig, client: &Client) -> Report {
    let mut steps = vec![config_step(cfg)];
    let mut web = None;
    if cfg.source == Source::WebIdentity {
        let (token_step, jwt) = token_step(cfg.token_file.clone(), &args.token_audience);
        steps.push(token_step);
        if let Some(jwt) = &jwt {
            steps.push(issuer_step(jwt, client).await);
            if let (Some(iss), Some(sub)) = (&jwt.claims.iss, &jwt.claims.sub) {
                web = Some(WebIdentity {
                    issuer: iss.clone(),
                    audience: args.token_audience.clone(),
                    subject: sub.clone(),
                });
            }
        }
    }
    let (sts_step, caller_arn) = sts_step(cfg).await;
    let mut policies = Step::new("policies", "Policies this configuration needs");
    policies.policies = policy::advice(cfg, web.as_ref(), caller_arn.as_deref());
    if policies.policies.is_empty() {
        policies.push(Check::new(
            Status::Info,
            "no policy can be derived without a decodable token",
        ));
    }
    steps.push(policies);
    steps.push(sts_step);
    Report::new(steps)
}

fn config_step(cfg: &SidecarConfig) -> Step {
    let mut step = Step::new("config", "Configuration");
    let first = cfg.first_call();
    let mut chain = vec![format!(
        "{} {}",
        first.action(),
        cfg.role_arn
            .as_ref()
            .map_or("with the long-term keys".to_owned(), ToString::to_string)
    )];
    chain.extend(
        cfg.chain_role_arns
            .iter()
            .map(|r| format!("AssumeRole {r}")),
    );
    step.push(Check::new(
        Status::Info,
        format!("source {}: {}", cfg.source, chain.join(" -> ")),
    ));
    step.push(Check::new(
        Status::Info,
        format!(
            "session name {}, STS at {}",
            cfg.effective_session_name(),
            cfg.sts_endpoint.clone().unwrap_or_else(|| format!(
                "the {} endpoint of {}",
                cfg.sts_variant(),
                cfg.region.as_deref().unwrap_or("the SDK's region")
            ))
        ),
    ));
    if let Ok(warnings) = cfg.validate() {
        for w in warnings {
            step.push(Check::new(Status::Warn, w));
        }
    }
    step
}

fn when(ts: i64, now: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts.to_string());
    let delta = Duration::from_secs(ts.abs_diff(now));
    if ts > now {
        format!("{at} (in {})", format_duration(delta))
    } else {
        format!("{at} ({} ago)", format_duration(delta))
    }
}

/// Decodes and checks the token; returns the step and the decoded token.
fn token_step(path: Option<PathBuf>, audience: &str) -> (Step, Option<Jwt>) {
    let mut step = Step::new("token", "Service-account token");
    let Some(path) = path else {
        step.push(Check::new(Status::Fail, "--token-file is not set"));
        return (step, None);
    };
    step.title = format!("Service-account token ({})", path.display());
    let token = match inputs::read_token(&path) {
        Ok(t) => t,
        Err(e) => {
            step.push(Check::new(Status::Fail, e.to_string()));
            return (step, None);
        }
    };
    let jwt = match Jwt::decode(token.expose()) {
        Ok(j) => j,
        Err(e) => {
            step.push(Check::new(
                Status::Fail,
                format!("--token-file {}: {e}", path.display()),
            ));
            return (step, None);
        }
    };
    let (h, c) = (&jwt.header, &jwt.claims);
    step.details = Some(json!({ "header": h, "claims": c }));
    let alg_ok = matches!(
        h.alg.as_str(),
        "RS256" | "RS384" | "RS512" | "ES256" | "ES384" | "ES512"
    );
    step.push(Check::new(
        if alg_ok { Status::Ok } else { Status::Fail },
        format!(
            "decoded: alg {}, kid {}{}",
            h.alg,
            h.kid.as_deref().unwrap_or("(none)"),
            if alg_ok {
                ""
            } else {
                "; STS accepts only RSA and ECDSA signatures"
            }
        ),
    ));
    if h.kid.is_none() {
        step.push(Check::new(
            Status::Warn,
            "the header has no kid: STS can pick the key only if the issuer publishes exactly one",
        ));
    }
    match &c.iss {
        None => step.push(Check::new(
            Status::Fail,
            "no iss claim: STS cannot find the issuer",
        )),
        Some(iss) if !iss.starts_with("https://") => step.push(Check::explained(
            Status::Fail,
            format!("iss {iss} is not an https:// URL"),
            &finding::ISSUER_NOT_HTTPS,
        )),
        Some(iss) => step.push(Check::new(Status::Ok, format!("iss {iss}"))),
    }
    if c.aud.iter().any(|a| a == audience) {
        step.push(Check::new(
            Status::Ok,
            format!("aud {:?} contains {audience:?}", c.aud),
        ));
    } else {
        step.push(Check::explained(
            Status::Fail,
            format!("aud {:?} does not contain {audience:?}", c.aud),
            &finding::AUDIENCE_MISMATCH,
        ));
    }
    match (&c.sub, jwt.service_account()) {
        (Some(sub), Some((ns, sa))) => step.push(Check::new(
            Status::Ok,
            format!("sub {sub} (namespace {ns}, service account {sa})"),
        )),
        (Some(sub), None) => step.push(Check::new(
            Status::Warn,
            format!("sub {sub} does not name a Kubernetes service account"),
        )),
        (None, _) => step.push(Check::new(
            Status::Fail,
            "no sub claim: a trust policy cannot name the service account",
        )),
    }
    if let Some(pod) = c.kubernetes.as_ref().and_then(|k| k.pod.as_ref()) {
        step.push(Check::new(
            Status::Info,
            format!("bound to pod {}", pod.name),
        ));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match c.exp {
        None => step.push(Check::new(
            Status::Fail,
            "no exp claim: STS refuses tokens without an expiry",
        )),
        Some(exp) if exp <= now => step.push(Check::explained(
            Status::Fail,
            format!("expired at {}", when(exp, now)),
            &finding::TOKEN_EXPIRED,
        )),
        Some(exp) => step.push(Check::new(
            Status::Ok,
            format!("expires at {}", when(exp, now)),
        )),
    }
    for (name, value) in [("iat", c.iat), ("nbf", c.nbf)] {
        if let Some(t) = value
            && t > now + CLOCK_LEEWAY
        {
            step.push(Check::explained(
                Status::Fail,
                format!("{name} is in the future: {}", when(t, now)),
                &finding::TOKEN_NOT_YET_VALID,
            ));
        }
    }
    if let Some(iat) = c.iat {
        step.push(Check::new(
            Status::Info,
            format!("issued at {}", when(iat, now)),
        ));
    }
    (step, Some(jwt))
}

/// A failed fetch as a check: not reachable from here is a warning (STS may
/// still reach it), anything else a failure.
fn fetch_check(what: &str, e: &FetchFailure) -> Check {
    match e {
        FetchFailure::Unreachable { .. } => Check::explained(
            Status::Warn,
            format!("{what} is not reachable from here: {e}; AWS STS must reach it publicly"),
            &finding::ISSUER_UNREACHABLE,
        ),
        e if e.needs_auth() => Check::explained(
            Status::Fail,
            format!("{what}: {e}: anonymous requests are refused"),
            &finding::DISCOVERY_NEEDS_AUTH,
        ),
        e => Check::new(
            Status::Fail,
            format!("{what}: {e}; STS answers InvalidIdentityToken"),
        ),
    }
}

async fn issuer_step(jwt: &Jwt, client: &Client) -> Step {
    let mut step = Step::new("issuer", "Token issuer (what STS fetches)");
    let Some(iss) = jwt.claims.iss.as_deref() else {
        step.push(Check::new(Status::Fail, "no iss claim to check"));
        return step;
    };
    step.title = format!("Token issuer {iss} (what STS fetches)");
    if !issuer::is_public(iss) {
        step.push(Check::explained(
            Status::Warn,
            format!("{iss} is not a public address: AWS STS cannot reach it"),
            &finding::ISSUER_NOT_PUBLIC,
        ));
    }
    let url = issuer::discovery_url(iss);
    let discovery: Discovery = match client.get_json(&url).await {
        Ok(d) => d,
        Err(e) => {
            step.push(fetch_check("the discovery document", &e));
            return step;
        }
    };
    step.push(Check::new(Status::Ok, format!("fetched {url}")));
    if discovery.issuer.trim_end_matches('/') != iss.trim_end_matches('/') {
        step.push(Check::explained(
            Status::Fail,
            format!(
                "the discovery document's issuer is {}, the token's iss is {iss}",
                discovery.issuer
            ),
            &finding::ISSUER_MISMATCH,
        ));
    }
    let jwks_uri = discovery.jwks_uri.clone();
    if !jwks_uri.starts_with("https://") {
        step.push(Check::explained(
            Status::Fail,
            format!("jwks_uri {jwks_uri} is not an https:// URL"),
            &finding::ISSUER_NOT_HTTPS,
        ));
    } else if !issuer::is_public(&jwks_uri) && issuer::is_public(iss) {
        step.push(Check::explained(
            Status::Warn,
            format!("jwks_uri {jwks_uri} is not a public address: AWS STS cannot reach it"),
            &finding::ISSUER_NOT_PUBLIC,
        ));
    }
    let jwks: Jwks = match client.get_json(&jwks_uri).await {
        Ok(k) => k,
        Err(e) => {
            step.push(fetch_check("the JWKS (jwks_uri)", &e));
            return step;
        }
    };
    let kids = jwks.kids();
    step.details = Some(json!({
        "discovery_url": url,
        "discovery": discovery,
        "published_kids": kids,
    }));
    step.push(Check::new(
        Status::Ok,
        format!(
            "fetched {jwks_uri}: {} key(s), kid {:?}",
            jwks.keys.len(),
            kids
        ),
    ));
    let kid = jwt.header.kid.as_deref();
    let Some(key) = jwks.find(kid) else {
        step.push(Check::explained(
            Status::Fail,
            format!(
                "the token's kid {} is not among the published keys",
                kid.unwrap_or("(none)")
            ),
            &finding::KID_NOT_PUBLISHED,
        ));
        return step;
    };
    step.push(Check::new(
        Status::Ok,
        format!("the token's kid {} is published", kid.unwrap_or("(none)")),
    ));
    match issuer::verify(jwt, key) {
        Ok(()) => step.push(Check::new(
            Status::Ok,
            "the signature verifies with the published key",
        )),
        Err(VerifyError::Invalid | VerifyError::BadKey) => step.push(Check::explained(
            Status::Fail,
            "the signature does not verify with the published key",
            &finding::SIGNATURE_INVALID,
        )),
        Err(e @ VerifyError::Unsupported(_)) => {
            step.push(Check::new(
                Status::Info,
                format!("signature not checked: {e}"),
            ));
        }
    }
    step
}

fn sts_failure(e: &FetchError) -> Check {
    let explanation = match e {
        FetchError::Sts(f) => Some(&f.explanation),
        FetchError::Unreachable(u) => Some(&u.explanation),
        _ => None,
    };
    match explanation {
        // The message carries the explanation too (as in `run`'s logs);
        // here it is split out for reading.
        Some(x) => Check::explained(Status::Fail, short_error(e), x),
        None => Check::new(Status::Fail, e.to_string()),
    }
}

fn short_error(e: &FetchError) -> String {
    match e {
        FetchError::Sts(f) => format!("{} {}: {}: {}", f.action, f.target, f.code, f.message),
        FetchError::Unreachable(u) => format!(
            "{} {}: no answer from STS at {} ({})",
            u.action, u.target, u.endpoint, u.detail
        ),
        e => e.to_string(),
    }
}

/// The STS calls; returns the step and the source caller's ARN, if known.
async fn sts_step(cfg: &SidecarConfig) -> (Step, Option<String>) {
    let mut step = Step::new("sts", "STS calls, one by one");
    let sts = match Sts::new(cfg).await {
        Ok(s) => s,
        Err(e) => {
            step.push(Check::new(Status::Fail, e.to_string()));
            return (step, None);
        }
    };
    step.title = format!(
        "STS calls, one by one (at {}, the {} endpoint)",
        sts.endpoint(),
        sts.endpoint_kind()
    );
    let mut caller_arn = None;
    match sts.source_caller_identity().await {
        None => {}
        Some(Ok(id)) => {
            step.push(Check::new(
                Status::Ok,
                format!(
                    "GetCallerIdentity with the source's credentials ({}): {} (account {})",
                    id.access_key_id, id.arn, id.account
                ),
            ));
            caller_arn = Some(id.arn);
        }
        Some(Err(e)) => step.push(sts_failure(&e)),
    }
    let mut trace = Vec::new();
    let result = sts.fetch_traced(&mut trace).await;
    for call in &trace {
        step.push(Check::new(
            Status::Ok,
            format!(
                "{} {}: {} expiring {}",
                call.action, call.target, call.access_key_id, call.expiration
            ),
        ));
    }
    match result {
        Ok(creds) => match sts.caller_identity(&creds).await {
            Ok(id) => step.push(Check::new(
                Status::Ok,
                format!("GetCallerIdentity with the new credentials: {}", id.arn),
            )),
            Err(e) => step.push(sts_failure(&e)),
        },
        Err(e) => step.push(sts_failure(&e)),
    }
    (step, caller_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_with_their_distance_from_the_given_now() {
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(when(now - 3600, now), "2025-12-31T23:00:00Z (1h ago)");
        assert_eq!(when(now - 3601, now), "2025-12-31T22:59:59Z (1h1s ago)");
        assert_eq!(when(now + 90, now), "2026-01-01T00:01:30Z (in 1m30s)");
    }

    #[test]
    fn text_report_shows_status_cause_fix_and_policies() {
        let mut step = Step::new("token", "Token");
        step.push(Check::new(Status::Ok, "decoded"));
        step.push(Check::explained(
            Status::Fail,
            "expired",
            &finding::TOKEN_EXPIRED,
        ));
        let mut policies = Step::new("policies", "Policies");
        policies.policies.push(Advice {
            kind: "trust policy",
            attach_to: "arn:aws:iam::123456789012:role/r".into(),
            reason: "because".into(),
            policy: json!({"Version": "2012-10-17"}),
        });
        let report = Report::new(vec![step, policies]);
        assert!(!report.ok);
        assert_eq!(report.failures, 1);
        let text = report.to_text();
        assert!(
            text.contains("1. Token\n   ok    decoded\n   FAIL  expired\n"),
            "{text}"
        );
        assert!(
            text.contains("         likely cause: the token has expired"),
            "{text}"
        );
        assert!(text.contains("Trust policy of arn:aws:iam::123456789012:role/r: because"));
        assert!(
            text.contains("      {\n        \"Version\": \"2012-10-17\"\n      }"),
            "{text}"
        );
        assert!(
            text.ends_with("Result: FAILED (1 failed, 0 warnings)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["steps"][0]["checks"][1]["status"], "fail");
    }
}
