//! `local-pod`: runs the tempcreds sidecar of a pod stored in the API server
//! as a local process, the way the kubelet would (for `make demo`).
//!
//! ```text
//! local-pod NAMESPACE POD WORKDIR < control
//! ```
//!
//! Reads the pod, maps each sidecar volume to a directory under WORKDIR,
//! fills the projected token through a real TokenRequest and Secret items
//! from the real Secret, starts the sidecar and waits until it reports
//! credentials written. It then writes `WORKDIR/sidecar.cmd` (the command it
//! ran) and `WORKDIR/app.env` (the `app` container's environment, mapped),
//! and keeps the sidecar running until its standard input closes.
//!
//! Needs the control plane's environment (`hack/control-plane.sh` env file).

use std::io::Read;
use std::path::PathBuf;

use tempcreds_tests::{ControlPlane, LocalPod};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ns, pod, work] = args.as_slice() else {
        eprintln!("usage: local-pod NAMESPACE POD WORKDIR < control");
        std::process::exit(64);
    };
    let cp = ControlPlane::from_env();
    let json = cp
        .kubectl(&["-n", ns, "get", "pod", pod, "-o", "json"])
        .unwrap_or_else(|e| panic!("reading pod {ns}/{pod}: {e}"));
    let work = PathBuf::from(work);
    let local = LocalPod::new(serde_json::from_str(&json).expect("pod JSON"), &work);
    local.prepare_volumes(&cp);
    let sidecar = local.run_sidecar(&[]);
    let shown = local.sidecar_args(&sidecar.health);
    let env: Vec<String> = local
        .env_of(&local.sidecar)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    std::fs::write(
        work.join("sidecar.cmd"),
        format!("{} tempcreds-sidecar {}\n", env.join(" "), shown.join(" ")),
    )
    .expect("write sidecar.cmd");
    let app: Vec<String> = local
        .env_of(local.container("app"))
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    std::fs::write(work.join("app.env"), app.concat()).expect("write app.env");
    // Keep the sidecar until the caller closes our standard input.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(sidecar);
}
