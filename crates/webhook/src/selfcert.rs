//! Self-managed serving certificates: the webhook's own CA and serving
//! certificate, kept in one Secret and renewed before they expire.
//!
//! This is the chart's default certificate mode, for clusters without
//! cert-manager. Every replica runs the same loop: read the Secret, and if
//! the material is missing, unreadable, about to expire or not valid for the
//! service's DNS name, issue new material and write it back with optimistic
//! concurrency (the Secret's resourceVersion), so that when replicas race
//! one wins and the others adopt its result.
//!
//! **A CA is renewed in two phases**, so that no replica ever serves a
//! certificate an API server does not trust yet (the API server learns a new
//! caBundle through its informer, some time after the webhook configuration
//! is patched):
//!
//! 1. *CA renewal.* A new CA is generated and put first in the bundle, the
//!    CAs still in use stay behind it, and the Secret keeps the serving
//!    certificate it has (signed by the previous CA, still valid). The
//!    caBundle of the webhook configuration is then patched to the new
//!    bundle, and the time that was seen done is recorded in the Secret
//!    ([`Publication`], two annotations).
//! 2. *Certificate switch.* Once the new CA has been published for the
//!    propagation delay (`--tls-ca-propagation-delay`, 60 s by default), the
//!    serving certificate is reissued from it. Should the old serving
//!    certificate be about to expire before then, it is reissued at once
//!    (correctness first), and a warning is logged.
//!
//! Certificates are renewed when a fraction of their own lifetime is left (a
//! fifth for the CA, a third for the serving certificate), and at once when
//! they outlive the configured lifetimes ([`Lifetimes`]), so that an operator
//! who shortens a lifetime gets it applied.
//!
//! This module is the pure part: what to do with what is stored, and issuing
//! new material. The Kubernetes side is in [`crate::selfcert_sync`].

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempcreds_core::duration::format_duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const DAY: u64 = 86_400;

/// Default lifetime of a new CA (`--tls-ca-lifetime`): ten years.
pub const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * DAY);
/// Default lifetime of a new serving certificate (`--tls-cert-lifetime`): a
/// year.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(365 * DAY);
/// Default of `--tls-ca-propagation-delay`: how long a new CA must have been
/// in the published caBundle before the serving certificate switches to it.
pub const DEFAULT_PROPAGATION_DELAY: Duration = Duration::from_secs(60);
/// Shortest lifetime accepted for either certificate.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Longest lifetime accepted for either certificate.
pub const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * DAY);
/// Stored certificates valid for longer than the configured lifetime plus
/// this are renewed (it absorbs clock differences between replicas).
pub const LIFETIME_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// How far `notBefore` is set back, at most, for clients whose clock is
/// behind (a tenth of the lifetime for short ones).
const MAX_BACKDATE: Duration = Duration::from_secs(3600);

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

/// Annotations of the Secret recording a [`Publication`].
pub mod annotations {
    /// Serial number (hex) of the CA first in the bundle when it was seen in
    /// the webhook configuration's caBundle.
    pub const PUBLISHED_CA: &str = "tempcreds.io/ca-published-serial";
    /// When that was seen (RFC 3339).
    pub const PUBLISHED_AT: &str = "tempcreds.io/ca-published-at";
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

impl Material {
    /// Whether `other` serves the same certificate and key.
    pub fn same_serving_certificate(&self, other: &Material) -> bool {
        self.tls_cert == other.tls_cert && self.tls_key == other.tls_key
    }
}

/// Lifetimes of new certificates and the propagation delay of a new CA,
/// checked together (see [`Lifetimes::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    ca: Duration,
    cert: Duration,
    propagation: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: DEFAULT_CA_LIFETIME,
            cert: DEFAULT_CERT_LIFETIME,
            propagation: DEFAULT_PROPAGATION_DELAY,
        }
    }
}

/// Why `--tls-ca-lifetime`, `--tls-cert-lifetime` and
/// `--tls-ca-propagation-delay` do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    /// A lifetime below [`MIN_LIFETIME`] or above [`MAX_LIFETIME`].
    #[error("{flag} {value} is out of range: give between {min} and {max}")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// The shortest accepted.
        min: String,
        /// The longest accepted.
        max: String,
    },
    /// The serving certificate would outlive its CA.
    #[error(
        "--tls-cert-lifetime {cert} is longer than --tls-ca-lifetime {ca}: a serving certificate \
         cannot outlive the CA that signs it; shorten the first or lengthen the second"
    )]
    CertOutlivesCa {
        /// The serving certificate's lifetime.
        cert: String,
        /// The CA's lifetime.
        ca: String,
    },
    /// The propagation delay does not fit in a renewal window.
    #[error(
        "--tls-ca-propagation-delay {delay} is too long for {flag} {lifetime}: a certificate of \
         that lifetime is renewed {window} before it expires, and the delay may take at most half \
         of that; shorten the delay or lengthen the lifetime"
    )]
    PropagationTooLong {
        /// The delay given.
        delay: String,
        /// The lifetime flag it does not fit.
        flag: &'static str,
        /// That lifetime.
        lifetime: String,
        /// Its renewal window.
        window: String,
    },
}

