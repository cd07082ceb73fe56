//! One node test's world and the pods it runs: moto on the node's gateway,
//! the real webhook injecting the sidecar image `make images` built, a
//! namespace routed to it, and builders for pods whose app is the Go SDK
//! program or busybox (tests/apps, `hack/test-images.sh`).

use std::path::PathBuf;

use base64::Engine;
use serde_json::{Value, json};

use crate::node::Node;
use crate::{Moto, Webhook};

/// The account moto issues every identity in.
pub const ACCOUNT: &str = "123456789012";
/// The role most tests assume.
pub const ROLE: &str = "arn:aws:iam::123456789012:role/node-reader";
/// The role chained after [`ROLE`].
pub const CHAINED: &str = "arn:aws:iam::123456789012:role/node-writer";
pub use crate::LIMIT;
/// The sidecar container's name in injected pods.
pub const SIDECAR: &str = "tempcreds";

/// The sidecar image `make images` built, imported into the node's
/// containerd; its reference is what the webhook injects.
pub fn sidecar_image(node: &Node) -> String {
    product_image(node, "tempcreds-sidecar")
}

/// The image `NAME` (`tempcreds-sidecar` or `tempcreds-webhook`) that `make
/// images` built into `TEMPCREDS_IMAGES_DIR` (default `target/images`),
/// imported into the node's containerd; returns its reference, the one the
/// chart names by default.
pub fn product_image(node: &Node, name: &str) -> String {
    let dir = std::env::var_os("TEMPCREDS_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/images"));
    let archive = dir.join(format!("{name}.tar"));
    assert!(
        archive.exists(),
        "{} is missing: run `make images` (make test builds it)",
        archive.display()
    );
    node.import_image(&archive)
        .unwrap_or_else(|e| panic!("import the {name} image: {e:#}"));
    format!("ghcr.io/tempcreds/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// A test image of `hack/test-images.sh`, imported; returns its reference.
pub fn test_image(node: &Node, name: &str) -> String {
    node.import_image(&Node::test_image(name))
        .unwrap_or_else(|e| panic!("import {name}: {e:#}"));
    format!("tempcreds.local/test/{name}:1")
}

/// One test's world: the node, moto on the node's gateway (where pods and
/// the host both reach it), the webhook, and a namespace routed to it.
pub struct World {
    /// The test node.
    pub node: Node,
    /// moto on the node's gateway.
    pub moto: Moto,
    /// The webhook, registered for [`World::ns`].
    pub hook: Webhook,
    /// The namespace routed to the webhook.
    pub ns: String,
}

impl World {
    /// A world with the default sidecar settings; the namespace name starts with `prefix`.
    pub fn new(prefix: &str) -> World {
        World::with_sidecar_settings(prefix, "")
    }

    /// `sidecar_yaml` is added to the config's `sidecar:` block (indented).
    pub fn with_sidecar_settings(prefix: &str, sidecar_yaml: &str) -> World {
        World::build(prefix, sidecar_yaml, true)
    }

    /// A world whose webhook config names no STS endpoint: sidecars call
    /// the one the AWS SDK resolves (unreachable from this machine), as in
    /// a cluster without a VPC endpoint.
    pub fn without_sts_endpoint(prefix: &str) -> World {
        World::build(prefix, "", false)
    }

    fn build(prefix: &str, sidecar_yaml: &str, sts_endpoint: bool) -> World {
        let node = Node::from_env();
        let moto = Moto::start_on(&node.gateway);
        let image = sidecar_image(&node);
        let sts = if sts_endpoint {
            format!("stsEndpoint: {}\nallowHttpStsEndpoint: true\n", moto.url())
        } else {
            String::new()
        };
        let config = format!(
            "sidecar:\n  image: {image}\n  imagePullPolicy: Never\n{sidecar_yaml}region: us-east-1\n{sts}"
        );
        let hook = Webhook::start(node.control_plane(), &config);
        let ns = hook.namespace(prefix);
        World {
            node,
            moto,
            hook,
            ns,
        }
    }

    /// kubectl in the world's namespace; panics with its error.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.node
            .control_plane()
            .kubectl(&all)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e:#}"))
    }

    /// Creates a ServiceAccount.
    pub fn service_account(&self, name: &str) {
        self.kubectl(&["create", "serviceaccount", name]);
    }

    /// Creates a Secret with (fake) long-term keys under the default key names.
    pub fn secret(&self, name: &str) {
        self.kubectl(&[
            "create",
            "secret",
            "generic",
            name,
            "--from-literal=aws_access_key_id=AKIANODEE2EEXAMPLE01",
            "--from-literal=aws_secret_access_key=nodeE2eSecretAccessKeyExampleValue0000001",
        ]);
    }

    /// Creates `object` through the webhook; panics with the webhook's log
    /// when the API server refuses it.
    pub fn create(&self, object: &Value) -> String {
        self.node
            .create(&self.ns, object)
            .unwrap_or_else(|e| panic!("{e:#}\nwebhook log:\n{}", self.hook.log()))
    }

    /// Waits for the pod's `phase`; panics with the sidecar's log and the STS calls.
    pub fn wait_phase(&self, pod: &str, phase: &str) -> Value {
        self.node
            .wait_for_phase(&self.ns, pod, phase, LIMIT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.diagnostics(pod)))
    }

    /// Waits until the pod is Ready; panics with the sidecar's log and the STS calls.
    pub fn wait_ready(&self, pod: &str) -> Value {
        self.node
            .wait_for_condition(&self.ns, "pod", pod, "Ready", LIMIT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.diagnostics(pod)))
    }

    /// A container's log.
    pub fn logs(&self, pod: &str, container: &str) -> String {
        self.node
            .logs(&self.ns, pod, Some(container))
            .unwrap_or_else(|e| panic!("logs of {pod}/{container}: {e:#}"))
    }

    /// The containerd ID of a pod's container (from its status).
    pub fn container_id(&self, pod: &str, container: &str) -> String {
        let status = self.status(pod, container);
        status["containerID"]
            .as_str()
            .and_then(|s| s.strip_prefix("containerd://"))
            .unwrap_or_else(|| panic!("{pod}/{container} has no container ID: {status}"))
            .to_owned()
    }

    /// The sidecar's log and moto's, for failure messages.
    pub fn diagnostics(&self, pod: &str) -> String {
        let sidecar = self
            .node
            .logs(&self.ns, pod, Some(SIDECAR))
            .unwrap_or_else(|e| format!("(no sidecar log: {e:#})"));
        format!(
            "sidecar log of {pod}:\n{sidecar}\nSTS calls: {:?}",
            self.moto.actions()
        )
    }

    /// A container's status (init containers included).
    pub fn status(&self, pod: &str, container: &str) -> Value {
        self.node
            .container_statuses(&self.ns, pod)
            .expect("container statuses")
            .remove(container)
            .unwrap_or_else(|| panic!("pod {pod} has no container {container}"))
    }
}

