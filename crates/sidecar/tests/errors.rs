//! Bad input and STS errors under `--once`: each gives a clear message naming
//! the flag or the likely cause, and a non-zero exit (64 for configuration,
//! 1 for what happens at run time). No credentials file is written.

mod common;

use std::process::Output;

use common::*;

fn assert_fails(w: &World, out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from:\n{err}");
    }
    assert!(w.written_key_id().is_none(), "nothing may be written");
}

#[test]
fn missing_and_unreadable_token_files_name_the_flag() {
    let w = World::new();
    let role = role("r");
    let missing = w.path("nope/token").display().to_string();
    let base = [
        "--source",
        "web-identity",
        "--role-arn",
        &role,
        "--region",
        "us-east-1",
    ];
    // No STS call is made, so no endpoint is needed: one that refuses is fine.
    let endpoint = ["--sts-endpoint", "http://127.0.0.1:9"];
    let args = |token: &str| -> Vec<String> {
        base.iter()
            .chain(&endpoint)
            .map(|s| s.to_string())
            .chain(["--token-file".into(), token.to_owned()])
            .collect()
    };
    let run = |a: Vec<String>| w.once(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args(&missing));
    assert_fails(
        &w,
        &out,
        1,
        &["--token-file", "cannot read it", "not mounted"],
    );
    // A directory where the token should be: unreadable as a file.
    let out = run(args(&w.tmp.path().display().to_string()));
    assert_fails(&w, &out, 1, &["--token-file", "cannot read it"]);
    let empty = w.path("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let out = run(args(&empty.display().to_string()));
    assert_fails(&w, &out, 1, &["--token-file", "empty"]);
}

#[test]
fn missing_key_files_name_the_flag() {
    let w = World::new();
    let keys = w.keys("AKIAEXAMPLEEXAMPLE", "secretsecretsecret");
    let secret = keys.path("aws_secret_access_key").display().to_string();
    let missing = w.path("keys/nope").display().to_string();
    let out = w.once(&[
        "--source",
        "secret",
        "--access-key-id-file",
        &missing,
        "--secret-access-key-file",
        &secret,
        "--region",
        "us-east-1",
        "--sts-endpoint",
        "http://127.0.0.1:9",
    ]);
    assert_fails(&w, &out, 1, &["--access-key-id-file", "not mounted"]);
    // Both missing flags reported at once, before anything runs.
    let out = w.once(&["--source", "secret", "--region", "us-east-1"]);
    assert_fails(
        &w,
        &out,
        64,
        &["--access-key-id-file", "--secret-access-key-file"],
    );
}

#[test]
fn invalid_flags_exit_64_naming_the_flag_and_value() {
    let w = World::new();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                "--source",
                "ambient",
                "--role-arn",
                "arn:aws:iam::12:role/x",
            ],
            &["--role-arn", "12 digits"],
        ),
        (
            &[
                "--source",
                "ambient",
                "--role-arn",
                "arn:aws:iam::123456789012:role/x",
                "--session-duration",
                "60",
            ],
            &["--session-duration", "900s to 43200s"],
        ),
        (
            &[
                "--source",
                "ambient",
                "--role-arn",
                "arn:aws:iam::123456789012:role/x",
                "--session-duration",
                "5 minutes",
            ],
            &["--session-duration", "15m"],
        ),
        (
            &[
                "--source",
                "ambient",
                "--role-arn",
                "arn:aws:iam::123456789012:role/x",
                "--session-tag",
                "aws:team=x",
            ],
            &["--session-tag", "reserved"],
        ),
        (
            &[
                "--source",
                "ambient",
                "--role-arn",
                "arn:aws:iam::123456789012:role/x",
                "--session-tag",
                "noequals",
            ],
            &["--session-tag", "KEY=VALUE"],
        ),
        (&["--source", "ambient"], &["--role-arn", "required"]),
        (
            &[
                "--source",
                "ambient",
                "--role-arn",
                "arn:aws:iam::123456789012:role/x",
                "--sts-endpoint",
                "sts.local",
            ],
            &["--sts-endpoint", "not a URL"],
        ),
    ];
    for (args, needles) in cases {
        let out = w.once(args);
        assert_fails(&w, &out, 64, needles);
    }
}

