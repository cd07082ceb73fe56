//! The mutation: a pure function of (pod, its namespace, its ServiceAccount's
//! annotations, cluster config) returning "not for us", a JSON patch, or a
//! denial with a message. No I/O: the HTTP handler, the `inject` command, the
//! golden tests, the property tests and the benchmark all call [`mutate`].
//!
//! The pod is handled as JSON, not as a typed `Pod`: a typed round trip would
//! drop fields this build does not know (newer API versions) and the patch
//! would then remove them. The mutated copy is diffed against the original
//! with `json_patch::diff`, which creates absent arrays and escapes `/` and
//! `~` in keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use tempcreds_core::annotations as a;
use tempcreds_core::config::{quoted, render_profiles};
use tempcreds_core::paths;
use tempcreds_core::spec::{self, Annotations, Decision, InjectionSpec, PodRef};
use tempcreds_core::{Delivery, SidecarConfig, Source};

use crate::config::ClusterConfig;
use crate::policy::Labels;

/// The result of [`mutate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The pod did not opt in, opted out, or is already injected.
    NotForUs,
    /// Inject: the patch to apply and warnings for the requester.
    Patch {
        /// The JSON patch (RFC 6902) against the request's pod.
        patch: json_patch::Patch,
        /// Things that work but are probably not what was meant.
        warnings: Vec<String>,
    },
    /// Refuse the pod; the message names the annotation and the fix.
    Deny(String),
}

/// What the webhook knows about the pod besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The pod's namespace (from the admission request).
    pub namespace: &'a str,
    /// The annotations of the pod's ServiceAccount (empty when unknown).
    pub service_account_annotations: &'a Annotations,
    /// The labels of the pod's namespace, for the policy's
    /// `namespaceSelector` (empty when unknown or not needed).
    pub namespace_labels: &'a Labels,
}

/// Base name of the injected sidecar container.
pub const SIDECAR_NAME: &str = paths::SIDECAR_NAME;
/// Base name of the shared in-memory volume.
pub const CREDENTIALS_VOLUME: &str = "tempcreds-credentials";
/// Base name of the projected service-account token volume.
pub const TOKEN_VOLUME: &str = "tempcreds-token";
/// Base name of the Secret volume with long-term keys.
pub const SECRET_VOLUME: &str = "tempcreds-aws-keys";

/// File mode of the token and key files: readable by the sidecar's
/// non-root user. Only the sidecar mounts these volumes.
const SOURCE_FILE_MODE: u32 = 0o444;
/// Suffix of the run-once init container a classic sidecar gets.
const INIT_SUFFIX: &str = "-init";

/// Startup probe: every second, for at most five minutes.
const STARTUP_PERIOD_SECONDS: u32 = 1;
const STARTUP_FAILURE_THRESHOLD: u32 = 300;

/// Environment variables that make SDKs ignore what tempcreds delivers
/// (those tempcreds sets itself in the pod's mode are reported apart).
const COMPETING_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE",
];

/// Whether an app's own `var` competes with what `delivery` sets up.
/// Every SDK reads the shared-credentials file before `credential_process`
/// in the same profile and before the container endpoint (botocore's chain:
/// environment, assume-role, web identity, SSO, shared-credentials file,
/// process, config file, ..., container, instance metadata), so in those
/// modes an app's own credentials file competes too. In file and process
/// mode the container variables are the app's own business only when set
/// (SDKs look at them after the profile), yet usually a leftover: warn.
fn competes(var: &str, delivery: Delivery) -> bool {
    match var {
        "AWS_SHARED_CREDENTIALS_FILE" => delivery != Delivery::File,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN" => delivery == Delivery::Endpoint,
        _ => true,
    }
}

