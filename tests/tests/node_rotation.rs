//! The kubelet writes a new projected token, and the sidecar answers with a
//! new STS call carrying it, on the real node.
//!
//! The kubelet rotates a projected token when 80% of its lifetime has passed
//! (the API server's minimum is 10 minutes, so at least 8 minutes in). This
//! test takes the same write path without the wait: it restarts the kubelet
//! (`hack/node.sh restart-kubelet`), whose token cache lives in memory, so it
//! requests and writes a new token for the running pod at once (the
//! `..data` symlink swap of every projected volume). It has a test binary of
//! its own because the restart would disturb other tests' pods.

use std::process::Command;

use serde_json::json;
use tempcreds_tests::world::*;

#[test]
fn a_new_projected_token_leads_to_a_new_sts_call_with_it() {
    let w = World::new("node-rot");
    w.service_account("rotating");
    let busybox = w.node.busybox();
    w.create(&pod(
        "rotating",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/token-expiration", "600"),
        ],
        vec![container("app", busybox, &["sh", "-c", &hold("true")], &[])],
        json!({"serviceAccountName": "rotating"}),
    ));
    w.wait_ready("rotating");
    let first = w.moto.sts_requests();
    assert_eq!(first.len(), 1, "{:?}", w.moto.actions());
    let first_token = first[0].param("WebIdentityToken").unwrap().to_owned();
    let claims = jwt_claims(&first_token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600,
        "token-expiration reaches the kubelet's TokenRequest: {claims}"
    );

    let dir = std::env::var("TEMPCREDS_NODE_DIR").expect("TEMPCREDS_NODE_DIR");
    let cp_dir = std::path::Path::new(&dir).parent().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/node.sh");
    let out = Command::new(&script)
        .arg("restart-kubelet")
        .arg(cp_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    w.node
        .wait_for(
            &w.ns,
            "pod",
            "rotating",
            LIMIT,
            |_| w.moto.sts_requests().len() >= 2,
            |_| false,
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.diagnostics("rotating")));
    let calls = w.moto.sts_requests();
    let second = &calls[1];
    assert_eq!(second.action, "AssumeRoleWithWebIdentity");
    let second_token = second.param("WebIdentityToken").unwrap();
    assert_ne!(
        second_token, first_token,
        "the sidecar sent the old token again"
    );
    let new_claims = jwt_claims(second_token);
    assert_eq!(new_claims["kubernetes.io"]["pod"]["name"], "rotating");
    assert_eq!(new_claims["sub"], claims["sub"]);
    assert!(new_claims["iat"].as_i64() >= claims["iat"].as_i64());
    assert!(
        w.logs("rotating", SIDECAR)
            .contains("credential input files changed"),
        "{}",
        w.diagnostics("rotating")
    );
    // The pod ran on throughout.
    assert_eq!(w.status("rotating", "app")["restartCount"], 0);
    assert_eq!(w.status("rotating", SIDECAR)["restartCount"], 0);
}
