//! From annotation to a working AWS call, on the real local control plane.
//!
//! For each credential source: create the namespace (routed to the real
//! webhook), ServiceAccount, Secret and an annotated pod in the real
//! kube-apiserver; read back what the API server stored and check the
//! security invariants on it; run the injected sidecar's command and
//! environment as a local process against moto's STS server; then run the
//! real AWS CLI and boto3 with the app container's environment.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};
use tempcreds_tests::{ControlPlane, LocalPod, Moto, Webhook, tool, wait_until};

const ROLE: &str = "arn:aws:iam::123456789012:role/e2e-reader";

struct Case {
    cp: ControlPlane,
    moto: Moto,
    hook: Webhook,
    ns: String,
    work: tempfile::TempDir,
}

/// What the app side saw.
struct AppRun {
    /// The ARN both the AWS CLI and boto3 reported.
    arn: String,
    /// How botocore found the credentials (`shared-credentials-file`,
    /// `custom-process`, `container-role`, ...).
    boto_method: String,
}

impl Case {
    fn new(prefix: &str) -> Case {
        Case::with_config(prefix, "")
    }

    /// A case whose webhook config has `extra` appended (top-level YAML).
    fn with_config(prefix: &str, extra: &str) -> Case {
        let cp = ControlPlane::from_env();
        let moto = Moto::start();
        let config = format!(
            "sidecar:\n  image: ghcr.io/tempcreds/tempcreds-sidecar:e2e\nregion: us-east-1\nstsEndpoint: {}\n{extra}",
            moto.url()
        );
        let hook = Webhook::start(&cp, &config);
        let ns = hook.namespace(prefix);
        Case {
            cp,
            moto,
            hook,
            ns,
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn apply(&self, yaml: &str) -> String {
        self.cp
            .kubectl_stdin(&["-n", &self.ns, "apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", self.hook.log()))
    }

    fn service_account(&self, name: &str, annotations: &[(&str, &str)]) {
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "annotations": map(annotations)}
        });
        self.apply(&sa.to_string());
    }

    fn secret(&self, name: &str, id: &str, secret: &str) {
        self.cp
            .kubectl(&[
                "-n",
                &self.ns,
                "create",
                "secret",
                "generic",
                name,
                &format!("--from-literal=aws_access_key_id={id}"),
                &format!("--from-literal=aws_secret_access_key={secret}"),
            ])
            .unwrap();
    }

    /// Creates a pod with `annotations` and returns it as stored.
    fn pod(&self, name: &str, sa: &str, annotations: &[(&str, &str)]) -> Value {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": map(annotations)},
            "spec": {
                "serviceAccountName": sa,
                "containers": [{"name": "app", "image": "amazon/aws-cli", "args": ["sts", "get-caller-identity"]}]
            }
        });
        self.apply(&pod.to_string());
        self.stored(name)
    }

    fn stored(&self, name: &str) -> Value {
        serde_json::from_str(
            &self
                .cp
                .kubectl(&["-n", &self.ns, "get", "pod", name, "-o", "json"])
                .unwrap(),
        )
        .unwrap()
    }

    /// Runs the sidecar, then the AWS CLI and boto3 as the app container;
    /// returns the ARN both report.
    fn run(&self, pod: Value, sidecar_env: &[(&str, &str)]) -> String {
        self.run_app(pod, sidecar_env).arn
    }

    /// Like [`Case::run`], also reporting how boto3 found the credentials.
    fn run_app(&self, pod: Value, sidecar_env: &[(&str, &str)]) -> AppRun {
        let local = LocalPod::new(pod, self.work.path());
        local.prepare_volumes(&self.cp);
        let sidecar = local.run_sidecar(sidecar_env);
        let app_env = local.env_of(local.container("app"));
        let run = |program: &std::path::Path, args: &[&str]| {
            let out = Command::new(program)
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", self.work.path())
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .envs(app_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .expect("run the AWS client");
            assert!(
                out.status.success(),
                "{} failed: {}\nsidecar log:\n{}",
                program.display(),
                String::from_utf8_lossy(&out.stderr),
                sidecar.log()
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let url = self.moto.url();
        let cli: Value = serde_json::from_str(&run(
            &tool("aws"),
            &[
                "sts",
                "get-caller-identity",
                "--endpoint-url",
                &url,
                "--output",
                "json",
            ],
        ))
        .unwrap();
        let boto = run(
            &tool("python"),
            &[
                "-c",
                "import boto3,sys; s=boto3.Session(); \
                 print(s.client('sts', endpoint_url=sys.argv[1]).get_caller_identity()['Arn']); \
                 print(s.get_credentials().method)",
                &url,
            ],
        );
        let mut lines = boto.lines();
        let arn = cli["Arn"].as_str().unwrap().to_owned();
        assert_eq!(
            lines.next(),
            Some(arn.as_str()),
            "boto3 and the AWS CLI disagree"
        );
        AppRun {
            arn,
            boto_method: lines.next().unwrap_or_default().to_owned(),
        }
    }
}

/// The security invariants on a stored, injected pod.
fn assert_invariants(pod: &Value) {
    let spec = &pod["spec"];
    let volumes = spec["volumes"].as_array().expect("volumes");
    let sidecar_index = spec["initContainers"]
        .as_array()
        .and_then(|ics| ics.iter().position(|c| c["args"][0] == "run"))
        .expect("the sidecar is an init container (native sidecar)");
    let sidecar = &spec["initContainers"][sidecar_index];
    assert_eq!(sidecar["restartPolicy"], "Always", "native sidecar");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    let creds_volume = sidecar["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/tempcreds")
        .and_then(|m| m["name"].as_str())
        .expect("the sidecar mounts /var/run/tempcreds");
    let creds = volumes.iter().find(|v| v["name"] == creds_volume).unwrap();
    assert_eq!(
        creds["emptyDir"]["medium"], "Memory",
        "credentials stay in memory"
    );
    // What the sidecar mounts for STS (the projected token with an audience,
    // the Secret with long-term keys) is for the sidecar alone. The API
    // server's own kube-api-access volume (no audience) is not tempcreds'.
    let is_sensitive = |v: &&Value| {
        !v["secret"].is_null()
            || v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["serviceAccountToken"]["audience"].is_string())
    };
    let sidecar_mounts: BTreeSet<&str> = sidecar["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    let sensitive: BTreeSet<&str> = volumes
        .iter()
        .filter(is_sensitive)
        .filter_map(|v| v["name"].as_str())
        .filter(|n| sidecar_mounts.contains(n))
        .collect();
    let apps = spec["containers"].as_array().into_iter().flatten().chain(
        spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(i, _)| *i != sidecar_index)
            .map(|(_, c)| c),
    );
    for c in apps {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            assert!(
                !sensitive.contains(name),
                "app container {} mounts the sensitive volume {name}",
                c["name"]
            );
            if name == creds_volume {
                assert_eq!(
                    m["readOnly"], true,
                    "credentials are read-only in {}",
                    c["name"]
                );
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default();
            assert!(
                name != "AWS_ACCESS_KEY_ID" && name != "AWS_SECRET_ACCESS_KEY",
                "app container {} has {name}",
                c["name"]
            );
            assert!(
                e["valueFrom"]["secretKeyRef"].is_null(),
                "app container {} reads a Secret into {name}",
                c["name"]
            );
        }
    }
}

#[test]
fn web_identity_pod_gets_the_role_through_a_projected_token() {
    let case = Case::new("e2e-web");
    case.service_account("reader", &[]);
    let pod = case.pod("web", "reader", &[("tempcreds.io/role-arn", ROLE)]);
    assert_invariants(&pod);
    let arn = case.run(pod, &[]);
    assert_eq!(arn, "arn:aws:sts::123456789012:assumed-role/e2e-reader/web");
    let reqs = case.moto.sts_requests();
    let assume: Vec<_> = reqs
        .iter()
        .filter(|r| r.action != "GetCallerIdentity")
        .collect();
    assert_eq!(assume.len(), 1, "{reqs:?}");
    assert_eq!(assume[0].action, "AssumeRoleWithWebIdentity");
    // The token STS received is a real service-account token for this pod's
    // service account, with the injected audience.
    let token = assume[0].param("WebIdentityToken").unwrap();
    let claims = jwt_claims(token);
    assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{}:reader", case.ns).as_str()
    );
}

