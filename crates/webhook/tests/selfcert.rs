//! Self-managed certificates against the real kube-apiserver (run with
//! `hack/with-control-plane.sh cargo test -p tempcreds-webhook`).
//!
//! The webhook starts with an empty Secret (as the chart creates it) and a
//! webhook configuration without a caBundle, as after `helm install`. It must
//! issue its CA and serving certificate into the Secret and set the caBundle,
//! so that the API server's calls to it succeed: that is the proof the whole
//! chain of trust is right. Restarts adopt the stored certificate, replicas
//! racing on an empty Secret agree on one, and a caBundle reset by someone
//! else is put back. A CA rotation (a replica started with a shortened CA
//! lifetime) keeps the old serving certificate until the new CA has been in
//! the caBundle for the propagation delay, so that every certificate served
//! is trusted by the caBundle published before it, and the API server's
//! calls to the webhook never fail meanwhile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tempcreds_tests::{
    ControlPlane, LIMIT, Registration, free_port, https_ok, unique_suffix, wait_until,
};
use x509_parser::prelude::{FromDer, X509Certificate};

struct Setup {
    cp: ControlPlane,
    registration: Option<Registration>,
    ns: String,
    secret: String,
    configuration: String,
    label: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let cp = ControlPlane::from_env();
        let label = unique_suffix();
        let ns = cp.create_namespace("selfcert", &[]).unwrap();
        let secret = "tempcreds-tls".to_owned();
        cp.kubectl(&["-n", &ns, "create", "secret", "generic", &secret])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "sidecar:\n  image: ghcr.io/tempcreds/tempcreds-sidecar:test\n",
        )
        .unwrap();
        Setup {
            cp,
            registration: None,
            ns,
            secret,
            configuration: format!("tempcreds-selfcert-{label}"),
            label,
            dir,
        }
    }

    /// Registers the webhook without a caBundle, as the chart does.
    fn register(&mut self, port: u16) {
        self.registration = Some(Registration::apply(
            &self.cp,
            &self.configuration,
            port,
            None,
            &[("tempcreds.io/selfcert-test", &self.label)],
        ));
    }

    fn start(&self, port: u16, name: &str) -> Webhook {
        self.start_with(port, name, &[])
    }

    /// [`Setup::start`] with further flags.
    fn start_with(&self, port: u16, name: &str, flags: &[&str]) -> Webhook {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tempcreds-webhook"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .arg("--tls-self-managed-secret")
            .arg(format!("{}/{}", self.ns, self.secret))
            .args(["--tls-dns-name", "127.0.0.1"])
            .args(["--webhook-configuration", &self.configuration])
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Webhook { child, log, port }
    }

    fn secret_data(&self) -> Value {
        let s: Value = serde_json::from_str(
            &self
                .cp
                .kubectl(&["-n", &self.ns, "get", "secret", &self.secret, "-o", "json"])
                .unwrap(),
        )
        .unwrap();
        s["data"].clone()
    }

    fn ca_bundle(&self) -> String {
        self.cp
            .kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                &self.configuration,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])
            .unwrap()
    }

    fn write_ca(&self) -> PathBuf {
        let data = self.secret_data();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data["ca.crt"].as_str().expect("ca.crt in the Secret"))
            .unwrap();
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.registration.take();
        let _ = self
            .cp
            .kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

struct Webhook {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Webhook {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers over TLS verified against `ca`.
    fn wait_trusted(&mut self, ca: &Path) {
        let url = format!("https://127.0.0.1:{}/healthz", self.port);
        wait_until(
            "the webhook serves a certificate from the stored CA",
            Duration::from_secs(120),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("webhook exited with {status}: {}", self.log());
                }
                https_ok(&url, ca, None)
            },
        );
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 120 s.
fn wait(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(120), cond);
}