/// The pod's ServiceAccount name (`default` when unset).
pub fn service_account_name(pod: &Value) -> &str {
    let spec = &pod["spec"];
    spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// The pod's `tempcreds.io/` annotations.
pub fn tempcreds_annotations(pod: &Value) -> Annotations {
    pod["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with(a::PREFIX))
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The `tempcreds.io/` annotations whose value is not a string, described.
/// The API server only stores strings, but `tempcreds-webhook inject` reads
/// YAML, where an unquoted `true` or `1e3` is a boolean or a number: such an
/// annotation must not be silently ignored (nor would `kubectl apply` take it).
fn non_string_annotations(pod: &Value) -> Option<String> {
    let problems: Vec<String> = pod["metadata"]["annotations"]
        .as_object()?
        .iter()
        .filter(|(k, v)| k.starts_with(a::PREFIX) && !v.is_string())
        .map(|(k, v)| {
            let kind = match v {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "a list",
                Value::Object(_) => "a map",
                Value::String(_) => "a string",
            };
            let text = v.to_string();
            let text = if text.chars().count() > 100 {
                text.chars().take(100).collect::<String>() + "..."
            } else {
                text
            };
            let k = quoted(k);
            let k = k.trim_matches('"');
            format!(
                "annotation {k}: YAML reads the value as {kind} ({text}), not a string; annotation values \
                 are strings: quote it ({k}: \"...\")"
            )
        })
        .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Names of the containers in `list` (`spec.containers`, ...).
fn names<'a>(spec: &'a Value, list: &str) -> impl Iterator<Item = &'a str> {
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
}

/// The container lists of a pod spec, in the order the kubelet starts them
/// (ephemeral containers last: they are added to a running pod).
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// What the `tempcreds.io/injected` marker says about the pod.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    /// No marker, or one naming no container of the pod (a copied manifest
    /// without the sidecar): inject.
    Absent,
    /// The marker names a container that is a tempcreds sidecar: the pod
    /// was injected already (reinvocation, a re-applied `inject` output).
    Injected,
    /// The marker names a container that is not a tempcreds sidecar: the
    /// pod's author set it; the message says why it is refused.
    Forged(String),
}

/// Reads the `tempcreds.io/injected` marker. The webhook writes it naming
/// the sidecar it injects; a pod only counts as injected when that
/// container is there in the shape the webhook gives it: it runs
/// `tempcreds-sidecar run` (`args[0]` is `run`) and mounts, at
/// `/var/run/tempcreds`, an in-memory `emptyDir` of `spec.volumes`. The
/// marker never skips the annotation checks or the policy: [`mutate`] runs
/// them first, on every pass.
fn marker(pod: &Value) -> Marker {
    let Some(value) = pod["metadata"]["annotations"].get(a::INJECTED) else {
        return Marker::Absent;
    };
    let Some(name) = value.as_str() else {
        return Marker::Forged(format!(
            "annotation {}: is not a string; it is written by the webhook on the pods it injects \
             (naming the sidecar container); remove it",
            a::INJECTED
        ));
    };
    let spec = &pod["spec"];
    let Some(container) = CONTAINER_LISTS
        .iter()
        .flat_map(|list| spec[*list].as_array().into_iter().flatten())
        .find(|c| c["name"].as_str() == Some(name))
    else {
        return Marker::Absent;
    };
    let memory_volumes: BTreeSet<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["emptyDir"]["medium"] == "Memory")
        .filter_map(|v| v["name"].as_str())
        .collect();
    let runs_sidecar = container["args"][0] == "run";
    let mounts_credentials = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| {
            m["mountPath"].as_str().map(normalize_mount_path).as_deref() == Some(paths::OUTPUT_DIR)
                && m["name"]
                    .as_str()
                    .is_some_and(|n| memory_volumes.contains(n))
                && m["readOnly"] != true
        });
    let in_ephemeral = names(spec, "ephemeralContainers").any(|n| n == name);
    if runs_sidecar && mounts_credentials && !in_ephemeral {
        Marker::Injected
    } else {
        Marker::Forged(format!(
            "annotation {}={}: is written by the webhook on the pods it injects, naming the sidecar \
             container, but container {} is not a tempcreds sidecar (it does not run \
             `tempcreds-sidecar run` with the in-memory credentials volume at {}); remove the \
             annotation and let the webhook inject the pod",
            a::INJECTED,
            quoted(name),
            quoted(name),
            paths::OUTPUT_DIR
        ))
    }
}

