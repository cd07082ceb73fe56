//! Proves the test harness talks to real software: moto's STS server answers
//! boto3, and the local kube-apiserver accepts objects and issues
//! service-account tokens with the requested claims.

use std::process::Command;

use tempcreds_tests::{ControlPlane, Moto, tool};

#[test]
fn moto_sts_answers_boto3_and_records_the_call() {
    let moto = Moto::start();
    let out = Command::new(tool("python"))
        .args([
            "-c",
            "import boto3,sys; c=boto3.client('sts', endpoint_url=sys.argv[1], region_name='us-east-1', \
             aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key='secret'); \
             print(c.get_caller_identity()['Arn'])",
            &moto.url(),
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arn = String::from_utf8_lossy(&out.stdout);
    assert!(arn.trim().starts_with("arn:aws:"), "unexpected ARN {arn:?}");
    assert_eq!(moto.actions(), ["GetCallerIdentity"]);
    assert_eq!(moto.sts_requests()[0].signing_key_id(), Some("AKIAEXAMPLE"));
}

#[test]
fn kube_apiserver_creates_objects_and_issues_tokens_with_requested_claims() {
    let cp = ControlPlane::from_env();
    let ns = cp.create_namespace("smoke", &[]).unwrap();
    cp.kubectl(&["-n", &ns, "create", "serviceaccount", "app"])
        .unwrap();
    let token = cp
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "token",
            "app",
            "--audience",
            "sts.amazonaws.com",
            "--duration",
            "1h",
        ])
        .unwrap();
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .expect("a JWT has three parts");
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], cp.issuer.as_str());
    assert_eq!(claims["aud"], serde_json::json!(["sts.amazonaws.com"]));
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{ns}:app").as_str()
    );
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3600);

    let discovery: serde_json::Value = serde_json::from_str(
        &cp.kubectl(&["get", "--raw", "/.well-known/openid-configuration"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], cp.issuer.as_str());
    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}
