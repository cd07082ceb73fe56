//! The test node that `hack/node.sh` adds to the local control plane
//! (containerd, kubelet, kube-controller-manager, kube-scheduler), found
//! through the `TEMPCREDS_NODE_*` variables it exports, with what tests do
//! with real pods: import images, create pods from JSON, wait for a phase or
//! condition, read logs and container statuses, delete and wait until gone.
//!
//! Run such tests with `TEMPCREDS_NODE=1 hack/with-control-plane.sh cargo
//! test ...` (root only). Pods use `imagePullPolicy: Never`: no registry is
//! reachable, images are imported from archives ([`Node::import_image`],
//! [`Node::test_image`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::ControlPlane;

/// How to run a test that needs the node, for failure messages.
pub const HOW_TO_RUN: &str = "TEMPCREDS_NODE=1 hack/with-control-plane.sh cargo test -p tempcreds-tests --test node_smoke \
     (as root; `hack/with-control-plane.sh --node ...` also works)";

/// The taint `hack/node.sh` puts on the node (effect NoSchedule): only pods
/// with [`toleration`] run there, so pods of tests that expect no node
/// (images from registries) are never pulled.
pub const TAINT_KEY: &str = "tempcreds.io/test-node";

/// The toleration a pod needs to run on the test node.
pub fn toleration() -> Value {
    serde_json::json!({"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
}

/// The shell image of `hack/test-images.sh`: busybox with an applet per
/// command, user 65532.
pub const BUSYBOX: &str = "tempcreds.local/test/busybox:1";

/// The running test node.
#[derive(Debug, Clone)]
pub struct Node {
    cp: ControlPlane,
    /// The Node object's name.
    pub name: String,
    /// The bridge's address: pods reach servers on the host here, and a
    /// server may listen on it before any pod exists.
    pub gateway: String,
    /// `DIR/node`: configs, logs (`*.log`), containerd's root and state.
    pub dir: PathBuf,
    /// containerd's socket, for `ctr -a`.
    pub containerd_address: PathBuf,
}

impl Node {
    /// The running node. Panics, saying how to start one, when the
    /// environment does not name it: these tests need real pods.
    pub fn from_env() -> Node {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: this test needs the test node. Run it with {HOW_TO_RUN}")
            })
        };
        Node {
            cp: ControlPlane::from_env(),
            name: var("TEMPCREDS_NODE_NAME"),
            gateway: var("TEMPCREDS_NODE_GATEWAY"),
            dir: var("TEMPCREDS_NODE_DIR").into(),
            containerd_address: var("CONTAINERD_ADDRESS").into(),
        }
    }

    /// The control plane the node belongs to.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// Runs `ctr` against the node's containerd in the kubelet's namespace;
    /// its output, or an error with what it said.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.containerd_address)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .context("run ctr (Debian package containerd)")?;
        anyhow::ensure!(
            out.status.success(),
            "ctr {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The image references containerd holds for the kubelet.
    pub fn images(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["images", "ls", "-q"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Imports a docker/OCI image archive (`hack/build-image.py`) into the
    /// node's containerd, once per archive and test process.
    pub fn import_image(&self, archive: &Path) -> anyhow::Result<()> {
        static IMPORTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        let mut imported = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
        if imported.iter().any(|a| a == archive) {
            return Ok(());
        }
        let path = archive.to_str().context("archive path is not UTF-8")?;
        self.ctr(&["images", "import", path])
            .with_context(|| format!("import {}", archive.display()))?;
        imported.push(archive.to_path_buf());
        Ok(())
    }

    /// The archive `NAME.tar` built by `hack/test-images.sh` (which builds
    /// all test images the first time, then only checks their inputs).
    pub fn test_image(name: &str) -> PathBuf {
        static ARCHIVES: OnceLock<Vec<PathBuf>> = OnceLock::new();
        let archives = ARCHIVES.get_or_init(|| {
            let script = workspace_root().join("hack/test-images.sh");
            let out = Command::new(&script)
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(PathBuf::from)
                .collect()
        });
        let file = format!("{name}.tar");
        archives
            .iter()
            .find(|a| a.file_name().is_some_and(|f| f == file.as_str()))
            .unwrap_or_else(|| panic!("hack/test-images.sh built no {file}: {archives:?}"))
            .clone()
    }

    /// [`BUSYBOX`], imported into the node.
    pub fn busybox(&self) -> &'static str {
        self.import_image(&Node::test_image("busybox"))
            .expect("import the busybox test image");
        BUSYBOX
    }

    /// Creates an object (a pod, a job, ...) from its JSON in namespace
    /// `ns`; returns its name.
    pub fn create(&self, ns: &str, object: &Value) -> anyhow::Result<String> {
        let out = self.cp.kubectl_stdin(
            &[
                "-n",
                ns,
                "create",
                "-f",
                "-",
                "-o",
                "jsonpath={.metadata.name}",
            ],
            Some(&object.to_string()),
        )?;
        Ok(out.trim().to_owned())
    }

    /// An object as the API server has it, or `None` when it does not exist.
    pub fn get(&self, ns: &str, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let out = self.cp.kubectl(&[
            "-n",
            ns,
            "get",
            kind,
            name,
            "--ignore-not-found",
            "-o",
            "json",
        ])?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&out)?))
    }

    /// A pod as the API server has it.
    pub fn pod(&self, ns: &str, name: &str) -> anyhow::Result<Value> {
        self.get(ns, "pod", name)?
            .with_context(|| format!("pod {ns}/{name} does not exist"))
    }

    /// Polls `kind/name` every 200 ms until `done` holds for it (returning
    /// it) or `fail` does (an error with its status); after `limit` an error
    /// with the last status seen and the object's events.
    pub fn wait_for(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
        fail: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        loop {
            if let Some(object) = self.get(ns, kind, name)? {
                if done(&object) {
                    return Ok(object);
                }
                if fail(&object) {
                    bail!(
                        "{kind} {ns}/{name} failed: {}\n{}",
                        object["status"],
                        self.describe_failure(ns, kind, name)
                    );
                }
                last = object;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{kind} {ns}/{name}: timed out after {limit:?}; last status: {}\n{}",
                    last["status"],
                    self.describe_failure(ns, kind, name)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the pod's phase is `phase`; fails early when it reaches
    /// another final phase (`Succeeded`/`Failed`).
    pub fn wait_for_phase(
        &self,
        ns: &str,
        pod: &str,
        phase: &str,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let final_phase =
            |p: &Value| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        self.wait_for(
            ns,
            "pod",
            pod,
            limit,
            |p| p["status"]["phase"] == phase,
            |p| final_phase(p) && p["status"]["phase"] != phase,
        )
    }

    /// Waits until `kind/name` has condition `condition` with status True
    /// (a pod's `Ready`, a job's `Complete`); fails early on a job's
    /// `Failed` condition or a pod's `Failed` phase.
    pub fn wait_for_condition(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        condition: &str,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_for(
            ns,
            kind,
            name,
            limit,
            |o| has_condition(o, condition),
            |o| {
                (condition != "Failed" && has_condition(o, "Failed"))
                    || o["status"]["phase"] == "Failed"
            },
        )
    }

    /// The logs of a pod's container (`None`: its only container).
    pub fn logs(&self, ns: &str, pod: &str, container: Option<&str>) -> anyhow::Result<String> {
        let mut args = vec!["-n", ns, "logs", pod];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        self.cp.kubectl(&args)
    }

    /// The pod's container statuses (init containers first), by name.
    pub fn container_statuses(
        &self,
        ns: &str,
        pod: &str,
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        let pod = self.pod(ns, pod)?;
        let status = &pod["status"];
        Ok(status["initContainerStatuses"]
            .as_array()
            .into_iter()
            .chain(status["containerStatuses"].as_array())
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s.clone())))
            .collect())
    }

    /// Deletes `kind/name` and waits until the API server no longer has it
    /// (for a pod: until the kubelet has stopped its containers).
    pub fn delete_and_wait(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        self.cp
            .kubectl(&["-n", ns, "delete", kind, name, "--wait=false"])?;
        let deadline = Instant::now() + limit;
        while self.get(ns, kind, name)?.is_some() {
            if Instant::now() >= deadline {
                bail!(
                    "{kind} {ns}/{name} still exists {limit:?} after its deletion\n{}",
                    self.describe_failure(ns, kind, name)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The host PID of a running container's task (its id as in a
    /// container status, without `containerd://`).
    pub fn task_pid(&self, container_id: &str) -> anyhow::Result<u32> {
        self.ctr(&["tasks", "ls"])?
            .lines()
            .find(|l| l.starts_with(container_id))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .with_context(|| format!("no running task {container_id}"))
    }

    /// The containers containerd runs now (ids), for checking that a deleted
    /// pod's containers are gone.
    pub fn running_containers(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["tasks", "ls"])?
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some("RUNNING"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    }

    /// What helps when a pod misbehaves: its events and where the node's
    /// logs are.
    fn describe_failure(&self, ns: &str, kind: &str, name: &str) -> String {
        let events = self
            .cp
            .kubectl(&[
                "-n",
                ns,
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "custom-columns=TYPE:.type,REASON:.reason,FROM:.source.component,MESSAGE:.message",
            ])
            .unwrap_or_else(|e| format!("(events unavailable: {e})"));
        format!(
            "events of {kind} {ns}/{name}:\n{events}node logs: {}/{{kubelet,containerd}}.log",
            self.dir.display()
        )
    }
}

fn has_condition(object: &Value, condition: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == condition && c["status"] == "True")
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}