#[test]
fn service_account_annotation_gives_the_role_to_every_pod() {
    let case = Case::new("e2e-sa");
    case.service_account("reader", &[("tempcreds.io/role-arn", ROLE)]);
    let pod = case.pod("from-sa", "reader", &[]);
    assert_invariants(&pod);
    let arn = case.run(pod, &[]);
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/e2e-reader/from-sa"
    );
}

#[test]
fn secret_with_role_assumes_the_role_once_and_never_calls_get_session_token() {
    let case = Case::new("e2e-secret-role");
    case.service_account("default", &[]);
    case.secret("aws-keys", "AKIAE2EEXAMPLE000001", "long-term-secret-e2e");
    let pod = case.pod(
        "keys-role",
        "default",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/secret-name", "aws-keys"),
            ("tempcreds.io/session-duration", "15m"),
        ],
    );
    assert_invariants(&pod);
    let arn = case.run(pod, &[]);
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/e2e-reader/keys-role"
    );
    let reqs = case.moto.sts_requests();
    let calls: Vec<_> = reqs
        .iter()
        .filter(|r| r.action != "GetCallerIdentity")
        .collect();
    assert_eq!(calls.len(), 1, "{reqs:?}");
    assert_eq!(calls[0].action, "AssumeRole");
    assert_eq!(calls[0].param("DurationSeconds"), Some("900"));
    assert_eq!(calls[0].signing_key_id(), Some("AKIAE2EEXAMPLE000001"));
    // The app's calls are signed with the temporary key, never the long-term one.
    for r in reqs.iter().filter(|r| r.action == "GetCallerIdentity") {
        assert_ne!(r.signing_key_id(), Some("AKIAE2EEXAMPLE000001"));
    }
}

