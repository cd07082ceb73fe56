//! What the plugin reads from a pod (`kubectl get pod -o json`): the
//! injected sidecar container, its `run` flags without the ones only `run`
//! takes, and whether it is running. No I/O; the pod JSON is untrusted, so
//! nothing here panics on its shape and every value quoted in a message is
//! escaped and shortened.

use std::fmt;

use serde_json::Value;
use tempcreds_core::annotations::{INJECT, INJECTED, ROLE_ARN};
use tempcreds_core::config::quoted;
use tempcreds_core::paths;

/// Flags of `tempcreds-sidecar run` that take no value and that `doctor`
/// and `status` do not accept.
const RUN_ONLY_SWITCHES: [&str; 3] = ["--once", "--retry", "--no-health-server"];
/// Flags of `tempcreds-sidecar run` that take a value and that `doctor`
/// and `status` do not accept.
const RUN_ONLY_WITH_VALUE: [&str; 2] = ["--listener-header-timeout", "--listener-max-connections"];

/// The tempcreds sidecar of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// The container's name (`tempcreds`, unless the pod had one so named).
    pub name: String,
    /// The program to run in it: the container's `command[0]`, else where
    /// the sidecar image keeps the binary.
    pub binary: String,
    /// The flags after `run`, without the ones only `run` takes.
    pub args: Vec<String>,
    /// Whether it serves `/metrics` (it runs without `--no-health-server`).
    pub health_server: bool,
    /// The audience of the projected token it reads, when the pod's
    /// volumes say so (for `doctor --token-audience`).
    pub token_audience: Option<String>,
}

/// Why a pod's sidecar cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodError {
    /// The pod has no tempcreds sidecar container.
    NotInjected {
        /// The pod's name.
        pod: String,
    },
    /// The sidecar container's `args` are not a list of strings.
    BadArgs {
        /// The pod's name.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// The sidecar container is not running.
    NotRunning {
        /// The pod's name.
        pod: String,
        /// The container's name.
        container: String,
        /// Its state, for people (`waiting (ContainerCreating)`).
        state: String,
    },
}

impl fmt::Display for PodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodError::NotInjected { pod } => write!(
                f,
                "pod {} has no tempcreds sidecar: the webhook did not inject it. Opt the pod in \
                 (annotation {ROLE_ARN}, or {INJECT}: \"true\", on the pod or its \
                 ServiceAccount), in a namespace the webhook serves, and create it again: the \
                 sidecar is added when a pod is created",
                quoted(pod)
            ),
            PodError::BadArgs { pod, container } => write!(
                f,
                "pod {}: container {} runs `tempcreds-sidecar run` but its args are not all \
                 strings; was the pod changed after injection? Create it again",
                quoted(pod),
                quoted(container)
            ),
            PodError::NotRunning {
                pod,
                container,
                state,
            } => write!(
                f,
                "pod {}: the tempcreds sidecar (container {}) is not running: {state}; \
                 `kubectl describe pod {}` and `kubectl logs {} -c {}` say why",
                quoted(pod),
                quoted(container),
                quoted(pod),
                quoted(pod),
                quoted(container)
            ),
        }
    }
}

impl std::error::Error for PodError {}