#[test]
fn issues_its_certificate_sets_the_ca_bundle_and_the_api_server_trusts_it() {
    let mut s = Setup::new();
    let port = free_port();
    s.register(port);
    assert_eq!(
        s.ca_bundle(),
        "",
        "registered without a caBundle, as the chart does"
    );
    let mut hook = s.start(port, "first");
    wait("the Secret holds a CA and a serving certificate", || {
        let d = s.secret_data();
        ["ca.crt", "ca.key", "tls.crt", "tls.key"]
            .iter()
            .all(|k| d[k].is_string())
    });
    let ca = s.write_ca();
    hook.wait_trusted(&ca);
    wait("the caBundle is the stored CA", || {
        s.ca_bundle() == s.secret_data()["ca.crt"].as_str().unwrap()
    });

    // The API server calls the webhook over TLS with that caBundle.
    let app_ns =
        s.cp.create_namespace(
            "selfcert-app",
            &[&format!("tempcreds.io/selfcert-test={}", s.label)],
        )
        .unwrap();
    // The `default` ServiceAccount (the controller manager of a node, when
    // one runs, creates it too).
    s.cp.kubectl_stdin(
        &["-n", &app_ns, "apply", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}"#),
    )
    .unwrap();
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"tempcreds.io/role-arn":"arn:aws:iam::123456789012:role/app"}},"spec":{"containers":[{"name":"app","image":"busybox"}]}}"#;
    s.cp.kubectl_stdin(&["-n", &app_ns, "apply", "-f", "-"], Some(pod))
        .unwrap_or_else(|e| panic!("{e}\n{}", hook.log()));
    let stored: Value = serde_json::from_str(
        &s.cp
            .kubectl(&["-n", &app_ns, "get", "pod", "p", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["spec"]["initContainers"][0]["name"], "tempcreds");
    assert!(!hook.log().contains("PRIVATE KEY"));

    // A restart adopts what is stored instead of issuing anew.
    let before = s.secret_data();
    drop(hook);
    let mut again = s.start(port, "restarted");
    again.wait_trusted(&ca);
    assert_eq!(s.secret_data(), before, "a restart must not reissue");

    // Someone resets the caBundle (an old manifest re-applied): put back.
    s.cp.kubectl(&[
        "patch",
        "mutatingwebhookconfiguration",
        &s.configuration,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"Zm9v"}]"#,
    ])
    .unwrap();
    wait("the caBundle is restored", || {
        s.ca_bundle() == before["ca.crt"].as_str().unwrap()
    });
    s.cp.kubectl(&["delete", "namespace", &app_ns, "--wait=false"])
        .unwrap();
}

#[test]
fn replicas_racing_on_an_empty_secret_agree_on_one_certificate() {
    let mut s = Setup::new();
    let (p1, p2) = (free_port(), free_port());
    s.register(p1);
    let mut a = s.start(p1, "a");
    let mut b = s.start(p2, "b");
    wait("the Secret is filled", || {
        s.secret_data()["tls.crt"].is_string()
    });
    let ca = s.write_ca();
    // Both replicas serve a certificate the stored CA vouches for, and the
    // caBundle is that CA: whichever replica lost the race adopted the
    // winner's material.
    a.wait_trusted(&ca);
    b.wait_trusted(&ca);
    wait("the caBundle is the stored CA", || {
        s.ca_bundle() == s.secret_data()["ca.crt"].as_str().unwrap()
    });
}

/// `kubectl get ... --watch -o json` running in the background: every
/// version of an object from now on, in order.
struct Watch {
    child: Child,
    out: PathBuf,
}

