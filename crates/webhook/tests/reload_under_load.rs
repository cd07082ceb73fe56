//! The real `tempcreds-webhook serve` process under steady load while its
//! certificate is rotated (the kubelet's `..data` symlink swap of a Secret
//! volume) and its config is rewritten (the same swap of a ConfigMap
//! volume), several times each: not one request fails, and the new
//! certificate and the new config are both in service by the end.
//!
//! Six clients post AdmissionReviews back to back for about four seconds:
//! four over kept-alive connections (which keep the certificate they
//! started with), two opening a new connection and TLS handshake for every
//! request (which see each rotation).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// A ConfigMap volume: `config.yaml -> ..data/config.yaml`.
struct ConfigDir {
    dir: PathBuf,
    generation: u32,
}

impl ConfigDir {
    fn new(dir: &Path, yaml: &str) -> ConfigDir {
        let mut d = ConfigDir {
            dir: dir.to_owned(),
            generation: 0,
        };
        d.write(yaml);
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        d
    }

    fn write(&mut self, yaml: &str) {
        self.generation += 1;
        let name = format!("..v{}", self.generation);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("config.yaml"), yaml).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long the test waits for anything before it fails: only a hang
/// takes this long.
const GUARD: Duration = Duration::from_secs(120);

/// The leaf certificate a new connection is served (DER), if it connects.
async fn served_leaf(client: &reqwest::Client, url: &str) -> Option<Vec<u8>> {
    let response = client.get(format!("{url}/healthz")).send().await.ok()?;
    let info = response.extensions().get::<reqwest::tls::TlsInfo>()?;
    Some(info.peer_certificate()?.to_vec())
}

fn image_config(image: &str) -> String {
    format!("sidecar:\n  image: {image}\n")
}

fn keep_alive_client(root_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The sidecar image in a patch answer, if any.
fn patched_image(answer: &Value) -> Option<String> {
    let patch = answer["response"]["patch"].as_str()?;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .ok()?;
    let text = String::from_utf8(patch).ok()?;
    ["image-one", "image-two", "image-three", "image-four"]
        .into_iter()
        .find(|i| text.contains(&format!("\"example.com/{i}\"")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_certificate_and_config_are_replaced() {
    let pki = common::Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let (cert_dir, config_dir) = (tmp.path().join("tls"), tmp.path().join("config"));
    std::fs::create_dir(&cert_dir).unwrap();
    std::fs::create_dir(&config_dir).unwrap();
    let first = pki.leaf("first");
    let mut certs = common::CertDir::new(&cert_dir, &first.chain_pem, &first.key_pem);
    let mut config = ConfigDir::new(&config_dir, &image_config("example.com/image-one"));

    let port = tempcreds_tests::free_port();
    let log = tmp.path().join("webhook.log");
    // No cluster access (clean environment): ServiceAccount defaults are off
    // and the webhook serves from pod annotations alone.
    let _webhook = Process(
        Command::new(env!("CARGO_BIN_EXE_tempcreds-webhook"))
            .env_clear()
            .env("HOME", tmp.path())
            .env("RUST_LOG", "info")
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert-file")
            .arg(certs.cert())
            .arg("--tls-key-file")
            .arg(certs.key())
            .arg("--config")
            .arg(config_dir.join("config.yaml"))
            .arg("--log-format")
            .arg("text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let fresh = common::client(&pki.root_pem());
    let deadline = Instant::now() + GUARD;
    while fresh.get(format!("{url}/readyz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the webhook did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let images = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let keep_alive = keep_alive_client(&pki.root_pem());
    let mut loops = Vec::new();
    for worker in 0..6 {
        let client = if worker < 4 {
            keep_alive.clone()
        } else {
            fresh.clone()
        };
        let (url, stop, ok, failures, images) = (
            url.clone(),
            stop.clone(),
            ok.clone(),
            failures.clone(),
            images.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let uid = format!("w{worker}-{i}");
                let review = common::review(
                    &uid,
                    json!({"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/app"}),
                );
                let outcome = match client
                    .post(format!("{url}/mutate"))
                    .json(&review)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) if v["response"]["uid"] == uid.as_str() => {
                            patched_image(&v).ok_or_else(|| format!("no sidecar image in {v}"))
                        }
                        other => Err(format!("{uid}: bad answer {other:?}")),
                    },
                    Ok(r) => Err(format!("{uid}: status {}", r.status())),
                    Err(e) => Err(format!("{uid}: {e:?}")),
                };
                match outcome {
                    Ok(image) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        images.lock().unwrap().push((started, image));
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }

    // Waits (for at most GUARD, which only a hang reaches) until `done`.
    async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + GUARD;
        while !done().await {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let answered = || ok.load(Ordering::Relaxed) + failures.lock().unwrap().len() as u64;
    let served_image = |image: &str| images.lock().unwrap().iter().any(|(_, i)| i == image);
    eventually("reviews are answered", async || answered() >= 20).await;

    // Alternate: a new certificate, then a new config, three times each;
    // each change is in service (a new connection gets the certificate, a
    // review the image) before the next, and reviews go on throughout.
    let mut leaves = Vec::new();
    for (round, image) in ["image-two", "image-three", "image-four"]
        .iter()
        .enumerate()
    {
        let leaf = pki.leaf(&format!("rotation-{round}"));
        certs.rotate(&leaf.chain_pem, &leaf.key_pem);
        eventually("the new certificate is served", async || {
            served_leaf(&fresh, &url).await.as_deref() == Some(leaf.der.as_slice())
        })
        .await;
        leaves.push(leaf);
        config.write(&image_config(&format!("example.com/{image}")));
        eventually(&format!("{image} is served"), async || served_image(image)).await;
        let now = answered();
        eventually("reviews go on", async || answered() >= now + 20).await;
    }
    // Reviews started from here on must all get the last config.
    let settled = Instant::now();
    let now = answered();
    eventually("reviews go on", async || answered() >= now + 20).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\nwebhook log:\n{logs}",
        failures.len(),
        failures.len() as u64 + ok,
        &failures[..failures.len().min(3)]
    );

    // Each config version was in service, and the last one is by the end.
    let images = images.lock().unwrap().clone();
    let seen: BTreeSet<_> = images.iter().map(|(_, i)| i.as_str()).collect();
    assert_eq!(
        seen,
        BTreeSet::from(["image-one", "image-two", "image-three", "image-four"]),
        "{logs}"
    );
    assert!(
        images
            .iter()
            .filter(|(t, _)| *t > settled)
            .all(|(_, i)| i == "image-four"),
        "a review started after the last config was in service got an old one"
    );
    // New connections get the last certificate.
    assert_eq!(
        served_leaf(&fresh, &url).await.as_deref(),
        Some(leaves.last().unwrap().der.as_slice())
    );
    eprintln!(
        "{ok} reviews answered, none failed, during 3 certificate rotations and 3 config reloads"
    );
}
