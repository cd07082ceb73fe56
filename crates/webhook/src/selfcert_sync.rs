//! The Kubernetes side of self-managed certificates: keeps the webhook's
//! Secret holding a valid CA and serving certificate, hands the serving
//! certificate to the TLS server, and keeps the MutatingWebhookConfiguration's
//! `caBundle` equal to the Secret's CA bundle.
//!
//! It reacts to changes of either object (a watch on each, by name) and
//! wakes by itself when the next renewal or certificate switch is due (at
//! least hourly). Several replicas run it at once: writes use the Secret's
//! resourceVersion, so one replica's renewal wins and the others pick it up
//! from the watch.
//!
//! After a CA renewal the serving certificate stays until the new bundle has
//! been in the webhook configuration for the propagation delay (see
//! [`crate::selfcert`]): each time a replica patches the caBundle, or finds
//! it already holding the current CA with no record of that yet, it records
//! the time in the Secret's annotations ([`Publication`]); a later patch
//! (someone reset the caBundle) records a later time, which postpones the
//! switch accordingly.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::selfcert::{self, Lifetimes, Material, Publication, Verdict, annotations, keys};

/// Where the self-managed certificate lives and whom it serves.
#[derive(Debug, Clone)]
pub struct SelfCertTarget {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub secret: String,
    /// DNS names the serving certificate must carry (the Service's).
    pub dns_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose caBundle is kept current.
    pub webhook_configuration: String,
    /// Lifetimes of new certificates and the propagation delay of a new CA.
    pub lifetimes: Lifetimes,
}

/// A failure talking to the API server about the certificate.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading or writing the Secret failed.
    #[error("could not {action} Secret {namespace}/{name}")]
    Secret {
        /// What was attempted.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Patching the webhook configuration failed.
    #[error("could not set the caBundle of MutatingWebhookConfiguration {name}")]
    WebhookConfiguration {
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Issuing certificates failed.
    #[error(transparent)]
    Issue(#[from] selfcert::IssueError),
}

/// What the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The certificates and keys.
    pub material: Material,
    /// When the caBundle was last seen published, as recorded in the
    /// Secret's annotations (possibly of a previous CA).
    pub publication: Option<Publication>,
}

fn material_of(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.is_empty())
    };
    Some(Material {
        ca_bundle: get(keys::CA_BUNDLE)?,
        ca_key: get(keys::CA_KEY)?,
        tls_cert: get(keys::TLS_CERT)?,
        tls_key: get(keys::TLS_KEY)?,
    })
}

fn publication_of(secret: &Secret) -> Option<Publication> {
    let annotations = secret.metadata.annotations.as_ref()?;
    Publication::from_annotations(
        annotations
            .get(annotations::PUBLISHED_CA)
            .map(String::as_str),
        annotations
            .get(annotations::PUBLISHED_AT)
            .map(String::as_str),
    )
}

