//! Helm, as the tests run it: the installed binary, with its own cache and
//! config directories (never the user's), against a control plane's
//! kubeconfig or none (`helm template`, `helm lint`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::tool;

/// The chart's directory in this checkout.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tempcreds")
}

/// Runs helm with `args`; `kubeconfig` is passed as `--kubeconfig`.
pub fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool("helm"));
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let home = std::env::temp_dir().join("tempcreds-helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args)
        .output()
        .expect("run helm")
}

/// helm's stdout; panics with both of its outputs, naming `what`, when it
/// failed.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
