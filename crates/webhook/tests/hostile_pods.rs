//! Pods written by a careless or hostile author (issue 12): each test runs
//! the real mutation on a pod that got past the webhook before and asserts
//! what the author now sees: the patched pod, the admission warnings, or the
//! denial message.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tempcreds_webhook::{ClusterConfig, Context, Outcome, mutate};

const ROLE: &str = "arn:aws:iam::123456789012:role/app";

static NO_LABELS: std::sync::LazyLock<tempcreds_webhook::policy::Labels> =
    std::sync::LazyLock::new(Default::default);

fn ctx(sa: &BTreeMap<String, String>) -> Context<'_> {
    Context {
        namespace: "team-a",
        service_account_annotations: sa,
        namespace_labels: &NO_LABELS,
    }
}

fn config() -> ClusterConfig {
    let mut c = ClusterConfig::with_image("img");
    c.region = Some("eu-west-1".into());
    c
}

fn run(pod: &Value, config: &ClusterConfig) -> Outcome {
    mutate(pod, &ctx(&BTreeMap::new()), config)
}

/// The patched pod and the warnings; panics on a denial.
fn patched(pod: &Value, config: &ClusterConfig) -> (Value, Vec<String>) {
    match run(pod, config) {
        Outcome::Patch { patch, warnings } => {
            let mut out = pod.clone();
            json_patch::patch(&mut out, &patch).unwrap();
            (out, warnings)
        }
        other => panic!("not patched: {other:?}"),
    }
}

fn denial(pod: &Value, config: &ClusterConfig) -> String {
    match run(pod, config) {
        Outcome::Deny(message) => message,
        other => panic!("not denied: {other:?}"),
    }
}

fn pod_with(annotations: Value, spec: Value) -> Value {
    json!({"metadata": {"name": "p", "annotations": annotations}, "spec": spec})
}

/// The volume a container mounts at `path`, by the container's name.
fn volume_at<'a>(pod: &'a Value, container: &str, path: &str) -> Option<&'a Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
        .filter(|c| c["name"] == container)
        .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
        .find(|m| m["mountPath"] == path)
}

fn volume<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
}

/// Issue 12, item 1: a mount naming a volume the pod does not have bound
/// to the volume tempcreds injected under that name.
#[test]
fn a_dangling_mount_never_binds_to_an_injected_volume() {
    for source in ["web-identity", "secret"] {
        let pod = pod_with(
            json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/source": source,
                   "tempcreds.io/secret-name": "keys",
                   "tempcreds.io/skip-containers": "skipped"}),
            json!({
                "containers": [
                    {"name": "app", "image": "app", "volumeMounts": [
                        {"name": "tempcreds-token", "mountPath": "/token"},
                        {"name": "tempcreds-aws-keys", "mountPath": "/keys"},
                    ]},
                    {"name": "skipped", "image": "x", "volumeMounts": [
                        {"name": "tempcreds-credentials", "mountPath": "/creds"},
                    ]},
                ],
                "initContainers": [{"name": "setup", "image": "x", "volumeMounts": [
                    {"name": "tempcreds-credentials-2", "mountPath": "/creds", "readOnly": false},
                ]}],
            }),
        );
        let (out, _) = patched(&pod, &config());
        // The injected volumes took free names...
        let sidecar_source = if source == "secret" {
            "/var/run/secrets/tempcreds/aws-keys"
        } else {
            "/var/run/secrets/tempcreds/serviceaccount"
        };
        let source_volume = volume_at(&out, "tempcreds", sidecar_source).unwrap()["name"]
            .as_str()
            .unwrap();
        let credentials = volume_at(&out, "tempcreds", "/var/run/tempcreds").unwrap()["name"]
            .as_str()
            .unwrap();
        assert_eq!(credentials, "tempcreds-credentials-3", "{out:#}");
        assert!(
            source_volume == "tempcreds-token-2" || source_volume == "tempcreds-aws-keys-2",
            "{source_volume}"
        );
        // ...so the app's mounts stay dangling (the API server refuses the
        // pod, as it would without tempcreds) instead of reaching the token,
        // the keys or a writable credentials volume.
        for name in [
            "tempcreds-token",
            "tempcreds-aws-keys",
            "tempcreds-credentials",
            "tempcreds-credentials-2",
        ] {
            assert!(volume(&out, name).is_none(), "{name} was added: {out:#}");
        }
        assert_eq!(
            volume_at(&out, "app", "/var/run/tempcreds").unwrap(),
            &json!({"name": "tempcreds-credentials-3", "mountPath": "/var/run/tempcreds", "readOnly": true})
        );
    }
}