impl Watch {
    fn start(s: &Setup, name: &str, args: &[&str]) -> Watch {
        let out = s.dir.path().join(format!("{name}.watch.json"));
        let child = Command::new(tempcreds_tests::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&s.cp.kubeconfig)
            .args(args)
            .args(["--watch", "-o", "json"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = Watch { child, out };
        wait(
            &format!("the watch of {name} prints the current version"),
            || !w.versions().is_empty(),
        );
        w
    }

    fn versions(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap()
}

/// The certificates of a PEM text, as DER.
fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut &pem[..])
        .map(|c| c.unwrap().to_vec())
        .collect()
}

fn serial(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `leaf` was signed by `ca`.
fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    let (_, leaf) = X509Certificate::from_der(leaf).unwrap();
    let (_, ca) = X509Certificate::from_der(ca).unwrap();
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// curl's exit status for `GET url` trusting only the PEM file `ca`: 0
/// when served and trusted, 7 when nothing listens, 60 when the certificate
/// is not trusted.
fn curl(url: &str, ca: &Path) -> i32 {
    Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(url)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

/// Replica `a` serves the API server's calls with the certificate issued at
/// install. Replica `b` starts with a CA lifetime of 2 h, shorter than the
/// stored CA's ten years: it renews the CA (phase 1: new CA first in the
/// bundle, the old one kept, the serving certificate unchanged), publishes
/// the bundle, and 10 s later switches the serving certificate to the new
/// CA (phase 2); `a` follows from the Secret (its own propagation delay,
/// 1 h, never comes due here, so the switch is `b`'s). Meanwhile pods are
/// created in a loop through the API server, which calls `a`, and the
/// certificates both replicas serve are checked against the caBundle read
/// just before. No assertion depends on timing: the test waits for states,
/// and the switch's delay is checked from the certificate and the
/// annotation the webhook wrote.
#[test]
fn a_ca_rotation_switches_the_serving_certificate_only_once_the_new_ca_is_published() {
    let mut s = Setup::new();
    let (p1, p2) = (free_port(), free_port());
    s.register(p1);
    let mut a = s.start_with(p1, "a", &["--tls-ca-propagation-delay=1h"]);
    wait("the Secret is filled", || {
        s.secret_data()["tls.crt"].is_string()
    });
    let old_ca_file = s.write_ca();
    a.wait_trusted(&old_ca_file);
    wait("the caBundle is the stored CA", || {
        s.ca_bundle() == s.secret_data()["ca.crt"].as_str().unwrap()
    });
    let initial = s.secret_data();
    let old_ca = ders(&b64(&initial["ca.crt"])).remove(0);
    let old_leaf = ders(&b64(&initial["tls.crt"])).remove(0);

    let secrets = Watch::start(&s, "secret", &["-n", &s.ns, "get", "secret", &s.secret]);
    let mwcs = Watch::start(
        &s,
        "mwc",
        &["get", "mutatingwebhookconfiguration", &s.configuration],
    );

    // Pods created one after another through the API server, which calls
    // the webhook over TLS with the caBundle it has.
    let app_ns =
        s.cp.create_namespace(
            "selfcert-rotation",
            &[&format!("tempcreds.io/selfcert-test={}", s.label)],
        )
        .unwrap();
    s.cp.kubectl_stdin(
        &["-n", &app_ns, "apply", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}"#),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let creator = {
        let (cp, ns, stop) = (s.cp.clone(), app_ns.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut created, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let pod = format!(
                    r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p{created}-{}","annotations":{{"tempcreds.io/role-arn":"arn:aws:iam::123456789012:role/app"}}}},"spec":{{"containers":[{{"name":"app","image":"busybox"}}]}}}}"#,
                    failed.len()
                );
                match cp.kubectl_stdin(&["-n", &ns, "create", "-f", "-"], Some(&pod)) {
                    Ok(_) => created += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (created, failed)
        })
    };

    let mut b = s.start_with(
        p2,
        "b",
        &[
            "--tls-ca-lifetime=2h",
            "--tls-cert-lifetime=1h",
            "--tls-ca-propagation-delay=10s",
        ],
    );

    // Every certificate served is trusted by the caBundle published before;
    // until both replicas serve one from the new CA.
    let bundle_file = s.dir.path().join("bundle.pem");
    let new_ca_file = s.dir.path().join("new-ca.pem");
    let (url_a, url_b) = (
        format!("https://127.0.0.1:{p1}/healthz"),
        format!("https://127.0.0.1:{p2}/healthz"),
    );
    let mut b_up = false;
    wait_until(
        "both replicas serve a certificate from the new CA",
        LIMIT,
        || {
            for (hook, name) in [(&mut a, "a"), (&mut b, "b")] {
                if let Ok(Some(status)) = hook.child.try_wait() {
                    panic!("webhook {name} exited with {status}: {}", hook.log());
                }
            }
            let bundle = base64::engine::general_purpose::STANDARD
                .decode(s.ca_bundle())
                .unwrap();
            std::fs::write(&bundle_file, &bundle).unwrap();
            let code = curl(&url_a, &bundle_file);
            assert_eq!(
                code,
                0,
                "a serves a certificate the caBundle does not trust:\n{}",
                a.log()
            );
            match curl(&url_b, &bundle_file) {
                0 => b_up = true,
                7 if !b_up => {}
                code => panic!("b: curl exit {code} with the caBundle:\n{}", b.log()),
            }
            let cas = ders(&bundle);
            if cas.len() < 2 || cas[0] == old_ca {
                return false;
            }
            std::fs::write(
                &new_ca_file,
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64::engine::general_purpose::STANDARD.encode(&cas[0])
                ),
            )
            .unwrap();
            curl(&url_a, &new_ca_file) == 0 && curl(&url_b, &new_ca_file) == 0
        },
    );
    stop.store(true, Ordering::Relaxed);
    let (created, failed) = creator.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} pod creations failed: {failed:#?}\na: {}\nb: {}",
        failed.len(),
        created + failed.len(),
        a.log(),
        b.log()
    );
    assert!(created > 0);

    // The Secret's versions: phase 1, the publication, then phase 2.
    let versions: Vec<(Vec<Vec<u8>>, Vec<u8>, Value)> = secrets
        .versions()
        .iter()
        .map(|v| {
            (
                ders(&b64(&v["data"]["ca.crt"])),
                ders(&b64(&v["data"]["tls.crt"])).remove(0),
                v["metadata"]["annotations"].clone(),
            )
        })
        .collect();
    let renewed = versions
        .iter()
        .position(|(cas, _, _)| cas[0] != old_ca)
        .expect("a version with a new CA");
    let (cas, leaf, _) = &versions[renewed];
    assert_eq!(cas.len(), 2, "the new CA and the old one");
    assert_eq!(cas[1], old_ca);
    assert_eq!(*leaf, old_leaf, "phase 1 keeps the serving certificate");
    let new_ca = cas[0].clone();
    let switched = versions
        .iter()
        .position(|(_, leaf, _)| signed_by(leaf, &new_ca))
        .expect("a version with a certificate from the new CA");
    assert!(switched > renewed);
    let (cas, leaf, annotations) = &versions[switched];
    assert_eq!(cas[0], new_ca);
    assert_eq!(
        annotations["tempcreds.io/ca-published-serial"],
        serial(&new_ca).as_str(),
        "the switch follows the publication of the new CA"
    );
    let published = time::OffsetDateTime::parse(
        annotations["tempcreds.io/ca-published-at"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // b issued it with its 1 h lifetime: issued at notAfter - 1 h.
    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    let issued = cert.validity().not_after.timestamp() - 3600;
    assert!(
        issued >= published.unix_timestamp() + 10,
        "switched at {issued}, less than the propagation delay after the publication at {published}"
    );
    for (cas, leaf, _) in &versions {
        assert!(
            cas.iter().any(|ca| signed_by(leaf, ca)),
            "every version's certificate is from a CA of its bundle"
        );
    }

    // The caBundle went from the old CA to the new bundle, nothing else.
    let mut bundles: Vec<Vec<Vec<u8>>> = mwcs
        .versions()
        .iter()
        .map(|v| ders(&b64(&v["webhooks"][0]["clientConfig"]["caBundle"])))
        .collect();
    bundles.dedup();
    assert_eq!(bundles, [vec![old_ca.clone()], vec![new_ca, old_ca]]);
    assert!(!a.log().contains("PRIVATE KEY") && !b.log().contains("PRIVATE KEY"));
    s.cp.kubectl(&["delete", "namespace", &app_ns, "--wait=false"])
        .unwrap();
}
