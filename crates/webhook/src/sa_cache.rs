//! ServiceAccount annotations, the per-ServiceAccount defaults of the
//! annotation API.
//!
//! Served from a `kube` reflector over a metadata-only watch of every
//! ServiceAccount, so admission makes no API call per request. Only the
//! `tempcreds.io/` annotations are kept in memory. A cache miss (a
//! ServiceAccount created moments before its pod) is answered by one direct
//! read before deciding, so such a pod never starts without the credentials
//! its ServiceAccount asks for. RBAC: `get`, `list` and `watch` on
//! `serviceaccounts`.
//!
//! The same watch-cache pattern keeps the labels of every namespace
//! (metadata only; RBAC `get`, `list`, `watch` on `namespaces`), for the
//! admission policy's `namespaceSelector`: the admission request does not
//! carry them. A miss is read once from the API.
//!
//! Without any cluster access (no in-cluster config, no kubeconfig) the
//! webhook still serves, from pod annotations alone (and no namespace labels).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tempcreds_core::annotations::PREFIX;
use tempcreds_core::spec::Annotations;

use crate::metrics::Metrics;

/// Where ServiceAccount annotations (and namespace labels) come from.
#[derive(Clone)]
pub enum ServiceAccounts {
    /// No cluster access: ServiceAccount defaults are off.
    Disabled,
    /// Fixed annotations by (namespace, name), for tests and `inject`.
    Static(Arc<BTreeMap<(String, String), Annotations>>),
    /// A watch cache of the cluster's ServiceAccounts.
    Watched(Arc<Watched>),
}

impl std::fmt::Debug for ServiceAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceAccounts::Disabled => "ServiceAccounts::Disabled",
            ServiceAccounts::Static(_) => "ServiceAccounts::Static",
            ServiceAccounts::Watched(_) => "ServiceAccounts::Watched",
        })
    }
}

/// The watch caches.
pub struct Watched {
    store: Store<PartialObjectMeta<ServiceAccount>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    client: kube::Client,
    synced: AtomicBool,
    namespaces_synced: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A namespace could not be read after a cache miss.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the labels of namespace {namespace}")]
pub struct NamespaceLookupError {
    namespace: String,
    #[source]
    source: kube::Error,
}

/// A ServiceAccount could not be read after a cache miss.
#[derive(Debug, thiserror::Error)]
#[error("cannot read ServiceAccount {namespace}/{name}")]
pub struct LookupError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// Keeps only the `tempcreds.io/` annotations.
fn tempcreds_only(annotations: Option<&BTreeMap<String, String>>) -> Annotations {
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl ServiceAccounts {
    /// Connects to the cluster (in-cluster config or kubeconfig) and starts
    /// the watch; without cluster access returns [`ServiceAccounts::Disabled`]
    /// and says so once in the log.
    pub async fn connect(metrics: Arc<Metrics>) -> ServiceAccounts {
        let client = match kube::Config::infer().await {
            Ok(config) => kube::Client::try_from(config),
            Err(e) => {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    "no cluster access (no in-cluster config, no kubeconfig): ServiceAccount defaults are off; \
                     pods are mutated from their own annotations only"
                );
                return ServiceAccounts::Disabled;
            }
        };
        match client {
            Ok(client) => ServiceAccounts::watch(client, metrics),
            Err(e) => {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    "cannot build a Kubernetes client: ServiceAccount defaults are off"
                );
                ServiceAccounts::Disabled
            }
        }
    }

