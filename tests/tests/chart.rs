//! The Helm chart and the plain manifests: lint, schema, rendering, and a real
//! install, upgrade and uninstall against the local kube-apiserver.
//!
//! There is no kubelet in the test control plane, so the webhook pods never
//! run here; what is checked is that every object is valid and accepted by a
//! real API server, and that Helm leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempcreds_tests::helm::{chart_dir, helm, ok};
use tempcreds_tests::{ControlPlane, unique_suffix};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    chart_dir()
}

fn template(sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "tempcreds",
        chart.to_str().unwrap(),
        "--namespace",
        "tempcreds",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(helm(&args, None), &format!("helm template {sets:?}"))
}

/// Kinds in a rendered stream, in order.
fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn lints_strictly_in_every_certificate_mode() {
    let chart = chart();
    for mode in ["self-managed", "cert-manager"] {
        let set = format!("certificates.mode={mode}");
        ok(
            helm(
                &["lint", "--strict", chart.to_str().unwrap(), "--set", &set],
                None,
            ),
            &format!("helm lint --strict ({mode})"),
        );
    }
}

#[test]
fn default_render_has_the_secure_defaults() {
    let out = template(&[]);
    assert_eq!(
        kinds(&out),
        [
            "PodDisruptionBudget",
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "MutatingWebhookConfiguration"
        ]
    );
    assert!(out.contains("failurePolicy: Fail"));
    assert!(out.contains("sideEffects: None"));
    assert!(out.contains("reinvocationPolicy: IfNeeded"));
    assert!(out.contains("tempcreds.io/injection: enabled"));
    assert!(out.contains(r#"values: ["kube-system", "tempcreds"]"#));
    assert!(out.contains("replicas: 2"));
    assert!(out.contains("readOnlyRootFilesystem: true"));
    assert!(
        !out.contains("caBundle:"),
        "caBundle is managed at run time"
    );
    // Graceful termination: 5 s serving while the endpoints converge, 20 s
    // of drain, and room for both before the kubelet's SIGKILL.
    assert!(out.contains("- --shutdown-delay=5s"));
    assert!(out.contains("- --shutdown-grace=20s"));
    assert!(out.contains("terminationGracePeriodSeconds: 30"));
    assert!(
        !out.contains("--tls-ca-lifetime") && !out.contains("--tls-cert-lifetime"),
        "empty lifetimes leave the binary's defaults"
    );
}

#[test]
fn shutdown_values_reach_the_webhook() {
    let out = template(&[
        "webhook.shutdownDelaySeconds=10",
        "webhook.shutdownGraceSeconds=15",
    ]);
    assert!(out.contains("- --shutdown-delay=10s"));
    assert!(out.contains("- --shutdown-grace=15s"));
    assert!(out.contains("terminationGracePeriodSeconds: 30"));
    let off = template(&["webhook.shutdownDelaySeconds=0"]);
    assert!(off.contains("- --shutdown-delay=0s"));
    assert!(off.contains("terminationGracePeriodSeconds: 25"));
}

#[test]
fn self_managed_lifetimes_reach_the_webhook() {
    let out = template(&[
        "certificates.selfManaged.caLifetime=87600h",
        "certificates.selfManaged.certificateLifetime=720h",
    ]);
    assert!(out.contains("- --tls-ca-lifetime=87600h"));
    assert!(out.contains("- --tls-cert-lifetime=720h"));
    // The lifetimes are the self-managed mode's only.
    let cert_manager = template(&[
        "certificates.mode=cert-manager",
        "certificates.selfManaged.caLifetime=87600h",
    ]);
    assert!(!cert_manager.contains("--tls-ca-lifetime"));
}

#[test]
fn cert_manager_mode_uses_a_certificate_and_ca_injection() {
    let out = template(&["certificates.mode=cert-manager"]);
    let k = kinds(&out);
    assert!(k.contains(&"Certificate".to_owned()) && k.contains(&"Issuer".to_owned()));
    assert!(
        !k.contains(&"Role".to_owned()),
        "no Secret access needed: {k:?}"
    );
    assert!(out.contains("cert-manager.io/inject-ca-from: tempcreds/tempcreds"));
    assert!(out.contains("- tempcreds.tempcreds.svc"));
    assert!(out.contains("--tls-cert-file=/etc/tempcreds/tls/tls.crt"));

    let custom = template(&[
        "certificates.mode=cert-manager",
        "certificates.certManager.issuerRef.name=corp-ca",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(!kinds(&custom).contains(&"Issuer".to_owned()));
    assert!(custom.contains("kind: ClusterIssuer") && custom.contains("name: corp-ca"));
}

#[test]
fn bad_values_fail_with_the_schema_message() {
    let chart = chart();
    let cases = [
        ("replicaCount=-1", "/replicaCount"),
        ("webhook.failurePolicy=Sometimes", "'Fail', 'Ignore'"),
        ("image.repository=", "/image/repository"),
        ("sidecar.image.repository=", "/sidecar/image/repository"),
        ("webhook.timeoutSeconds=60", "/webhook/timeoutSeconds"),
        ("certificates.mode=vault", "'self-managed', 'cert-manager'"),
        ("replicaCount=two", "/replicaCount"),
        (
            "certificates.selfManaged.caLifetime=ten years",
            "/certificates/selfManaged/caLifetime",
        ),
        (
            "certificates.selfManaged.certificateLifetime=1y",
            "/certificates/selfManaged/certificateLifetime",
        ),
        (
            "webhook.shutdownDelaySeconds=-1",
            "/webhook/shutdownDelaySeconds",
        ),
        (
            "webhook.shutdownGraceSeconds=0",
            "/webhook/shutdownGraceSeconds",
        ),
        ("defaults.useFipsEndpoint=yes", "/defaults/useFipsEndpoint"),
        (
            "defaults.useDualstackEndpoint=1",
            "/defaults/useDualstackEndpoint",
        ),
    ];
    for (set, needle) in cases {
        let out = helm(
            &["template", "t", chart.to_str().unwrap(), "--set", set],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(err.contains(needle), "{set}: {err}");
    }
}

#[test]
fn plain_manifests_match_the_chart() {
    let rendered = Command::new(root().join("hack/render-manifests.sh"))
        .arg("--stdout")
        .output()
        .expect("render manifests");
    let rendered = ok(rendered, "hack/render-manifests.sh --stdout");
    let committed = std::fs::read_to_string(root().join("manifests/tempcreds.yaml"))
        .expect("manifests/tempcreds.yaml");
    assert!(
        rendered == committed,
        "manifests/tempcreds.yaml is out of date with charts/tempcreds; run hack/render-manifests.sh"
    );
}

/// Every object of the plain manifests is accepted by the real API server
/// (server-side dry run with strict field validation).
#[test]
fn plain_manifests_are_accepted_by_the_api_server() {
    let cp = ControlPlane::from_env();
    let manifests = std::fs::read_to_string(root().join("manifests/tempcreds.yaml")).unwrap();
    // Create the namespace for real first: a dry-run namespace does not exist
    // for the namespaced objects after it.
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(manifests.split("---").nth(1).unwrap()),
    )
    .unwrap();
    let out = cp
        .kubectl_stdin(
            &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&manifests),
        )
        .unwrap();
    assert_eq!(
        out.matches("(server dry run)").count(),
        kinds(&manifests).len(),
        "{out}"
    );
}

/// A release installed into a new namespace `<prefix>-<suffix>`.
struct Installed {
    release: String,
    ns: String,
    /// The `--set` that scopes its webhook to namespaces labelled
    /// `chart-test=<suffix>`.
    selector: String,
    suffix: String,
}

/// `helm install` of the chart into the real API server. The webhook is
/// scoped to a label no other test uses: it has no running pods here and
/// fails closed.
fn install(cp: &ControlPlane, prefix: &str, sets: &[&str]) -> Installed {
    let suffix = unique_suffix();
    let ns = format!("{prefix}-{suffix}");
    let release = format!("tc{suffix}");
    let selector = format!("webhook.namespaceSelector.matchLabels.chart-test={suffix}");
    let chart = chart();
    let mut args = vec![
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        &ns,
        "--create-namespace",
        "--set",
        &selector,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(helm(&args, Some(&cp.kubeconfig)), "helm install");
    Installed {
        release,
        ns,
        selector,
        suffix,
    }
}

#[test]
fn installs_upgrades_and_uninstalls_cleanly_on_a_real_api_server() {
    let cp = ControlPlane::from_env();
    let kc = cp.kubeconfig.clone();
    let Installed {
        release,
        ns,
        selector,
        suffix,
    } = install(&cp, "tempcreds-chart", &[]);
    let chart = chart();
    let name = format!("{release}-tempcreds");
    let mwc = cp
        .kubectl(&["get", "mutatingwebhookconfiguration", &name, "-o", "json"])
        .unwrap();
    let mwc: serde_json::Value = serde_json::from_str(&mwc).unwrap();
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["clientConfig"]["service"]["namespace"], ns.as_str());
    assert_eq!(
        hook["namespaceSelector"]["matchLabels"]["chart-test"],
        suffix.as_str()
    );
    let deploy = cp
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "deployment",
            &name,
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .unwrap();
    assert_eq!(deploy, "2");

    ok(
        helm(
            &[
                "upgrade",
                &release,
                chart.to_str().unwrap(),
                "--namespace",
                &ns,
                "--set",
                &selector,
                "--set",
                "replicaCount=3",
            ],
            Some(&kc),
        ),
        "helm upgrade",
    );
    let deploy = cp
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "deployment",
            &name,
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .unwrap();
    assert_eq!(deploy, "3");

    ok(
        helm(
            &["uninstall", &release, "--namespace", &ns, "--wait"],
            Some(&kc),
        ),
        "helm uninstall",
    );
    let label = format!("app.kubernetes.io/instance={release}");
    let namespaced = "deployments,services,serviceaccounts,configmaps,roles,rolebindings,poddisruptionbudgets,secrets";
    let left = cp
        .kubectl(&["-n", &ns, "get", namespaced, "-l", &label, "-o", "name"])
        .unwrap();
    assert_eq!(left.trim(), "", "left behind in {ns}");
    let left = cp
        .kubectl(&[
            "get",
            "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
            "-l",
            &label,
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(left.trim(), "", "cluster-scoped objects left behind");
    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}

/// The installed chart's webhook, run as a local process with the chart's
/// own arguments, ConfigMap and ServiceAccount (a token for it, so exactly
/// the chart's RBAC applies): in self-managed mode it fills the chart's
/// Secret, sets the caBundle and serves a certificate for the Service name.
/// This proves the Deployment's arguments, the config format and the
/// least-privilege RBAC fit the binary.
#[test]
fn the_charts_webhook_runs_with_the_charts_arguments_config_and_rbac() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let cp = ControlPlane::from_env();
    // With lifetimes set, so the binary accepts what the chart passes.
    let Installed { release, ns, .. } = install(
        &cp,
        "tempcreds-run",
        &[
            "certificates.selfManaged.caLifetime=87600h",
            "certificates.selfManaged.certificateLifetime=2160h",
        ],
    );
    let name = format!("{release}-tempcreds");
    let work = tempfile::tempdir().unwrap();

    // The chart's ServiceAccount, as the pod would run.
    let token = cp
        .kubectl(&["-n", &ns, "create", "token", &name, "--duration", "1h"])
        .unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            cp.url,
            cp.ca_file.display(),
            token.trim()
        ),
    )
    .unwrap();
    let config = cp
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "configmap",
            &name,
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])
        .unwrap();
    let config_file = work.path().join("config.yaml");
    std::fs::write(&config_file, config).unwrap();
    let deploy: serde_json::Value = serde_json::from_str(
        &cp.kubectl(&["-n", &ns, "get", "deployment", &name, "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let port = tempcreds_tests::free_port();
    let args: Vec<String> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{port}")
            } else if a.starts_with("--config=") {
                format!("--config={}", config_file.display())
            } else {
                a
            }
        })
        .collect();
    let log = work.path().join("webhook.log");
    let mut child = Command::new(tempcreds_tests::bins::bin("tempcreds-webhook"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let secret = format!("{name}-tls");
    let dns = format!("{name}.{ns}.svc");
    let deadline = Instant::now() + tempcreds_tests::LIMIT;
    let ca_file = work.path().join("ca.crt");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "webhook exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let ca = cp
            .kubectl(&[
                "-n",
                &ns,
                "get",
                "secret",
                &secret,
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ])
            .unwrap();
        let bundle = cp
            .kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                &name,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])
            .unwrap();
        if !ca.is_empty() && ca == bundle {
            use base64::Engine;
            std::fs::write(
                &ca_file,
                base64::engine::general_purpose::STANDARD
                    .decode(ca)
                    .unwrap(),
            )
            .unwrap();
            // Served for the Service's DNS name, trusted through the CA.
            let served = tempcreds_tests::https_ok(
                &format!("https://{dns}:{port}/healthz"),
                &ca_file,
                Some((&dns, port)),
            );
            if served {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the chart's webhook did not set up its certificate: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It records when the caBundle was published (the Role lets it
    // annotate its Secret).
    tempcreds_tests::wait_until(
        "the Secret records the caBundle's publication",
        tempcreds_tests::LIMIT,
        || {
            cp.kubectl(&[
                "-n",
                &ns,
                "get",
                "secret",
                &secret,
                "-o",
                "jsonpath={.metadata.annotations.tempcreds\\.io/ca-published-at}",
            ])
            .is_ok_and(|at| !at.is_empty())
        },
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("forbidden"),
        "RBAC too tight: {log_text}"
    );
    let _ = child.kill();
    let _ = child.wait();
    ok(
        helm(
            &["uninstall", &release, "--namespace", &ns, "--wait"],
            Some(&cp.kubeconfig),
        ),
        "helm uninstall",
    );
    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}

/// Every option group renders objects the real API server accepts (strict
/// server-side dry run; cert-manager's own kinds left out, as this cluster
/// has no cert-manager CRDs) and a cluster config the webhook binary loads.
#[test]
fn every_option_group_renders_objects_the_api_server_and_the_webhook_accept() {
    let cp = ControlPlane::from_env();
    let ns = cp.create_namespace("tempcreds-groups", &[]).unwrap();
    let chart = chart();
    let groups: [&[&str]; 3] = [
        &["certificates.mode=cert-manager"],
        &[
            "sidecar.nativeSidecar=false",
            "defaults.region=eu-west-1",
            "defaults.stsEndpoint=https://sts.eu-west-1.amazonaws.com",
            "defaults.delivery=endpoint",
            "policy.allowedSources={web-identity}",
            "podDisruptionBudget.enabled=false",
            "replicaCount=3",
            "priorityClassName=system-cluster-critical",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
        ],
        &[
            "webhook.failurePolicy=Ignore",
            "webhook.objectSelector.matchLabels.team=a",
            "defaults.region=us-east-1",
            "defaults.useFipsEndpoint=true",
            "defaults.useDualstackEndpoint=true",
        ],
    ];
    let work = tempfile::tempdir().unwrap();
    let pod = work.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    tempcreds.io/role-arn: arn:aws:iam::123456789012:role/payments-api\nspec:\n  containers:\n  - name: app\n    image: busybox\n",
    )
    .unwrap();
    for (i, sets) in groups.iter().enumerate() {
        let mut args = vec![
            "template",
            "tc",
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
        ];
        for s in sets.iter() {
            args.extend(["--set", s]);
        }
        let json_policy = r#"policy.roles=[{"namespaces":["pay*"],"roleArns":["arn:aws:iam::123456789012:role/payments-*"]}]"#;
        if i == 2 {
            args.extend(["--set-json", json_policy]);
        }
        let rendered = ok(helm(&args, None), &format!("helm template {sets:?}"));
        let docs: Vec<&str> = rendered
            .split("\n---\n")
            .filter(|d| !d.contains("\nkind: Certificate\n") && !d.contains("\nkind: Issuer\n"))
            .collect();
        let kept = docs.join("\n---\n");
        let out = cp
            .kubectl_stdin(
                &[
                    "apply",
                    "-n",
                    &ns,
                    "--dry-run=server",
                    "--validate=strict",
                    "-f",
                    "-",
                ],
                Some(&kept),
            )
            .unwrap_or_else(|e| panic!("{sets:?}: {e}"));
        assert_eq!(
            out.matches("(server dry run)").count(),
            kinds(&kept).len(),
            "{sets:?}: {out}"
        );
        let configmap = docs
            .iter()
            .find(|d| d.contains("\nkind: ConfigMap\n"))
            .expect("a ConfigMap");
        let config = cp
            .kubectl_stdin(
                &[
                    "create",
                    "--dry-run=client",
                    "-f",
                    "-",
                    "-o",
                    "jsonpath={.data.config\\.yaml}",
                ],
                Some(configmap),
            )
            .unwrap();
        let config_file = work.path().join(format!("config-{i}.yaml"));
        std::fs::write(&config_file, config).unwrap();
        let injected = Command::new(tempcreds_tests::bins::bin("tempcreds-webhook"))
            .args(["inject", "-n", "payments", "-f"])
            .arg(&pod)
            .arg("--config")
            .arg(&config_file)
            .output()
            .unwrap();
        let text = ok(
            injected,
            &format!("tempcreds-webhook inject with the config of {sets:?}"),
        );
        assert!(text.contains("tempcreds.io/injected"), "{sets:?}: {text}");
        if i == 2 {
            assert!(
                text.contains("- --use-fips-endpoint\n")
                    && text.contains("- --use-dualstack-endpoint\n"),
                "{sets:?}: {text}"
            );
        }
    }
    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}

#[test]
fn the_default_namespace_label_can_be_replaced_with_null_or_an_empty_value() {
    let chart = chart();
    for labels in [
        r#"{"team":"payments","tempcreds.io/injection":null}"#,
        r#"{"team":"payments","tempcreds.io/injection":""}"#,
    ] {
        let set = format!("webhook.namespaceSelector.matchLabels={labels}");
        let rendered = ok(
            helm(
                &[
                    "template",
                    "tempcreds",
                    chart.to_str().unwrap(),
                    "--set-json",
                    &set,
                    "--show-only",
                    "templates/mutatingwebhookconfiguration.yaml",
                ],
                None,
            ),
            &format!("helm template {set}"),
        );
        let selector = &rendered[rendered.find("namespaceSelector:").unwrap()..];
        let selector = &selector[..selector.find("matchExpressions:").unwrap()];
        assert!(
            selector.contains("team: payments") && !selector.contains("tempcreds.io/injection"),
            "{labels}: the selector is\n{selector}"
        );
    }
}
