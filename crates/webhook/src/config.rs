//! The cluster operator's configuration of the webhook (a YAML file, usually
//! a ConfigMap): the sidecar image and resources, native or classic sidecar,
//! cluster-wide defaults. Only this file chooses images and resources; no pod
//! annotation can.
//!
//! Unknown fields are refused, and [`ClusterConfig::from_yaml`] reports every
//! problem naming its field, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use tempcreds_core::Delivery;
use tempcreds_core::config::{is_region, quoted};
use tempcreds_core::paths;
use tempcreds_core::spec::ClusterDefaults;
use tempcreds_core::sts_url::{StsUrlError, check_sts_url};
use tempcreds_core::sts_variant::{Names, Setting, Variant, check_variant};

use crate::policy::Policy;

/// The names of the endpoint-variant settings in this file, for
/// [`check_variant`]'s messages.
const CONFIG_NAMES: Names = Names {
    fips: "useFipsEndpoint",
    dual_stack: "useDualstackEndpoint",
    region: "region",
    sts_endpoint: "stsEndpoint",
};

/// The default `sizeLimit` of the shared in-memory volume.
pub const DEFAULT_VOLUME_SIZE_LIMIT: &str = "1Mi";

/// The webhook's cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// The injected sidecar.
    pub sidecar: SidecarSettings,
    /// Region used when neither the pod nor its ServiceAccount names one; it
    /// also sets `AWS_REGION`/`AWS_DEFAULT_REGION` in app containers.
    #[serde(default)]
    pub region: Option<String>,
    /// STS endpoint used when neither the pod nor its ServiceAccount names one.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Accept plain `http://` STS endpoints (this field and
    /// `tempcreds.io/sts-endpoint`) to hosts that are not loopback. Test
    /// clusters only (moto): the web-identity token and the signed requests
    /// then cross the network unencrypted.
    #[serde(default)]
    pub allow_http_sts_endpoint: bool,
    /// Sidecars call STS's FIPS endpoint when neither the pod nor its
    /// ServiceAccount says (`tempcreds.io/use-fips-endpoint`).
    #[serde(default)]
    pub use_fips_endpoint: bool,
    /// Sidecars call STS's dual-stack (IPv4 and IPv6) endpoint when neither
    /// the pod nor its ServiceAccount says
    /// (`tempcreds.io/use-dualstack-endpoint`).
    #[serde(default)]
    pub use_dualstack_endpoint: bool,
    /// `sizeLimit` of the memory-backed volume holding the credentials.
    #[serde(default = "default_volume_size_limit")]
    pub volume_size_limit: Quantity,
    /// How apps receive credentials when neither the pod nor its
    /// ServiceAccount says (`tempcreds.io/delivery`).
    #[serde(default)]
    pub delivery: Delivery,
    /// Which sources and role ARNs pods may use (default: any).
    #[serde(default)]
    pub policy: Policy,
}

/// How the sidecar is injected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSettings {
    /// The sidecar image (required).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// Inject as a native sidecar (init container with `restartPolicy:
    /// Always`, Kubernetes 1.29+); `false`: a regular container.
    #[serde(default = "default_true")]
    pub native_sidecar: bool,
    /// Port of the sidecar's `/healthz`, `/readyz` and `/metrics`.
    #[serde(default = "default_health_port")]
    pub health_port: u16,
    /// Loopback port of the container-credentials endpoint
    /// (`delivery: endpoint`).
    #[serde(default = "default_endpoint_port")]
    pub endpoint_port: u16,
    /// Resource requests and limits of the sidecar.
    #[serde(default = "default_resources")]
    pub resources: Resources,
    /// User ID the sidecar runs as (non-root).
    #[serde(default = "default_run_as_user")]
    pub run_as_user: i64,
}

/// Resource requests and limits (`cpu`, `memory`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Requests by resource name.
    #[serde(default)]
    pub requests: BTreeMap<String, Quantity>,
    /// Limits by resource name.
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
}

