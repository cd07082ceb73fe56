//! Proves the test node runs real pods: a busybox pod reaches a server on
//! the host through the bridge's gateway and its log says so, a Job runs to
//! completion (kube-controller-manager), and deleting a running pod stops its
//! containers.
//!
//! Needs the node: `TEMPCREDS_NODE=1 hack/with-control-plane.sh cargo test
//! -p tempcreds-tests --test node_smoke` (root). Without it every test here
//! fails, saying so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tempcreds_tests::LIMIT;
use tempcreds_tests::node::{self, Node};

/// A one-line HTTP server on the node's gateway address, recording the
/// address of every client. Its thread ends with the test process.
struct HostServer {
    addr: SocketAddr,
    clients: Arc<Mutex<Vec<SocketAddr>>>,
}

impl HostServer {
    fn start(ip: &str, body: &'static str) -> HostServer {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("listen on the node's gateway {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let clients = Arc::new(Mutex::new(Vec::new()));
        let seen = clients.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Ok(peer) = stream.peer_addr() {
                    seen.lock().unwrap().push(peer);
                }
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                // Read the request head, then answer and close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        HostServer { addr, clients }
    }
}

#[test]
fn busybox_pod_reaches_a_server_on_the_host_and_logs_its_answer() {
    let node = Node::from_env();
    let image = node.busybox();
    let server = HostServer::start(&node.gateway, "answer-from-the-host\n");
    let cp = node.control_plane();
    let ns = cp.create_namespace("node-smoke", &[]).unwrap();

    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": [node::toleration()],
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", format!("echo hello; wget -qO- http://{}/", server.addr)],
            }],
        },
    });
    let name = node.create(&ns, &pod).unwrap();
    let done = node.wait_for_phase(&ns, &name, "Succeeded", LIMIT).unwrap();
    assert_eq!(done["spec"]["nodeName"], node.name.as_str());

    let logs = node.logs(&ns, &name, None).unwrap();
    assert_eq!(logs, "hello\nanswer-from-the-host\n");
    let statuses = node.container_statuses(&ns, &name).unwrap();
    assert_eq!(
        statuses["main"]["state"]["terminated"]["exitCode"], 0,
        "{statuses:?}"
    );

    // The request came from the pod, over the bridge.
    let pod_ip = done["status"]["podIP"].as_str().expect("the pod has an IP");
    let clients = server.clients.lock().unwrap().clone();
    assert_eq!(
        clients
            .iter()
            .map(|c| c.ip().to_string())
            .collect::<Vec<_>>(),
        [pod_ip],
        "clients of the host server"
    );

    node.delete_and_wait(&ns, "pod", &name, LIMIT).unwrap();
    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}

#[test]
fn job_runs_to_completion() {
    let node = Node::from_env();
    let image = node.busybox();
    let cp = node.control_plane();
    let ns = cp.create_namespace("node-job", &[]).unwrap();

    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "tolerations": [node::toleration()],
                "containers": [{
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo job-ran-as-$(id -u)"],
                }],
            }},
        },
    });
    let name = node.create(&ns, &job).unwrap();
    node.wait_for_condition(&ns, "job", &name, "Complete", LIMIT)
        .unwrap();
    let logs = cp
        .kubectl(&["-n", &ns, "logs", &format!("job/{name}")])
        .unwrap();
    assert_eq!(logs, "job-ran-as-65532\n");

    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}

#[test]
fn deleting_a_running_pod_stops_its_containers() {
    let node = Node::from_env();
    let image = node.busybox();
    let cp = node.control_plane();
    let ns = cp.create_namespace("node-delete", &[]).unwrap();

    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "tolerations": [node::toleration()],
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    });
    let name = node.create(&ns, &pod).unwrap();
    node.wait_for_condition(&ns, "pod", &name, "Ready", LIMIT)
        .unwrap();
    let statuses = node.container_statuses(&ns, &name).unwrap();
    let container_id = statuses["main"]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("a containerd container ID")
        .to_owned();
    assert!(
        node.running_containers().unwrap().contains(&container_id),
        "containerd does not run {container_id}"
    );

    // `sleep` as PID 1 ignores SIGTERM: the kubelet kills it after the
    // grace period.
    node.delete_and_wait(&ns, "pod", &name, LIMIT).unwrap();
    assert!(
        !node.running_containers().unwrap().contains(&container_id),
        "the deleted pod's container {container_id} still runs"
    );

    cp.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .unwrap();
}

/// Pods of tests that expect no node (their images name registries this
/// machine must never contact) stay Pending: the node's taint keeps them off.
#[test]
fn pods_without_the_toleration_are_never_scheduled_so_never_pulled() {
    let node = Node::from_env();
    let cp = node.control_plane();
    let ns = cp.create_namespace("node-taint", &[]).unwrap();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "elsewhere"},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/never:1"}]},
    });
    node.create(&ns, &pod).unwrap();
    let pending = node
        .wait_for(
            &ns,
            "pod",
            "elsewhere",
            LIMIT,
            |p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
            },
            |p| p["spec"]["nodeName"].is_string(),
        )
        .unwrap();
    assert_eq!(pending["status"]["phase"], "Pending");
    assert!(
        !node
            .images()
            .unwrap()
            .iter()
            .any(|i| i.contains("registry.invalid")),
        "the node pulled an image it should never have seen"
    );
}