impl Lifetimes {
    /// Checks that each lifetime lies within [`MIN_LIFETIME`] and
    /// [`MAX_LIFETIME`], that the serving certificate does not outlive the
    /// CA, and that the propagation delay takes at most half of either
    /// renewal window (a fifth of the CA's lifetime, a third of the serving
    /// certificate's), so the certificate switch after a CA renewal always
    /// comes while the old certificate is still good.
    pub fn new(ca: Duration, cert: Duration, propagation: Duration) -> Result<Self, LifetimeError> {
        let range = |flag, value: Duration| {
            if (MIN_LIFETIME..=MAX_LIFETIME).contains(&value) {
                Ok(())
            } else {
                Err(LifetimeError::OutOfRange {
                    flag,
                    value: format_duration(value),
                    min: format_duration(MIN_LIFETIME),
                    max: format_duration(MAX_LIFETIME),
                })
            }
        };
        range("--tls-ca-lifetime", ca)?;
        range("--tls-cert-lifetime", cert)?;
        if cert > ca {
            return Err(LifetimeError::CertOutlivesCa {
                cert: format_duration(cert),
                ca: format_duration(ca),
            });
        }
        let windows = [
            ("--tls-ca-lifetime", ca, ca / 5),
            ("--tls-cert-lifetime", cert, cert / 3),
        ];
        for (flag, lifetime, window) in windows {
            if propagation * 2 > window {
                return Err(LifetimeError::PropagationTooLong {
                    delay: format_duration(propagation),
                    flag,
                    lifetime: format_duration(lifetime),
                    window: format_duration(window),
                });
            }
        }
        Ok(Lifetimes {
            ca,
            cert,
            propagation,
        })
    }

    /// Lifetime of a new CA.
    pub fn ca(&self) -> Duration {
        self.ca
    }

    /// Lifetime of a new serving certificate.
    pub fn cert(&self) -> Duration {
        self.cert
    }

    /// How long a new CA must have been in the published caBundle before
    /// the serving certificate switches to it.
    pub fn propagation(&self) -> Duration {
        self.propagation
    }
}

/// That the caBundle holding a CA was seen in the webhook configuration
/// (patched there, or found there) at a time: kept in the Secret's
/// [`annotations`], so that every replica, and a restarted one, knows when
/// the certificate switch of a CA renewal is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Serial number (lower-case hex) of the CA first in the bundle.
    pub ca_serial: String,
    /// When the bundle was seen published.
    pub at: OffsetDateTime,
}

impl Publication {
    /// A publication of `m`'s current CA at `at`; `None` when that CA is
    /// unreadable.
    pub fn of(m: &Material, at: OffsetDateTime) -> Option<Publication> {
        let ca = pem_blocks(&m.ca_bundle)
            .first()
            .and_then(|d| Cert::parse(d))?;
        Some(Publication {
            ca_serial: ca.serial,
            at,
        })
    }

    /// Reads the annotations' values; `None` when either is missing or
    /// malformed.
    pub fn from_annotations(ca_serial: Option<&str>, at: Option<&str>) -> Option<Publication> {
        let ca_serial = ca_serial.filter(|s| !s.is_empty())?.to_owned();
        let at = OffsetDateTime::parse(at?, &Rfc3339).ok()?;
        Some(Publication { ca_serial, at })
    }

    /// The annotations recording it.
    pub fn to_annotations(&self) -> [(&'static str, String); 2] {
        let at = self
            .at
            .replace_nanosecond(0)
            .unwrap_or(self.at)
            .format(&Rfc3339)
            .unwrap_or_default();
        [
            (annotations::PUBLISHED_CA, self.ca_serial.clone()),
            (annotations::PUBLISHED_AT, at),
        ]
    }

    /// Whether it records the publication of `m`'s current CA.
    pub fn is_of(&self, m: &Material) -> bool {
        pem_blocks(&m.ca_bundle)
            .first()
            .and_then(|d| Cert::parse(d))
            .is_some_and(|ca| ca.serial == self.ca_serial)
    }
}

/// What to do with the stored material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The stored material is good.
    Keep,
    /// Only the serving certificate must be reissued, by the current CA.
    ReissueLeaf(String),
    /// The CA must be replaced. With `keep_leaf` the serving certificate
    /// stays until the new CA has been published for the propagation delay
    /// (phase 1 of a rotation); without, a new one is issued by the new CA
    /// at once.
    RenewCa {
        /// Why.
        reason: String,
        /// Whether the serving certificate stays.
        keep_leaf: bool,
    },
}

impl Verdict {
    /// Why, empty for [`Verdict::Keep`].
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Keep => "",
            Verdict::ReissueLeaf(reason) | Verdict::RenewCa { reason, .. } => reason,
        }
    }
}

/// The answer of [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// What to do.
    pub verdict: Verdict,
    /// Set when doing it serves a certificate from a CA that API servers
    /// may not trust yet, because the certificate served now cannot wait
    /// (say why in a warning).
    pub warning: Option<String>,
    /// When the answer changes by itself, at the latest (for
    /// [`Verdict::Keep`]: the next renewal or certificate switch due; `now`
    /// for the other verdicts).
    pub recheck_at: OffsetDateTime,
}