/// The pod's name, for messages.
pub fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The pod's tempcreds sidecar: the container the `tempcreds.io/injected`
/// annotation names (else [`paths::SIDECAR_NAME`]) in `initContainers`
/// (native sidecar) or `containers` (classic sidecar), running
/// `tempcreds-sidecar run`. The classic sidecar's run-once init container
/// (`tempcreds-init`) has another name and is never picked.
pub fn find_sidecar(pod: &Value) -> Result<Sidecar, PodError> {
    let pod_name = pod_name(pod);
    let name = pod["metadata"]["annotations"][INJECTED]
        .as_str()
        .unwrap_or(paths::SIDECAR_NAME);
    let spec = &pod["spec"];
    let container = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().into_iter().flatten())
        .find(|c| c["name"].as_str() == Some(name) && c["args"][0] == "run")
        .ok_or_else(|| PodError::NotInjected {
            pod: pod_name.clone(),
        })?;
    let args: Option<Vec<String>> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .map(|a| a.as_str().map(str::to_owned))
        .collect();
    let args = args.ok_or_else(|| PodError::BadArgs {
        pod: pod_name.clone(),
        container: name.to_owned(),
    })?;
    let binary = container["command"][0]
        .as_str()
        .filter(|c| !c.is_empty())
        .unwrap_or(paths::SIDECAR_BINARY)
        .to_owned();
    Ok(Sidecar {
        name: name.to_owned(),
        binary,
        health_server: !args
            .iter()
            .any(|a| a == "--no-health-server" || a.starts_with("--no-health-server=")),
        args: strip_run_only(&args),
        token_audience: token_audience(spec, container),
    })
}

/// `run`'s flags without those only `run` takes (with their values, as
/// `--flag VALUE` or `--flag=VALUE`): what `doctor` and `status` accept.
pub fn strip_run_only(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        if RUN_ONLY_SWITCHES.contains(&flag) {
            continue;
        }
        if RUN_ONLY_WITH_VALUE.contains(&flag) {
            if flag == arg {
                // The value is the next argument.
                iter.next();
            }
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// The audience of the projected service-account token the sidecar
/// mounts at [`paths::TOKEN_DIR`], if the pod's volumes name one.
fn token_audience(spec: &Value, container: &Value) -> Option<String> {
    let volume = container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(paths::TOKEN_DIR))?["name"]
        .as_str()?;
    spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(volume))?["projected"]["sources"]
        .as_array()?
        .iter()
        .find_map(|s| s["serviceAccountToken"]["audience"].as_str())
        .map(str::to_owned)
}