    /// Starts the watch caches with `client`.
    pub fn watch(client: kube::Client, metrics: Arc<Metrics>) -> ServiceAccounts {
        let (store, writer) = reflector::store();
        let (namespaces, ns_writer) = reflector::store();
        let watched = Arc::new(Watched {
            store,
            namespaces,
            client: client.clone(),
            synced: AtomicBool::new(false),
            namespaces_synced: AtomicBool::new(false),
            metrics,
        });
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let ns_stream = watcher(ns_api, watcher::Config::default())
            .default_backoff()
            .modify(|ns: &mut PartialObjectMeta<Namespace>| {
                ns.metadata.managed_fields = None;
                ns.metadata.annotations = None;
            });
        let ns_stream = reflector::reflector(ns_writer, ns_stream);
        tokio::spawn(async move {
            ns_stream
                .for_each(|event| async move {
                    if let Err(e) = event {
                        tracing::warn!(error = %crate::error_chain(&e), "namespace watch error; retrying");
                    }
                })
                .await;
        });
        let ns_ready = watched.clone();
        tokio::spawn(async move {
            if ns_ready.namespaces.wait_until_ready().await.is_ok() {
                ns_ready.namespaces_synced.store(true, Ordering::Release);
                tracing::info!("namespace cache synced");
            }
        });
        let api: Api<PartialObjectMeta<ServiceAccount>> = Api::all(client);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|sa: &mut PartialObjectMeta<ServiceAccount>| {
                sa.metadata.managed_fields = None;
                sa.metadata.labels = None;
                let kept = tempcreds_only(sa.metadata.annotations.as_ref());
                sa.metadata.annotations = (!kept.is_empty()).then_some(kept);
            });
        let stream = reflector::reflector(writer, stream);
        tokio::spawn(async move {
            stream
                .for_each(|event| async move {
                    if let Err(e) = event {
                        tracing::warn!(error = %crate::error_chain(&e), "ServiceAccount watch error; retrying");
                    }
                })
                .await;
        });
        let ready = watched.clone();
        tokio::spawn(async move {
            if ready.store.wait_until_ready().await.is_ok() {
                ready.synced.store(true, Ordering::Release);
                tracing::info!("ServiceAccount cache synced");
            }
        });
        ServiceAccounts::Watched(watched)
    }

    /// Whether lookups are answered from a synced source (always, unless
    /// the watch cache has not completed its first list).
    pub fn is_ready(&self) -> bool {
        match self {
            ServiceAccounts::Watched(w) => w.synced.load(Ordering::Acquire),
            _ => true,
        }
    }

    /// Whether namespace labels are answered from a synced cache (always,
    /// unless the namespace watch has not completed its first list).
    pub fn namespaces_ready(&self) -> bool {
        match self {
            ServiceAccounts::Watched(w) => w.namespaces_synced.load(Ordering::Acquire),
            _ => true,
        }
    }

    /// The labels of `namespace`: from the cache, or with `fresh` (or on a
    /// miss) read from the API. Empty without cluster access or when the
    /// namespace does not exist.
    pub async fn namespace_labels(
        &self,
        namespace: &str,
        fresh: bool,
    ) -> Result<BTreeMap<String, String>, NamespaceLookupError> {
        let ServiceAccounts::Watched(w) = self else {
            return Ok(BTreeMap::new());
        };
        if !fresh && let Some(ns) = w.namespaces.get(&ObjectRef::new(namespace)) {
            return Ok(ns.metadata.labels.clone().unwrap_or_default());
        }
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(w.client.clone());
        match api.get_opt(namespace).await {
            Ok(found) => Ok(found.and_then(|ns| ns.metadata.labels).unwrap_or_default()),
            Err(source) => Err(NamespaceLookupError {
                namespace: namespace.to_owned(),
                source,
            }),
        }
    }

    /// The `tempcreds.io/` annotations of ServiceAccount `namespace/name`;
    /// empty when it does not exist or defaults are off.
    pub async fn annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Annotations, LookupError> {
        match self {
            ServiceAccounts::Disabled => Ok(Annotations::new()),
            ServiceAccounts::Static(map) => Ok(map
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_default()),
            ServiceAccounts::Watched(w) => {
                let key = ObjectRef::new(name).within(namespace);
                if let Some(sa) = w.store.get(&key) {
                    return Ok(tempcreds_only(sa.metadata.annotations.as_ref()));
                }
                // A miss: the ServiceAccount may be newer than the cache.
                let api: Api<PartialObjectMeta<ServiceAccount>> =
                    Api::namespaced(w.client.clone(), namespace);
                let result = api.get_opt(name).await;
                w.metrics.record_sa_lookup(result.is_ok());
                match result {
                    Ok(found) => Ok(found
                        .map(|sa| tempcreds_only(sa.metadata.annotations.as_ref()))
                        .unwrap_or_default()),
                    Err(source) => Err(LookupError {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        source,
                    }),
                }
            }
        }
    }
}
