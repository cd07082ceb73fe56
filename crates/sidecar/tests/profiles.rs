//! Several profiles in one sidecar (`--and-profile NAME FLAGS...`) against
//! moto's real STS server: one call chain per profile per refresh (its
//! request recorder), a section per profile read back by the AWS CLI
//! (`--profile`) and boto3 (`AWS_PROFILE`) from the credentials file and
//! through `credential_process`, each profile at its own endpoint path, and a
//! profile that keeps failing never holding back the others.

mod common;

use std::collections::BTreeMap;

use common::*;
use tempcreds_tests::{Moto, free_port};

const LONG_TERM_ID: &str = "AKIALONGTERMEXAMPLE";
const LONG_TERM_SECRET: &str = "longTermSecretKeyValue/Example+123";

/// The INI sections of `text` and their `aws_access_key_id`.
fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
        } else if let (Some(name), Some(id)) = (&current, line.strip_prefix("aws_access_key_id = "))
        {
            out.insert(name.clone(), id.to_owned());
        }
    }
    out
}

#[test]
fn each_profile_gets_its_own_chain_section_and_endpoint_path() {
    let moto = Moto::start();
    let w = World::new();
    let token = w.token(&fake_jwt("system:serviceaccount:team-a:app"));
    let token_file = token.path("token").display().to_string();
    let keys = w.keys(LONG_TERM_ID, LONG_TERM_SECRET);
    let (reader, writer, writer_next, audit) = (
        role("reader"),
        role("writer"),
        role("writer-next"),
        role("audit"),
    );
    let mut args = web_identity_args(&reader, &token_file, &moto.url());
    args.extend(
        [
            "--session-name",
            "app",
            "--and-profile",
            "writer",
            "--source",
            "web-identity",
            "--role-arn",
            &writer,
            "--chain-role-arn",
            &writer_next,
            "--token-file",
            &token_file,
            "--session-name",
            "app",
            "--and-profile",
            "audit",
        ]
        .map(str::to_owned),
    );
    args.extend(secret_args(&keys, &moto.url(), Some(&audit)));
    args.extend(["--session-name".to_owned(), "app".to_owned()]);
    // Flags of `run` itself come before the first `--and-profile`.
    let once: Vec<String> = std::iter::once("--once".to_owned())
        .chain(args.iter().cloned())
        .collect();
    let out = w.once_with(&mut w.sidecar(&once));
    assert!(out.status.success(), "{}", stderr(&out));

    // One call chain per profile.
    let calls = moto.sts_requests();
    let mut chains: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c.action.clone(),
                c.param("RoleArn").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    chains.sort();
    let mut want = vec![
        ("AssumeRoleWithWebIdentity".to_owned(), reader.clone()),
        ("AssumeRoleWithWebIdentity".to_owned(), writer.clone()),
        ("AssumeRole".to_owned(), writer_next.clone()),
        ("AssumeRole".to_owned(), audit.clone()),
    ];
    want.sort();
    assert_eq!(chains, want);
    let chained = calls
        .iter()
        .find(|c| c.param("RoleArn") == Some(writer_next.as_str()))
        .unwrap();
    assert!(chained.signing_key_id().unwrap().starts_with("ASIA"));
    let with_keys = calls
        .iter()
        .find(|c| c.param("RoleArn") == Some(audit.as_str()))
        .unwrap();
    assert_eq!(with_keys.signing_key_id(), Some(LONG_TERM_ID));

    // A section per profile, and a credential_process profile per profile.
    let ini = w.credentials();
    let ids = sections(&ini);
    assert_eq!(
        ids.keys().collect::<Vec<_>>(),
        ["audit", "default", "writer"]
    );
    assert!(!ini.contains(LONG_TERM_ID), "long-term keys never written");
    let credentials = w.out.join("credentials");
    let config = w.out.join("config");
    let arn = |name: &str| format!("arn:aws:sts::{ACCOUNT}:assumed-role/{name}/app");
    assert_eq!(aws_cli_caller_arn(&moto, &credentials, None), arn("reader"));
    assert_eq!(
        aws_cli_caller_arn_as(&moto, &credentials, None, Some("writer")),
        arn("writer-next")
    );
    assert_eq!(
        boto3_caller_arn_as(&moto, &credentials, None, Some("audit")),
        arn("audit")
    );
    // credential_process: the config file alone (no credentials file).
    let none = w.path("no-credentials");
    std::fs::write(&none, "").unwrap();
    assert_eq!(
        boto3_caller_arn_as(&moto, &none, Some(&config), Some("writer")),
        arn("writer-next")
    );
    assert_eq!(
        aws_cli_caller_arn_as(&moto, &none, Some(&config), Some("audit")),
        arn("audit")
    );

    // A long-running sidecar adopts all three (no new calls) and serves each
    // at its own path.
    let before = moto.sts_requests().len();
    let port = free_port();
    let mut served = args.clone();
    let at = served.iter().position(|a| a == "--and-profile").unwrap();
    served.splice(
        at..at,
        ["--endpoint-addr".to_owned(), format!("127.0.0.1:{port}")],
    );
    let mut sidecar = w.spawn(&mut w.sidecar(&served));
    sidecar.wait_ready();
    assert_eq!(moto.sts_requests().len(), before, "{}", sidecar.logs());
    let token = std::fs::read_to_string(w.out.join("endpoint-token")).unwrap();
    for (path, profile) in [
        ("/v1/credentials", "default"),
        ("/v1/credentials/writer", "writer"),
        ("/v1/credentials/audit", "audit"),
    ] {
        let (status, body) = http_get(port, path, Some(&token));
        assert_eq!(status, 200, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["AccessKeyId"].as_str(),
            Some(ids[profile].as_str()),
            "{path}"
        );
    }
    let (status, _) = http_get(port, "/v1/credentials/nobody", Some(&token));
    assert_eq!(status, 404);
    // Each profile's expiry on /metrics, under its own label, once.
    let (_, metrics) = sidecar.get("/metrics", None).unwrap();
    for profile in ["default", "writer", "audit"] {
        let series =
            format!("tempcreds_sidecar_credentials_expires_in_seconds{{profile=\"{profile}\"}} ");
        assert_eq!(
            metrics.matches(&series).count(),
            1,
            "{series} in\n{metrics}"
        );
    }
    assert_eq!(
        metrics
            .matches("# TYPE tempcreds_sidecar_credentials_expires_in_seconds gauge")
            .count(),
        1,
        "{metrics}"
    );
}