/// A mount path as the kubelet sees it: repeated `/` collapsed, `.`
/// segments and a trailing `/` dropped (`/var/run//tempcreds/.` is
/// `/var/run/tempcreds`).
pub fn normalize_mount_path(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let joined = segments.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// `base`, or `base-2`, `base-3`, ... : the first not in `taken`.
fn unique_name(base: &str, taken: &BTreeSet<&str>) -> String {
    if !taken.contains(base) {
        return base.to_owned();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.contains(n.as_str()))
        .unwrap_or_else(|| base.to_owned())
}

/// Decides and builds the mutation of `pod`.
pub fn mutate(pod: &Value, ctx: &Context<'_>, config: &ClusterConfig) -> Outcome {
    if !pod.is_object() {
        return Outcome::NotForUs;
    }
    if let Some(message) = non_string_annotations(pod) {
        return Outcome::Deny(format!("tempcreds: {message}"));
    }
    let pod_annotations = tempcreds_annotations(pod);
    let sa = ctx.service_account_annotations;
    let spec = match spec::resolve(&pod_annotations, sa) {
        Ok(Decision::Inject(spec)) => spec,
        Ok(Decision::NotRequested | Decision::OptedOut) => return Outcome::NotForUs,
        Err(errors) => return deny(&errors),
    };
    let pod_ref = PodRef {
        namespace: ctx.namespace,
        service_account: service_account_name(pod),
    };
    let defaults = config.defaults();
    let delivery = spec.delivery(&defaults);
    let mut sidecar_configs = spec.sidecar_configs(&defaults, pod_ref);
    let mut warnings = match spec.check(&sidecar_configs, &pod_annotations, sa) {
        Ok(w) => w,
        Err(errors) => return deny(&errors),
    };
    if sidecar_configs[0].region.is_none() {
        // Admitted: on EC2 the sidecar finds the region in instance
        // metadata (its own environment has no AWS_REGION).
        warnings.push(format!(
            "no region: neither {} nor the webhook config's region (chart value defaults.region) names \
             one, so the sidecar can only take it from EC2 instance metadata; where there is none it \
             exits 64 and the pod does not start. Set {} or defaults.region",
            a::REGION,
            a::REGION
        ));
    }
    if let Err(message) = config
        .policy
        .check(&spec, ctx.namespace, ctx.namespace_labels)
    {
        return Outcome::Deny(format!("tempcreds: {message}"));
    }
    match marker(pod) {
        Marker::Absent => {}
        Marker::Injected => return Outcome::NotForUs,
        Marker::Forged(message) => return Outcome::Deny(format!("tempcreds: {message}")),
    }
    match Plan::new(
        pod,
        &spec,
        delivery,
        config,
        &mut sidecar_configs,
        &mut warnings,
    ) {
        Ok(plan) => {
            let mut mutated = pod.clone();
            plan.apply(&mut mutated, &spec, &sidecar_configs, config);
            Outcome::Patch {
                patch: json_patch::diff(pod, &mutated),
                warnings,
            }
        }
        Err(message) => Outcome::Deny(format!("tempcreds: {message}")),
    }
}

fn deny(errors: &[spec::AnnotationError]) -> Outcome {
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Outcome::Deny(format!("tempcreds: {}", messages.join("; ")))
}

/// Which containers get what, and the names of everything injected.
struct Plan {
    sidecar: String,
    /// With a classic sidecar: the run-once init container that writes the
    /// first credentials before any app container starts.
    init_sidecar: Option<String>,
    /// `hostNetwork: true`: the pod shares the node's network namespace, so
    /// the sidecar binds no port (every such pod on the node would want the
    /// same one) and its probes run `tempcreds-sidecar probe`.
    host_network: bool,
    credentials_volume: String,
    /// The projected token's volume, when a profile uses web identity.
    token_volume: Option<String>,
    /// The long-term keys' volume of each profile with `source: secret`:
    /// the profile's index and the volume's name.
    secret_volumes: Vec<(usize, String)>,
    /// Selected containers in `spec.containers`, by index.
    app: Vec<usize>,
    /// Selected containers in `spec.initContainers`, by index (before the
    /// sidecar is inserted).
    init: Vec<usize>,
    health_port: u16,
    /// Env of the selected app containers (name, value), in order.
    app_env: Vec<(&'static str, String)>,
}

impl Plan {
    fn new(
        pod: &Value,
        spec: &InjectionSpec,
        delivery: Delivery,
        config: &ClusterConfig,
        sidecar_configs: &mut [SidecarConfig],
        warnings: &mut Vec<String>,
    ) -> Result<Plan, String> {
        let pspec = &pod["spec"];
        let native = config.sidecar.native_sidecar;
        let all_names: BTreeSet<&str> = names(pspec, "containers")
            .chain(names(pspec, "initContainers"))
            .chain(names(pspec, "ephemeralContainers"))
            .collect();
        // A warning, not a denial: a ServiceAccount's default list may
        // name containers only some of its pods have.
        for (annotation, listed) in [
            (
                a::CONTAINERS,
                spec.containers.as_deref().unwrap_or_default(),
            ),
            (a::SKIP_CONTAINERS, spec.skip_containers.as_slice()),
        ] {
            for name in listed.iter().filter(|n| !all_names.contains(n.as_str())) {
                warnings.push(format!(
                    "{annotation} names {name:?}, which is not a container of this pod"
                ));
            }
        }
        let selected = |name: &str| {
            spec.containers
                .as_ref()
                .is_none_or(|l| l.iter().any(|n| n == name))
                && !spec.skip_containers.iter().any(|n| n == name)
        };
        let pick = |list: &str| -> Vec<usize> {
            pspec[list]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, c)| c["name"].as_str().is_some_and(selected))
                .map(|(i, _)| i)
                .collect()
        };
        let app = pick("containers");
        // A native sidecar starts before the other init containers; a
        // classic one comes with a run-once init container placed first.
        // Either way the pod's init containers find credentials written.
        let init = pick("initContainers");
        if app.is_empty() && init.is_empty() {
            return Err(format!(
                "annotations {} / {} select no container of this pod",
                a::CONTAINERS,
                a::SKIP_CONTAINERS,
            ));
        }
        let host_network = pspec["hostNetwork"].as_bool() == Some(true);
        if host_network && delivery == Delivery::Endpoint {
            return Err(format!(
                "delivery \"endpoint\" (annotation {} or the cluster default) cannot serve a pod with \
                 hostNetwork: true: its loopback port would be the node's, wanted by every such pod and \
                 reachable by every process on the node; set {}: file or {}: process",
                a::DELIVERY,
                a::DELIVERY,
                a::DELIVERY
            ));
        }
        let output_dir = paths::OUTPUT_DIR;
        for (list, indexes) in [("containers", &app), ("initContainers", &init)] {
            for &i in indexes {
                let c = &pspec[list][i];
                let clash = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| {
                        m["mountPath"].as_str().map(normalize_mount_path).as_deref()
                            == Some(output_dir)
                    });
                if let Some(m) = clash {
                    return Err(format!(
                        "container {} already mounts a volume at {} ({output_dir}), where tempcreds mounts the credentials; \
                         remove that mount or list the container in {}",
                        quoted(c["name"].as_str().unwrap_or_default()),
                        quoted(m["mountPath"].as_str().unwrap_or_default()),
                        a::SKIP_CONTAINERS
                    ));
                }
            }
        }

        let sidecar = unique_name(SIDECAR_NAME, &all_names);
        let init_sidecar = (!native).then(|| {
            let mut taken = all_names.clone();
            taken.insert(&sidecar);
            unique_name(&format!("{sidecar}{INIT_SUFFIX}"), &taken)
        });
        // Names of the pod's volumes, and every name a container's
        // volumeMounts (and volumeDevices) use: a mount naming a volume the pod does not have
        // would bind to an injected volume of that name (an app reading the
        // token or the keys, or writing the credentials), so such names
        // are taken too and the mount stays dangling (the API server then
        // refuses the pod, as it would without tempcreds).
        let volumes: BTreeSet<&str> = pspec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .chain(
                CONTAINER_LISTS
                    .iter()
                    .flat_map(|list| pspec[*list].as_array().into_iter().flatten())
                    .flat_map(|c| {
                        ["volumeMounts", "volumeDevices"]
                            .into_iter()
                            .flat_map(move |k| c[k].as_array().into_iter().flatten())
                    })
                    .filter_map(|m| m["name"].as_str()),
            )
            .collect();
        let credentials_volume = unique_name(CREDENTIALS_VOLUME, &volumes);
        let mut taken: BTreeSet<String> = volumes.iter().map(|v| (*v).to_owned()).collect();
        taken.insert(credentials_volume.clone());
        let mut take = |base: &str| {
            let refs: BTreeSet<&str> = taken.iter().map(String::as_str).collect();
            let name = unique_name(base, &refs);
            taken.insert(name.clone());
            name
        };
        let token_volume = spec
            .profiles
            .iter()
            .any(|p| p.source == Source::WebIdentity)
            .then(|| take(TOKEN_VOLUME));
        let secret_volumes: Vec<(usize, String)> = spec
            .profiles
            .iter()
            .enumerate()
            .filter(|(_, p)| p.source == Source::Secret)
            .map(|(i, p)| match &p.suffix {
                None => (i, take(SECRET_VOLUME)),
                Some(name) => (i, take(&format!("{SECRET_VOLUME}-{name}"))),
            })
            .collect();

        // The pod's containers share one network namespace: move the health
        // port off a port a container declares.
        let declared: BTreeSet<i64> = ["containers", "initContainers"]
            .iter()
            .flat_map(|list| pspec[*list].as_array().into_iter().flatten())
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .filter_map(|p| p["containerPort"].as_i64())
            .collect();
        let wanted = config.sidecar.health_port;
        let health_port = first_free_port(wanted, &declared);
        if health_port != wanted && !host_network {
            warnings.push(format!(
                "a container declares port {wanted}, the tempcreds sidecar's health port; the sidecar uses {health_port}"
            ));
            for c in sidecar_configs.iter_mut() {
                c.health_addr.set_port(health_port);
            }
        }
        // The endpoint listens on loopback, which all containers share: it
        // must not take a port an app binds (on any address) or the health port.
        if let Some(addr) = sidecar_configs[0].endpoint_addr.as_mut() {
            let wanted = addr.port();
            let mut taken = declared.clone();
            taken.insert(i64::from(health_port));
            let port = first_free_port(wanted, &taken);
            if port != wanted {
                warnings.push(format!(
                    "port {wanted} of the tempcreds credentials endpoint is declared by a container of this pod \
                     (or is the sidecar's health port); the endpoint uses 127.0.0.1:{port}"
                ));
                addr.set_port(port);
            }
        }
        let endpoint_addr = sidecar_configs[0].endpoint_addr;
        for c in sidecar_configs.iter_mut() {
            c.endpoint_addr = endpoint_addr;
        }
        let app_env = app_env(spec, delivery, &sidecar_configs[0]);

        for list in ["containers", "initContainers"] {
            for c in pspec[list].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default();
                if !selected(name) {
                    continue;
                }
                let env: Vec<&str> = c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["name"].as_str())
                    .collect();
                for (var, value) in &app_env {
                    let region = matches!(*var, "AWS_REGION" | "AWS_DEFAULT_REGION");
                    if !region && env.contains(var) {
                        warnings.push(format!(
                            "container {name:?} sets {var} itself; it is kept, so that container does not \
                             get tempcreds' {var}={value}"
                        ));
                    }
                }
                let what = match delivery {
                    Delivery::File => "the tempcreds credentials file",
                    Delivery::Process => "tempcreds' credential_process profile",
                    Delivery::Endpoint => "the tempcreds credentials endpoint",
                };
                if let Some(var) = COMPETING_ENV.iter().find(|v| {
                    env.contains(v)
                        && competes(v, delivery)
                        && !app_env.iter().any(|(name, _)| name == *v)
                }) {
                    warnings.push(format!(
                        "container {name:?} sets {var}, which AWS SDKs use before {what}"
                    ));
                }
            }
        }

        Ok(Plan {
            sidecar,
            init_sidecar,
            host_network,
            credentials_volume,
            token_volume,
            secret_volumes,
            app,
            init,
            health_port,
            app_env,
        })
    }

    fn apply(
        &self,
        pod: &mut Value,
        spec: &InjectionSpec,
        sidecar_configs: &[SidecarConfig],
        config: &ClusterConfig,
    ) {
        let Some(root) = pod.as_object_mut() else {
            return;
        };
        let annotations = object_at(object_at(root, "metadata"), "annotations");
        annotations.insert(a::INJECTED.to_owned(), Value::String(self.sidecar.clone()));

        let pspec = object_at(root, "spec");
        let app_env = &self.app_env;
        let app_mount = json!({
            "name": self.credentials_volume,
            "mountPath": paths::OUTPUT_DIR,
            "readOnly": true,
        });
        for (list, indexes) in [("containers", &self.app), ("initContainers", &self.init)] {
            let Some(containers) = pspec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for &i in indexes {
                if let Some(c) = containers.get_mut(i).and_then(Value::as_object_mut) {
                    array_at(c, "volumeMounts").push(app_mount.clone());
                    let env = array_at(c, "env");
                    let has = |env: &[Value], name: &str| {
                        env.iter().any(|e| e["name"].as_str() == Some(name))
                    };
                    // The two region variables go together: a container that
                    // sets either keeps its own region.
                    let own_region = has(env, "AWS_REGION") || has(env, "AWS_DEFAULT_REGION");
                    for (name, value) in app_env {
                        let region = matches!(*name, "AWS_REGION" | "AWS_DEFAULT_REGION");
                        let skip = has(env, name) || (region && own_region);
                        if !skip {
                            env.push(json!({"name": name, "value": value}));
                        }
                    }
                }
            }
        }

        let volumes = array_at(pspec, "volumes");
        volumes.push(json!({
            "name": self.credentials_volume,
            "emptyDir": {"medium": "Memory", "sizeLimit": config.volume_size_limit.0},
        }));
        if let Some(name) = &self.token_volume {
            volumes.push(json!({
                "name": name,
                "projected": {
                    "defaultMode": SOURCE_FILE_MODE,
                    "sources": [{"serviceAccountToken": {
                        "audience": spec.token_audience,
                        "expirationSeconds": spec.token_expiration_secs,
                        "path": paths::TOKEN_FILE,
                    }}],
                },
            }));
        }
        for (i, name) in &self.secret_volumes {
            if let Some(secret) = &spec.profiles[*i].secret {
                volumes.push(json!({
                    "name": name,
                    "secret": {
                        "secretName": secret.name,
                        "defaultMode": SOURCE_FILE_MODE,
                        "items": [
                            {"key": secret.access_key_id_key, "path": paths::ACCESS_KEY_ID_FILE},
                            {"key": secret.secret_access_key_key, "path": paths::SECRET_ACCESS_KEY_FILE},
                        ],
                    },
                }));
            }
        }

        let sidecar = self.sidecar_container(spec, sidecar_configs, config);
        match &self.init_sidecar {
            None => array_at(pspec, "initContainers").insert(0, sidecar),
            Some(init_name) => {
                // A classic sidecar starts together with the app containers,
                // so a run-once init container placed first writes the first
                // credentials (retrying while STS is unreachable) and the
                // classic sidecar adopts them and keeps them fresh.
                let init = self.init_container(init_name, &sidecar);
                array_at(pspec, "initContainers").insert(0, init);
                // Appended, so `kubectl logs/exec` keep defaulting to the app.
                array_at(pspec, "containers").push(sidecar);
            }
        }
    }

    /// The run-once init container of a classic sidecar: the sidecar's
    /// image, mounts, environment and security, running
    /// `run --once --retry` with the same settings, without probes.
    fn init_container(&self, name: &str, sidecar: &Value) -> Value {
        let mut init = sidecar.clone();
        if let Some(obj) = init.as_object_mut() {
            obj.insert("name".into(), json!(name));
            for key in [
                "startupProbe",
                "readinessProbe",
                "livenessProbe",
                "restartPolicy",
            ] {
                obj.remove(key);
            }
            if let Some(args) = obj.get_mut("args").and_then(Value::as_array_mut) {
                args.retain(|a| a != "--no-health-server");
                args.splice(1..1, [json!("--once"), json!("--retry")]);
            }
        }
        init
    }

    fn sidecar_container(
        &self,
        spec: &InjectionSpec,
        sidecar_configs: &[SidecarConfig],
        config: &ClusterConfig,
    ) -> Value {
        let s = &config.sidecar;
        // `run`'s own flags come first: after an `--and-profile` they
        // would be that profile's.
        let mut args = vec!["run".to_owned()];
        if self.host_network {
            args.push("--no-health-server".to_owned());
        }
        args.extend(render_profiles(sidecar_configs));
        let mut mounts =
            vec![json!({"name": self.credentials_volume, "mountPath": paths::OUTPUT_DIR})];
        if let Some(name) = &self.token_volume {
            mounts.push(json!({"name": name, "mountPath": paths::TOKEN_DIR, "readOnly": true}));
        }
        for (i, name) in &self.secret_volumes {
            let dir = spec.profiles[*i].secret_dir();
            mounts.push(json!({"name": name, "mountPath": dir, "readOnly": true}));
        }
        let probe = |path: &str, period: u32, failures: u32| {
            // An exec probe starts a process in the container: give it
            // longer than an HTTP GET on a busy node.
            let mut p = json!({
                "periodSeconds": period,
                "timeoutSeconds": if self.host_network { 5 } else { 1 },
                "failureThreshold": failures,
            });
            let how = if self.host_network {
                // No port of the node's is taken: the sidecar binary reads
                // the credentials file in its own container.
                json!({"command": [paths::SIDECAR_BINARY, "probe"]})
            } else {
                json!({"path": path, "port": self.health_port})
            };
            p[if self.host_network { "exec" } else { "httpGet" }] = how;
            p
        };
        let mut resources = Map::new();
        for (kind, map) in [
            ("requests", &s.resources.requests),
            ("limits", &s.resources.limits),
        ] {
            if !map.is_empty() {
                let m: BTreeMap<&str, &str> = map
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.0.as_str()))
                    .collect();
                resources.insert(kind.to_owned(), json!(m));
            }
        }
        let mut c = json!({
            "name": self.sidecar,
            "image": s.image,
            "imagePullPolicy": s.image_pull_policy,
            "args": args,
            "env": [{
                "name": "TEMPCREDS_POD_NAME",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
            }],
            "resources": resources,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": s.run_as_user,
                "runAsGroup": s.run_as_user,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": mounts,
            "startupProbe": probe(paths::READYZ_PATH, STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD),
            "readinessProbe": probe(paths::READYZ_PATH, 10, 3),
            "terminationMessagePolicy": "FallbackToLogsOnError",
        });
        if let Some(obj) = c.as_object_mut() {
            // An exec probe cannot tell a hung process from a live one;
            // without the health listener the kubelet restarts the sidecar
            // only when it exits.
            if !self.host_network {
                obj.insert("livenessProbe".into(), probe(paths::HEALTHZ_PATH, 10, 3));
            }
            if s.native_sidecar {
                obj.insert("restartPolicy".into(), json!("Always"));
            }
        }
        c
    }
}

