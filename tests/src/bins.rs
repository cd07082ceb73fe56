//! The workspace's own binaries, built on first use.
//!
//! Integration tests inside a crate get `CARGO_BIN_EXE_*`; these end-to-end
//! tests drive the binaries (and the kubectl plugin), so they build them
//! once per test process with the same cargo that runs the tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Path of the debug build of `tempcreds-webhook`, `tempcreds-sidecar` or
/// `kubectl-tempcreds`, building all three the first time one is asked for.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "--bin",
                "tempcreds-webhook",
                "--bin",
                "tempcreds-sidecar",
                "--bin",
                "kubectl-tempcreds",
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let path = target_dir().join("debug").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