#[test]
fn secret_without_role_uses_get_session_token() {
    let case = Case::new("e2e-secret-gst");
    case.service_account("default", &[]);
    case.secret("aws-keys", "AKIAE2EEXAMPLE000002", "long-term-secret-e2e");
    let pod = case.pod(
        "keys-only",
        "default",
        &[
            ("tempcreds.io/inject", "true"),
            ("tempcreds.io/secret-name", "aws-keys"),
        ],
    );
    assert_invariants(&pod);
    case.run(pod, &[]);
    let actions: Vec<_> = case
        .moto
        .actions()
        .into_iter()
        .filter(|a| a != "GetCallerIdentity")
        .collect();
    assert_eq!(actions, ["GetSessionToken"]);
}

#[test]
fn ambient_credentials_then_assume_role() {
    let case = Case::new("e2e-ambient");
    case.service_account("default", &[]);
    let pod = case.pod(
        "ambient",
        "default",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/source", "ambient"),
        ],
    );
    assert_invariants(&pod);
    // The node's credentials, as the sidecar's default chain finds them.
    let arn = case.run(
        pod,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIANODEEXAMPLE00003"),
            ("AWS_SECRET_ACCESS_KEY", "node-secret"),
        ],
    );
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/e2e-reader/ambient"
    );
    let calls: Vec<_> = case
        .moto
        .sts_requests()
        .into_iter()
        .filter(|r| r.action != "GetCallerIdentity")
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].action, "AssumeRole");
    assert_eq!(calls[0].signing_key_id(), Some("AKIANODEEXAMPLE00003"));
}

#[test]
fn role_chain_ends_in_the_last_role() {
    let case = Case::new("e2e-chain");
    case.service_account("reader", &[]);
    let pod = case.pod(
        "chained",
        "reader",
        &[
            ("tempcreds.io/role-arn", ROLE),
            (
                "tempcreds.io/chain-role-arns",
                "arn:aws:iam::210987654321:role/hop,arn:aws:iam::111122223333:role/final",
            ),
        ],
    );
    assert_invariants(&pod);
    let arn = case.run(pod, &[]);
    assert_eq!(arn, "arn:aws:sts::111122223333:assumed-role/final/chained");
    let calls: Vec<_> = case
        .moto
        .sts_requests()
        .into_iter()
        .filter(|r| r.action != "GetCallerIdentity")
        .map(|r| {
            (
                r.action.clone(),
                r.param("RoleArn").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("AssumeRoleWithWebIdentity".to_owned(), ROLE.to_owned()),
            (
                "AssumeRole".to_owned(),
                "arn:aws:iam::210987654321:role/hop".to_owned()
            ),
            (
                "AssumeRole".to_owned(),
                "arn:aws:iam::111122223333:role/final".to_owned()
            ),
        ]
    );
}

/// The env names of the stored pod's `app` container, and their values.
fn app_env(pod: &Value) -> Vec<(String, String)> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn endpoint_delivery_serves_the_sdks_from_the_sidecars_loopback_endpoint() {
    let case = Case::new("e2e-endpoint");
    case.service_account("reader", &[]);
    let pod = case.pod(
        "endpoint",
        "reader",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/delivery", "endpoint"),
        ],
    );
    assert_invariants(&pod);
    // Only the full URI and the token file: no credentials file, which every
    // SDK would read before the endpoint.
    let names: Vec<String> = app_env(&pod).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION"
        ]
    );
    assert_eq!(app_env(&pod)[0].1, "http://127.0.0.1:8098/v1/credentials");
    let app = case.run_app(pod, &[]);
    assert_eq!(
        app.arn,
        "arn:aws:sts::123456789012:assumed-role/e2e-reader/endpoint"
    );
    assert_eq!(app.boto_method, "container-role");
}

