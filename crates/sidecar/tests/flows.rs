//! Each credential source and STS flow against moto's real STS server,
//! asserting with its request recorder exactly which calls the sidecar made
//! and with which parameters, and reading the written files back with the
//! AWS CLI and boto3.

mod common;

use common::*;
use tempcreds_tests::Moto;

const LONG_TERM_ID: &str = "AKIALONGTERMEXAMPLE";
const LONG_TERM_SECRET: &str = "longTermSecretKeyValue/Example+123";

#[test]
fn secret_with_role_calls_assume_role_once_with_every_parameter_and_never_get_session_token() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(LONG_TERM_ID, LONG_TERM_SECRET);
    let role = role("app");
    let mut args = secret_args(&keys, &moto.url(), None);
    args.extend(
        [
            "--role-arn",
            &role,
            "--pod-name",
            "web-7d9f/0",
            "--session-duration",
            "20m",
            "--external-id",
            "ext-123",
            "--source-identity",
            "alice",
            "--session-tag",
            "team=payments",
            "--session-tag",
            "env=prod",
            "--transitive-tag-key",
            "team",
            "--policy-arn",
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
        ]
        .map(String::from),
    );
    let out = w.once(&args);
    assert!(out.status.success(), "{}", stderr(&out));

    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["AssumeRole"], "exactly one AssumeRole");
    let c = &calls[0];
    assert_eq!(c.signing_key_id(), Some(LONG_TERM_ID));
    assert_eq!(c.param("RoleArn"), Some(role.as_str()));
    assert_eq!(c.param("RoleSessionName"), Some("web-7d9f-0"));
    assert_eq!(c.param("DurationSeconds"), Some("1200"));
    assert_eq!(c.param("ExternalId"), Some("ext-123"));
    assert_eq!(c.param("SourceIdentity"), Some("alice"));
    assert_eq!(c.param("Tags.member.1.Key"), Some("team"));
    assert_eq!(c.param("Tags.member.1.Value"), Some("payments"));
    assert_eq!(c.param("Tags.member.2.Key"), Some("env"));
    assert_eq!(c.param("TransitiveTagKeys.member.1"), Some("team"));
    assert_eq!(
        c.param("PolicyArns.member.1.arn"),
        Some("arn:aws:iam::aws:policy/ReadOnlyAccess")
    );

    let key_id = w.written_key_id().unwrap();
    assert!(key_id.starts_with("ASIA"), "{key_id}");
    let assumed = format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/web-7d9f-0");
    let credentials = w.out.join("credentials");
    assert_eq!(aws_cli_caller_arn(&moto, &credentials, None), assumed);
    assert_eq!(boto3_caller_arn(&moto, &credentials, None), assumed);
    // credentials.json through `credential_process = cat ...` in the
    // written config file, with an empty credentials file.
    let empty = w.path("empty-credentials");
    std::fs::write(&empty, "").unwrap();
    let config = w.out.join("config");
    assert_eq!(aws_cli_caller_arn(&moto, &empty, Some(&config)), assumed);
    assert_eq!(boto3_caller_arn(&moto, &empty, Some(&config)), assumed);
    // The clients called only GetCallerIdentity: the sidecar's one call stays one.
    assert_eq!(
        moto.actions()
            .iter()
            .filter(|a| *a != "GetCallerIdentity")
            .count(),
        1
    );

    assert_no_secrets(&stderr(&out), &[LONG_TERM_SECRET]);
    let written = w.credentials();
    let secret = ini_value(&written, "aws_secret_access_key").unwrap();
    let token = ini_value(&written, "aws_session_token").unwrap();
    assert_no_secrets(&stderr(&out), &[&secret, &token]);
}

#[test]
fn secret_without_role_calls_get_session_token_once() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(LONG_TERM_ID, LONG_TERM_SECRET);
    let mut args = secret_args(&keys, &moto.url(), None);
    args.extend(["--session-duration", "36h"].map(String::from));
    let out = w.once(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["GetSessionToken"]);
    assert_eq!(calls[0].signing_key_id(), Some(LONG_TERM_ID));
    assert_eq!(calls[0].param("DurationSeconds"), Some("129600"));
    assert!(w.written_key_id().is_some());
    assert_no_secrets(&stderr(&out), &[LONG_TERM_SECRET]);
}

