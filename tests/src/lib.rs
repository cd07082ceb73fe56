//! The test harness of tempcreds: real software, started and found for tests.
//!
//! - [`Moto`]: moto's STS server (`moto_server`) on a free loopback port, one
//!   per test, recording every request so tests can assert which STS calls
//!   were made and with which parameters.
//! - [`ControlPlane`]: the local kube-apiserver that `make test` starts with
//!   `hack/control-plane.sh` (found through the environment it exports).
//! - [`tool`]: paths of the installed tools (aws, kubectl, helm, python).
//! - [`Webhook`]: the real webhook process registered with the API server.
//! - [`LocalPod`]: an injected pod's sidecar run as a local process.
//!
//! Tools are installed by `hack/install-tools.sh` into `TEMPCREDS_CACHE`
//! (default `~/.cache/tempcreds`); `make test` does that first.

pub mod bins;
pub mod helm;
pub mod moto;
pub mod node;
pub mod pod;
pub mod webhook;
pub mod world;

pub use moto::{Moto, StsRequest};

/// How long anything a test waits for (a pod, a process, a certificate) may
/// take. Generous on purpose: the suite must pass on a machine busy with
/// other work, and a wait only takes this long when something is broken.
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(180);
pub use pod::LocalPod;
pub use webhook::Webhook;

use std::net::TcpListener;
use std::path::PathBuf;

/// The cache directory the hack/ scripts install tools into.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEMPCREDS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("neither TEMPCREDS_CACHE, XDG_CACHE_HOME nor HOME is set");
    base.join("tempcreds")
}

/// The path of an installed tool: `aws`, `python`, `moto_server` (from the
/// venv) or `kubectl`, `helm` (from the cache's bin/). Panics with the command
/// that installs it when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let cache = cache_dir();
    let path = match name {
        "kubectl" | "helm" => cache.join("bin").join(name),
        _ => cache.join("venv").join("bin").join(name),
    };
    assert!(
        path.exists(),
        "{} is not installed; run `hack/install-tools.sh` (or `make test`, which does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (released before returning, so a race with
/// another process is possible but harmless in practice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// This process's resident memory, in KiB (`VmRSS` of `/proc/self/status`).
pub fn vm_rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("cannot read /proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS in /proc/self/status")
}

/// The local control plane started by `hack/control-plane.sh`, found through
/// the variables its `env` file exports.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that signed the API server's certificate.
    pub ca_file: PathBuf,
    /// The service-account token issuer.
    pub issuer: String,
}

impl ControlPlane {
    /// The running control plane. Panics, saying how to start one, when the
    /// environment does not name it: these tests need the real API server.
    pub fn from_env() -> ControlPlane {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: this test needs the local kube-apiserver. \
                     Run it through `make test`, or `hack/with-control-plane.sh cargo test ...`"
                )
            })
        };
        ControlPlane {
            kubeconfig: var("KUBECONFIG").into(),
            url: var("TEMPCREDS_APISERVER_URL"),
            ca_file: var("TEMPCREDS_APISERVER_CA").into(),
            issuer: var("TEMPCREDS_SA_ISSUER"),
        }
    }

    /// Runs kubectl against the control plane with `args`, returning stdout;
    /// fails with kubectl's stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl_stdin(args, None)
    }

    /// Like [`ControlPlane::kubectl`], feeding `stdin` (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        self.kubectl_with_stderr(args, stdin)
            .map(|(stdout, _)| stdout)
    }

    /// Like [`ControlPlane::kubectl_stdin`], returning stdout and stderr
    /// (where kubectl prints admission warnings as `Warning: ...`).
    pub fn kubectl_with_stderr(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<(String, String)> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((
            String::from_utf8(out.stdout)?,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Creates a namespace with a unique name starting with `prefix`,
    /// labelled with `labels` (`key=value`), and returns its name.
    pub fn create_namespace(&self, prefix: &str, labels: &[&str]) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", unique_suffix());
        self.kubectl(&["create", "namespace", &name])?;
        if !labels.is_empty() {
            let mut args = vec!["label", "namespace", name.as_str()];
            args.extend_from_slice(labels);
            self.kubectl(&args)?;
        }
        Ok(name)
    }
}

/// A short suffix unique within this machine's recent runs.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:x}{:x}{}",
        std::process::id() % 0xfff,
        nanos % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `cond` every 100 ms until it holds; panics naming `what` after
/// `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether `GET url` answers 2xx over TLS verified against the PEM CA file
/// `ca` (with curl, a client independent of our own TLS code). `resolve`
/// maps a host name to 127.0.0.1 (`curl --resolve`), for certificates issued
/// to a Service's DNS name.
pub fn https_ok(url: &str, ca: &std::path::Path, resolve: Option<(&str, u16)>) -> bool {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-fsS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
        .arg(ca);
    if let Some((host, port)) = resolve {
        cmd.arg("--resolve").arg(format!("{host}:{port}:127.0.0.1"));
    }
    cmd.arg(url)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A MutatingWebhookConfiguration routing pod creations (failurePolicy
/// Fail) in namespaces carrying `labels` to `https://127.0.0.1:PORT/mutate`,
/// deleted on drop. It is cluster-scoped: give each test its own name and
/// label value so parallel tests do not see each other's webhook.
pub struct Registration {
    cp: ControlPlane,
    /// The configuration's name.
    pub name: String,
}

impl Registration {
    /// Applies the configuration. `ca_pem` becomes the caBundle; `None`
    /// leaves it out, as the chart does, for the webhook to fill.
    pub fn apply(
        cp: &ControlPlane,
        name: &str,
        port: u16,
        ca_pem: Option<&str>,
        labels: &[(&str, &str)],
    ) -> Registration {
        use base64::Engine;
        let ca_bundle = ca_pem
            .map(|pem| {
                format!(
                    "\n    caBundle: {}",
                    base64::engine::general_purpose::STANDARD.encode(pem)
                )
            })
            .unwrap_or_default();
        let labels: String = labels
            .iter()
            .map(|(k, v)| format!("\n      {k}: \"{v}\""))
            .collect();
        let manifest = format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {name}
webhooks:
- name: pods.tempcreds.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:{port}/mutate{ca_bundle}
  rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
  namespaceSelector:
    matchLabels:{labels}
"#
        );
        cp.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest))
            .expect("register the webhook");
        Registration {
            cp: cp.clone(),
            name: name.to_owned(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}