#[test]
fn process_delivery_runs_credential_process_from_the_config_file() {
    let case = Case::new("e2e-process");
    case.service_account("reader", &[]);
    let pod = case.pod(
        "process",
        "reader",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/delivery", "process"),
            ("tempcreds.io/profile", "reports"),
        ],
    );
    assert_invariants(&pod);
    assert_eq!(
        app_env(&pod),
        [
            ("AWS_CONFIG_FILE", "/var/run/tempcreds/config"),
            ("AWS_PROFILE", "reports"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    let app = case.run_app(pod, &[]);
    assert_eq!(
        app.arn,
        "arn:aws:sts::123456789012:assumed-role/e2e-reader/process"
    );
    // The SDK ran credential_process (so it re-runs it before expiry), not
    // a static file read.
    assert_eq!(app.boto_method, "custom-process");
}

/// A Deployment's pods are created by the ReplicaSet controller with
/// generateName, so the webhook sees no pod name. There is no controller
/// manager in the test control plane; create the pod from the Deployment's
/// template the way the controller would.
#[test]
fn deployment_pods_created_with_generate_name_get_a_session_named_after_the_pod() {
    let case = Case::new("e2e-deploy");
    case.service_account("reader", &[("tempcreds.io/role-arn", ROLE)]);
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"serviceAccountName": "reader",
                         "containers": [{"name": "app", "image": "amazon/aws-cli"}]}
            }
        }
    });
    case.apply(&deploy.to_string());
    let template: Value = serde_json::from_str(
        &case
            .cp
            .kubectl(&[
                "-n",
                &case.ns,
                "get",
                "deployment",
                "api",
                "-o",
                "jsonpath={.spec.template}",
            ])
            .unwrap(),
    )
    .unwrap();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "api-5f7c9-", "labels": template["metadata"]["labels"]},
        "spec": template["spec"]});
    pod["metadata"]["namespace"] = json!(case.ns);
    let created = case
        .cp
        .kubectl_stdin(
            &["create", "-f", "-", "-o", "jsonpath={.metadata.name}"],
            Some(&pod.to_string()),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", case.hook.log()));
    let stored = case.stored(&created);
    assert_invariants(&stored);
    let arn = case.run(stored, &[]);
    assert_eq!(
        arn,
        format!("arn:aws:sts::123456789012:assumed-role/e2e-reader/{created}")
    );
}

#[test]
fn unannotated_pod_in_an_opted_in_namespace_is_left_alone() {
    let case = Case::new("e2e-plain");
    case.service_account("default", &[]);
    let pod = case.pod("plain", "default", &[]);
    assert!(pod["spec"]["initContainers"].is_null(), "{pod}");
    assert!(
        !pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| !v["emptyDir"].is_null()),
        "{pod}"
    );
}

#[test]
fn bad_annotation_is_refused_with_a_message_naming_it() {
    let case = Case::new("e2e-bad");
    case.service_account("default", &[]);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad", "annotations": {"tempcreds.io/role-arn": "arn:aws:iam::12:role/x"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}
    });
    let err = case
        .cp
        .kubectl_stdin(
            &["-n", &case.ns, "apply", "-f", "-"],
            Some(&pod.to_string()),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("tempcreds.io/role-arn"), "{err}");
    assert!(err.contains("arn:aws:iam::12:role/x"), "{err}");
    assert!(err.contains("12 digits"), "{err}");
}

