//! The serving certificate: loaded from PEM files, served through a rustls
//! [`ResolvesServerCert`] over an [`ArcSwap`], and reloaded when the files
//! change, with no restart and no failed handshake.
//!
//! The files are watched through their *directories* (see [`crate::watch`]):
//! the kubelet and cert-manager replace Secret volumes by swapping a `..data`
//! symlink, which a watch on the file itself misses. A new certificate that
//! fails to load (half-written, key not matching) is logged and the old one
//! kept. The whole chain in the certificate file is served.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::{Metrics, Reloaded};

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is unusable or does not match the certificate.
    #[error("the key in {key} does not fit the certificate in {cert}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
}

/// The crypto provider used for serving (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its key from PEM files.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    from_pem(&read(cert)?, &read(key)?, cert, key, provider)
}

/// Builds a certificate chain and its key from PEM text; `cert` and `key`
/// name where the text came from, for error messages.
pub fn from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: key.to_owned(),
        })?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|source| TlsError::Key {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// The current certificate, swapped atomically on reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    last_error: crate::watch::LastError,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// Loads the files once; fails when they cannot be used (at startup,
    /// there is no old certificate to keep).
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let first = load(cert, key, &provider)?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(first),
            last_error: Default::default(),
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider,
        }))
    }

    /// The files this store reads.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.cert_path, &self.key_path]
    }

    /// Reloads the files, keeping the current certificate when the new one
    /// fails to load. Returns whether the served certificate changed.
    pub fn reload(&self, metrics: &Metrics) -> bool {
        match load(&self.cert_path, &self.key_path, &self.provider) {
            Ok(new) => {
                self.last_error.clear();
                if new.cert == self.current.load().cert {
                    return false;
                }
                self.current.store(Arc::new(new));
                metrics.record_reload(Reloaded::Tls, true);
                tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                true
            }
            Err(e) => {
                let error = crate::error_chain(&e);
                if self.last_error.is_new(&error) {
                    metrics.record_reload(Reloaded::Tls, false);
                    tracing::warn!(
                        %error,
                        "new serving certificate not loaded; still serving the previous one"
                    );
                }
                false
            }
        }
    }

    /// A store for a certificate held in memory (self-managed certificates,
    /// see [`crate::selfcert_sync`]); `source` names where it came from in
    /// messages. It is replaced with [`CertStore::install_pem`], not
    /// reloaded from files.
    pub fn from_memory(
        cert_pem: &[u8],
        key_pem: &[u8],
        source: &str,
    ) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let path = PathBuf::from(source);
        let first = from_pem(cert_pem, key_pem, &path, &path, &provider)?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(first),
            last_error: Default::default(),
            cert_path: path.clone(),
            key_path: path,
            provider,
        }))
    }

    /// Serves a new certificate from PEM text, keeping the current one when
    /// the new one does not load.
    pub fn install_pem(&self, cert_pem: &[u8], key_pem: &[u8], metrics: &Metrics) -> bool {
        match from_pem(
            cert_pem,
            key_pem,
            &self.cert_path,
            &self.key_path,
            &self.provider,
        ) {
            Ok(new) => {
                self.current.store(Arc::new(new));
                metrics.record_reload(Reloaded::Tls, true);
                tracing::info!(source = %self.cert_path.display(), "serving certificate replaced");
                true
            }
            Err(e) => {
                metrics.record_reload(Reloaded::Tls, false);
                tracing::warn!(error = %crate::error_chain(&e), "new serving certificate not loaded; still serving the previous one");
                false
            }
        }
    }

    /// The rustls server configuration serving this store's certificate
    /// (HTTP/1.1 only).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}
