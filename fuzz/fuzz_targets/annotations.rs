//! The annotation rules (`tempcreds_core::spec::resolve`) on pod and
//! ServiceAccount annotations made of the input, then, for an opted-in pod,
//! the sidecar configuration derived from them: it must pass the sidecar's
//! own validation (what the webhook accepts, the sidecar must start with),
//! its STS endpoint must be one the URL check accepts, and its command line
//! must parse back to the same configuration.
//!
//! Input lines: `<selector byte><value>`; the selector's low bit picks the
//! pod or the ServiceAccount, the next one whether the annotation is the
//! additional profile `w`'s (`tempcreds.io/ANNOTATION.w`), the rest the
//! annotation. With several profiles, the rendered command line (with
//! `--and-profile`) must parse back to every profile's configuration.

#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tempcreds_core::SidecarConfig;
use tempcreds_core::annotations::USER_ANNOTATIONS;
use tempcreds_core::spec::{self, Annotations, ClusterDefaults, Decision, PodRef};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: SidecarConfig,
}

fuzz_target!(|data: &[u8]| {
    let (mut pod, mut sa) = (Annotations::new(), Annotations::new());
    for line in data.split(|b| *b == b'\n') {
        if let Some((sel, value)) = line.split_first() {
            let key = USER_ANNOTATIONS[(*sel >> 2) as usize % USER_ANNOTATIONS.len()];
            let key = if sel & 2 == 0 { key.to_owned() } else { format!("{key}.w") };
            let value = String::from_utf8_lossy(value).into_owned();
            if sel & 1 == 0 { &mut pod } else { &mut sa }.insert(key, value);
        }
    }
    let Ok(Decision::Inject(spec)) = spec::resolve(&pod, &sa) else {
        return;
    };
    let pod_ref = PodRef {
        namespace: "team-a",
        service_account: "app",
    };
    let configs = spec.sidecar_configs(&ClusterDefaults::default(), pod_ref);
    // The webhook denies what the sidecar would refuse.
    if spec.check(&configs, &pod, &sa).is_err() {
        return;
    }
    let config = &configs[0];
    // Whatever endpoint is admitted is https (or http to loopback), with a
    // host, under the cluster's default of no plain HTTP.
    if let Some(endpoint) = &config.sts_endpoint {
        assert!(
            tempcreds_core::sts_url::check_sts_url(endpoint, false).is_ok(),
            "admitted sts-endpoint {endpoint:?}"
        );
        assert!(!config.allow_http_sts_endpoint);
    }
    let args = config.to_args();
    let parsed = Cli::try_parse_from(std::iter::once("sidecar".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("the sidecar refuses its own arguments {args:?}: {e}"));
    assert_eq!(&parsed.config, config, "arguments {args:?} do not round-trip");
    let all = tempcreds_core::config::render_profiles(&configs);
    let (head, rest) = tempcreds_core::config::split_profiles(all.clone());
    assert_eq!(head, args, "the first profile's arguments come first");
    let rest: Vec<Vec<std::ffi::OsString>> = rest
        .into_iter()
        .map(|p| p.into_iter().map(Into::into).collect())
        .collect();
    let extra = tempcreds_core::config::parse_additional(config, &rest)
        .unwrap_or_else(|e| panic!("the sidecar refuses its own arguments {all:?}: {e}"));
    assert_eq!(extra, configs[1..], "arguments {all:?} do not round-trip");
});
