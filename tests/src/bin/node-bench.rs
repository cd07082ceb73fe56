//! `node-bench`: figures of injected pods on the real test node, printed as
//! Markdown table rows (`hack/bench-node.sh` runs it with the node up and
//! writes bench/node-results.md). A measurement, not a test: it asserts
//! nothing beyond the pods reaching the states it times.
//!
//! For `ROUNDS` rounds (argument 1, default 10), alternately:
//! - a busybox pod in a namespace the webhook does not serve, and the same
//!   pod opted in (web identity, file delivery) through the webhook: from
//!   the create call to the app container observed running, and from the
//!   delete call to the pod gone;
//! - in the opted-in pods, the sidecar's RSS (VmRSS, VmHWM of its process)
//!   and its container's memory cgroup usage;
//! - a Job whose app exits after one second: from the app observed
//!   terminated to the pod observed Succeeded (the native sidecar stopped).
//!
//! States are observed by polling the API server every 50 ms (each poll is
//! a kubectl call, so figures are upper bounds at about that resolution).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempcreds_tests::world::*;

const POLL: Duration = Duration::from_millis(50);

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(10);
    let w = World::new("bench");
    w.service_account("bench");
    let plain_ns = w
        .node
        .control_plane()
        .create_namespace("bench-plain", &[])
        .expect("namespace");
    let busybox = w.node.busybox();
    let app = container("app", busybox, &["sh", "-c", &hold("true")], &[]);

    let mut start_plain = Vec::new();
    let mut start_injected = Vec::new();
    let mut delete_plain = Vec::new();
    let mut delete_injected = Vec::new();
    let mut rss = Vec::new();
    let mut hwm = Vec::new();
    let mut cgroup = Vec::new();
    for round in 0..rounds {
        for injected in [false, true] {
            let name = format!("p{round}-{}", if injected { "in" } else { "plain" });
            let ns = if injected { &w.ns } else { &plain_ns };
            let annotations: &[(&str, &str)] = if injected {
                &[("tempcreds.io/role-arn", ROLE)]
            } else {
                &[]
            };
            let p = pod(
                &name,
                annotations,
                vec![app.clone()],
                json!({"serviceAccountName": "default"}),
            );
            let t0 = Instant::now();
            w.node.create(ns, &p).expect("create");
            let running = poll(&w, ns, &name, |p| {
                app_state(p).is_some_and(|s| s["running"].is_object())
            });
            let started = running - t0;
            if injected {
                start_injected.push(started);
                let (r, h, c) = sidecar_memory(&w, &name);
                rss.push(r);
                hwm.push(h);
                cgroup.push(c);
            } else {
                start_plain.push(started);
            }
            let t1 = Instant::now();
            w.node
                .delete_and_wait(ns, "pod", &name, LIMIT)
                .expect("delete");
            let gone = t1.elapsed();
            if injected {
                delete_injected.push(gone);
            } else {
                delete_plain.push(gone);
            }
        }
    }

    let mut job_done = Vec::new();
    for round in 0..rounds.min(5) {
        let name = format!("job{round}");
        let p = pod(
            "x",
            &[("tempcreds.io/role-arn", ROLE)],
            vec![container("app", busybox, &["sleep", "1"], &[])],
            json!({}),
        );
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"annotations": p["metadata"]["annotations"].clone()},
                "spec": p["spec"].clone()}},
        });
        w.node.create(&w.ns, &job).expect("create job");
        let pod_name = loop {
            let out = w.kubectl(&[
                "get",
                "pods",
                "-l",
                &format!("job-name={name}"),
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ]);
            if let Some(n) = out.split_whitespace().next() {
                break n.to_owned();
            }
            std::thread::sleep(POLL);
        };
        let app_done = poll(&w, &w.ns, &pod_name, |p| {
            app_state(p).is_some_and(|s| s["terminated"].is_object())
        });
        let succeeded = poll(&w, &w.ns, &pod_name, |p| {
            p["status"]["phase"] == "Succeeded"
        });
        job_done.push(succeeded.saturating_duration_since(app_done));
    }

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median_ms = |v: &[Duration]| median(v.iter().map(ms).collect());
    let mib = |v: &[u64]| median(v.iter().map(|k| *k as f64 / 1024.0).collect());
    println!(
        "| pod create → app running, busybox, no injection ({rounds} pods) | median {:.0} ms (min {:.0}, max {:.0}) | | `node-bench` |",
        median_ms(&start_plain),
        min_ms(&start_plain),
        max_ms(&start_plain)
    );
    println!(
        "| pod create → app running, opted in (native sidecar, web identity, moto) ({rounds} pods) | median {:.0} ms (min {:.0}, max {:.0}) | | same |",
        median_ms(&start_injected),
        min_ms(&start_injected),
        max_ms(&start_injected)
    );
    println!(
        "| start latency the sidecar adds (difference of medians) | +{:.0} ms | ≤ 1 s | same |",
        median_ms(&start_injected) - median_ms(&start_plain)
    );
    println!(
        "| pod delete → gone: no injection / opted in | median {:.0} ms / {:.0} ms | < 2 s | same |",
        median_ms(&delete_plain),
        median_ms(&delete_injected)
    );
    println!(
        "| Job: app exited → pod Succeeded (sidecar stopped), {} Jobs | median {:.0} ms (max {:.0}) | < 2 s | same |",
        job_done.len(),
        median_ms(&job_done),
        max_ms(&job_done)
    );
    println!(
        "| sidecar memory in the running pod: VmRSS / VmHWM / container memory cgroup | {:.1} MiB / {:.1} MiB / {:.1} MiB (medians) | ≤ 32 MiB limit | /proc/PID/status, memory.usage_in_bytes |",
        mib(&rss),
        mib(&hwm),
        mib(&cgroup)
    );
}

/// The app container's state, once the kubelet reports one.
fn app_state(pod: &Value) -> Option<&Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "app")
        .map(|s| &s["state"])
}

/// Polls the pod until `cond` holds; returns when it was first seen.
fn poll(w: &World, ns: &str, name: &str, cond: impl Fn(&Value) -> bool) -> Instant {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(Some(p)) = w.node.get(ns, "pod", name)
            && cond(&p)
        {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "pod {ns}/{name} never got there");
        std::thread::sleep(POLL);
    }
}

/// (VmRSS KiB, VmHWM KiB, memory cgroup usage KiB) of the pod's sidecar.
fn sidecar_memory(w: &World, pod: &str) -> (u64, u64, u64) {
    let id = w.container_id(pod, SIDECAR);
    let pid = w.node.task_pid(&id).expect("the sidecar's task");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.contains(":memory:"))
                .map(|l| l.rsplit(':').next().unwrap_or_default().to_owned())
        })
        .and_then(|path| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"))
                .ok()
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |b| b / 1024);
    (field("VmRSS:"), field("VmHWM:"), cgroup)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_ms(v: &[Duration]) -> f64 {
    v.iter()
        .min()
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn max_ms(v: &[Duration]) -> f64 {
    v.iter()
        .max()
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}
