//! Golden tests: every directory under `tests/fixtures/webhook/` holds a pod
//! (`pod.yaml`), optionally its ServiceAccount's annotations
//! (`service-account.yaml`) and a cluster config (`config.yaml`), and the
//! expected result: `expected.yaml` (the pod after applying the patch; equal
//! to the input when the webhook leaves the pod alone) plus `warnings.txt`,
//! or `denied.txt` with the denial message.
//!
//! `UPDATE_GOLDEN=1 cargo test -p tempcreds-webhook --test golden` rewrites
//! the expected files; review the diff before committing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempcreds_webhook::{ClusterConfig, Context, Outcome, mutate};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/webhook")
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The config golden tests use unless a case has its own.
pub fn default_config() -> ClusterConfig {
    ClusterConfig::with_image("ghcr.io/tempcreds/tempcreds-sidecar:0.1.0")
}

fn check_or_update(path: &Path, actual: Option<String>, update: bool) {
    let expected = std::fs::read_to_string(path).ok();
    if update {
        match &actual {
            Some(text) => std::fs::write(path, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
        return;
    }
    assert_eq!(
        expected.as_deref().map(str::trim_end),
        actual.as_deref().map(str::trim_end),
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_pods() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("pod.yaml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing: {cases:?}");
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let pod: Value = read_yaml(&dir.join("pod.yaml")).unwrap();
        let sa: BTreeMap<String, String> =
            read_yaml(&dir.join("service-account.yaml")).unwrap_or_default();
        let config = match std::fs::read_to_string(dir.join("config.yaml")) {
            Ok(text) => ClusterConfig::from_yaml(&text).unwrap(),
            Err(_) => default_config(),
        };
        let ctx = Context {
            namespace: "team-a",
            service_account_annotations: &sa,
            namespace_labels: &Default::default(),
        };
        let (result, warnings, denied) = match mutate(&pod, &ctx, &config) {
            Outcome::NotForUs => (Some(pod.clone()), vec![], None),
            Outcome::Patch { patch, warnings } => {
                let mut out = pod.clone();
                json_patch::patch(&mut out, &patch)
                    .unwrap_or_else(|e| panic!("{name}: patch does not apply: {e}\n{patch:?}"));
                // A second pass (reinvocation, re-applied manifest) is a no-op.
                assert_eq!(
                    mutate(&out, &ctx, &config),
                    Outcome::NotForUs,
                    "{name}: second pass"
                );
                (Some(out), warnings, None)
            }
            Outcome::Deny(message) => (None, vec![], Some(message)),
        };
        check_or_update(
            &dir.join("expected.yaml"),
            result.map(|v| serde_yaml::to_string(&v).unwrap()),
            update,
        );
        check_or_update(
            &dir.join("warnings.txt"),
            (!warnings.is_empty()).then(|| warnings.join("\n") + "\n"),
            update,
        );
        check_or_update(&dir.join("denied.txt"), denied.map(|d| d + "\n"), update);
    }
}

#[test]
fn patch_paths_are_escaped_and_absent_arrays_created() {
    let pod: Value = read_yaml(&fixtures().join("escaped-keys/pod.yaml")).unwrap();
    let sa = BTreeMap::new();
    let ctx = Context {
        namespace: "team-a",
        service_account_annotations: &sa,
        namespace_labels: &Default::default(),
    };
    let Outcome::Patch { patch, .. } = mutate(&pod, &ctx, &default_config()) else {
        panic!("not patched")
    };
    let ops = serde_json::to_value(&patch).unwrap();
    let paths: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/tempcreds.io~1injected"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/spec/initContainers"), "{paths:?}");
    assert!(paths.contains(&"/spec/volumes"), "{paths:?}");
    // Nothing touches the labels or the other annotations.
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("labels") || p.contains("~0")),
        "{paths:?}"
    );

    let plain: Value = read_yaml(&fixtures().join("service-account-defaults/pod.yaml")).unwrap();
    let sa: BTreeMap<String, String> =
        read_yaml(&fixtures().join("service-account-defaults/service-account.yaml")).unwrap();
    let ctx = Context {
        namespace: "team-a",
        service_account_annotations: &sa,
        namespace_labels: &Default::default(),
    };
    let Outcome::Patch { patch, .. } = mutate(&plain, &ctx, &default_config()) else {
        panic!("not patched")
    };
    let ops = serde_json::to_value(&patch).unwrap();
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/metadata/annotations"
                && op["value"]["tempcreds.io/injected"] == "tempcreds"),
        "{ops}"
    );
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/spec/containers/0/env"),
        "{ops}"
    );
}
