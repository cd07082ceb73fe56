//! Injected pods run for real: created through the webhook in the real
//! kube-apiserver, scheduled onto the test node, started by the kubelet in
//! containerd from the images `make images` and `hack/test-images.sh` built,
//! with the kubelet's own projected token, memory emptyDir, read-only mounts
//! and probes. Each test asserts what a user would check: the app's own
//! output (a Go program on aws-sdk-go-v2, or busybox), container states, and
//! the STS calls moto recorded.
//!
//! Run with `TEMPCREDS_NODE=1 hack/with-control-plane.sh cargo test -p
//! tempcreds-tests --test node_e2e` (as root; `make test` does).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempcreds_tests::world::*;

/// A pod's annotations, as (name, value) pairs.
type Annotations<'a> = Vec<(&'a str, &'a str)>;

#[test]
fn web_identity_job_with_the_go_sdk_completes_and_the_token_is_the_kubelets() {
    let w = World::new("node-wi");
    w.service_account("reader");
    let app_image = test_image(&w.node, "aws-go-app");
    let template = pod(
        "unused",
        &[("tempcreds.io/role-arn", ROLE)],
        vec![go_app(&w, &app_image, 1)],
        json!({"serviceAccountName": "reader"}),
    );
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "report"},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": template["metadata"].clone(), "spec": template["spec"].clone()},
        },
    });
    w.create(&job);
    w.node
        .wait_for_condition(&w.ns, "job", "report", "Complete", LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}\nSTS calls: {:?}", w.moto.actions()));
    let pods = w.kubectl(&[
        "get",
        "pods",
        "-l",
        "job-name=report",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let pod_name = pods.trim();
    let stored = w.node.pod(&w.ns, pod_name).unwrap();
    assert_eq!(stored["status"]["phase"], "Succeeded");

    // The app's own AWS call succeeded with the role, from the file.
    let log = w.logs(pod_name, "app");
    assert_go_app_used(&log, "node-reader", "SharedConfigCredentials");

    // The native sidecar was stopped by the kubelet once the app finished,
    // and exited cleanly on SIGTERM (a sidecar ignoring it would be killed
    // after the 30 s grace period with 137 and hold the Job up as long).
    let app = w.status(pod_name, "app");
    let sidecar = w.status(pod_name, SIDECAR);
    assert_eq!(app["state"]["terminated"]["exitCode"], 0, "{app}");
    assert_eq!(
        sidecar["state"]["terminated"]["exitCode"], 0,
        "the sidecar did not exit cleanly on SIGTERM: {sidecar}"
    );
    eprintln!(
        "job timings: app finished {}, sidecar finished {}",
        app["state"]["terminated"]["finishedAt"], sidecar["state"]["terminated"]["finishedAt"]
    );

    // Exactly one call chain, carrying the token the kubelet projected for
    // this very pod (bound to its name and UID), with the audience asked for.
    let calls = w.moto.sts_requests();
    let actions: Vec<String> = calls.iter().map(|c| c.action.clone()).collect();
    assert_eq!(
        count(&actions, "AssumeRoleWithWebIdentity"),
        1,
        "{actions:?}"
    );
    let call = calls
        .iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .unwrap();
    assert_eq!(call.param("RoleArn"), Some(ROLE));
    assert_eq!(call.param("RoleSessionName"), Some(pod_name));
    let claims = jwt_claims(call.param("WebIdentityToken").expect("token sent"));
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{}:reader", w.ns)
    );
    assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], pod_name);
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        stored["metadata"]["uid"]
    );
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 86_400, "token-expiration default: {claims}");
}

