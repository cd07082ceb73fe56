//! The plugin binary against a stand-in kubectl (a shell script that
//! answers `get pod` from a file and records what `exec` was asked to run):
//! the kubectl flags passed on, the sidecar's flags without `run`'s own,
//! doctor's exit code passed back, and the errors a user meets. The real
//! cluster is `tests/tests/node_chart.rs`'s.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The stand-in kubectl, written once before any test runs a process (so
/// no process forked meanwhile holds it open for writing: ETXTBSY). It
/// reads the pod from, and records into, `$FAKE_DIR`.
fn script() -> &'static Path {
    static SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        // Cargo's scratch directory for integration tests, in target/.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kubectl-tempcreds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubectl");
        std::fs::write(
            &path,
            r#"#!/bin/sh
case " $* " in
  *" get pod missing "*) echo 'Error from server (NotFound): pods "missing" not found' >&2; exit 1;;
  *" get pod secret "*) echo 'Error from server (Forbidden): pods "secret" is forbidden: User "u" cannot get resource "pods"' >&2; exit 1;;
  *" get pod "*) cat "$FAKE_DIR/pod.json";;
  *" exec "*) printf '%s\n' "$@" > "$FAKE_DIR/exec-args"; echo "doctor says hello"; exit 3;;
  *) echo "unexpected: $*" >&2; exit 99;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    })
}

/// One pod for the stand-in kubectl to answer with, in a temporary
/// directory removed on drop.
struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new(name: &str, pod: &Value) -> Fake {
        let dir = script().with_file_name(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        Fake { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with(script(), &self.dir, args)
    }

    fn exec_args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("exec-args"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_with(kubectl: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-tempcreds"))
        .env("KUBECTL", kubectl)
        .env("FAKE_DIR", dir)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pod with a native sidecar, as the webhook injects it.
fn injected_pod(sidecar_args: &[&str], state: Value) -> Value {
    let mut args = vec!["run"];
    args.extend_from_slice(sidecar_args);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"tempcreds.io/injected": "tempcreds"}},
        "spec": {
            "initContainers": [{
                "name": "tempcreds",
                "restartPolicy": "Always",
                "args": args,
                "volumeMounts": [{"name": "tempcreds-token", "mountPath": "/var/run/secrets/tempcreds/serviceaccount"}],
            }],
            "containers": [{"name": "app"}],
            "volumes": [{"name": "tempcreds-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "token"}}
            ]}}],
        },
        "status": {"initContainerStatuses": [{"name": "tempcreds", "state": state}]},
    })
}

/// A sidecar's `run` arguments: its first profile's, a flag of `run` alone,
/// and an additional profile.
const ARGS: [&str; 10] = [
    "--source",
    "web-identity",
    "--role-arn",
    "arn:aws:iam::123456789012:role/reader",
    "--listener-header-timeout",
    "5s",
    "--and-profile",
    "writer",
    "--role-arn",
    "arn:aws:iam::123456789012:role/writer",
];

#[test]
fn doctor_runs_in_the_sidecar_with_its_flags_and_passes_its_exit_code_back() {
    let fake = Fake::new("doctor", &injected_pod(&ARGS, json!({"running": {}})));
    let out = fake.run(&[
        "doctor",
        "web",
        "-n",
        "apps",
        "--context",
        "prod",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "doctor says hello\n");
    assert_eq!(
        fake.exec_args(),
        [
            "--context=prod",
            "--namespace=apps",
            "exec",
            "web",
            "-c",
            "tempcreds",
            "--",
            "/usr/local/bin/tempcreds-sidecar",
            "doctor",
            // The plugin's flags first: after the sidecar's they would be
            // its last profile's.
            "--token-audience=sts.amazonaws.com",
            "--output",
            "json",
            "--source",
            "web-identity",
            "--role-arn",
            "arn:aws:iam::123456789012:role/reader",
            "--and-profile",
            "writer",
            "--role-arn",
            "arn:aws:iam::123456789012:role/writer",
        ]
    );

    let out = fake.run(&["status", "web"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        fake.exec_args()[..7],
        [
            "exec",
            "web",
            "-c",
            "tempcreds",
            "--",
            "/usr/local/bin/tempcreds-sidecar",
            "status"
        ]
    );
}

#[test]
fn the_errors_a_user_meets_are_clear() {
    let fake = Fake::new("errors", &injected_pod(&ARGS, json!({"running": {}})));
    let check = |out: Output, code: i32, want: &str| {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(err.contains(want), "{err}\nwanted: {want}");
    };
    check(
        fake.run(&["doctor", "missing", "-n", "apps"]),
        1,
        "pod \"missing\" not found in namespace \"apps\"",
    );
    check(
        fake.run(&["status", "secret"]),
        1,
        "needs RBAC `get` on pods and `create` on pods/exec",
    );
    check(
        run_with(
            Path::new("/nonexistent/kubectl"),
            Path::new("/nonexistent"),
            &["doctor", "web"],
        ),
        1,
        "cannot run kubectl (\"/nonexistent/kubectl\")",
    );
    check(fake.run(&["doctor"]), 64, "POD");

    let plain = Fake::new(
        "plain",
        &json!({"kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app"}]}}),
    );
    check(
        plain.run(&["doctor", "web"]),
        1,
        "pod \"web\" has no tempcreds sidecar",
    );

    let waiting = Fake::new(
        "waiting",
        &injected_pod(&ARGS, json!({"waiting": {"reason": "ContainerCreating"}})),
    );
    check(
        waiting.run(&["doctor", "web"]),
        1,
        "is not running: waiting (\"ContainerCreating\")",
    );

    let host = Fake::new(
        "host",
        &injected_pod(&["--no-health-server"], json!({"running": {}})),
    );
    check(host.run(&["status", "web"]), 1, "--no-health-server");
    // doctor works there.
    assert_eq!(host.run(&["doctor", "web"]).status.code(), Some(3));
    assert!(!host.exec_args().iter().any(|a| a == "--no-health-server"));
}