/// Issue 12, item 6: `tempcreds.io/injected` written by the pod's author
/// skipped the policy and the injection.
#[test]
fn a_forged_injected_marker_skips_neither_the_policy_nor_the_injection() {
    let mut config = config();
    config.policy = serde_yaml::from_str(
        "roles:\n- namespaces: [team-a]\n  roleArns: [\"arn:aws:iam::123456789012:role/team-a-*\"]",
    )
    .unwrap();
    let spec = json!({"containers": [{"name": "app", "image": "app"}]});
    // A role the policy refuses: denied, marker or not.
    for marker in [json!("app"), json!("tempcreds"), json!("")] {
        let pod = pod_with(
            json!({"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/admin",
                   "tempcreds.io/injected": marker}),
            spec.clone(),
        );
        assert_eq!(
            denial(&pod, &config),
            "tempcreds: tempcreds.io/role-arn arn:aws:iam::123456789012:role/admin is not allowed in \
             namespace team-a by the cluster's policy (allowed here: \
             arn:aws:iam::123456789012:role/team-a-* by policy.roles[0])"
        );
    }
    // An allowed role with a marker naming the app container: refused, with
    // what to do.
    let pod = pod_with(
        json!({"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/team-a-x",
               "tempcreds.io/injected": "app"}),
        spec.clone(),
    );
    assert_eq!(
        denial(&pod, &config),
        "tempcreds: annotation tempcreds.io/injected=\"app\": is written by the webhook on the pods it \
         injects, naming the sidecar container, but container \"app\" is not a tempcreds sidecar (it does \
         not run `tempcreds-sidecar run` with the in-memory credentials volume at /var/run/tempcreds); \
         remove the annotation and let the webhook inject the pod"
    );
    // A marker naming no container (a copied manifest): injected again.
    let pod = pod_with(
        json!({"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/team-a-x",
               "tempcreds.io/injected": "gone"}),
        spec,
    );
    let (out, _) = patched(&pod, &config);
    assert_eq!(
        out["metadata"]["annotations"]["tempcreds.io/injected"],
        "tempcreds"
    );
    // And the injected pod passes again unchanged (reinvocation).
    assert_eq!(run(&out, &config), Outcome::NotForUs);
}

/// Issue 12, item 8: the mount-path clash check compared raw strings.
#[test]
fn a_mount_at_the_credentials_path_is_found_however_it_is_written() {
    for path in [
        "/var/run/tempcreds",
        "/var/run/tempcreds/",
        "/var/run//tempcreds",
        "/var/run/tempcreds/.",
        "//var/./run/tempcreds//",
    ] {
        let pod = pod_with(
            json!({"tempcreds.io/role-arn": ROLE}),
            json!({"containers": [{"name": "app", "image": "app",
                   "volumeMounts": [{"name": "data", "mountPath": path}]}],
                   "volumes": [{"name": "data", "emptyDir": {}}]}),
        );
        assert_eq!(
            denial(&pod, &config()),
            format!(
                "tempcreds: container \"app\" already mounts a volume at {path:?} (/var/run/tempcreds), \
                 where tempcreds mounts the credentials; remove that mount or list the container in \
                 tempcreds.io/skip-containers"
            )
        );
    }
}

/// Issue 12, item 8: `skip-containers` naming no container was silent.
#[test]
fn skip_containers_naming_no_container_is_a_warning() {
    let pod = pod_with(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/skip-containers": "sidecar-typo"}),
        json!({"containers": [{"name": "app", "image": "app"}]}),
    );
    let (_, warnings) = patched(&pod, &config());
    assert_eq!(
        warnings,
        [
            "tempcreds.io/skip-containers names \"sidecar-typo\", which is not a container of this pod"
        ]
    );
}

/// Issue 12, item 9: without any region the pod was admitted silently and
/// its sidecar exited 64 where there is no instance metadata.
#[test]
fn no_region_anywhere_is_a_warning_naming_the_annotation_and_the_chart_value() {
    let pod = pod_with(
        json!({"tempcreds.io/role-arn": ROLE}),
        json!({"containers": [{"name": "app", "image": "app"}]}),
    );
    let (_, warnings) = patched(&pod, &ClusterConfig::with_image("img"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.starts_with("no region: neither tempcreds.io/region")
            && w.contains("defaults.region")
            && w.contains("instance metadata")
            && w.contains("exits 64"),
        "{w}"
    );
    // With a region from the config there is nothing to say.
    let (_, warnings) = patched(&pod, &config());
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// Issue 12, item 10: `source: ambient` above 1 h was neither capped nor
/// warned about, though node and Pod Identity credentials are a role's.
#[test]
fn ambient_source_above_an_hour_warns_of_role_chaining() {
    let pod = pod_with(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/source": "ambient",
               "tempcreds.io/session-duration": "2h"}),
        json!({"containers": [{"name": "app", "image": "app"}]}),
    );
    let (_, warnings) = patched(&pod, &config());
    assert_eq!(
        warnings,
        [
            "tempcreds.io/session-duration 2h: with tempcreds.io/source ambient the sidecar's own credentials may \
          be a role's (a node role, EKS Pod Identity); STS then treats the AssumeRole as role chaining and \
          refuses durations above 1h. If they are, request 1h or less"
        ]
    );
    let pod = pod_with(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/source": "ambient",
               "tempcreds.io/session-duration": "1h"}),
        json!({"containers": [{"name": "app", "image": "app"}]}),
    );
    assert!(patched(&pod, &config()).1.is_empty());
}

/// Issue 12, item 8: `inject -f` dropped an unquoted YAML number or
/// boolean; now every such annotation is named.
#[test]
fn inject_names_an_annotation_yaml_reads_as_a_number_or_boolean() {
    let input = format!(
        "kind: Pod\nmetadata:\n  name: p\n  annotations:\n    tempcreds.io/role-arn: \"{ROLE}\"\n    \
         tempcreds.io/session-duration: 1e3\nspec:\n  containers: [{{name: app, image: app}}]\n"
    );
    let e = tempcreds_webhook::inject_cmd::inject(&input, &config(), &BTreeMap::new(), "default")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "Pod p (document 1): tempcreds: annotation tempcreds.io/session-duration: YAML reads the value as a \
         number (1000.0), not a string; annotation values are strings: quote it \
         (tempcreds.io/session-duration: \"...\")"
    );
    let input = "kind: Pod\nmetadata:\n  name: p\n  annotations:\n    tempcreds.io/inject: true\n\
                 spec:\n  containers: [{name: app, image: app}]\n";
    let e = tempcreds_webhook::inject_cmd::inject(input, &config(), &BTreeMap::new(), "default")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "annotation tempcreds.io/inject: YAML reads the value as a boolean (true), not a string"
        ),
        "{e}"
    );
}