#[test]
fn secret_keys_with_and_without_a_role_and_a_role_chain() {
    let w = World::new("node-src");
    w.secret("aws-keys");
    w.service_account("chainer");
    let app_image = test_image(&w.node, "aws-go-app");
    let cases = [
        (
            "with-role",
            vec![
                ("tempcreds.io/role-arn", ROLE),
                ("tempcreds.io/secret-name", "aws-keys"),
            ],
            "default",
        ),
        (
            "session-token",
            vec![
                ("tempcreds.io/inject", "true"),
                ("tempcreds.io/secret-name", "aws-keys"),
            ],
            "default",
        ),
        (
            "chain",
            vec![
                ("tempcreds.io/role-arn", ROLE),
                ("tempcreds.io/chain-role-arns", CHAINED),
            ],
            "chainer",
        ),
    ];
    for (name, annotations, sa) in &cases {
        w.create(&pod(
            name,
            annotations,
            vec![go_app(&w, &app_image, 1)],
            json!({"serviceAccountName": sa}),
        ));
    }
    for (name, _, _) in &cases {
        w.wait_phase(name, "Succeeded");
    }
    assert_go_app_used(&w.logs("with-role", "app"), "node-reader", "SharedConfig");
    assert_go_app_used(&w.logs("chain", "app"), "node-writer", "SharedConfig");
    // GetSessionToken credentials are the keys' own user's, not a role's.
    let plain = reports(&w.logs("session-token", "app"));
    let last = plain.last().expect("a report");
    assert_eq!(last["ok"], true, "{plain:?}");
    assert_eq!(last["account"], ACCOUNT, "{plain:?}");

    let calls = w.moto.sts_requests();
    let by_session = |action: &str| {
        calls
            .iter()
            .filter(|c| c.action == action)
            .map(|c| c.param("RoleArn").unwrap_or("-").to_owned())
            .collect::<Vec<_>>()
    };
    // with-role: one AssumeRole signed with the Secret's key; session-token:
    // one GetSessionToken, never after an AssumeRole; chain: web identity,
    // then AssumeRole of the chained role.
    assert_eq!(count(&w.moto.actions(), "GetSessionToken"), 1);
    assert_eq!(by_session("AssumeRoleWithWebIdentity"), [ROLE]);
    let mut assumed = by_session("AssumeRole");
    assumed.sort();
    let mut want = vec![ROLE.to_owned(), CHAINED.to_owned()];
    want.sort();
    assert_eq!(assumed, want, "{:?}", w.moto.actions());
    let with_keys = calls
        .iter()
        .find(|c| c.action == "AssumeRole" && c.param("RoleArn") == Some(ROLE))
        .unwrap();
    assert_eq!(with_keys.signing_key_id(), Some("AKIANODEE2EEXAMPLE01"));
}