/// `tempcreds.io/session-tags-policy: simple` through the real webhook: the
/// namespace and ServiceAccount tags rendered at admission, the pod-name tag
/// added by the sidecar from the downward API, all on the first AssumeRole.
#[test]
fn simple_session_tags_reach_sts_on_the_first_assume_role() {
    let case = Case::new("e2e-tags");
    case.service_account("tagged", &[]);
    case.secret("aws-keys", "AKIAE2EEXAMPLE000004", "long-term-secret-e2e");
    let pod = case.pod(
        "tagged-pod",
        "tagged",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/secret-name", "aws-keys"),
            ("tempcreds.io/session-tags-policy", "simple"),
            ("tempcreds.io/session-tags", "cost-center=42"),
        ],
    );
    assert_invariants(&pod);
    let arn = case.run(pod, &[]);
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/e2e-reader/tagged-pod"
    );
    let calls: Vec<_> = case
        .moto
        .sts_requests()
        .into_iter()
        .filter(|r| r.action != "GetCallerIdentity")
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].action, "AssumeRole");
    let tags: Vec<(String, String)> = (1..)
        .map_while(|i| {
            Some((
                calls[0].param(&format!("Tags.member.{i}.Key"))?.to_owned(),
                calls[0]
                    .param(&format!("Tags.member.{i}.Value"))?
                    .to_owned(),
            ))
        })
        .collect();
    let want = [
        ("kubernetes-namespace", case.ns.as_str()),
        ("kubernetes-service-account", "tagged"),
        ("cost-center", "42"),
        ("kubernetes-pod-name", "tagged-pod"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(tags, want);
}

/// The admission policy on the real API server: what `kubectl apply`
/// shows for an allowed, a denied and a warned pod.
#[test]
fn policy_allows_denies_and_kubectl_shows_the_message_and_warnings() {
    let case = Case::with_config(
        "e2e-policy",
        "policy:\n  allowedSources: [web-identity, secret]\n  roles:\n\
         \x20 - namespaces: [\"e2e-policy-*\"]\n\
         \x20   roleArns: [\"arn:aws:iam::123456789012:role/e2e-*\"]\n\
         \x20 - namespaceSelector: {matchLabels: {tempcreds-e2e-team: data}}\n\
         \x20   roleArns: [\"arn:aws:iam::123456789012:role/data-*\"]\n",
    );
    case.service_account("default", &[]);
    let apply = |name: &str, annotations: &[(&str, &str)], env: Value| {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": map(annotations)},
            "spec": {"containers": [{"name": "app", "image": "amazon/aws-cli", "env": env}]}
        });
        case.cp.kubectl_with_stderr(
            &["-n", &case.ns, "apply", "-f", "-"],
            Some(&pod.to_string()),
        )
    };

    // Allowed: the role matches the namespace's rule; no warning.
    let (_, stderr) = apply("allowed", &[("tempcreds.io/role-arn", ROLE)], json!([]))
        .unwrap_or_else(|e| panic!("{e}\n{}", case.hook.log()));
    assert!(!stderr.contains("Warning"), "{stderr}");
    assert!(!case.stored("allowed")["spec"]["initContainers"].is_null());

    // Denied: kubectl's error names the annotation, the ARN, the namespace
    // and what is allowed there.
    let admin = "arn:aws:iam::123456789012:role/admin";
    let err = apply("denied", &[("tempcreds.io/role-arn", admin)], json!([]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tempcreds.io/role-arn {admin} is not allowed in namespace {} by the cluster's policy \
             (allowed here: arn:aws:iam::123456789012:role/e2e-* by policy.roles[0])",
            case.ns
        )),
        "{err}"
    );
    let err = apply(
        "ambient",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/source", "ambient"),
        ],
        json!([]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tempcreds.io/source=ambient is not allowed by the cluster's policy"),
        "{err}"
    );

    // A rule by namespace label: the label set just now is seen.
    let data_role = "arn:aws:iam::123456789012:role/data-reader";
    assert!(
        apply(
            "data-before",
            &[("tempcreds.io/role-arn", data_role)],
            json!([])
        )
        .is_err()
    );
    case.cp
        .kubectl(&["label", "namespace", &case.ns, "tempcreds-e2e-team=data"])
        .unwrap();
    apply("data", &[("tempcreds.io/role-arn", data_role)], json!([]))
        .unwrap_or_else(|e| panic!("{e}\n{}", case.hook.log()));

    // Warned: created, and kubectl prints what tempcreds did that the
    // author may not expect.
    let (_, stderr) = apply(
        "warned",
        &[
            ("tempcreds.io/role-arn", ROLE),
            (
                "tempcreds.io/chain-role-arns",
                "arn:aws:iam::123456789012:role/e2e-hop",
            ),
            ("tempcreds.io/session-duration", "2h"),
            ("tempcreds.io/session-tags", "team=a"),
            ("tempcreds.io/session-tags-policy", "none"),
        ],
        json!([{"name": "AWS_ACCESS_KEY_ID", "value": "AKIAOLDKEYEXAMPLE"}]),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", case.hook.log()));
    for needle in [
        "Warning: tempcreds.io/session-tags is ignored because tempcreds.io/session-tags-policy=none",
        "Warning: tempcreds.io/session-duration 2h: chained role sessions last at most 1h",
        "Warning: container \"app\" sets AWS_ACCESS_KEY_ID",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

fn map(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect()
}

fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The native sidecar is restarted by the kubelet when it dies. Killed with
/// SIGKILL in the middle of refreshing (every second here) and started again,
/// it must never leave the app a torn or empty credentials file: the old
/// file stays until the new process replaces it whole.
#[test]
fn a_sidecar_killed_mid_run_and_restarted_never_leaves_a_torn_or_empty_file() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tempcreds_tests::LIMIT;

    let case = Case::new("e2e-restart");
    case.service_account("reader", &[]);
    let pod = case.pod(
        "restart",
        "reader",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/session-duration", "900"),
            ("tempcreds.io/refresh-before", "899s"),
        ],
    );
    let local = LocalPod::new(pod, case.work.path());
    local.prepare_volumes(&case.cp);
    let credentials = local
        .env_of(local.container("app"))
        .into_iter()
        .find(|(k, _)| k == "AWS_SHARED_CREDENTIALS_FILE")
        .map(|(_, v)| v)
        .expect("the app gets AWS_SHARED_CREDENTIALS_FILE");
    let first = local.run_sidecar(&[]);

    // The reader records every whole credential set it sees and every read
    // that was not whole. The test moves on when the reader has seen the
    // sidecars make progress, never after a fixed time: a loaded machine
    // only makes it slower.
    #[derive(Default)]
    struct Seen {
        reads: u64,
        keys: BTreeSet<String>,
        torn: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let path = credentials.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let key = text
                    .lines()
                    .find_map(|l| l.strip_prefix("aws_access_key_id = "));
                let whole = key.is_some()
                    && text.contains("\naws_secret_access_key = ")
                    && text.contains("\naws_session_token = ")
                    && text.ends_with('\n');
                let mut seen = seen.lock().unwrap();
                seen.reads += 1;
                match key {
                    Some(k) if whole => {
                        seen.keys.insert(k.to_owned());
                    }
                    _ => seen.torn.push(text),
                }
            }
        })
    };
    let keys = || seen.lock().unwrap().keys.len();
    let reads = || seen.lock().unwrap().reads;
    // The first sidecar wrote its credentials and refreshed them at least once.
    wait_until("the first sidecar refreshed", LIMIT, || keys() >= 2);
    drop(first); // SIGKILL, as an OOM kill or a node problem would.
    // No sidecar runs for a while: the app keeps reading the last file.
    let gap = reads() + 200;
    wait_until("the reader read the orphaned file", LIMIT, || {
        reads() >= gap
    });
    let before_restart = keys();
    let second = local.run_sidecar(&[]);
    // The restarted sidecar replaced the file with new credentials.
    wait_until("the restarted sidecar refreshed", LIMIT, || {
        keys() > before_restart
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    drop(second);
    let seen = seen.lock().unwrap();
    assert!(
        seen.torn.is_empty(),
        "{} torn or empty reads of {}, e.g. {:?}",
        seen.torn.len(),
        seen.reads,
        seen.torn.first()
    );
}