fn data_of(m: &Material) -> BTreeMap<String, ByteString> {
    [
        (keys::CA_BUNDLE, &m.ca_bundle),
        (keys::CA_KEY, &m.ca_key),
        (keys::TLS_CERT, &m.tls_cert),
        (keys::TLS_KEY, &m.tls_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect()
}

fn judge(stored: &Stored, target: &SelfCertTarget, now: OffsetDateTime) -> selfcert::Judgement {
    selfcert::judge(
        Some(&stored.material),
        stored.publication.as_ref(),
        &target.dns_names,
        &target.lifetimes,
        now,
    )
}

/// Makes the Secret hold valid material and returns it. Loops on write
/// conflicts (another replica renewed first) until the stored material is
/// good.
pub async fn ensure_secret(
    client: &kube::Client,
    target: &SelfCertTarget,
) -> Result<Stored, SyncError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let err = |action, source| SyncError::Secret {
        action,
        namespace: target.namespace.clone(),
        name: target.secret.clone(),
        source,
    };
    for attempt in 0.. {
        let current = api
            .get_opt(&target.secret)
            .await
            .map_err(|e| err("read", e))?;
        let material = current.as_ref().and_then(material_of);
        let publication = current.as_ref().and_then(publication_of);
        let now = OffsetDateTime::now_utc();
        let judgement = selfcert::judge(
            material.as_ref(),
            publication.as_ref(),
            &target.dns_names,
            &target.lifetimes,
            now,
        );
        if let (Verdict::Keep, Some(material)) = (&judgement.verdict, material.as_ref()) {
            return Ok(Stored {
                material: material.clone(),
                publication,
            });
        }
        let fresh = selfcert::issue(
            &judgement.verdict,
            material.as_ref(),
            &target.dns_names,
            &target.lifetimes,
            now,
        )?;
        let result = match current {
            Some(mut secret) => {
                secret.data = Some(data_of(&fresh));
                api.replace(&target.secret, &PostParams::default(), &secret)
                    .await
            }
            None => {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(target.secret.clone()),
                        namespace: Some(target.namespace.clone()),
                        ..Default::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some(data_of(&fresh)),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(_) => {
                log_issued(target, &judgement);
                return Ok(Stored {
                    material: fresh,
                    publication,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < 10 => {
                info!("another replica updated the certificate first; adopting it");
                continue;
            }
            Err(e) => return Err(err("write", e)),
        }
    }
    unreachable!("the loop returns")
}

fn log_issued(target: &SelfCertTarget, judgement: &selfcert::Judgement) {
    let secret = &target.secret;
    let reason = judgement.verdict.reason();
    match &judgement.verdict {
        Verdict::RenewCa {
            keep_leaf: true, ..
        } => info!(
            %secret,
            propagation_delay = %tempcreds_core::duration::format_duration(target.lifetimes.propagation()),
            "renewed the CA ({reason}); the serving certificate stays until the new CA has been \
             in the webhook configuration's caBundle for the propagation delay"
        ),
        Verdict::RenewCa { .. } => {
            info!(%secret, "issued a new CA and serving certificate: {reason}")
        }
        _ => info!(%secret, "issued a new serving certificate: {reason}"),
    }
    if let Some(warning) = &judgement.warning {
        warn!(%secret, "{warning}");
    }
}

/// Sets every webhook's `clientConfig.caBundle` in the configuration to
/// `ca_bundle` where it differs; says whether it patched.
pub async fn ensure_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_bundle: &str,
) -> Result<bool, SyncError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let err = |source| SyncError::WebhookConfiguration {
        name: name.to_owned(),
        source,
    };
    let mwc = api.get(name).await.map_err(err)?;
    let want = ca_bundle.as_bytes();
    let mut ops = Vec::new();
    for (i, hook) in mwc.webhooks.iter().flatten().enumerate() {
        if hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            != Some(want)
        {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": hook.name}));
            ops.push(serde_json::json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": base64::engine::general_purpose::STANDARD.encode(want),
            }));
        }
    }
    if ops.is_empty() {
        return Ok(false);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("well-formed JSON patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(err)?;
    info!(webhook_configuration = name, "updated the caBundle");
    Ok(true)
}

/// Makes the webhook configuration's caBundle equal to the stored bundle
/// and records in the Secret when that was seen done, unless a record of
/// the current CA exists and nothing had to be patched. Returns the
/// publication now recorded.
pub async fn publish(
    client: &kube::Client,
    target: &SelfCertTarget,
    stored: &Stored,
) -> Result<Option<Publication>, SyncError> {
    let patched = ensure_ca_bundle(
        client,
        &target.webhook_configuration,
        &stored.material.ca_bundle,
    )
    .await?;
    if let Some(p) = &stored.publication
        && !patched
        && p.is_of(&stored.material)
    {
        return Ok(Some(p.clone()));
    }
    let Some(publication) = Publication::of(&stored.material, OffsetDateTime::now_utc()) else {
        return Ok(None);
    };
    let annotations: serde_json::Map<String, serde_json::Value> = publication
        .to_annotations()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    let api: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    api.patch(
        &target.secret,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| SyncError::Secret {
        action: "annotate",
        namespace: target.namespace.clone(),
        name: target.secret.clone(),
        source,
    })?;
    info!(
        secret = %target.secret,
        ca_serial = %publication.ca_serial,
        "recorded that the webhook configuration's caBundle holds the current CA"
    );
    Ok(Some(publication))
}

/// The longest the loop sleeps without an event.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// How long to sleep until `at`, between a second and [`MAX_SLEEP`].
fn sleep_until(at: OffsetDateTime) -> Duration {
    let left = at - OffsetDateTime::now_utc();
    Duration::try_from(left)
        .unwrap_or_default()
        .clamp(Duration::from_secs(1), MAX_SLEEP)
}

/// Keeps certificate, Secret and caBundle in step until `shutdown` resolves,
/// calling `install` with every new serving certificate. `current` is what
/// the caller serves already: call [`ensure_secret`] (and [`publish`]) once
/// before serving, then hand its result to this loop.
pub async fn maintain(
    client: kube::Client,
    target: SelfCertTarget,
    mut current: Stored,
    install: impl Fn(&Material) + Send + Sync,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let by_name = |n: &str| watcher::Config::default().fields(&format!("metadata.name={n}"));
    let mut secret_events = watcher(secrets, by_name(&target.secret)).boxed();
    let mut mwc_events = watcher(mwcs, by_name(&target.webhook_configuration)).boxed();
    let mut backoff = Duration::from_secs(1);
    let mut wake = sleep_until(judge(&current, &target, OffsetDateTime::now_utc()).recheck_at);
    tokio::pin!(shutdown);
    loop {
        let due = tokio::time::sleep(wake);
        tokio::select! {
            _ = &mut shutdown => return,
            () = due => {}
            ev = secret_events.next() => if let Some(Err(e)) = ev {
                warn!(error = %e, "watching the certificate Secret failed; retrying");
                tokio::time::sleep(backoff).await;
            },
            ev = mwc_events.next() => if let Some(Err(e)) = ev {
                warn!(error = %e, "watching the webhook configuration failed; retrying");
                tokio::time::sleep(backoff).await;
            },
        }
        match step(&client, &target, &mut current, &install).await {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                wake = sleep_until(judge(&current, &target, OffsetDateTime::now_utc()).recheck_at);
            }
            Err(e) => {
                warn!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "keeping the current certificate; will retry");
                wake = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

/// One pass: the Secret made good, a new serving certificate installed, the
/// caBundle published.
async fn step(
    client: &kube::Client,
    target: &SelfCertTarget,
    current: &mut Stored,
    install: &impl Fn(&Material),
) -> Result<(), SyncError> {
    let stored = ensure_secret(client, target).await?;
    if !stored.material.same_serving_certificate(&current.material) {
        install(&stored.material);
    }
    *current = stored;
    current.publication = publish(client, target, current).await?;
    Ok(())
}
