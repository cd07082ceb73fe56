//! Regression tests from fuzzing (fuzz/fuzz_targets/annotations.rs): what the
//! webhook accepts in annotations, the sidecar must accept on its command
//! line. The webhook passes `SidecarConfig::to_args()` as the container's
//! args and the sidecar parses them with clap.

use clap::Parser;
use tempcreds_core::SidecarConfig;
use tempcreds_core::spec::{self, Annotations, ClusterDefaults, Decision, PodRef};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: SidecarConfig,
}

/// The sidecar configuration the webhook derives from `pod` annotations, if
/// it admits the pod.
fn admitted(pod: &[(&str, &str)]) -> Option<SidecarConfig> {
    let pod: Annotations = pod
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sa = Annotations::new();
    let Ok(Decision::Inject(spec)) = spec::resolve(&pod, &sa) else {
        return None;
    };
    let pod_ref = PodRef {
        namespace: "team-a",
        service_account: "app",
    };
    let config = spec
        .sidecar_configs(&ClusterDefaults::default(), pod_ref)
        .remove(0);
    spec.check(std::slice::from_ref(&config), &pod, &sa).ok()?;
    Some(config)
}

fn parse(args: &[String]) -> Result<SidecarConfig, clap::Error> {
    Cli::try_parse_from(std::iter::once("tempcreds-sidecar".to_owned()).chain(args.iter().cloned()))
        .map(|c| c.config)
}

/// Values that start with `-`, found by the fuzzer: `--profile -x` makes clap
/// read `-x` as a flag, so the sidecar exits 2 on start and the pod, admitted
/// by the webhook, never becomes ready.
const DASHED: &[(&str, &str)] = &[
    ("tempcreds.io/profile", "-x"),
    ("tempcreds.io/profile", "--temp"),
    ("tempcreds.io/session-name", "-i"),
    ("tempcreds.io/region", "-------------"),
];

#[test]
fn admitted_values_starting_with_a_dash_reach_the_sidecar_intact() {
    let mut checked = 0;
    for (annotation, value) in DASHED {
        let Some(config) = admitted(&[
            (
                "tempcreds.io/role-arn",
                "arn:aws:iam::123456789012:role/app",
            ),
            (annotation, value),
        ]) else {
            continue; // refused by the webhook: fine too
        };
        checked += 1;
        let args = config.to_args();
        let parsed = parse(&args).unwrap_or_else(|e| {
            panic!("{annotation}: {value:?} admitted, but the sidecar refuses {args:?}: {e}")
        });
        assert_eq!(parsed, config, "{annotation}: {value:?}");
    }
    eprintln!("{checked} admitted values checked");
}

/// The fix the test above asks for works: the same arguments, each flag and
/// its value joined with `=`, parse back to the same configuration.
#[test]
fn flag_equals_value_carries_values_starting_with_a_dash() {
    let mut checked = 0;
    for (annotation, value) in DASHED {
        let Some(config) = admitted(&[
            (
                "tempcreds.io/role-arn",
                "arn:aws:iam::123456789012:role/app",
            ),
            (annotation, value),
        ]) else {
            continue;
        };
        checked += 1;
        let args = config.to_args();
        let joined: Vec<String> = args
            .chunks(2)
            .map(|pair| match pair {
                [flag, value] => format!("{flag}={value}"),
                other => other.concat(),
            })
            .collect();
        assert_eq!(parse(&joined).unwrap(), config, "{joined:?}");
    }
    assert!(
        checked > 0,
        "no dashed value is admitted any more: drop this test"
    );
}
