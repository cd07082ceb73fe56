//! Runs an injected pod's sidecar as a local process: what the kubelet would
//! do, minus the container runtime.
//!
//! The API server stores the pod with everything the webhook injected. Here
//! each volume mount of the sidecar becomes a directory under a work dir,
//! projected service-account tokens are obtained through a real TokenRequest
//! with the injected audience and expiration, Secret volumes are filled from
//! the real Secret with only the items the pod asks for, and the app
//! containers' environment is mapped the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::{ControlPlane, bins, free_port};

/// The sidecar container of a stored pod, mapped onto local directories.
#[derive(Debug)]
pub struct LocalPod {
    pod: Value,
    work: PathBuf,
    /// Volume name → local directory.
    pub volume_dirs: BTreeMap<String, PathBuf>,
    /// The sidecar container as stored.
    pub sidecar: Value,
    /// The sidecar's `--endpoint-addr` as injected, and the free loopback
    /// address it is moved to here (`delivery: endpoint`).
    pub endpoint: Option<(String, String)>,
}

/// A running local sidecar, killed on drop.
pub struct RunningSidecar {
    child: Child,
    /// Its health address.
    pub health: String,
    log: PathBuf,
}

impl LocalPod {
    /// Finds the sidecar (the container whose args start with `run`) in the
    /// stored pod and maps its volumes under `work`.
    pub fn new(pod: Value, work: &Path) -> LocalPod {
        let spec = &pod["spec"];
        let sidecar = spec["initContainers"]
            .as_array()
            .into_iter()
            .chain(spec["containers"].as_array())
            .flatten()
            .find(|c| c["args"][0] == "run")
            .cloned()
            .expect("the pod has no tempcreds sidecar (a container running `run`)");
        let volume_dirs = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .map(|n| (n.to_owned(), work.join("volumes").join(n)))
            .collect();
        let endpoint = sidecar["args"]
            .as_array()
            .into_iter()
            .flatten()
            .skip_while(|a| *a != "--endpoint-addr")
            .nth(1)
            .and_then(Value::as_str)
            .map(|injected| (injected.to_owned(), format!("127.0.0.1:{}", free_port())));
        LocalPod {
            pod,
            work: work.to_path_buf(),
            volume_dirs,
            sidecar,
            endpoint,
        }
    }

    fn volume(&self, name: &str) -> &Value {
        self.pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .expect("mounted volume exists")
    }

