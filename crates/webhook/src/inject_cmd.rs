//! `tempcreds-webhook inject`: reads Kubernetes manifests (multi-document
//! YAML) and prints them with every pod template mutated exactly as
//! admission would: Pods, and the templates of Deployments, ReplicaSets,
//! StatefulSets, DaemonSets, Jobs and CronJobs. Other documents pass through.
//! Useful for GitOps (commit the injected manifests) and for reviewing what
//! the webhook will do.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;
use tempcreds_core::spec::Annotations;

use crate::cli::InjectArgs;
use crate::config::ClusterConfig;
use crate::mutate::{Context, Outcome, mutate};

/// The sidecar image used when no `--config` is given.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!(
    "ghcr.io/tempcreds/tempcreds-sidecar:",
    env!("CARGO_PKG_VERSION")
);

/// The JSON pointer of the pod template in an object of `kind`.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Mutates the pod templates in `input` (multi-document YAML), returning the
/// output YAML and the warnings, or the first denial.
pub fn inject(
    input: &str,
    config: &ClusterConfig,
    sa: &Annotations,
    default_namespace: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut out = String::new();
    let mut warnings = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let mut doc = Value::deserialize(document)
            .with_context(|| format!("document {} is not valid YAML", i + 1))?;
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace)
            .to_owned();
        if let Some(template) = template_pointer(&kind).and_then(|p| doc.pointer_mut(p)) {
            let ctx = Context {
                namespace: &namespace,
                service_account_annotations: sa,
                namespace_labels: &Default::default(),
            };
            match mutate(template, &ctx, config) {
                Outcome::NotForUs => {}
                Outcome::Patch { patch, warnings: w } => {
                    json_patch::patch(template, &patch)
                        .with_context(|| format!("patching {kind} {name}"))?;
                    warnings.extend(w.into_iter().map(|w| format!("{kind} {name}: {w}")));
                }
                Outcome::Deny(message) => {
                    anyhow::bail!("{kind} {name} (document {}): {message}", i + 1)
                }
            }
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(&doc).context("writing YAML")?);
    }
    Ok((out, warnings))
}

/// Runs the command: reads the files, prints the result on stdout and the
/// warnings on stderr.
pub fn run(args: &InjectArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig::with_image(DEFAULT_SIDECAR_IMAGE),
    };
    let sa: Annotations = match &args.service_account_annotations {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let map: Option<BTreeMap<String, String>> =
                serde_yaml::from_str(&text).with_context(|| {
                    format!(
                        "{} is not a YAML map of annotation to string",
                        path.display()
                    )
                })?;
            map.unwrap_or_default()
        }
        None => Annotations::new(),
    };
    let mut input = String::new();
    if args.filename.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading stdin")?;
    } else {
        input = std::fs::read_to_string(&args.filename)
            .with_context(|| format!("reading {}", args.filename.display()))?;
    }
    let (output, warnings) = inject(&input, &config, &sa, &args.namespace)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    std::io::stdout()
        .write_all(output.as_bytes())
        .context("writing stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/app";

    #[test]
    fn mutates_every_kind_of_pod_template() {
        let input = format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  template:
    metadata:
      annotations: {{tempcreds.io/role-arn: "{ROLE}"}}
    spec:
      containers: [{{name: web, image: web}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly}}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{{name: job, image: job}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: p, annotations: {{tempcreds.io/role-arn: "{ROLE}"}}}}
spec:
  containers: [{{name: app, image: app}}]
"#
        );
        let mut config = ClusterConfig::with_image("img");
        config.region = Some("eu-west-1".into());
        let sa = Annotations::new();
        let (out, warnings) = inject(&input, &config, &sa, "default").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 4);
        assert_eq!(
            docs[0]["spec"]["template"]["spec"]["initContainers"][0]["name"],
            "tempcreds"
        );
        assert_eq!(docs[1]["kind"], "Service");
        assert!(
            docs[2]
                .pointer("/spec/jobTemplate/spec/template/spec/initContainers")
                .is_none()
        );
        assert_eq!(docs[3]["spec"]["initContainers"][0]["image"], "img");

        // With the ServiceAccount's role, the CronJob is injected too, and
        // running the output through again changes nothing.
        let sa: Annotations = [("tempcreds.io/role-arn".to_owned(), ROLE.to_owned())].into();
        let (out, _) = inject(&input, &config, &sa, "default").unwrap();
        assert!(out.matches("restartPolicy: Always").count() == 3, "{out}");
        let (again, _) = inject(&out, &config, &sa, "default").unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn a_denial_names_the_document() {
        let input = "kind: Pod\nmetadata: {name: bad, annotations: {tempcreds.io/role-arn: nope}}\nspec: {containers: [{name: a}]}\n";
        let e = inject(
            input,
            &ClusterConfig::with_image("img"),
            &Annotations::new(),
            "default",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Pod bad (document 1)") && e.contains("tempcreds.io/role-arn"),
            "{e}"
        );
    }
}