#[test]
fn two_profiles_in_one_pod_each_container_uses_its_own() {
    let w = World::new("node-profiles");
    let app_image = test_image(&w.node, "aws-go-app");
    // The default profile reads; "writer" is another role, from the same
    // projected token. One container uses each, by AWS_PROFILE.
    let mut writer = go_app(&w, &app_image, 1);
    writer["name"] = json!("writer");
    writer["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "AWS_PROFILE", "value": "writer"}));
    w.create(&pod(
        "two-roles",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/role-arn.writer", CHAINED),
            ("tempcreds.io/session-duration.writer", "15m"),
        ],
        vec![go_app(&w, &app_image, 1), writer],
        json!({}),
    ));
    w.wait_phase("two-roles", "Succeeded");
    assert_go_app_used(&w.logs("two-roles", "app"), "node-reader", "SharedConfig");
    assert_go_app_used(
        &w.logs("two-roles", "writer"),
        "node-writer",
        "SharedConfig",
    );
    // One call chain per profile, each with the kubelet's token and its own
    // settings (the apps' own calls are GetCallerIdentity).
    let calls = w.moto.sts_requests();
    let sidecar_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.action != "GetCallerIdentity")
        .collect();
    assert!(
        sidecar_calls
            .iter()
            .all(|c| c.action == "AssumeRoleWithWebIdentity"),
        "{:?}",
        w.moto.actions()
    );
    let mut roles: Vec<(&str, Option<&str>)> = sidecar_calls
        .iter()
        .map(|c| {
            (
                c.param("RoleArn").unwrap_or("-"),
                c.param("DurationSeconds"),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [(ROLE, None), (CHAINED, Some("900"))],
        "{:?}",
        w.moto.actions()
    );
}

#[test]
fn fips_and_dual_stack_annotations_reach_the_sdk_in_a_running_sidecar() {
    // No STS endpoint in the cluster's config: the sidecar calls the one the
    // AWS SDK resolves for the region and the variant. This machine reaches
    // no AWS host, so the test checks which endpoint the sidecar in the pod
    // resolved and tried, not an answer.
    let w = World::without_sts_endpoint("node-fips");
    let busybox = w.node.busybox();
    w.create(&pod(
        "fips",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/use-fips-endpoint", "true"),
            ("tempcreds.io/use-dualstack-endpoint", "true"),
        ],
        vec![container("app", busybox, &["sh", "-c", &hold("true")], &[])],
        json!({}),
    ));
    let cp = w.node.control_plane();
    let logs = || {
        cp.kubectl(&["-n", &w.ns, "logs", "fips", "-c", SIDECAR])
            .unwrap_or_default()
    };
    tempcreds_tests::wait_until(
        "the sidecar's first failed attempt at the FIPS dual-stack endpoint",
        LIMIT,
        || logs().contains("refreshing credentials failed"),
    );
    let text = logs();
    let start = text
        .lines()
        .find(|l| l.contains("\"starting\""))
        .unwrap_or_else(|| panic!("no start line:\n{text}"));
    assert!(
        start.contains("\"endpoint\":\"https://sts-fips.us-east-1.api.aws\"")
            && start.contains("\"endpoint_kind\":\"FIPS dual-stack\""),
        "{start}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("refreshing credentials failed")
                && l.contains("https://sts-fips.us-east-1.api.aws")),
        "{text}"
    );
    // The app never started: no credentials.
    let pod: Value =
        serde_json::from_str(&w.kubectl(&["get", "pod", "fips", "-o", "json"])).expect("pod JSON");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["started"],
        json!(false),
        "{}",
        pod["status"]
    );
}

#[test]
fn file_process_and_endpoint_delivery_with_the_go_sdk_and_busybox() {
    let w = World::new("node-dlv");
    let go = test_image(&w.node, "aws-go-app");
    let go_shell = test_image(&w.node, "aws-go-app-shell");
    let busybox = w.node.busybox();
    let role = [("tempcreds.io/role-arn", ROLE)];
    let with = |delivery: &'static str| {
        let mut a = role.to_vec();
        a.push(("tempcreds.io/delivery", delivery));
        a
    };
    // What a shell user checks: the file is there and read-only, the
    // credential_process command prints version 1 JSON, the endpoint answers
    // with the token. Only markers are printed, never the secrets.
    let sh = |script: &str| container("app", busybox, &["sh", "-c", script], &[]);
    let cases: Vec<(&str, Annotations, Value)> = vec![
        ("go-file", with("file"), go_app(&w, &go, 1)),
        ("go-process", with("process"), go_app(&w, &go_shell, 1)),
        ("go-process-no-shell", with("process"), go_app(&w, &go, 1)),
        ("go-endpoint", with("endpoint"), go_app(&w, &go, 1)),
        (
            "sh-file",
            with("file"),
            sh(
                "grep -c '^aws_session_token = ' \"$AWS_SHARED_CREDENTIALS_FILE\"; \
                touch /var/run/tempcreds/x 2>&1 | grep -o 'Read-only file system'",
            ),
        ),
        (
            "sh-process",
            with("process"),
            sh(
                "cmd=$(sed -n 's/^credential_process = //p' \"$AWS_CONFIG_FILE\"); \
                $cmd | grep -o '\"Version\":1'",
            ),
        ),
        (
            "sh-endpoint",
            with("endpoint"),
            sh(
                "wget -qO- --header \"Authorization: $(cat \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\")\" \
                \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" | grep -o '\"AccessKeyId\":\"ASIA'",
            ),
        ),
    ];
    for (name, annotations, app) in &cases {
        w.create(&pod(name, annotations, vec![app.clone()], json!({})));
    }
    assert_go_app_used(
        &w.logs_after("go-file", "Succeeded"),
        "node-reader",
        "SharedConfigCredentials",
    );
    assert_go_app_used(
        &w.logs_after("go-process", "Succeeded"),
        "node-reader",
        "ProcessProvider",
    );
    assert_go_app_used(
        &w.logs_after("go-endpoint", "Succeeded"),
        "node-reader",
        "CredentialsEndpointProvider",
    );
    // The Go SDK runs credential_process through `sh -c`: without a shell
    // in the app image the call fails, as the README says.
    let log = w.logs_after("go-process-no-shell", "Failed");
    assert!(
        log.contains("executable file not found"),
        "expected the Go SDK to need sh for credential_process: {log}"
    );
    assert_eq!(
        w.logs_after("sh-file", "Succeeded"),
        "1\nRead-only file system\n"
    );
    assert_eq!(w.logs_after("sh-process", "Succeeded"), "\"Version\":1\n");
    assert_eq!(
        w.logs_after("sh-endpoint", "Succeeded"),
        "\"AccessKeyId\":\"ASIA\n"
    );
}