#[test]
fn a_failing_profile_never_holds_back_the_others() {
    let moto = Moto::start();
    let w = World::new();
    let token = w.token(&fake_jwt("system:serviceaccount:team-a:app"));
    let token_file = token.path("token").display().to_string();
    // The second profile's keys are not there yet: every attempt fails.
    let missing = w.path("later");
    std::fs::create_dir_all(&missing).unwrap();
    let mut args = web_identity_args(&role("reader"), &token_file, &moto.url());
    args.extend(
        [
            "--and-profile",
            "keys",
            "--source",
            "secret",
            "--access-key-id-file",
            &missing.join("aws_access_key_id").display().to_string(),
            "--secret-access-key-file",
            &missing.join("aws_secret_access_key").display().to_string(),
            "--role-arn",
            &role("keys"),
        ]
        .map(str::to_owned),
    );
    let sidecar = w.spawn(&mut w.sidecar(&args));
    wait_until(
        "the first profile's credentials",
        std::time::Duration::from_secs(60),
        || {
            sections(&std::fs::read_to_string(w.out.join("credentials")).unwrap_or_default())
                .contains_key("default")
        },
    );
    wait_until(
        "a failed attempt of the second profile",
        std::time::Duration::from_secs(60),
        || sidecar.logs().contains("refreshing credentials failed"),
    );
    let logs = sidecar.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("refreshing credentials failed")
                && l.contains("\"profile\":\"keys\"")),
        "the failure names its profile:\n{logs}"
    );
    assert_eq!(moto.actions(), ["AssumeRoleWithWebIdentity"]);
    assert_eq!(
        sections(&w.credentials()).keys().collect::<Vec<_>>(),
        ["default"]
    );
    // Not ready until every profile has credentials.
    assert_eq!(sidecar.probe("/readyz"), Some(503));

    // The keys arrive (as the kubelet writes a Secret volume): the watch
    // wakes the failing profile, the other is not called again.
    let _keys = KubeletDir::new(
        missing,
        &[
            ("aws_access_key_id", LONG_TERM_ID),
            ("aws_secret_access_key", LONG_TERM_SECRET),
        ],
    );
    wait_until(
        "both profiles written",
        std::time::Duration::from_secs(60),
        || sections(&w.credentials()).len() == 2,
    );
    wait_until("ready", std::time::Duration::from_secs(60), || {
        sidecar.probe("/readyz") == Some(200)
    });
    assert_eq!(moto.actions(), ["AssumeRoleWithWebIdentity", "AssumeRole"]);
    assert_no_secrets(&sidecar.logs(), &[LONG_TERM_SECRET]);
}
