//! The Kubernetes side of self-managed certificates: keeps the webhook's
//! Secret holding a valid CA and serving certificate, hands the serving
//! certificate to the TLS server, and keeps the MutatingWebhookConfiguration's
//! `caBundle` equal to the Secret's CA bundle.
//!
//! It reacts to changes of either object (a watch on each, by name) and
//! re-checks expiry every hour. Several replicas run it at once: writes use
//! the Secret's resourceVersion, so one replica's renewal wins and the others
//! pick it up from the watch.

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

use crate::selfcert::{self, Material, Verdict, keys};

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

/// Makes the Secret hold valid material and returns it. Loops on write
/// conflicts (another replica renewed first) until the stored material is
/// good.
pub async fn ensure_secret(
    client: &kube::Client,
    target: &SelfCertTarget,
) -> Result<Material, SyncError> {
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
        let stored = current.as_ref().and_then(material_of);
        let now = OffsetDateTime::now_utc();
        let verdict = selfcert::judge(stored.as_ref(), &target.dns_names, now);
        if let (Verdict::Keep, Some(stored)) = (&verdict, &stored) {
            return Ok(stored.clone());
        }
        let fresh = selfcert::issue(&verdict, stored.as_ref(), &target.dns_names, now)?;
        let reason = match &verdict {
            Verdict::ReissueLeaf(r) | Verdict::RenewCa(r) => r.as_str(),
            Verdict::Keep => "",
        };
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
                info!(
                    secret = %target.secret,
                    renewed_ca = matches!(verdict, Verdict::RenewCa(_)),
                    "issued a new serving certificate: {reason}"
                );
                return Ok(fresh);
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

/// Sets every webhook's `clientConfig.caBundle` in the configuration to
/// `ca_bundle` where it differs.
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

/// Keeps certificate, Secret and caBundle in step until `shutdown` resolves,
/// calling `install` with every new serving certificate. `current` is what
/// the caller serves already: call [`ensure_secret`] once before serving,
/// then hand its result to this loop.
pub async fn maintain(
    client: kube::Client,
    target: SelfCertTarget,
    mut current: Material,
    install: impl Fn(&Material) + Send + Sync,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let by_name = |n: &str| watcher::Config::default().fields(&format!("metadata.name={n}"));
    let mut secret_events = watcher(secrets, by_name(&target.secret)).boxed();
    let mut mwc_events = watcher(mwcs, by_name(&target.webhook_configuration)).boxed();
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_secs(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = hourly.tick() => {}
            ev = secret_events.next() => if let Some(Err(e)) = ev {
                warn!(error = %e, "watching the certificate Secret failed; retrying");
                tokio::time::sleep(backoff).await;
            },
            ev = mwc_events.next() => if let Some(Err(e)) = ev {
                warn!(error = %e, "watching the webhook configuration failed; retrying");
                tokio::time::sleep(backoff).await;
            },
        }
        let step = async {
            let material = ensure_secret(&client, &target).await?;
            if material != current {
                install(&material);
                current = material;
            }
            ensure_ca_bundle(&client, &target.webhook_configuration, &current.ca_bundle).await
        };
        match step.await {
            Ok(_) => backoff = Duration::from_secs(1),
            Err(e) => {
                warn!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "keeping the current certificate; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}