#[test]
fn the_app_starts_only_once_sts_answered_and_credentials_were_written() {
    let mut w = World::new("node-wait");
    w.moto.stop();
    let busybox = w.node.busybox();
    w.create(&pod(
        "patient",
        &[("tempcreds.io/role-arn", ROLE)],
        vec![credentials_checker(busybox)],
        json!({}),
    ));
    // The sidecar runs and retries; the app is held back (waiting, never
    // started) however long STS stays away: watched over several retries.
    w.node
        .wait_for(
            &w.ns,
            "pod",
            "patient",
            LIMIT,
            |p| p["status"]["initContainerStatuses"][0]["state"]["running"].is_object(),
            |_| false,
        )
        .unwrap();
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let app = w.status("patient", "app");
        assert!(
            app["state"]["running"].is_null() && app["state"]["terminated"].is_null(),
            "the app started while STS was unreachable: {app}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let sidecar = w.status("patient", SIDECAR);
    assert_eq!(sidecar["started"], false, "{sidecar}");
    assert_eq!(
        sidecar["restartCount"], 0,
        "retries happen inside: {sidecar}"
    );

    w.moto.restart();
    w.wait_ready("patient");
    // Its first command found the credentials file complete.
    assert_eq!(w.logs("patient", "app"), "1\n");
    let app = w.status("patient", "app");
    assert_eq!(app["restartCount"], 0, "{app}");
}

#[test]
fn a_sigkilled_sidecar_comes_back_and_the_app_never_misses_credentials() {
    let w = World::new("node-kill");
    let busybox = w.node.busybox();
    // Checks the file five times a second and says when it is not complete.
    let watcher = "trap 'exit 0' TERM; while true; do \
                     grep -q '^aws_session_token = ' /var/run/tempcreds/credentials || echo MISSING; \
                     sleep 0.2; \
                   done";
    w.create(&pod(
        "watched",
        &[("tempcreds.io/role-arn", ROLE)],
        vec![container("app", busybox, &["sh", "-c", watcher], &[])],
        json!({}),
    ));
    w.wait_ready("watched");
    let calls_before = w.moto.actions().len();
    let id = w.container_id("watched", SIDECAR);
    w.node
        .ctr(&["tasks", "kill", "-s", "SIGKILL", &id])
        .expect("SIGKILL the sidecar");
    w.node
        .wait_for(
            &w.ns,
            "pod",
            "watched",
            LIMIT,
            |p| {
                let s = &p["status"]["initContainerStatuses"][0];
                s["restartCount"].as_i64() >= Some(1) && s["started"] == true
            },
            |_| false,
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.diagnostics("watched")));
    w.wait_ready("watched");
    // A few more rounds of the watcher after the restart.
    std::thread::sleep(Duration::from_secs(2));
    let log = w.logs("watched", "app");
    assert!(
        !log.contains("MISSING"),
        "the app lost its credentials: {log}"
    );
    assert_eq!(w.status("watched", "app")["restartCount"], 0);
    // The restarted sidecar adopted the fresh credentials: no new STS call.
    assert_eq!(
        w.moto.actions().len(),
        calls_before,
        "{:?}\n{}",
        w.moto.actions(),
        w.diagnostics("watched")
    );
    assert!(
        w.logs("watched", SIDECAR)
            .contains("serving the credentials a previous run wrote"),
        "{}",
        w.diagnostics("watched")
    );
    w.node
        .delete_and_wait(&w.ns, "pod", "watched", LIMIT)
        .unwrap();
}

