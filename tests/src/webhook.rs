//! The real `tempcreds-webhook serve` process, registered with the local
//! kube-apiserver by URL for one test's namespaces.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ControlPlane, bins, free_port, unique_suffix};

/// A running webhook plus the MutatingWebhookConfiguration that routes pod
/// creations in namespaces labelled `tempcreds-test=<selector>` to it. Both
/// are removed on drop.
pub struct Webhook {
    child: Child,
    cp: ControlPlane,
    /// The MutatingWebhookConfiguration's name.
    pub configuration: String,
    /// Label value namespaces must carry (`tempcreds-test=<this>`).
    pub selector: String,
    /// The HTTPS port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Webhook {
    /// Starts the webhook with `config_yaml` as its cluster config and the
    /// control plane's admin kubeconfig (so ServiceAccount defaults work),
    /// waits until it is ready and registers it.
    pub fn start(cp: &ControlPlane, config_yaml: &str) -> Webhook {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let cert = params.self_signed(&key).expect("self-signed cert");
        let cert_file = dir.path().join("tls.crt");
        let key_file = dir.path().join("tls.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("webhook.log")).unwrap();
        let child = Command::new(bins::bin("tempcreds-webhook"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert-file")
            .arg(&cert_file)
            .arg("--tls-key-file")
            .arg(&key_file)
            .arg("--config")
            .arg(&config)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tempcreds-webhook");
        let suffix = unique_suffix();
        let mut hook = Webhook {
            child,
            cp: cp.clone(),
            configuration: format!("tempcreds-e2e-{suffix}"),
            selector: suffix,
            port,
            dir,
        };
        hook.wait_ready(&cert_file);
        hook.register(&cert.pem());
        hook
    }

    fn wait_ready(&mut self, ca: &PathBuf) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "--cacert"])
                .arg(ca)
                .arg(format!("https://127.0.0.1:{}/readyz", self.port))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tempcreds-webhook exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "webhook not ready in 60s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn register(&self, ca_pem: &str) {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let yaml = format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {name}
webhooks:
- name: pods.tempcreds.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:{port}/mutate
    caBundle: {ca}
  rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
  namespaceSelector:
    matchLabels:
      tempcreds-test: "{selector}"
"#,
            name = self.configuration,
            port = self.port,
            selector = self.selector,
        );
        self.cp
            .kubectl_stdin(&["apply", "-f", "-"], Some(&yaml))
            .expect("register the webhook");
    }

    /// Creates a namespace routed to this webhook and returns its name.
    pub fn namespace(&self, prefix: &str) -> String {
        let label = format!("tempcreds-test={}", self.selector);
        self.cp
            .create_namespace(prefix, &[&label])
            .expect("create namespace")
    }

    /// The webhook's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.configuration,
            "--ignore-not-found",
        ]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