/// A Kubernetes resource quantity (`5m`, `16Mi`, `1`), written as a string
/// or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            U(u64),
            F(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::U(n) => n.to_string(),
            Raw::F(n) => n.to_string(),
        }))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Quantity {
    /// Whether this is a quantity the API server accepts: a decimal number
    /// with an optional binary (`Ki`..`Ei`), decimal (`n`, `u`, `m`, `k`, `M`,
    /// `G`, `T`, `P`, `E`) or exponent suffix.
    pub fn is_valid(&self) -> bool {
        let s = self.0.as_str();
        let s = s.strip_prefix(['+', '-']).unwrap_or(s);
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(num_len);
        let num_ok = !num.is_empty()
            && num != "."
            && num.matches('.').count() <= 1
            && num.bytes().any(|b| b.is_ascii_digit());
        let suffix_ok = matches!(
            suffix,
            "" | "Ki"
                | "Mi"
                | "Gi"
                | "Ti"
                | "Pi"
                | "Ei"
                | "n"
                | "u"
                | "m"
                | "k"
                | "M"
                | "G"
                | "T"
                | "P"
                | "E"
        ) || suffix
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
        num_ok && suffix_ok
    }
}

fn default_volume_size_limit() -> Quantity {
    Quantity(DEFAULT_VOLUME_SIZE_LIMIT.to_owned())
}
fn default_pull_policy() -> String {
    "IfNotPresent".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_health_port() -> u16 {
    paths::DEFAULT_HEALTH_PORT
}
fn default_endpoint_port() -> u16 {
    paths::DEFAULT_ENDPOINT_PORT
}
fn default_run_as_user() -> i64 {
    65532
}
fn default_resources() -> Resources {
    let q = |s: &str| Quantity(s.to_owned());
    Resources {
        requests: BTreeMap::from([("cpu".into(), q("5m")), ("memory".into(), q("16Mi"))]),
        limits: BTreeMap::from([("memory".into(), q("32Mi"))]),
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match the schema (unknown field, wrong type).
    #[error("invalid config YAML")]
    Parse(#[source] serde_yaml::Error),
    /// Fields with invalid values, each named.
    #[error("invalid config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl ClusterConfig {
    /// A configuration with every default and the given sidecar image.
    pub fn with_image(image: &str) -> ClusterConfig {
        ClusterConfig {
            sidecar: SidecarSettings {
                image: image.to_owned(),
                image_pull_policy: default_pull_policy(),
                native_sidecar: true,
                health_port: default_health_port(),
                endpoint_port: default_endpoint_port(),
                resources: default_resources(),
                run_as_user: default_run_as_user(),
            },
            region: None,
            sts_endpoint: None,
            allow_http_sts_endpoint: false,
            use_fips_endpoint: false,
            use_dualstack_endpoint: false,
            volume_size_limit: default_volume_size_limit(),
            delivery: Delivery::default(),
            policy: Policy::default(),
        }
    }

    /// Parses and validates a YAML document.
    pub fn from_yaml(text: &str) -> Result<ClusterConfig, ConfigError> {
        let config: ClusterConfig = serde_yaml::from_str(text).map_err(ConfigError::Parse)?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ClusterConfig::from_yaml(&text)
    }

    /// Every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let s = &self.sidecar;
        if s.image.trim().is_empty() || s.image.chars().any(char::is_whitespace) {
            errors.push(format!(
                "sidecar.image: {:?} is not an image reference such as ghcr.io/tempcreds/tempcreds-sidecar:0.1.0",
                s.image
            ));
        }
        if !matches!(
            s.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            errors.push(format!(
                "sidecar.imagePullPolicy: {:?} is not accepted; accepted: Always, IfNotPresent, Never",
                s.image_pull_policy
            ));
        }
        if s.health_port == 0 {
            errors.push("sidecar.healthPort: 0 is not a port; accepted: 1-65535".to_owned());
        }
        if s.endpoint_port == 0 {
            errors.push("sidecar.endpointPort: 0 is not a port; accepted: 1-65535".to_owned());
        } else if s.endpoint_port == s.health_port {
            errors.push(format!(
                "sidecar.endpointPort: {} is also sidecar.healthPort; the sidecar listens on both, choose two ports",
                s.endpoint_port
            ));
        }
        if s.run_as_user <= 0 {
            errors.push(format!(
                "sidecar.runAsUser: {} is not a non-root user ID; accepted: 1 or more (default 65532)",
                s.run_as_user
            ));
        }
        for (kind, map) in [
            ("requests", &s.resources.requests),
            ("limits", &s.resources.limits),
        ] {
            for (name, q) in map {
                if !q.is_valid() {
                    errors.push(format!(
                        "sidecar.resources.{kind}.{name}: {:?} is not a quantity such as 5m, 16Mi or 1",
                        q.0
                    ));
                }
            }
        }
        if !self.volume_size_limit.is_valid() {
            errors.push(format!(
                "volumeSizeLimit: {:?} is not a quantity such as 1Mi",
                self.volume_size_limit.0
            ));
        }
        if let Some(region) = &self.region
            && !is_region(region)
        {
            errors.push(format!(
                "region: {} is not a region name such as eu-west-1 or us-gov-west-1",
                quoted(region)
            ));
        }
        if let Some(endpoint) = &self.sts_endpoint
            && let Err(e) = check_sts_url(endpoint, self.allow_http_sts_endpoint)
        {
            let hint = match e {
                StsUrlError::PlainHttp { .. } => {
                    "; allowHttpStsEndpoint: true allows it (test clusters only)"
                }
                StsUrlError::Invalid(_) => "",
            };
            errors.push(format!("stsEndpoint: {} {e}{hint}", quoted(endpoint)));
        }
        let variant = Variant {
            fips: self.use_fips_endpoint,
            dual_stack: self.use_dualstack_endpoint,
        };
        for e in check_variant(
            variant,
            self.region.as_deref(),
            self.sts_endpoint.as_deref(),
            &CONFIG_NAMES,
        ) {
            let key = match e.setting {
                Setting::Fips => CONFIG_NAMES.fips,
                Setting::DualStack => CONFIG_NAMES.dual_stack,
            };
            errors.push(format!("{key}: true: {}", e.message));
        }
        errors.extend(self.policy.validate());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The defaults the annotation parser applies.
    pub fn defaults(&self) -> ClusterDefaults {
        ClusterDefaults {
            region: self.region.clone(),
            sts_endpoint: self.sts_endpoint.clone(),
            allow_http_sts_endpoint: self.allow_http_sts_endpoint,
            use_fips_endpoint: self.use_fips_endpoint,
            use_dualstack_endpoint: self.use_dualstack_endpoint,
            health_port: self.sidecar.health_port,
            delivery: self.delivery,
            endpoint_port: self.sidecar.endpoint_port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_charts_config_and_fills_defaults() {
        let c = ClusterConfig::from_yaml(
            r#"
sidecar:
  image: "ghcr.io/tempcreds/tempcreds-sidecar:0.1.0"
  imagePullPolicy: IfNotPresent
  nativeSidecar: true
  healthPort: 8099
  resources:
    requests:
      cpu: 5m
      memory: 16Mi
    limits:
      memory: 32Mi
      cpu: 1
region: "eu-west-1"
"#,
        )
        .unwrap();
        assert_eq!(c.sidecar.resources.limits["cpu"], Quantity("1".into()));
        assert_eq!(c.volume_size_limit.0, "1Mi");
        assert_eq!(c.sidecar.run_as_user, 65532);
        let minimal = ClusterConfig::from_yaml("sidecar: {image: x}").unwrap();
        assert_eq!(minimal, ClusterConfig::with_image("x"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e =
            ClusterConfig::from_yaml("sidecar: {image: x, imagePulPolicy: Always}").unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(chain.contains("imagePulPolicy"), "{chain}");
        let e = ClusterConfig::from_yaml(
            "sidecar: {image: '', imagePullPolicy: Sometimes, resources: {requests: {memory: lots}}}\nvolumeSizeLimit: 1MB\nregion: EU\nstsEndpoint: sts.local",
        )
        .unwrap_err()
        .to_string();
        for field in [
            "sidecar.image",
            "sidecar.imagePullPolicy",
            "sidecar.resources.requests.memory",
            "volumeSizeLimit",
            "region",
            "stsEndpoint",
        ] {
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn delivery_and_endpoint_port() {
        let c =
            ClusterConfig::from_yaml("sidecar: {image: x, endpointPort: 9000}\ndelivery: endpoint")
                .unwrap();
        assert_eq!(c.delivery, Delivery::Endpoint);
        assert_eq!(c.defaults().endpoint_port, 9000);
        assert_eq!(ClusterConfig::with_image("x").sidecar.endpoint_port, 8098);
        let e = ClusterConfig::from_yaml("sidecar: {image: x}\ndelivery: socket").unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(
            chain.contains("delivery") && chain.contains("endpoint"),
            "{chain}"
        );
        let e = ClusterConfig::from_yaml("sidecar: {image: x, endpointPort: 8099}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sidecar.endpointPort"), "{e}");
    }

    #[test]
    fn endpoint_variant_defaults_that_cannot_work_are_refused_naming_the_key() {
        let c = ClusterConfig::from_yaml(
            "sidecar: {image: x}\nregion: us-gov-west-1\nuseFipsEndpoint: true",
        )
        .unwrap();
        let d = c.defaults();
        assert!(d.use_fips_endpoint && !d.use_dualstack_endpoint);
        let c = ClusterConfig::from_yaml(
            "sidecar: {image: x}\nuseFipsEndpoint: true\nuseDualstackEndpoint: true",
        )
        .unwrap();
        assert!(c.defaults().use_dualstack_endpoint);
        for (yaml, want) in [
            (
                "region: eu-central-1\nuseFipsEndpoint: true",
                "invalid config: useFipsEndpoint: true: STS has no FIPS endpoint in region \"eu-central-1\" \
                 (partition aws); accepted: region one of us-east-1, us-east-2, us-west-1, us-west-2, \
                 us-gov-east-1, us-gov-west-1",
            ),
            (
                "stsEndpoint: https://sts.example.com\nuseDualstackEndpoint: true",
                "invalid config: useDualstackEndpoint: true: cannot be combined with stsEndpoint \
                 \"https://sts.example.com\": a custom endpoint replaces the one useDualstackEndpoint \
                 selects; accepted: one of the two (for a FIPS or dual-stack VPC endpoint, its URL in \
                 stsEndpoint alone)",
            ),
            (
                "region: us-iso-west-1\nuseDualstackEndpoint: true",
                "invalid config: useDualstackEndpoint: true: STS has no dual-stack endpoint in region \
                 \"us-iso-west-1\" (partition aws-iso)",
            ),
        ] {
            let e = ClusterConfig::from_yaml(&format!("sidecar: {{image: x}}\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let e = ClusterConfig::from_yaml("sidecar: {image: x}\nuseFipsEndpoint: yes please")
            .unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(
            chain.contains(
                "useFipsEndpoint: invalid type: string \"yes please\", expected a boolean"
            ),
            "{chain}"
        );
    }

    /// Issue 12: the cluster default took any http:// URL and any run of
    /// letters, digits and dashes as a region.
    #[test]
    fn sts_endpoint_and_region_follow_the_annotation_rules() {
        let e = ClusterConfig::from_yaml(
            "sidecar: {image: x}\nregion: '---'\nstsEndpoint: http://sts.internal:5000",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "invalid config: region: \"---\" is not a region name such as eu-west-1 or us-gov-west-1; \
             stsEndpoint: \"http://sts.internal:5000\" is plain http:// to sts.internal, which would send the \
             pod's web-identity token and signed requests unencrypted; use https:// (plain http:// is \
             accepted only to a loopback address such as 127.0.0.1, unless the cluster operator allows it); \
             allowHttpStsEndpoint: true allows it (test clusters only)"
        );
        let c = ClusterConfig::from_yaml(
            "sidecar: {image: x}\nstsEndpoint: http://sts.internal:5000\nallowHttpStsEndpoint: true",
        )
        .unwrap();
        assert!(c.defaults().allow_http_sts_endpoint);
        for bad in [
            "http://169.254.169.254",
            "https://exa mple.com",
            "https://",
            "https://u:p@sts.example.com",
        ] {
            let e = ClusterConfig::from_yaml(&format!(
                "sidecar: {{image: x}}\nstsEndpoint: '{bad}'\nallowHttpStsEndpoint: true"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("stsEndpoint: "), "{bad}: {e}");
        }
        for ok in [
            "https://sts.eu-west-1.amazonaws.com",
            "http://127.0.0.1:5000",
        ] {
            ClusterConfig::from_yaml(&format!("sidecar: {{image: x}}\nstsEndpoint: {ok}")).unwrap();
        }
    }

    #[test]
    fn quantities() {
        for ok in ["1", "5m", "16Mi", "0.5", "1e3", "1.5Gi", "100k"] {
            assert!(Quantity(ok.into()).is_valid(), "{ok}");
        }
        for bad in ["", "Mi", "1MB", "1.2.3", "lots", "1 Mi", "."] {
            assert!(!Quantity(bad.into()).is_valid(), "{bad}");
        }
    }
}
