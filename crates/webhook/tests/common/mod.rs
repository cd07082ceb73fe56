//! Test support shared by the HTTPS and API server tests: a PKI (root CA,
//! intermediate CA, serving certificates for 127.0.0.1), certificate
//! directories laid out like a kubelet-managed Secret volume, and an HTTPS
//! client that trusts only the test root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A root CA and an intermediate CA that issues serving certificates.
pub struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate: the chain file (leaf, then intermediate) and key.
pub struct Leaf {
    /// PEM: leaf then intermediate.
    pub chain_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// DER of the leaf, to recognise it on the wire.
    pub der: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    p
}

impl Pki {
    /// A fresh root and intermediate.
    pub fn new() -> Pki {
        let root = CertifiedIssuer::self_signed(
            ca_params("tempcreds test root"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("tempcreds test intermediate"),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        Pki { root, intermediate }
    }

    /// The root CA certificate (PEM), the only thing clients trust.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A serving certificate for 127.0.0.1 and localhost.
    pub fn leaf(&self, cn: &str) -> Leaf {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.intermediate).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.intermediate.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A directory laid out like a Secret volume: `tls.crt` and `tls.key` are
/// symlinks into `..data`, itself a symlink to a timestamped directory that
/// [`CertDir::rotate`] replaces atomically, as the kubelet does.
pub struct CertDir {
    pub dir: PathBuf,
    generation: u32,
}

impl CertDir {
    /// Creates the layout in `dir` with a first certificate.
    pub fn new(dir: &Path, chain_pem: &str, key_pem: &str) -> CertDir {
        let mut d = CertDir {
            dir: dir.to_owned(),
            generation: 0,
        };
        d.rotate(chain_pem, key_pem);
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        d
    }

    /// Swaps in new contents: write a new directory, point `..data_tmp` at
    /// it, rename over `..data`, remove the old directory.
    pub fn rotate(&mut self, chain_pem: &str, key_pem: &str) {
        self.generation += 1;
        let name = format!("..2026_01_01_00_00_{:02}", self.generation);
        let new = self.dir.join(&name);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("tls.crt"), chain_pem).unwrap();
        std::fs::write(new.join("tls.key"), key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.generation > 1 {
            let old = self
                .dir
                .join(format!("..2026_01_01_00_00_{:02}", self.generation - 1));
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    /// The certificate path (through the symlinks).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    /// The key path (through the symlinks).
    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

/// An HTTPS client trusting only `root_pem`, opening a new connection (and
/// TLS handshake) for every request, reporting the peer certificate.
pub fn client(root_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake is a full one, so the peer certificate is the one
    // served now, not the one a resumed session started with.
    tls.resumption = rustls::client::Resumption::disabled();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An AdmissionReview of a pod creation.
pub fn review(uid: &str, annotations: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "team-a", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]},
            },
        }
    })
}

/// A TLS connection to `addr` trusting only `root_pem` (for the name
/// `localhost`), without HTTP on top.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    root_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// The webhook's HTTPS server (its router, default config, no cluster) on
/// a free loopback port with a serving certificate from a fresh [`Pki`]:
/// what the limits and shutdown tests drive directly.
pub struct TestServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The root the serving certificate chains to.
    pub root_pem: String,
    /// The serving task; ends when `shutdown` has run its course.
    pub task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts a [`TestServer`] whose certificate names `cn`, with `shutdown`
/// and `limits`.
pub async fn start_server<S, D>(
    cn: &str,
    shutdown: tempcreds_webhook::server::Shutdown<S, D>,
    limits: tempcreds_webhook::server::Limits,
) -> TestServer
where
    S: std::future::Future<Output = ()> + Send + 'static,
    D: std::future::Future<Output = ()> + Send + 'static,
{
    use tempcreds_webhook::server::{AppState, router, serve_with_limits};
    let pki = Pki::new();
    let leaf = pki.leaf(cn);
    let dir = tempfile::tempdir().unwrap();
    let certs = CertDir::new(dir.path(), &leaf.chain_pem, &leaf.key_pem);
    let store = tempcreds_webhook::tls::CertStore::open(&certs.cert(), &certs.key()).unwrap();
    let state = Arc::new(AppState {
        config: Arc::new(arc_swap::ArcSwap::from_pointee(
            tempcreds_webhook::ClusterConfig::with_image("img"),
        )),
        service_accounts: tempcreds_webhook::sa_cache::ServiceAccounts::Disabled,
        metrics: Arc::new(tempcreds_webhook::metrics::Metrics::default()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve_with_limits(
        listener,
        store.server_config().unwrap(),
        router(state),
        shutdown,
        limits,
    ));
    TestServer {
        addr,
        url: format!("https://127.0.0.1:{}", addr.port()),
        root_pem: pki.root_pem(),
        task,
        _dir: dir,
    }
}