/// A problem issuing certificates.
#[derive(Debug, thiserror::Error)]
#[error("could not issue the webhook's {what}: {source}")]
pub struct IssueError {
    what: &'static str,
    #[source]
    source: rcgen::Error,
}

/// The parts of a certificate the decisions use.
struct Cert {
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
    dns_names: Vec<String>,
    is_ca: bool,
    issuer: Vec<u8>,
    subject: Vec<u8>,
    serial: String,
    public_key: Vec<u8>,
}

impl Cert {
    fn parse(der: &[u8]) -> Option<Cert> {
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
        Some(Cert {
            der: der.to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            dns_names,
            is_ca: cert.is_ca(),
            issuer: cert.issuer().as_raw().to_vec(),
            subject: cert.subject().as_raw().to_vec(),
            serial: cert
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// Seconds of validity from `notBefore` to `notAfter`.
    fn lifetime(&self) -> i64 {
        self.not_after - self.not_before
    }

    /// Whether `self` was signed by `ca`.
    fn signed_by(&self, ca: &Cert) -> bool {
        if self.issuer != ca.subject {
            return false;
        }
        let (Ok((_, cert)), Ok((_, issuer))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&ca.der),
        ) else {
            return false;
        };
        cert.verify_signature(Some(issuer.public_key())).is_ok()
    }

    /// Whether `key_pem` is the private key of this certificate.
    fn has_key(&self, key_pem: &str) -> bool {
        KeyPair::from_pem(key_pem).is_ok_and(|k| k.public_key_raw() == self.public_key.as_slice())
    }
}

fn pem_blocks(text: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut text.as_bytes())
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect()
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

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn when(unix: i64) -> String {
    at(unix)
        .format(&Rfc3339)
        .unwrap_or_else(|_| unix.to_string())
}

/// The stored serving certificate, usable: its key fits, it names the DNS
/// names, it is valid now and it is signed by a valid CA of the bundle.
struct ServingCert {
    /// Index in the bundle of the CA that signed it (0: the current CA).
    issuer: usize,
    /// When it or its CA expires, whichever comes first.
    good_until: i64,
    /// Its own lifetime (seconds).
    lifetime: i64,
    /// When it expires.
    not_after: i64,
}

/// The stored serving certificate if usable, or why not.
fn serving_cert(
    m: &Material,
    bundle: &[Option<Cert>],
    dns_names: &[String],
    now: i64,
) -> Result<ServingCert, String> {
    let Some(leaf) = pem_blocks(&m.tls_cert).first().and_then(|d| Cert::parse(d)) else {
        return Err("the serving certificate is missing or unreadable".into());
    };
    if !leaf.has_key(&m.tls_key) {
        return Err("the serving key is unreadable or does not fit the certificate".into());
    }
    let issuer = bundle.iter().enumerate().find_map(|(i, ca)| {
        ca.as_ref()
            .filter(|ca| ca.is_ca && ca.not_after > now && leaf.signed_by(ca))
            .map(|ca| (i, ca))
    });
    let Some((issuer, ca)) = issuer else {
        return Err(
            "the serving certificate is not signed by a valid CA of the stored bundle".into(),
        );
    };
    if let Some(missing) = dns_names.iter().find(|d| !leaf.dns_names.contains(d)) {
        return Err(format!("the serving certificate does not name {missing}"));
    }
    if leaf.not_before > now + 300 {
        return Err("the serving certificate is not valid yet".into());
    }
    let good_until = leaf.not_after.min(ca.not_after);
    if good_until <= now {
        return Err(format!(
            "the serving certificate (or its CA) expired at {}",
            when(good_until)
        ));
    }
    Ok(ServingCert {
        issuer,
        good_until,
        lifetime: leaf.lifetime(),
        not_after: leaf.not_after,
    })
}

impl Judgement {
    fn now(verdict: Verdict, now: OffsetDateTime) -> Judgement {
        Judgement {
            verdict,
            warning: None,
            recheck_at: now,
        }
    }
}

/// Decides what to do with `stored` to serve `dns_names` at `now`:
/// `publication` is the recorded [`Publication`] (ignored unless it is of
/// the stored current CA), `lifetimes` the configured ones.
pub fn judge(
    stored: Option<&Material>,
    publication: Option<&Publication>,
    dns_names: &[String],
    lifetimes: &Lifetimes,
    now: OffsetDateTime,
) -> Judgement {
    let renew_ca = |reason: &str| Verdict::RenewCa {
        reason: reason.to_owned(),
        keep_leaf: false,
    };
    let Some(m) = stored else {
        return Judgement::now(renew_ca("no certificate has been issued yet"), now);
    };
    let t = now.unix_timestamp();
    let propagation = secs(lifetimes.propagation);
    let bundle: Vec<Option<Cert>> = pem_blocks(&m.ca_bundle)
        .iter()
        .map(|d| Cert::parse(d))
        .collect();
    let serving = serving_cert(m, &bundle, dns_names, t);

    // The CA first.
    let ca_problem = match bundle.first() {
        None | Some(None) => Some("the stored CA is missing or unreadable".to_owned()),
        Some(Some(ca)) if !ca.is_ca || !ca.has_key(&m.ca_key) => {
            Some("the stored CA or its key is unusable".to_owned())
        }
        Some(Some(ca)) if t >= ca.not_after - ca.lifetime() / 5 => Some(format!(
            "the CA expires at {}, within the last fifth of its lifetime",
            when(ca.not_after)
        )),
        Some(Some(ca)) if ca.not_after - t > secs(lifetimes.ca + LIFETIME_TOLERANCE) => {
            Some(format!(
                "the CA is valid until {}, longer than --tls-ca-lifetime {} from now",
                when(ca.not_after),
                format_duration(lifetimes.ca)
            ))
        }
        Some(Some(_)) => None,
    };
    if let Some(reason) = ca_problem {
        // Phase 1: keep serving the current certificate if it stays good
        // for a propagation delay after the earliest switch.
        return match serving {
            Ok(s) if s.good_until >= t + 2 * propagation => Judgement::now(
                Verdict::RenewCa {
                    reason,
                    keep_leaf: true,
                },
                now,
            ),
            Ok(s) => Judgement {
                warning: Some(format!(
                    "the serving certificate expires at {}, too soon to keep it until a new CA is \
                     trusted everywhere; a new CA and certificate are used at once, and API \
                     servers that have not seen the new caBundle yet cannot call the webhook \
                     until they do",
                    when(s.good_until)
                )),
                ..Judgement::now(renew_ca(&reason), now)
            },
            Err(_) => Judgement::now(renew_ca(&reason), now),
        };
    }
    let ca = bundle[0].as_ref().expect("checked above");
    let ca_due = ca.not_after - ca.lifetime() / 5;
    let serving = match serving {
        Ok(s) => s,
        Err(reason) => return Judgement::now(Verdict::ReissueLeaf(reason), now),
    };

    if serving.issuer != 0 {
        // Phase 2: the serving certificate is from a previous CA, still
        // trusted; switch once the current CA has been published long enough.
        let due = publication
            .filter(|p| p.ca_serial == ca.serial)
            .map(|p| p.at.unix_timestamp() + propagation);
        if let Some(due) = due.filter(|due| *due <= t) {
            return Judgement::now(
                Verdict::ReissueLeaf(format!(
                    "the CA renewed last has been in the webhook configuration's caBundle since {}, \
                     for the propagation delay ({}): switching the serving certificate to it",
                    when(due - propagation),
                    format_duration(lifetimes.propagation)
                )),
                now,
            );
        }
        // The old certificate must stay good for a propagation delay after
        // the switch, while replicas pick the new one up.
        let latest = serving.good_until - propagation;
        if t >= latest {
            return Judgement {
                warning: Some(format!(
                    "the serving certificate from the previous CA expires at {}, before the new \
                     CA is known to be trusted everywhere ({}); switching now: API servers that \
                     have not seen the new caBundle yet cannot call the webhook until they do",
                    when(serving.good_until),
                    match due {
                        Some(due) => format!("due at {}", when(due)),
                        None => "the new caBundle is not published yet".to_owned(),
                    }
                )),
                ..Judgement::now(
                    Verdict::ReissueLeaf(
                        "the serving certificate from the previous CA is about to expire".into(),
                    ),
                    now,
                )
            };
        }
        let next = due.unwrap_or(latest).min(latest).min(ca_due);
        return Judgement {
            verdict: Verdict::Keep,
            warning: None,
            recheck_at: at(next),
        };
    }

    if serving.not_after - t > secs(lifetimes.cert + LIFETIME_TOLERANCE) {
        return Judgement::now(
            Verdict::ReissueLeaf(format!(
                "the serving certificate is valid until {}, longer than --tls-cert-lifetime {} from now",
                when(serving.not_after),
                format_duration(lifetimes.cert)
            )),
            now,
        );
    }
    let leaf_due = serving.good_until - serving.lifetime / 3;
    if t >= leaf_due {
        return Judgement::now(
            Verdict::ReissueLeaf(format!(
                "the serving certificate expires at {}, within the last third of its lifetime (or \
                 its CA expires then)",
                when(serving.good_until)
            )),
            now,
        );
    }
    Judgement {
        verdict: Verdict::Keep,
        warning: None,
        recheck_at: at(leaf_due.min(ca_due)),
    }
}

/// `notBefore` of a certificate of `lifetime` issued at `now`.
fn not_before(now: OffsetDateTime, lifetime: Duration) -> OffsetDateTime {
    now - MAX_BACKDATE.min(lifetime / 10)
}

fn ca_params(now: OffsetDateTime, lifetime: Duration) -> CertificateParams {
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
    params.not_before = not_before(now, lifetime);
    params.not_after = now + lifetime;
    params
}

/// A serving certificate signed by `issuer`, ending no later than the
/// issuer (`issuer_not_after`).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    issuer_not_after: OffsetDateTime,
    dns_names: &[String],
    lifetime: Duration,
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
    params.not_before = not_before(now, lifetime);
    params.not_after = (now + lifetime).min(issuer_not_after);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues what `verdict` asks for, keeping what is still good in `stored`
/// ([`Verdict::Keep`] returns `stored` itself; with nothing stored, every
/// verdict means a new CA and serving certificate).
///
/// A renewed CA goes first in the bundle, followed by the previous current
/// CA and the CA of a kept serving certificate while they are valid; older
/// CAs are dropped.
pub fn issue(
    verdict: &Verdict,
    stored: Option<&Material>,
    dns_names: &[String],
    lifetimes: &Lifetimes,
    now: OffsetDateTime,
) -> Result<Material, IssueError> {
    let ca_err = |source| IssueError { what: "CA", source };
    match (verdict, stored) {
        (Verdict::Keep, Some(m)) => Ok(m.clone()),
        (Verdict::ReissueLeaf(_), Some(m)) => {
            let ca_key = KeyPair::from_pem(&m.ca_key).map_err(ca_err)?;
            let issuer = Issuer::from_ca_cert_pem(&m.ca_bundle, ca_key).map_err(ca_err)?;
            let ca_not_after = pem_blocks(&m.ca_bundle)
                .first()
                .and_then(|d| Cert::parse(d))
                .map_or(now + lifetimes.cert, |ca| at(ca.not_after));
            let (tls_cert, tls_key) = leaf(&issuer, ca_not_after, dns_names, lifetimes.cert, now)?;
            Ok(Material {
                ca_bundle: m.ca_bundle.clone(),
                ca_key: m.ca_key.clone(),
                tls_cert,
                tls_key,
            })
        }
        (Verdict::RenewCa { .. }, _) | (_, None) => {
            let keep_leaf = matches!(
                verdict,
                Verdict::RenewCa {
                    keep_leaf: true,
                    ..
                }
            );
            let key = KeyPair::generate().map_err(ca_err)?;
            let params = ca_params(now, lifetimes.ca);
            let ca_not_after = params.not_after;
            let ca_cert = params.self_signed(&key).map_err(ca_err)?;
            let ca_key = key.serialize_pem();
            let issuer = Issuer::new(params, key);
            let t = now.unix_timestamp();
            let old: Vec<Option<Cert>> = stored
                .map(|m| pem_blocks(&m.ca_bundle))
                .unwrap_or_default()
                .iter()
                .map(|d| Cert::parse(d))
                .collect();
            let kept = match stored {
                Some(m) if keep_leaf => serving_cert(m, &old, dns_names, t)
                    .ok()
                    .map(|s| (m, s.issuer)),
                _ => None,
            };
            let (tls_cert, tls_key) = match kept {
                Some((m, _)) => (m.tls_cert.clone(), m.tls_key.clone()),
                None => leaf(&issuer, ca_not_after, dns_names, lifetimes.cert, now)?,
            };
            // Keep trusting the previous CA while it is valid, so that API
            // servers holding either bundle trust whichever certificate a
            // replica serves during the switch, and the CA of a kept
            // certificate until the switch.
            let mut ca_bundle = ca_cert.pem();
            let mut trusted: Vec<&[u8]> = Vec::new();
            let keep = std::iter::once(0).chain(kept.map(|(_, issuer)| issuer));
            for i in keep {
                if let Some(Some(ca)) = old.get(i)
                    && ca.is_ca
                    && ca.not_after > t
                    && !trusted.contains(&ca.der.as_slice())
                {
                    trusted.push(&ca.der);
                    ca_bundle.push_str(&pem_encode(&ca.der));
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

    const MIN: time::Duration = time::Duration::MINUTE;

    fn dns() -> Vec<String> {
        vec!["tempcreds.tempcreds.svc".to_owned()]
    }

    fn lifetimes() -> Lifetimes {
        Lifetimes::default()
    }

    fn judge_at(m: &Material, p: Option<&Publication>, now: OffsetDateTime) -> Judgement {
        judge(Some(m), p, &dns(), &lifetimes(), now)
    }

    fn fresh(now: OffsetDateTime) -> Material {
        let v = judge(None, None, &dns(), &lifetimes(), now).verdict;
        issue(&v, None, &dns(), &lifetimes(), now).unwrap()
    }

    fn certs(pem: &str) -> Vec<Cert> {
        pem_blocks(pem)
            .iter()
            .map(|d| Cert::parse(d).unwrap())
            .collect()
    }

    /// The serving certificate of `m` verifies against the `i`th CA of
    /// `bundle`.
    fn signed_by(m: &Material, bundle: &str, i: usize) -> bool {
        certs(&m.tls_cert)[0].signed_by(&certs(bundle)[i])
    }

    #[test]
    fn issues_a_ca_and_a_serving_certificate_when_nothing_is_stored() {
        let now = OffsetDateTime::now_utc();
        let j = judge(None, None, &dns(), &lifetimes(), now);
        assert!(
            matches!(
                j.verdict,
                Verdict::RenewCa {
                    keep_leaf: false,
                    ..
                }
            ),
            "{j:?}"
        );
        assert_eq!(j.warning, None);
        let m = fresh(now);
        let j = judge_at(&m, None, now);
        assert_eq!(j.verdict, Verdict::Keep);
        // Next look: when a third of the serving certificate's lifetime is
        // left (it was backdated by an hour).
        let backdated = DEFAULT_CERT_LIFETIME + Duration::from_secs(3600);
        let due = now + DEFAULT_CERT_LIFETIME - backdated / 3;
        assert!(
            (j.recheck_at - due).abs() <= time::Duration::SECOND,
            "{j:?}"
        );
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn serving_certificate_verifies_against_the_bundle() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        assert!(signed_by(&m, &m.ca_bundle, 0));
    }

    #[test]
    fn reissues_the_leaf_near_expiry_or_for_a_new_name_keeping_the_ca() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let later = judge_at(&m, None, now).recheck_at + MIN;
        let j = judge_at(&m, None, later);
        assert!(
            matches!(j.verdict, Verdict::ReissueLeaf(ref r) if r.contains("last third")),
            "{j:?}"
        );
        let renewed = issue(&j.verdict, Some(&m), &dns(), &lifetimes(), later).unwrap();
        assert_eq!(renewed.ca_bundle, m.ca_bundle);
        assert_ne!(renewed.tls_cert, m.tls_cert);
        assert_eq!(judge_at(&renewed, None, later).verdict, Verdict::Keep);

        let ip = vec!["127.0.0.1".to_owned()];
        let v = judge(None, None, &ip, &lifetimes(), now).verdict;
        let m_ip = issue(&v, None, &ip, &lifetimes(), now).unwrap();
        assert_eq!(
            judge(Some(&m_ip), None, &ip, &lifetimes(), now).verdict,
            Verdict::Keep
        );

        let other = vec!["other.ns.svc".to_owned()];
        assert!(matches!(
            judge(Some(&m), None, &other, &lifetimes(), now).verdict,
            Verdict::ReissueLeaf(ref r) if r.contains("other.ns.svc")
        ));
    }

    #[test]
    fn a_serving_certificate_never_outlives_its_ca() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        // The CA has 300 days left; a new year-long certificate ends with it.
        let ca_end = at(certs(&m.ca_bundle)[0].not_after);
        let later = ca_end - time::Duration::days(300);
        let v = Verdict::ReissueLeaf("test".into());
        let renewed = issue(&v, Some(&m), &dns(), &lifetimes(), later).unwrap();
        assert_eq!(at(certs(&renewed.tls_cert)[0].not_after), ca_end);
    }

    /// Phase 1: a renewed CA goes first in the bundle, the old CA stays,
    /// and the old serving certificate is kept. Phase 2: the certificate
    /// switches only once the new CA has been published for the propagation
    /// delay.
    #[test]
    fn a_ca_renewal_keeps_the_serving_certificate_until_the_new_ca_is_published_long_enough() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let ca = &certs(&m.ca_bundle)[0];
        let ca_due = at(ca.not_after - ca.lifetime() / 5);
        // A serving certificate renewed a month before the CA is due.
        let before = ca_due - time::Duration::days(30);
        let leaf_renewal = Verdict::ReissueLeaf("test".into());
        let m = issue(&leaf_renewal, Some(&m), &dns(), &lifetimes(), before).unwrap();
        let old_ca = pem_blocks(&m.ca_bundle)[0].clone();
        let j = judge_at(&m, None, before);
        assert_eq!(j.verdict, Verdict::Keep);
        assert_eq!(j.recheck_at, ca_due, "the CA renewal comes next");
        assert_eq!(
            judge_at(&m, None, ca_due - time::Duration::SECOND).verdict,
            Verdict::Keep
        );

        // Phase 1: the CA enters the last fifth of its lifetime.
        let t1 = ca_due;
        let j = judge_at(&m, None, t1);
        assert!(
            matches!(j.verdict, Verdict::RenewCa { ref reason, keep_leaf: true } if reason.contains("last fifth")),
            "{j:?}"
        );
        assert_eq!(j.warning, None);
        let phase1 = issue(&j.verdict, Some(&m), &dns(), &lifetimes(), t1).unwrap();
        let bundle = pem_blocks(&phase1.ca_bundle);
        assert_eq!(bundle.len(), 2, "new CA and old CA");
        assert_ne!(bundle[0], old_ca);
        assert_eq!(bundle[1], old_ca);
        assert_eq!(phase1.tls_cert, m.tls_cert, "the old certificate is kept");
        assert_eq!(phase1.tls_key, m.tls_key);
        assert_ne!(phase1.ca_key, m.ca_key);
        assert!(signed_by(&phase1, &phase1.ca_bundle, 1));

        // Not published yet: keep, for as long as the old certificate lasts.
        let j = judge_at(&phase1, None, t1);
        assert_eq!(j.verdict, Verdict::Keep, "{j:?}");
        // A publication of another CA does not count.
        let stale = Publication::of(&m, t1).unwrap();
        assert!(!stale.is_of(&phase1));
        assert_eq!(
            judge_at(&phase1, Some(&stale), t1 + MIN * 10).verdict,
            Verdict::Keep
        );

        // Published at t1 + 1 min: keep until the propagation delay is over.
        let published = Publication::of(&phase1, t1 + MIN).unwrap();
        assert!(published.is_of(&phase1));
        let j = judge_at(&phase1, Some(&published), t1 + MIN);
        assert_eq!(j.verdict, Verdict::Keep);
        let due = t1 + MIN + time::Duration::try_from(DEFAULT_PROPAGATION_DELAY).unwrap();
        assert_eq!(j.recheck_at, due.replace_nanosecond(0).unwrap());
        let just_before = due - time::Duration::SECOND;
        assert_eq!(
            judge_at(&phase1, Some(&published), just_before).verdict,
            Verdict::Keep
        );
        let j = judge_at(&phase1, Some(&published), due);
        assert!(
            matches!(j.verdict, Verdict::ReissueLeaf(ref r) if r.contains("propagation delay")),
            "{j:?}"
        );
        assert_eq!(j.warning, None);
        let phase2 = issue(&j.verdict, Some(&phase1), &dns(), &lifetimes(), due).unwrap();
        assert_eq!(phase2.ca_bundle, phase1.ca_bundle);
        assert!(signed_by(&phase2, &phase2.ca_bundle, 0));
        assert_eq!(
            judge_at(&phase2, Some(&published), due).verdict,
            Verdict::Keep
        );
    }

    #[test]
    fn an_old_serving_certificate_about_to_expire_is_reissued_at_once_with_a_warning() {
        let now = OffsetDateTime::now_utc();
        let short = Lifetimes::new(
            Duration::from_secs(3600),
            Duration::from_secs(1800),
            Duration::from_secs(60),
        )
        .unwrap();
        let m = issue(
            &Verdict::RenewCa {
                reason: String::new(),
                keep_leaf: false,
            },
            None,
            &dns(),
            &short,
            now,
        )
        .unwrap();
        let leaf_end = at(certs(&m.tls_cert)[0].not_after);

        // The CA must be renewed (the operator shortened its lifetime to
        // 10 minutes) while the serving certificate has less than two
        // propagation delays left: no time for phase 1.
        let tiny = Lifetimes::new(MIN_LIFETIME, MIN_LIFETIME, Duration::from_secs(60)).unwrap();
        let t = leaf_end - MIN;
        let j = judge(Some(&m), None, &dns(), &tiny, t);
        assert!(
            matches!(
                j.verdict,
                Verdict::RenewCa {
                    keep_leaf: false,
                    ..
                }
            ),
            "{j:?}"
        );
        assert!(j.warning.as_deref().unwrap().contains("too soon"), "{j:?}");

        // Phase 1 done, but the old certificate expires before the switch
        // is due: switch at once.
        let phase1 = issue(
            &Verdict::RenewCa {
                reason: String::new(),
                keep_leaf: true,
            },
            Some(&m),
            &dns(),
            &short,
            leaf_end - MIN * 10,
        )
        .unwrap();
        assert_eq!(phase1.tls_cert, m.tls_cert);
        let j = judge(Some(&phase1), None, &dns(), &short, leaf_end - MIN * 5);
        assert_eq!(j.verdict, Verdict::Keep, "{j:?}");
        assert_eq!(j.recheck_at, leaf_end - MIN);
        let j = judge(Some(&phase1), None, &dns(), &short, leaf_end - MIN);
        assert!(matches!(j.verdict, Verdict::ReissueLeaf(_)), "{j:?}");
        assert!(
            j.warning.as_deref().unwrap().contains("not published yet"),
            "{j:?}"
        );
        let published = Publication::of(&phase1, leaf_end - MIN * 2).unwrap();
        let j = judge(
            Some(&phase1),
            Some(&published),
            &dns(),
            &short,
            leaf_end - MIN - time::Duration::SECOND,
        );
        assert_eq!(j.verdict, Verdict::Keep, "{j:?}");
        assert_eq!(j.recheck_at, leaf_end - MIN);
    }

    #[test]
    fn shortened_lifetimes_renew_the_ca_in_two_phases_and_the_leaf_at_once() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let short = Lifetimes::new(
            Duration::from_secs(2 * 3600),
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .unwrap();
        let j = judge(Some(&m), None, &dns(), &short, now);
        assert!(
            matches!(
                j.verdict,
                Verdict::RenewCa { ref reason, keep_leaf: true } if reason.contains("--tls-ca-lifetime 2h")
            ),
            "{j:?}"
        );
        let phase1 = issue(&j.verdict, Some(&m), &dns(), &short, now).unwrap();
        assert_eq!(phase1.tls_cert, m.tls_cert);
        assert_eq!(at(certs(&phase1.ca_bundle)[0].not_after), {
            let t = now + Duration::from_secs(2 * 3600);
            t.replace_nanosecond(0).unwrap()
        });
        // The year-long certificate waits for the switch like any other.
        let published = Publication::of(&phase1, now).unwrap();
        assert_eq!(
            judge(Some(&phase1), Some(&published), &dns(), &short, now).verdict,
            Verdict::Keep
        );
        let switch = now + MIN;
        let j = judge(Some(&phase1), Some(&published), &dns(), &short, switch);
        assert!(matches!(j.verdict, Verdict::ReissueLeaf(_)), "{j:?}");
        let phase2 = issue(&j.verdict, Some(&phase1), &dns(), &short, switch).unwrap();
        let j = judge(Some(&phase2), Some(&published), &dns(), &short, switch);
        assert_eq!(j.verdict, Verdict::Keep, "{j:?}");

        // Replicas still configured with the long lifetimes (a rollout in
        // progress) accept the short-lived material instead of renewing it
        // back: renewal is due by each certificate's own lifetime.
        assert_eq!(
            judge(
                Some(&phase2),
                Some(&published),
                &dns(),
                &lifetimes(),
                switch
            )
            .verdict,
            Verdict::Keep
        );

        // A shortened serving certificate lifetime alone reissues the leaf.
        let cert_only = Lifetimes::new(
            DEFAULT_CA_LIFETIME,
            Duration::from_secs(30 * DAY),
            Duration::from_secs(60),
        )
        .unwrap();
        let j = judge(Some(&m), None, &dns(), &cert_only, now);
        assert!(
            matches!(j.verdict, Verdict::ReissueLeaf(ref r) if r.contains("--tls-cert-lifetime 720h")),
            "{j:?}"
        );
        // Within the tolerance, nothing happens (clock differences).
        let slightly = Lifetimes::new(
            DEFAULT_CA_LIFETIME - Duration::from_secs(60),
            DEFAULT_CERT_LIFETIME - Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            judge(Some(&m), None, &dns(), &slightly, now).verdict,
            Verdict::Keep
        );
    }

    #[test]
    fn the_bundle_keeps_only_the_cas_still_needed() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let renew = |keep_leaf| Verdict::RenewCa {
            reason: String::new(),
            keep_leaf,
        };
        // Renewed twice before the switch: the kept certificate's CA stays.
        let one = issue(&renew(true), Some(&m), &dns(), &lifetimes(), now).unwrap();
        let two = issue(&renew(true), Some(&one), &dns(), &lifetimes(), now).unwrap();
        let b = pem_blocks(&two.ca_bundle);
        assert_eq!(b.len(), 3);
        assert_eq!(b[1], pem_blocks(&one.ca_bundle)[0]);
        assert_eq!(b[2], pem_blocks(&m.ca_bundle)[0]);
        assert_eq!(two.tls_cert, m.tls_cert);
        // Without a kept certificate, only the previous CA stays.
        let three = issue(&renew(false), Some(&two), &dns(), &lifetimes(), now).unwrap();
        let b = pem_blocks(&three.ca_bundle);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1], pem_blocks(&two.ca_bundle)[0]);
        assert!(signed_by(&three, &three.ca_bundle, 0));
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
            judge_at(&junk, None, now).verdict,
            Verdict::RenewCa {
                keep_leaf: false,
                ..
            }
        ));
        let mut m = fresh(now);
        m.tls_cert = "junk".into();
        assert!(matches!(
            judge_at(&m, None, now).verdict,
            Verdict::ReissueLeaf(_)
        ));
        // A CA key that does not fit: a new CA, the good certificate kept.
        let good = fresh(now);
        let mut m = good.clone();
        m.ca_key = fresh(now).ca_key;
        let j = judge_at(&m, None, now);
        assert!(
            matches!(
                j.verdict,
                Verdict::RenewCa {
                    keep_leaf: true,
                    ..
                }
            ),
            "{j:?}"
        );
        let mut m = good;
        m.tls_key = fresh(now).tls_key;
        assert!(matches!(
            judge_at(&m, None, now).verdict,
            Verdict::ReissueLeaf(ref r) if r.contains("does not fit")
        ));
    }

    #[test]
    fn publications_round_trip_through_annotations() {
        let now = OffsetDateTime::now_utc();
        let m = fresh(now);
        let p = Publication::of(&m, now).unwrap();
        let [(k1, serial), (k2, at)] = p.to_annotations();
        assert_eq!(
            (k1, k2),
            (annotations::PUBLISHED_CA, annotations::PUBLISHED_AT)
        );
        let back = Publication::from_annotations(Some(&serial), Some(&at)).unwrap();
        assert_eq!(back.ca_serial, p.ca_serial);
        assert_eq!(back.at, now.replace_nanosecond(0).unwrap());
        assert!(back.is_of(&m));
        assert_eq!(
            Publication::from_annotations(Some(&serial), Some("soon")),
            None
        );
        assert_eq!(Publication::from_annotations(None, Some(&at)), None);
    }

    #[test]
    fn lifetimes_are_checked_with_messages_naming_the_flags() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        assert!(Lifetimes::new(h(2), h(1), m(1)).is_ok());
        assert_eq!(
            Lifetimes::new(
                DEFAULT_CA_LIFETIME,
                DEFAULT_CERT_LIFETIME,
                DEFAULT_PROPAGATION_DELAY
            ),
            Ok(Lifetimes::default())
        );
        let cases = [
            (m(5), m(5), m(0), "--tls-ca-lifetime 5m is out of range"),
            (h(1), m(5), m(0), "--tls-cert-lifetime 5m is out of range"),
            (h(1_000_000), h(1), m(0), "--tls-ca-lifetime 1000000h"),
            (
                h(1),
                h(2),
                m(0),
                "--tls-cert-lifetime 2h is longer than --tls-ca-lifetime 1h",
            ),
            (
                m(20),
                m(20),
                m(3),
                "--tls-ca-propagation-delay 3m is too long for --tls-ca-lifetime 20m",
            ),
            (
                h(100),
                m(30),
                m(6),
                "--tls-ca-propagation-delay 6m is too long for --tls-cert-lifetime 30m",
            ),
        ];
        for (ca, cert, delay, needle) in cases {
            let e = Lifetimes::new(ca, cert, delay).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
