//! The real `tempcreds-webhook serve` process, registered with the local
//! kube-apiserver by URL for one test's namespaces.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{ControlPlane, Registration, bins, free_port, https_ok, unique_suffix, wait_until};

/// A running webhook plus the MutatingWebhookConfiguration that routes pod
/// creations in namespaces labelled `tempcreds-test=<selector>` to it. Both
/// are removed on drop.
pub struct Webhook {
    child: Child,
    cp: ControlPlane,
    registration: Option<Registration>,
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
            registration: None,
            selector: suffix,
            port,
            dir,
        };
        hook.wait_ready(&cert_file);
        hook.registration = Some(Registration::apply(
            cp,
            &format!("tempcreds-e2e-{}", hook.selector),
            port,
            Some(&cert.pem()),
            &[("tempcreds-test", &hook.selector)],
        ));
        hook
    }

    fn wait_ready(&mut self, ca: &Path) {
        let url = format!("https://127.0.0.1:{}/readyz", self.port);
        wait_until("the webhook is ready", crate::LIMIT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tempcreds-webhook exited with {status}: {}", self.log());
            }
            https_ok(&url, ca, None)
        });
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
        // Unregister before stopping, so no pod creation hits a dead webhook.
        self.registration.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