/// Ok when the pod's status shows the container `name` running; else why
/// not, naming its state.
pub fn check_running(pod: &Value, name: &str) -> Result<(), PodError> {
    let status = &pod["status"];
    let container = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|list| status[*list].as_array().into_iter().flatten())
        .find(|c| c["name"].as_str() == Some(name));
    let not_running = |state: String| PodError::NotRunning {
        pod: pod_name(pod),
        container: name.to_owned(),
        state,
    };
    let Some(container) = container else {
        let phase = status["phase"].as_str().unwrap_or("unknown");
        return Err(not_running(format!(
            "it has not started yet (pod phase {})",
            quoted(phase)
        )));
    };
    let state = &container["state"];
    if state["running"].is_object() {
        return Ok(());
    }
    let detail = |s: &Value| {
        let mut parts = Vec::new();
        if let Some(reason) = s["reason"].as_str() {
            parts.push(quoted(reason));
        }
        if let Some(code) = s["exitCode"].as_i64() {
            parts.push(format!("exit code {code}"));
        }
        if let Some(message) = s["message"].as_str() {
            parts.push(quoted(message));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let text = if state["waiting"].is_object() {
        format!("waiting{}", detail(&state["waiting"]))
    } else if state["terminated"].is_object() {
        format!("terminated{}", detail(&state["terminated"]))
    } else {
        "its state is not reported yet".to_owned()
    };
    Err(not_running(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tempcreds_core::{SidecarConfig, Source};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The sidecar's `args` as the webhook renders them.
    fn run_args(extra: &[&str]) -> Vec<String> {
        let mut c = SidecarConfig::new(Source::WebIdentity);
        c.role_arn = Some("arn:aws:iam::123456789012:role/reader".parse().unwrap());
        c.token_file = Some(format!("{}/{}", paths::TOKEN_DIR, paths::TOKEN_FILE).into());
        let mut args = vec!["run".to_owned()];
        args.extend(c.to_args());
        args.extend(strings(extra));
        args
    }

    fn sidecar(name: &str, args: &[String], native: bool) -> Value {
        let mut c = json!({
            "name": name,
            "image": "ghcr.io/tempcreds/tempcreds-sidecar:0.1.0",
            "args": args,
            "volumeMounts": [
                {"name": "tempcreds-credentials", "mountPath": paths::OUTPUT_DIR},
                {"name": "tempcreds-token", "mountPath": paths::TOKEN_DIR, "readOnly": true},
            ],
        });
        if native {
            c["restartPolicy"] = json!("Always");
        }
        c
    }

    fn volumes() -> Value {
        json!([
            {"name": "tempcreds-credentials", "emptyDir": {"medium": "Memory"}},
            {"name": "tempcreds-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "my-audience", "path": "token"}}
            ]}},
        ])
    }

    fn app() -> Value {
        json!({"name": "app", "image": "app", "args": ["run"]})
    }

    /// A native sidecar: first of `initContainers`, `restartPolicy: Always`.
    fn native_pod() -> Value {
        json!({
            "metadata": {"name": "web", "annotations": {INJECTED: "tempcreds"}},
            "spec": {
                "initContainers": [sidecar("tempcreds", &run_args(&[]), true)],
                "containers": [app()],
                "volumes": volumes(),
            },
            "status": {
                "phase": "Running",
                "initContainerStatuses": [
                    {"name": "tempcreds", "state": {"running": {"startedAt": "2026-12-03T10:00:00Z"}}},
                ],
                "containerStatuses": [{"name": "app", "state": {"running": {}}}],
            },
        })
    }

    /// A classic sidecar: a run-once init container, and the sidecar last
    /// of `containers`; here renamed, the pod having a `tempcreds` already.
    fn classic_pod() -> Value {
        let init = sidecar("tempcreds-2-init", &run_args(&[]), false);
        let mut init_args = run_args(&[]);
        init_args.splice(1..1, strings(&["--once", "--retry"]));
        let mut init = init;
        init["args"] = json!(init_args);
        json!({
            "metadata": {"name": "legacy", "annotations": {INJECTED: "tempcreds-2"}},
            "spec": {
                "initContainers": [init],
                "containers": [
                    app(),
                    {"name": "tempcreds", "image": "not-ours"},
                    sidecar("tempcreds-2", &run_args(&["--listener-header-timeout", "10s"]), false),
                ],
                "volumes": volumes(),
            },
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "tempcreds-2-init", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
                ],
                "containerStatuses": [
                    {"name": "tempcreds-2", "state": {"waiting": {"reason": "PodInitializing"}}},
                ],
            },
        })
    }

    #[test]
    fn run_only_flags_and_their_values_are_dropped() {
        let args = strings(&[
            "--source",
            "secret",
            "--once",
            "--retry",
            "--listener-header-timeout",
            "5s",
            "--role-arn",
            "arn:aws:iam::1:role/r",
            "--listener-max-connections=8",
            "--no-health-server",
            "--session-name=-dash",
            "--once=true",
            "--listener-max-connections",
        ]);
        assert_eq!(
            strip_run_only(&args),
            strings(&[
                "--source",
                "secret",
                "--role-arn",
                "arn:aws:iam::1:role/r",
                "--session-name=-dash",
            ])
        );
        assert!(strip_run_only(&[]).is_empty());
    }

    #[test]
    fn the_native_sidecar_is_found_in_init_containers() {
        let pod = native_pod();
        let s = find_sidecar(&pod).unwrap();
        assert_eq!(s.name, "tempcreds");
        assert_eq!(s.binary, paths::SIDECAR_BINARY);
        assert_eq!(s.args, run_args(&[])[1..]);
        assert!(s.health_server);
        assert_eq!(s.token_audience.as_deref(), Some("my-audience"));
        assert_eq!(check_running(&pod, &s.name), Ok(()));
    }

    #[test]
    fn the_classic_sidecar_is_found_by_the_annotations_name_not_the_init_container() {
        let mut pod = classic_pod();
        let s = find_sidecar(&pod).unwrap();
        assert_eq!(s.name, "tempcreds-2");
        assert_eq!(s.args, run_args(&[])[1..], "the listener flag is dropped");
        let err = check_running(&pod, &s.name).unwrap_err().to_string();
        assert!(
            err.contains("is not running: waiting (\"PodInitializing\")"),
            "{err}"
        );
        assert!(
            err.contains("kubectl logs \"legacy\" -c \"tempcreds-2\""),
            "{err}"
        );

        // A command of the operator's own image is used.
        pod["spec"]["containers"][2]["command"] = json!(["/opt/bin/sidecar"]);
        pod["spec"]["containers"][2]["args"] = json!(["run", "--no-health-server"]);
        let s = find_sidecar(&pod).unwrap();
        assert_eq!(s.binary, "/opt/bin/sidecar");
        assert!(!s.health_server);
        assert!(s.args.is_empty());
    }

    #[test]
    fn a_pod_without_the_sidecar_is_not_injected() {
        for pod in [
            json!({"metadata": {"name": "plain"}, "spec": {"containers": [app()]}}),
            // A container named tempcreds that is not the sidecar.
            json!({"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "tempcreds"}]}}),
            // The annotation naming a container the pod does not have.
            json!({"metadata": {"name": "plain", "annotations": {INJECTED: "gone"}},
                   "spec": {"initContainers": [sidecar("tempcreds", &run_args(&[]), true)]}}),
        ] {
            let err = find_sidecar(&pod).unwrap_err();
            assert_eq!(
                err,
                PodError::NotInjected {
                    pod: "plain".into()
                }
            );
            let text = err.to_string();
            assert!(text.contains("has no tempcreds sidecar"), "{text}");
            assert!(text.contains(ROLE_ARN), "{text}");
        }
    }

    #[test]
    fn each_state_is_named() {
        let mut pod = native_pod();
        let state = |pod: &Value| check_running(pod, "tempcreds").unwrap_err().to_string();
        pod["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"reason": "Error", "exitCode": 64, "message": "bad\nflag"}});
        let err = state(&pod);
        assert!(
            err.contains("terminated (\"Error\", exit code 64, \"bad\\nflag\")"),
            "{err}"
        );
        pod["status"]["initContainerStatuses"][0]["state"] = json!({});
        assert!(state(&pod).contains("not reported yet"));
        pod["status"] = json!({"phase": "Pending"});
        assert!(
            state(&pod).contains("has not started yet (pod phase \"Pending\")"),
            "{}",
            state(&pod)
        );
    }

    #[test]
    fn hostile_pod_json_never_panics() {
        let long = "x".repeat(10_000);
        for pod in [
            json!(null),
            json!([]),
            json!({"metadata": {"annotations": {INJECTED: 7}}, "spec": {"containers": {"a": 1}}}),
            json!({"metadata": {"name": long},
                   "spec": {"containers": [{"name": "tempcreds", "args": ["run", 1, null]}]}}),
            json!({"spec": {"containers": [{"name": "tempcreds", "args": ["run"], "command": [5],
                   "volumeMounts": [{"mountPath": paths::TOKEN_DIR, "name": 3}]}],
                   "volumes": "nope"}}),
            json!({"status": {"containerStatuses": [{"name": "tempcreds", "state": {"waiting": {"reason": long}}}]}}),
        ] {
            if let Err(e) = find_sidecar(&pod) {
                assert!(e.to_string().len() < 1000, "{e}");
            }
            if let Err(e) = check_running(&pod, "tempcreds") {
                assert!(e.to_string().len() < 1000, "{e}");
            }
        }
        let bad = json!({"metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "tempcreds", "args": ["run", 1]}]}});
        assert!(matches!(find_sidecar(&bad), Err(PodError::BadArgs { .. })));
    }
}
