//! Running kubectl: `$KUBECTL`, else `kubectl` on `PATH` (a plugin runs
//! under kubectl, so it and the user's kubeconfig and credentials are
//! there), with the user's `--namespace`, `--context` and `--kubeconfig`.

use std::ffi::OsString;
use std::fmt;
use std::process::{Command, Stdio};

use serde_json::Value;
use tempcreds_core::config::quoted;

use crate::cli::KubeArgs;

/// kubectl, with the flags that select the cluster and namespace.
#[derive(Debug, Clone)]
pub struct Kubectl {
    program: OsString,
    kube: KubeArgs,
}

/// A kubectl call that failed.
#[derive(Debug)]
pub enum KubectlError {
    /// kubectl could not be started.
    Missing {
        /// The program tried.
        program: OsString,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The pod does not exist.
    PodNotFound {
        /// The pod's name.
        pod: String,
        /// The namespace given, if any.
        namespace: Option<String>,
    },
    /// kubectl said no.
    Failed {
        /// What was being done (`get pod "web"`).
        what: String,
        /// What kubectl printed on stderr.
        stderr: String,
    },
    /// kubectl's output is not the pod JSON asked for.
    BadOutput {
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for KubectlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubectlError::Missing { program, source } => write!(
                f,
                "cannot run kubectl ({}): {source}; install kubectl and put it on PATH, or set \
                 KUBECTL to its path",
                quoted(&program.to_string_lossy())
            ),
            KubectlError::PodNotFound { pod, namespace } => {
                write!(f, "pod {} not found in ", quoted(pod))?;
                match namespace {
                    Some(ns) => write!(f, "namespace {}", quoted(ns)),
                    None => f.write_str(
                        "the context's default namespace; name the namespace with -n NAMESPACE",
                    ),
                }
            }
            KubectlError::Failed { what, stderr } => {
                write!(f, "kubectl {what} failed: {}", stderr.trim())?;
                if stderr.contains("forbidden") {
                    f.write_str(
                        "\n(kubectl tempcreds needs RBAC `get` on pods and `create` on pods/exec \
                         in the pod's namespace)",
                    )?;
                }
                Ok(())
            }
            KubectlError::BadOutput { what } => write!(f, "kubectl get pod: {what}"),
        }
    }
}

impl std::error::Error for KubectlError {}

impl Kubectl {
    /// kubectl from `$KUBECTL` (else `kubectl`), with `kube`'s flags.
    pub fn from_env(kube: KubeArgs) -> Kubectl {
        let program = std::env::var_os("KUBECTL")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "kubectl".into());
        Kubectl { program, kube }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.kube.to_args()).stdin(Stdio::null());
        cmd
    }

    fn missing(&self, source: std::io::Error) -> KubectlError {
        KubectlError::Missing {
            program: self.program.clone(),
            source,
        }
    }

    /// `kubectl get pod POD -o json`.
    pub fn get_pod(&self, pod: &str) -> Result<Value, KubectlError> {
        let out = self
            .command()
            .args(["get", "pod", pod, "-o", "json"])
            .output()
            .map_err(|e| self.missing(e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if stderr.contains("NotFound") || stderr.contains("not found") {
                return Err(KubectlError::PodNotFound {
                    pod: pod.to_owned(),
                    namespace: self.kube.namespace.clone(),
                });
            }
            return Err(KubectlError::Failed {
                what: format!("get pod {}", quoted(pod)),
                stderr,
            });
        }
        let value: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| KubectlError::BadOutput {
                what: format!("the output is not JSON: {e}"),
            })?;
        if value["kind"] != "Pod" {
            return Err(KubectlError::BadOutput {
                what: "the output is not a Pod".to_owned(),
            });
        }
        Ok(value)
    }

    /// `kubectl exec POD -c CONTAINER -- COMMAND...` with this process's
    /// stdout and stderr; returns its exit code (the command's, once it
    /// ran: kubectl exits with it).
    pub fn exec(&self, pod: &str, container: &str, command: &[String]) -> Result<u8, KubectlError> {
        let status = self
            .command()
            .args(["exec", pod, "-c", container, "--"])
            .args(command)
            .status()
            .map_err(|e| self.missing(e))?;
        Ok(status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1))
    }
}