/// FIPS and dual-stack endpoints where STS has none exit 64 before any
/// call, from the flags, their environment variables, or a region from the
/// SDK's region chain (AWS_REGION).
#[test]
fn endpoint_variants_without_an_sts_endpoint_exit_64() {
    let w = World::new();
    let role = [
        "--source",
        "ambient",
        "--role-arn",
        "arn:aws:iam::123456789012:role/x",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        role.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    let out = w.once(&with(&["--region", "eu-west-1", "--use-fips-endpoint"]));
    assert_fails(
        &w,
        &out,
        64,
        &[
            "--use-fips-endpoint: STS has no FIPS endpoint in --region",
            "eu-west-1",
            "(partition aws); accepted: --region one of us-east-1, us-east-2, us-west-1, us-west-2, \
             us-gov-east-1, us-gov-west-1",
        ],
    );
    let out = w.once(&with(&[
        "--region",
        "us-east-1",
        "--use-dualstack-endpoint",
        "--sts-endpoint",
        "http://127.0.0.1:9",
    ]));
    assert_fails(
        &w,
        &out,
        64,
        &[
            "--use-dualstack-endpoint: cannot be combined with --sts-endpoint",
            "http://127.0.0.1:9",
        ],
    );
    let out = w.once_with(
        w.sidecar(&with(&["--region", "us-isof-south-1"]))
            .arg("--once")
            .env("TEMPCREDS_USE_DUALSTACK_ENDPOINT", "true"),
    );
    assert_fails(
        &w,
        &out,
        64,
        &[
            "--use-dualstack-endpoint: STS has no dual-stack endpoint in --region",
            "us-isof-south-1",
            "(partition aws-iso-f)",
        ],
    );
    // No --region: the SDK's region chain names one, and the same rule
    // applies to it, with the URL the SDK would have called.
    let out = w.once_with(
        w.sidecar(&with(&["--use-fips-endpoint"]))
            .arg("--once")
            .env("AWS_REGION", "ap-southeast-2"),
    );
    assert_fails(
        &w,
        &out,
        64,
        &[
            "--use-fips-endpoint: STS has no FIPS endpoint in --region",
            "ap-southeast-2",
            "where the region comes from the SDK's region chain",
            "the SDK would call https://sts-fips.ap-southeast-2.amazonaws.com, which AWS does not publish",
        ],
    );
}

#[test]
fn an_unreachable_endpoint_explains_the_likely_cause() {
    let w = World::new();
    let keys = w.keys("AKIAEXAMPLEEXAMPLE", "secretsecretsecret");
    let (id, secret) = (
        keys.path("aws_access_key_id").display().to_string(),
        keys.path("aws_secret_access_key").display().to_string(),
    );
    let port = tempcreds_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = w.once(&[
        "--source",
        "secret",
        "--access-key-id-file",
        &id,
        "--secret-access-key-file",
        &secret,
        "--region",
        "us-east-1",
        "--sts-endpoint",
        &url,
    ]);
    assert_fails(
        &w,
        &out,
        1,
        &[
            "GetSessionToken",
            "no answer from STS",
            &url,
            "--sts-endpoint",
        ],
    );
    assert_no_secrets(&stderr(&out), &["secretsecretsecret"]);
}

#[test]
fn sts_errors_are_explained_with_cause_and_fix() {
    let w = World::new();
    let (moto, id, secret) = moto_with_auth(&w);
    let url = moto.url();
    let role = role("app");
    let run = |w: &World, id: &str, secret: &str, with_role: bool| {
        let keys = KubeletDir::new(
            w.path(&format!("keys-{}", tempcreds_tests::unique_suffix())),
            &[("id", id), ("secret", secret)],
        );
        let (idf, sf) = (
            keys.path("id").display().to_string(),
            keys.path("secret").display().to_string(),
        );
        let mut args = vec![
            "--source",
            "secret",
            "--access-key-id-file",
            &idf,
            "--secret-access-key-file",
            &sf,
            "--region",
            "us-east-1",
            "--sts-endpoint",
            &url,
        ];
        if with_role {
            args.extend(["--role-arn", &role]);
        }
        w.once(&args)
    };

    // A user without permissions: AccessDenied, explained for AssumeRole.
    let out = run(&w, &id, &secret, true);
    assert_fails(
        &w,
        &out,
        1,
        &[
            "AssumeRole",
            "AccessDenied",
            "not authorized",
            "likely cause",
            "trust policy",
        ],
    );
    assert_no_secrets(&stderr(&out), &[&secret]);

    // The same user without a role: GetSessionToken is denied too.
    let out = run(&w, &id, &secret, false);
    assert_fails(
        &w,
        &out,
        1,
        &["GetSessionToken", "AccessDenied", "sts:GetSessionToken"],
    );

    // A wrong secret for a real key: the signature does not match.
    let out = run(&w, &id, "wrongSecretAccessKeyValue", true);
    assert_fails(
        &w,
        &out,
        1,
        &["SignatureDoesNotMatch", "--secret-access-key-file"],
    );

    // A key STS does not know.
    let out = run(&w, "AKIAUNKNOWNEXAMPLE00", "whateverSecretValue", true);
    assert_fails(
        &w,
        &out,
        1,
        &["InvalidClientTokenId", "--access-key-id-file"],
    );
}

#[test]
fn a_missing_output_directory_is_a_configuration_error_not_endless_retries() {
    let w = World::new();
    std::fs::remove_dir(&w.out).unwrap();
    let keys = w.keys("AKIAOUTPUTDIRTEST001", "secret");
    let out = w.once(&[
        "--source",
        "secret",
        "--access-key-id-file",
        &keys.path("aws_access_key_id").display().to_string(),
        "--secret-access-key-file",
        &keys.path("aws_secret_access_key").display().to_string(),
        "--region",
        "us-east-1",
        "--sts-endpoint",
        "http://127.0.0.1:9",
    ]);
    assert_fails(
        &w,
        &out,
        64,
        &[
            "--output-dir",
            "not an existing directory",
            &w.out.display().to_string(),
        ],
    );
}