/// The env app containers get (name, value), in order, for `delivery`.
///
/// - `file`: `AWS_SHARED_CREDENTIALS_FILE` (and `AWS_PROFILE`).
/// - `process`: `AWS_CONFIG_FILE` (and `AWS_PROFILE`), and not
///   `AWS_SHARED_CREDENTIALS_FILE`: every SDK reads a profile's keys from the
///   credentials file before its `credential_process`, so with both the
///   static keys would win and never be refreshed.
/// - `endpoint`: `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
///   `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` only: not the relative URI nor
///   the token variable (SDKs disagree on precedence when both forms are
///   set), and no credentials file or profile, which every SDK would use
///   before the endpoint.
fn app_env(
    spec: &InjectionSpec,
    delivery: Delivery,
    sidecar_config: &SidecarConfig,
) -> Vec<(&'static str, String)> {
    let in_volume = |file: &str| format!("{}/{}", paths::OUTPUT_DIR, file);
    let mut env = Vec::new();
    match (delivery, sidecar_config.endpoint_addr) {
        (Delivery::Endpoint, Some(addr)) => {
            env.push((
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                paths::endpoint_uri(addr),
            ));
            env.push((
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                in_volume(paths::ENDPOINT_TOKEN_FILE),
            ));
        }
        (Delivery::Process, _) => env.push(("AWS_CONFIG_FILE", in_volume(paths::CONFIG_FILE))),
        _ => env.push((
            "AWS_SHARED_CREDENTIALS_FILE",
            in_volume(paths::CREDENTIALS_FILE),
        )),
    }
    let profile = &spec.default_profile().name;
    if profile != "default" && delivery != Delivery::Endpoint {
        env.push(("AWS_PROFILE", profile.clone()));
    }
    if let Some(region) = &sidecar_config.region {
        env.push(("AWS_REGION", region.clone()));
        env.push(("AWS_DEFAULT_REGION", region.clone()));
    }
    env
}

/// `wanted`, or the next port up (then from 1024) not in `taken`.
fn first_free_port(wanted: u16, taken: &BTreeSet<i64>) -> u16 {
    (wanted..=u16::MAX)
        .chain(1024..wanted)
        .find(|p| !taken.contains(&i64::from(*p)))
        .unwrap_or(wanted)
}

/// The object at `key`, created (or replacing a non-object) when needed.
fn object_at<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// The array at `key`, created (or replacing a non-array, e.g. `null`) when needed.
fn array_at<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(v) => v,
        _ => unreachable!("just made an array"),
    }
}