    /// Maps a path inside `container` to the local directory of the volume
    /// mounted there (the longest matching mount path wins).
    pub fn local_path(&self, container: &Value, path: &str) -> String {
        let mut best: Option<(usize, String)> = None;
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let mp = m["mountPath"].as_str().unwrap_or_default();
            if (path == mp || path.starts_with(&format!("{mp}/")))
                && best.as_ref().is_none_or(|(len, _)| mp.len() > *len)
            {
                let dir = &self.volume_dirs[m["name"].as_str().unwrap_or_default()];
                best = Some((mp.len(), format!("{}{}", dir.display(), &path[mp.len()..])));
            }
        }
        best.map_or_else(|| path.to_owned(), |(_, p)| p)
    }

    /// Fills the sidecar's volumes the way the kubelet would: projected
    /// tokens through TokenRequest, Secret items from the Secret.
    pub fn prepare_volumes(&self, cp: &ControlPlane) {
        let ns = self.pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let sa = self.pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        for dir in self.volume_dirs.values() {
            std::fs::create_dir_all(dir).unwrap();
        }
        for m in self.sidecar["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = m["name"].as_str().unwrap_or_default();
            let dir = &self.volume_dirs[name];
            let vol = self.volume(name);
            for source in vol["projected"]["sources"].as_array().into_iter().flatten() {
                let t = &source["serviceAccountToken"];
                if t.is_null() {
                    continue;
                }
                let mut args = vec!["-n", ns, "create", "token", sa];
                let audience = t["audience"].as_str().unwrap_or_default().to_owned();
                if !audience.is_empty() {
                    args.extend(["--audience", &audience]);
                }
                let seconds = format!("{}s", t["expirationSeconds"].as_i64().unwrap_or(3600));
                args.extend(["--duration", &seconds]);
                let token = cp.kubectl(&args).expect("TokenRequest");
                let file = dir.join(t["path"].as_str().unwrap_or("token"));
                std::fs::write(file, token.trim()).unwrap();
            }
            if let Some(secret_name) = vol["secret"]["secretName"].as_str() {
                let secret: Value = serde_json::from_str(
                    &cp.kubectl(&["-n", ns, "get", "secret", secret_name, "-o", "json"])
                        .expect("read the Secret"),
                )
                .unwrap();
                for item in vol["secret"]["items"].as_array().into_iter().flatten() {
                    let key = item["key"].as_str().unwrap_or_default();
                    let value = base64::engine::general_purpose::STANDARD
                        .decode(secret["data"][key].as_str().unwrap_or_default())
                        .unwrap();
                    std::fs::write(dir.join(item["path"].as_str().unwrap_or(key)), value).unwrap();
                }
            }
        }
    }

    /// The sidecar's arguments with paths mapped, the health address on a
    /// free loopback port and `--endpoint-addr` moved to another
    /// ([`LocalPod::endpoint`]): tests run side by side on one loopback.
    pub fn sidecar_args(&self, health: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut args = self.sidecar["args"].as_array().into_iter().flatten();
        while let Some(a) = args.next() {
            let a = a.as_str().unwrap_or_default();
            if a == "--health-addr" {
                args.next();
                continue;
            }
            if a == "--endpoint-addr" {
                args.next();
                if let Some((_, local)) = &self.endpoint {
                    out.extend(["--endpoint-addr".to_owned(), local.clone()]);
                }
                continue;
            }
            out.push(self.local_path(&self.sidecar, a));
        }
        // Options left at their default point into the container's file
        // system: map them too.
        if !out.iter().any(|a| a == "--output-dir") {
            out.push("--output-dir".to_owned());
            out.push(self.local_path(&self.sidecar, tempcreds_core::paths::OUTPUT_DIR));
        }
        out.extend(["--health-addr".to_owned(), health.to_owned()]);
        out
    }

    /// An environment of `container` with paths mapped to local
    /// directories and the endpoint URI to where [`LocalPod::sidecar_args`]
    /// moved it. Values from the downward API are resolved for the pod's
    /// name and namespace.
    pub fn env_of(&self, container: &Value) -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                let value = if let Some(v) = e["value"].as_str() {
                    match &self.endpoint {
                        Some((injected, local)) if name == "AWS_CONTAINER_CREDENTIALS_FULL_URI" => {
                            v.replace(injected.as_str(), local)
                        }
                        _ => self.local_path(container, v),
                    }
                } else {
                    match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        Some("metadata.name") => self.pod["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        Some("metadata.namespace") => self.pod["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        _ => String::new(),
                    }
                };
                (name, value)
            })
            .collect()
    }

    /// The app container named `name`.
    pub fn container(&self, name: &str) -> &Value {
        self.pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// Starts the sidecar with its injected command and environment, plus
    /// `extra_env` (e.g. ambient AWS keys), and waits until `/readyz` says
    /// credentials are written.
    pub fn run_sidecar(&self, extra_env: &[(&str, &str)]) -> RunningSidecar {
        let health = format!("127.0.0.1:{}", free_port());
        // Appended to, so a restarted sidecar's log follows the first one's.
        let log = self.work.join("sidecar.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(bins::bin("tempcreds-sidecar"));
        cmd.args(self.sidecar_args(&health))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.env_of(&self.sidecar))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = cmd.spawn().expect("start tempcreds-sidecar");
        // Owned from here on, so a failed wait below still kills it.
        let mut running = RunningSidecar { child, health, log };
        let deadline = Instant::now() + crate::LIMIT;
        loop {
            let ready = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null"])
                .arg(format!("http://{}/readyz", running.health))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("the sidecar exited with {status}: {}", running.log());
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar was not ready in 60s: {}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        running
    }
}

impl RunningSidecar {
    /// The sidecar's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