/// The restricted PodSecurity profile's container settings: every app
/// container here runs like that, so the same pods pass a restricted
/// namespace.
pub fn restricted() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// A busybox script that runs `script` and then stays up until SIGTERM,
/// which it obeys at once (a shell as PID 1 would ignore it, and every pod
/// deletion would wait out the grace period).
pub fn hold(script: &str) -> String {
    format!("trap 'exit 0' TERM; {script}; sleep 3600 & wait")
}

/// A busybox app container that prints how many session tokens the
/// credentials file holds (`1` when complete) as its first act, then stays up.
pub fn credentials_checker(busybox: &str) -> Value {
    container(
        "app",
        busybox,
        &[
            "sh",
            "-c",
            &hold("grep -c '^aws_session_token = ' /var/run/tempcreds/credentials"),
        ],
        &[],
    )
}

/// An app container running `command`, with the restricted settings.
pub fn container(name: &str, image: &str, command: &[&str], env: &[(&str, &str)]) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "env": env,
        "securityContext": restricted(),
    })
}

/// A pod for `containers`, annotated, with `spec` merged in.
pub fn pod(name: &str, annotations: &[(&str, &str)], containers: Vec<Value>, spec: Value) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": containers,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [crate::node::toleration()],
        },
    });
    if let (Some(dst), Some(src)) = (p["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in src {
            dst.insert(k.clone(), v.clone());
        }
    }
    p
}

/// The Go app (aws-sdk-go-v2's default chain, `GetCallerIdentity` against
/// moto) as a container: `count` calls `interval` apart.
pub fn go_app(world: &World, image: &str, count: u32) -> Value {
    container(
        "app",
        image,
        &[
            "/usr/local/bin/aws-go-app",
            "-count",
            &count.to_string(),
            "-interval",
            "1s",
        ],
        &[("AWS_ENDPOINT_URL_STS", &world.moto.url())],
    )
}

/// The Go app's report lines (one JSON object per call).
pub fn reports(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("n").is_some())
        .collect()
}

/// The last report, which must be a success with the identity of `role`.
pub fn assert_go_app_used(log: &str, role_name: &str, source: &str) -> Value {
    let last = reports(log)
        .pop()
        .unwrap_or_else(|| panic!("the app printed no report: {log}"));
    assert_eq!(last["ok"], true, "the app's AWS call failed: {log}");
    let arn = last["arn"].as_str().unwrap_or_default();
    assert!(
        arn.starts_with(&format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/")),
        "the app's identity is {arn}, not the role {role_name}: {log}"
    );
    assert!(
        last["source"].as_str().unwrap_or_default().contains(source),
        "the SDK found its credentials through {}, not {source}: {log}",
        last["source"]
    );
    assert_eq!(last["access_key_id_prefix"], "ASIA", "{log}");
    last
}

/// The claims of a JWT (no verification: the test reads what the kubelet
/// projected and the sidecar sent).
pub fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("JWT payload is base64url");
    serde_json::from_slice(&bytes).expect("JWT payload is JSON")
}

/// How many of `actions` are `action`.
pub fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

impl World {
    /// Waits for the pod's final `phase`, then returns the app's log.
    pub fn logs_after(&self, pod: &str, phase: &str) -> String {
        self.wait_phase(pod, phase);
        self.logs(pod, "app")
    }
}