#[test]
fn injected_pods_run_in_a_namespace_enforcing_the_restricted_pod_security_standard() {
    let w = World::new("node-psa");
    w.kubectl(&[
        "label",
        "namespace",
        &w.ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]);
    let app_image = test_image(&w.node, "aws-go-app");
    w.create(&pod(
        "restricted",
        &[("tempcreds.io/role-arn", ROLE)],
        vec![go_app(&w, &app_image, 1)],
        json!({}),
    ));
    let log = w.logs_after("restricted", "Succeeded");
    assert_go_app_used(&log, "node-reader", "SharedConfigCredentials");
}

#[test]
fn host_network_and_pod_network_pods_run_side_by_side() {
    let w = World::new("node-net");
    let busybox = w.node.busybox();
    let app = || credentials_checker(busybox);
    let role = [("tempcreds.io/role-arn", ROLE)];
    let names = ["pod-net-1", "pod-net-2", "host-net-1", "host-net-2"];
    for name in names {
        let spec = if name.starts_with("host") {
            json!({"hostNetwork": true})
        } else {
            json!({})
        };
        w.create(&pod(name, &role, vec![app()], spec));
    }
    for name in names {
        w.wait_ready(name);
        assert_eq!(w.logs(name, "app"), "1\n", "{name}");
        assert_eq!(w.status(name, SIDECAR)["restartCount"], 0, "{name}");
    }
    // The endpoint's port would be the node's: refused, with the fix.
    let mut denied = pod(
        "host-net-endpoint",
        &role,
        vec![app()],
        json!({"hostNetwork": true}),
    );
    denied["metadata"]["annotations"]["tempcreds.io/delivery"] = json!("endpoint");
    let err = w.node.create(&w.ns, &denied).unwrap_err().to_string();
    assert!(
        err.contains("hostNetwork") && err.contains("tempcreds.io/delivery: file"),
        "{err}"
    );
    for name in names {
        w.node.delete_and_wait(&w.ns, "pod", name, LIMIT).unwrap();
    }
}

#[test]
fn a_classic_sidecar_never_lets_the_app_start_before_credentials_exist() {
    let w = World::with_sidecar_settings("node-classic", "  nativeSidecar: false\n");
    let busybox = w.node.busybox();
    w.create(&pod(
        "classic",
        &[("tempcreds.io/role-arn", ROLE)],
        vec![credentials_checker(busybox)],
        json!({}),
    ));
    w.wait_ready("classic");
    assert_eq!(w.logs("classic", "app"), "1\n");
    let init = w.status("classic", "tempcreds-init");
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init}");
    let sidecar = w.status("classic", SIDECAR);
    assert!(sidecar["state"]["running"].is_object(), "{sidecar}");
    // The classic sidecar adopted what the init container wrote.
    assert_eq!(
        count(&w.moto.actions(), "AssumeRoleWithWebIdentity"),
        1,
        "{}",
        w.diagnostics("classic")
    );
    w.node
        .delete_and_wait(&w.ns, "pod", "classic", LIMIT)
        .unwrap();
}