#[test]
fn web_identity_sends_the_token_from_the_file_unsigned() {
    let moto = Moto::start();
    let w = World::new();
    let token = fake_jwt("system:serviceaccount:team-a:app");
    let dir = w.token(&token);
    let role = role("web");
    let token_file = dir.path("token").display().to_string();
    let out = w.once(&[
        "--source",
        "web-identity",
        "--role-arn",
        &role,
        "--token-file",
        &token_file,
        "--pod-name",
        "api-0",
        "--region",
        "us-east-1",
        "--sts-endpoint",
        &moto.url(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["AssumeRoleWithWebIdentity"]);
    let c = &calls[0];
    assert_eq!(c.param("WebIdentityToken"), Some(token.as_str()));
    assert_eq!(c.param("RoleArn"), Some(role.as_str()));
    assert_eq!(c.param("RoleSessionName"), Some("api-0"));
    assert_eq!(
        c.param("DurationSeconds"),
        None,
        "STS's default unless asked"
    );
    assert_eq!(
        c.authorization, None,
        "AssumeRoleWithWebIdentity is unsigned"
    );
    let credentials = w.out.join("credentials");
    assert_eq!(
        boto3_caller_arn(&moto, &credentials, None),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/web/api-0")
    );
    assert_no_secrets(&stderr(&out), &[&token]);
}

#[test]
fn web_identity_chain_assumes_each_role_in_order_with_the_capped_duration() {
    let moto = Moto::start();
    let w = World::new();
    let dir = w.token(&fake_jwt("system:serviceaccount:team-a:app"));
    let (first, second, third) = (role("first"), role("second"), role("third"));
    let token_file = dir.path("token").display().to_string();
    let out = w.once(&[
        "--source",
        "web-identity",
        "--role-arn",
        &first,
        "--chain-role-arn",
        &second,
        "--chain-role-arn",
        &third,
        "--token-file",
        &token_file,
        "--session-name",
        "chained",
        "--session-duration",
        "2h",
        "--external-id",
        "ext-9",
        "--source-identity",
        "bob",
        "--session-tag",
        "team=x",
        "--policy-arn",
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
        "--region",
        "us-east-1",
        "--sts-endpoint",
        &moto.url(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1h"),
        "the capped duration is warned about"
    );
    let calls = moto.sts_requests();
    assert_eq!(
        moto.actions(),
        ["AssumeRoleWithWebIdentity", "AssumeRole", "AssumeRole"]
    );
    let (web, a, b) = (&calls[0], &calls[1], &calls[2]);
    assert_eq!(web.param("RoleArn"), Some(first.as_str()));
    assert_eq!(web.param("DurationSeconds"), Some("7200"));
    assert_eq!(web.param("PolicyArns.member.1.arn"), None);
    assert_eq!(a.param("RoleArn"), Some(second.as_str()));
    assert_eq!(b.param("RoleArn"), Some(third.as_str()));
    for c in [web, a, b] {
        assert_eq!(c.param("RoleSessionName"), Some("chained"));
    }
    for c in [a, b] {
        assert_eq!(c.param("DurationSeconds"), Some("3600"));
        assert_eq!(c.param("ExternalId"), Some("ext-9"));
    }
    // Source identity and tags on the first AssumeRole only; policies last.
    assert_eq!(a.param("SourceIdentity"), Some("bob"));
    assert_eq!(a.param("Tags.member.1.Key"), Some("team"));
    assert_eq!(a.param("PolicyArns.member.1.arn"), None);
    assert_eq!(b.param("SourceIdentity"), None);
    assert_eq!(b.param("Tags.member.1.Key"), None);
    assert_eq!(
        b.param("PolicyArns.member.1.arn"),
        Some("arn:aws:iam::aws:policy/ReadOnlyAccess")
    );
    // Each call is signed with the previous call's credentials.
    assert!(a.signing_key_id().unwrap().starts_with("ASIA"));
    assert_ne!(a.signing_key_id(), b.signing_key_id());
    let credentials = w.out.join("credentials");
    assert_eq!(
        aws_cli_caller_arn(&moto, &credentials, None),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/third/chained")
    );
}

#[test]
fn secret_chain_is_assume_role_twice_never_get_session_token() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(LONG_TERM_ID, LONG_TERM_SECRET);
    let (first, second) = (role("first"), role("second"));
    let mut args = secret_args(&keys, &moto.url(), None);
    args.extend(["--role-arn", &first, "--chain-role-arn", &second].map(String::from));
    let out = w.once(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["AssumeRole", "AssumeRole"]);
    assert_eq!(calls[0].signing_key_id(), Some(LONG_TERM_ID));
    assert_eq!(calls[1].param("RoleArn"), Some(second.as_str()));
    assert_eq!(calls[1].param("DurationSeconds"), None);
}

#[test]
fn ambient_assumes_the_role_with_the_default_chain_credentials() {
    let moto = Moto::start();
    let w = World::new();
    let role = role("ambient");
    let mut cmd = w.sidecar(&[
        "--source",
        "ambient",
        "--role-arn",
        &role,
        "--pod-name",
        "job-1",
        "--sts-endpoint",
        &moto.url(),
        "--once",
    ]);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIAAMBIENTEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "ambientSecretValue123")
        .env("AWS_REGION", "us-east-1");
    let out = w.once_with(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["AssumeRole"]);
    assert_eq!(calls[0].signing_key_id(), Some("AKIAAMBIENTEXAMPLE"));
    assert_eq!(calls[0].param("RoleArn"), Some(role.as_str()));
    assert_eq!(calls[0].param("RoleSessionName"), Some("job-1"));
    assert_no_secrets(&stderr(&out), &["ambientSecretValue123"]);
}

/// `session-tags-policy: simple` as the webhook renders it: namespace and
/// ServiceAccount tags as `--session-tag`, the pod's name through
/// `--pod-name-tag-key` (known only at run time), on the first AssumeRole
/// only; chained calls get none (transitive keys carry them on).
#[test]
fn pod_name_tag_key_tags_the_first_assume_role_with_the_pod_name() {
    let moto = Moto::start();
    let w = World::new();
    let keys = w.keys(LONG_TERM_ID, LONG_TERM_SECRET);
    let role = role("app");
    let next = "arn:aws:iam::210987654321:role/next".to_owned();
    let mut args = secret_args(&keys, &moto.url(), None);
    args.extend(
        [
            "--role-arn",
            &role,
            "--chain-role-arn",
            &next,
            "--pod-name",
            "api-5f7c9-x2xq",
            "--session-tag",
            "kubernetes-namespace=payments",
            "--session-tag",
            "kubernetes-service-account=api",
            "--pod-name-tag-key",
            "kubernetes-pod-name",
            "--transitive-tag-key",
            "kubernetes-namespace",
        ]
        .map(String::from),
    );
    let out = w.once(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.sts_requests();
    assert_eq!(moto.actions(), ["AssumeRole", "AssumeRole"]);
    let tags: Vec<(&str, &str)> = (1..)
        .map_while(|i| {
            Some((
                calls[0].param(&format!("Tags.member.{i}.Key"))?,
                calls[0].param(&format!("Tags.member.{i}.Value"))?,
            ))
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("kubernetes-namespace", "payments"),
            ("kubernetes-service-account", "api"),
            ("kubernetes-pod-name", "api-5f7c9-x2xq"),
        ]
    );
    assert_eq!(
        calls[0].param("TransitiveTagKeys.member.1"),
        Some("kubernetes-namespace")
    );
    assert!(
        !calls[1].params.keys().any(|k| k.starts_with("Tags.")),
        "{:?}",
        calls[1]
    );

    // Without a pod name there is nothing to tag with: a configuration
    // error (exit 64) before any call.
    let moto = Moto::start();
    let mut args = secret_args(&keys, &moto.url(), None);
    args.extend(
        [
            "--role-arn",
            &role,
            "--pod-name-tag-key",
            "kubernetes-pod-name",
        ]
        .map(String::from),
    );
    let out = w.once(&args);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TEMPCREDS_POD_NAME"),
        "{}",
        stderr(&out)
    );
    assert!(moto.actions().is_empty());
}
