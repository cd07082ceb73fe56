//! Self-managed serving certificates: the webhook's own CA and serving
//! certificate, kept in one Secret and renewed before they expire.
//!
//! This is the chart's default certificate mode, for clusters without
//! cert-manager. Every replica runs the same loop: read the Secret, and if
//! the material is missing, unreadable, about to expire or not valid for the
//! service's DNS name, issue new material and write it back with optimistic
//! concurrency (the Secret's resourceVersion), so that when replicas race
//! one wins and the others adopt its result. The CA outlives many serving
//! certificates; when it is itself renewed, the old CA stays in the bundle
//! until it expires, so API servers holding either CA keep trusting the
//! webhook.
//!
//! This module is the pure part: what to do with what is stored, and issuing
//! new material. The Kubernetes side is in [`crate::selfcert_sync`].

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Lifetime of a new CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A CA with less than this left is replaced (the old one stays trusted).
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(2 * 365 * 86_400);
/// Lifetime of a serving certificate.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// A serving certificate with less than this left is replaced.
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(120 * 86_400);

/// Keys of the Secret's data.
pub mod keys {
    /// PEM bundle of trusted CAs, current first: the webhook's caBundle.
    pub const CA_BUNDLE: &str = "ca.crt";
    /// PEM private key of the current CA.
    pub const CA_KEY: &str = "ca.key";
    /// PEM serving certificate.
    pub const TLS_CERT: &str = "tls.crt";
    /// PEM private key of the serving certificate.
    pub const TLS_KEY: &str = "tls.key";
}

/// The material stored in the Secret, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// Trusted CAs, current first.
    pub ca_bundle: String,
    /// Private key of the first CA in the bundle.
    pub ca_key: String,
    /// Serving certificate.
    pub tls_cert: String,
    /// Private key of the serving certificate.
    pub tls_key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca_bundle", &self.ca_bundle)
            .field("ca_key", &"** redacted **")
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &"** redacted **")
            .finish()
    }
}

/// Why new material is needed (or that none is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The stored material is good.
    Keep,
    /// Only the serving certificate must be reissued, by the current CA.
    ReissueLeaf(String),
    /// The CA must be replaced (and the serving certificate with it).
    RenewCa(String),
}

/// A problem issuing certificates.
#[derive(Debug, thiserror::Error)]
#[error("could not issue the webhook's {what}: {source}")]
pub struct IssueError {
    what: &'static str,
    #[source]
    source: rcgen::Error,
}

struct Parsed {
    not_before: i64,
    not_after: i64,
    dns_names: Vec<String>,
    is_ca: bool,
    issuer: Vec<u8>,
    subject: Vec<u8>,
}

fn pem_blocks(text: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut text.as_bytes())
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect()
}

fn parse(der: &[u8]) -> Option<Parsed> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => ip_text(b),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Parsed {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        is_ca: cert.is_ca(),
        issuer: cert.issuer().as_raw().to_vec(),
        subject: cert.subject().as_raw().to_vec(),
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

fn remaining(p: &Parsed, now: OffsetDateTime) -> i64 {
    p.not_after - now.unix_timestamp()
}

/// Decides whether `stored` can keep serving `dns_names` at `now`.
pub fn judge(stored: Option<&Material>, dns_names: &[String], now: OffsetDateTime) -> Verdict {
    let Some(m) = stored else {
        return Verdict::RenewCa("no certificate has been issued yet".into());
    };
    let cas = pem_blocks(&m.ca_bundle);
    let Some(ca) = cas.first().and_then(|d| parse(d)) else {
        return Verdict::RenewCa("the stored CA is missing or unreadable".into());
    };
    if !ca.is_ca || KeyPair::from_pem(&m.ca_key).is_err() {
        return Verdict::RenewCa("the stored CA or its key is unusable".into());
    }
    if remaining(&ca, now) < CA_RENEW_BEFORE.as_secs() as i64 {
        return Verdict::RenewCa("the CA expires within two years".into());
    }
    let leaf = pem_blocks(&m.tls_cert).first().and_then(|d| parse(d));
    let Some(leaf) = leaf else {
        return Verdict::ReissueLeaf("the serving certificate is missing or unreadable".into());
    };
    if KeyPair::from_pem(&m.tls_key).is_err() {
        return Verdict::ReissueLeaf("the serving key is unreadable".into());
    }
    if leaf.issuer != ca.subject {
        return Verdict::ReissueLeaf("the serving certificate is not from the current CA".into());
    }
    if let Some(missing) = dns_names.iter().find(|d| !leaf.dns_names.contains(d)) {
        return Verdict::ReissueLeaf(format!("the serving certificate does not name {missing}"));
    }
    if leaf.not_before > now.unix_timestamp() + 300 {
        return Verdict::ReissueLeaf("the serving certificate is not valid yet".into());
    }
    if remaining(&leaf, now) < LEAF_RENEW_BEFORE.as_secs() as i64 {
        return Verdict::ReissueLeaf("the serving certificate expires within 120 days".into());
    }
    Verdict::Keep
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(
        DnType::CommonName,
        format!("tempcreds-webhook-ca-{}", now.unix_timestamp()),
    );
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_LIFETIME;
    params
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    dns_names: &[String],
    now: OffsetDateTime,
) -> Result<(String, String), IssueError> {
    let err = |source| IssueError {
        what: "serving certificate",
        source,
    };
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(err)?;
    if let Some(first) = dns_names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.clone());
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + LEAF_LIFETIME;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues what `verdict` asks for, keeping what is still good in `stored`
/// ([`Verdict::Keep`] returns `stored` itself; with nothing stored, every
/// verdict means a new CA).
pub fn issue(
    verdict: &Verdict,
    stored: Option<&Material>,
    dns_names: &[String],
    now: OffsetDateTime,
) -> Result<Material, IssueError> {
    let ca_err = |source| IssueError { what: "CA", source };
    match (verdict, stored) {
        (Verdict::Keep, Some(m)) => Ok(m.clone()),
        (Verdict::ReissueLeaf(_), Some(m)) => {
            let ca_key = KeyPair::from_pem(&m.ca_key).map_err(ca_err)?;
            let issuer = Issuer::from_ca_cert_pem(&m.ca_bundle, ca_key).map_err(ca_err)?;
            let (tls_cert, tls_key) = leaf(&issuer, dns_names, now)?;
            Ok(Material {
                ca_bundle: m.ca_bundle.clone(),
                ca_key: m.ca_key.clone(),
                tls_cert,
                tls_key,
            })
        }
        (Verdict::RenewCa(_), _) | (_, None) => {
            let key = KeyPair::generate().map_err(ca_err)?;
            let params = ca_params(now);
            let ca_cert = params.self_signed(&key).map_err(ca_err)?;
            let ca_key = key.serialize_pem();
            let issuer = Issuer::new(params, key);
            let (tls_cert, tls_key) = leaf(&issuer, dns_names, now)?;
            // Keep trusting the previous CA while it is valid, so API servers
            // that still hold the old caBundle accept the new certificate's
            // predecessor and vice versa during the switch.
            let mut ca_bundle = ca_cert.pem();
            if let Some(old) = stored {
                for der in pem_blocks(&old.ca_bundle).into_iter().take(1) {
                    if parse(&der).is_some_and(|p| p.is_ca && remaining(&p, now) > 0) {
                        ca_bundle.push_str(&pem_encode(&der));
                    }
                }
            }
            Ok(Material {
                ca_bundle,
                ca_key,
                tls_cert,
                tls_key,
            })
        }
    }
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns() -> Vec<String> {
        vec!["tempcreds.tempcreds.svc".to_owned()]
    }

    fn fresh(now: OffsetDateTime) -> Material {
        let v = judge(None, &dns(), now);
        issue(&v, None, &dns(), now).unwrap()
    }

    #[test]
    fn issues_a_ca_and_a_serving_certificate_when_nothing_is_stored() {
        let now = OffsetDateTime::now_utc();
        assert!(matches!(judge(None, &dns(), now), Verdict::RenewCa(_)));
        let m = fresh(now);
        assert_eq!(judge(Some(&m), &dns(), now), Verdict::Keep);
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn serving_certificate_verifies_against_the_bundle() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let leaf = pem_blocks(&m.tls_cert).remove(0);
        let ca = pem_blocks(&m.ca_bundle).remove(0);
        let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn reissues_the_leaf_near_expiry_or_for_a_new_name_keeping_the_ca() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let later = now + LEAF_LIFETIME - LEAF_RENEW_BEFORE + time::Duration::days(1);
        let v = judge(Some(&m), &dns(), later);
        assert!(
            matches!(v, Verdict::ReissueLeaf(ref r) if r.contains("120 days")),
            "{v:?}"
        );
        let renewed = issue(&v, Some(&m), &dns(), later).unwrap();
        assert_eq!(renewed.ca_bundle, m.ca_bundle);
        assert_ne!(renewed.tls_cert, m.tls_cert);
        assert_eq!(judge(Some(&renewed), &dns(), later), Verdict::Keep);

        let ip = vec!["127.0.0.1".to_owned()];
        let m_ip = issue(&judge(None, &ip, now), None, &ip, now).unwrap();
        assert_eq!(judge(Some(&m_ip), &ip, now), Verdict::Keep);

        let other = vec!["other.ns.svc".to_owned()];
        assert!(
            matches!(judge(Some(&m), &other, now), Verdict::ReissueLeaf(ref r) if r.contains("other.ns.svc"))
        );
    }

    #[test]
    fn renews_the_ca_keeping_the_old_one_trusted() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let later = now + CA_LIFETIME - CA_RENEW_BEFORE + time::Duration::days(1);
        let v = judge(Some(&m), &dns(), later);
        assert!(matches!(v, Verdict::RenewCa(_)), "{v:?}");
        let renewed = issue(&v, Some(&m), &dns(), later).unwrap();
        assert_eq!(pem_blocks(&renewed.ca_bundle).len(), 2);
        assert_eq!(
            pem_blocks(&renewed.ca_bundle)[1],
            pem_blocks(&m.ca_bundle)[0]
        );
        assert_eq!(judge(Some(&renewed), &dns(), later), Verdict::Keep);
    }

    #[test]
    fn garbage_in_the_secret_means_new_material_not_a_panic() {
        let now = OffsetDateTime::now_utc();
        let junk = Material {
            ca_bundle: "junk".into(),
            ca_key: "junk".into(),
            tls_cert: "junk".into(),
            tls_key: "junk".into(),
        };
        assert!(matches!(
            judge(Some(&junk), &dns(), now),
            Verdict::RenewCa(_)
        ));
        let mut m = fresh(now);
        m.tls_cert = "junk".into();
        assert!(matches!(
            judge(Some(&m), &dns(), now),
            Verdict::ReissueLeaf(_)
        ));
    }
}
