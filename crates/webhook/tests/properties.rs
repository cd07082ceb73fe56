//! Properties of the mutation for arbitrary pods: a second pass changes
//! nothing, application containers never get the token or Secret volume,
//! container and volume names stay unique, and nothing panics.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};
use tempcreds_webhook::mutate::{SECRET_VOLUME, TOKEN_VOLUME};
use tempcreds_webhook::{ClusterConfig, Context, Outcome, mutate};

/// Names likely to clash with what the webhook injects.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tempcreds".to_owned()),
        Just("tempcreds-2".to_owned()),
        Just("tempcreds-credentials".to_owned()),
        Just("tempcreds-token".to_owned()),
        Just("tempcreds-aws-keys".to_owned()),
        "[a-z]{1,6}",
    ]
}

fn env() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        proptest::collection::vec(
            prop_oneof![
                Just("AWS_REGION".to_owned()),
                Just("AWS_SHARED_CREDENTIALS_FILE".to_owned()),
                Just("AWS_PROFILE".to_owned()),
                "[A-Z]{1,5}",
            ],
            0..4
        )
        .prop_map(|names| json!(
            names
                .into_iter()
                .map(|n| json!({"name": n, "value": "v"}))
                .collect::<Vec<_>>()
        )),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        name(),
        env(),
        proptest::option::of(prop_oneof![Just(8099i64), 1i64..65535]),
        any::<bool>(),
    )
        .prop_map(|(name, env, port, sidecar)| {
            let mut c = json!({"name": name, "image": "x", "env": env});
            if let Some(p) = port {
                c["ports"] = json!([{"containerPort": p}]);
            }
            if sidecar {
                c["restartPolicy"] = json!("Always");
            }
            c
        })
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let pair = prop_oneof![
        Just((
            "tempcreds.io/role-arn",
            "arn:aws:iam::123456789012:role/app"
        )),
        Just(("tempcreds.io/inject", "true")),
        Just(("tempcreds.io/inject", "false")),
        Just(("tempcreds.io/source", "secret")),
        Just(("tempcreds.io/source", "ambient")),
        Just(("tempcreds.io/secret-name", "keys")),
        Just(("tempcreds.io/region", "eu-west-1")),
        Just(("tempcreds.io/profile", "app")),
        Just(("tempcreds.io/skip-containers", "tempcreds,a")),
        Just(("tempcreds.io/containers", "tempcreds-2,b")),
        Just(("example.com/a~b/c", "x")),
    ];
    // Most pods opt in, so most cases exercise the injection.
    (
        proptest::bool::weighted(0.85),
        proptest::collection::vec(pair, 0..4),
    )
        .prop_map(|(role, pairs)| {
            let mut map: BTreeMap<String, String> = pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if role {
                map.insert(
                    "tempcreds.io/role-arn".into(),
                    "arn:aws:iam::123456789012:role/app".into(),
                );
            }
            map
        })
}

fn pod() -> impl Strategy<Value = (Value, bool)> {
    (
        annotations(),
        proptest::collection::vec(container(), 0..4),
        proptest::collection::vec(container(), 0..3),
        proptest::collection::vec(name(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(annotations, containers, init, volumes, native)| {
            let mut spec = json!({"containers": containers});
            if !init.is_empty() {
                spec["initContainers"] = json!(init);
            }
            if !volumes.is_empty() {
                spec["volumes"] = json!(
                    volumes
                        .iter()
                        .map(|n| json!({"name": n, "emptyDir": {}}))
                        .collect::<Vec<_>>()
                );
            }
            (
                json!({"metadata": {"name": "p", "annotations": annotations}, "spec": spec}),
                native,
            )
        })
}

fn names_of<'a>(spec: &'a Value, list: &str) -> Vec<&'a str> {
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutation_properties((input, native) in pod()) {
        let mut config = ClusterConfig::with_image("img");
        config.sidecar.native_sidecar = native;
        let sa = BTreeMap::new();
        let ctx = Context { namespace: "ns", service_account_annotations: &sa, namespace_labels: &Default::default(), };
        let Outcome::Patch { patch, .. } = mutate(&input, &ctx, &config) else {
            return Ok(());
        };
        let mut once = input.clone();
        json_patch::patch(&mut once, &patch).expect("patch applies");

        // A second pass changes nothing.
        match mutate(&once, &ctx, &config) {
            Outcome::NotForUs => {}
            Outcome::Patch { patch, .. } => prop_assert!(patch.0.is_empty(), "second patch {patch:?}"),
            Outcome::Deny(d) => prop_assert!(false, "second pass denied: {d}"),
        }

        let spec = &once["spec"];
        let sidecar = once["metadata"]["annotations"]["tempcreds.io/injected"].as_str().unwrap().to_owned();

        // Names stay unique.
        let mut containers = names_of(spec, "containers");
        containers.extend(names_of(spec, "initContainers"));
        let unique: BTreeSet<_> = containers.iter().collect();
        let input_dupes = {
            let mut n = names_of(&input["spec"], "containers");
            n.extend(names_of(&input["spec"], "initContainers"));
            n.len() - n.iter().collect::<BTreeSet<_>>().len()
        };
        prop_assert_eq!(containers.len() - unique.len(), input_dupes, "container names {:?}", containers);
        let volumes = names_of(spec, "volumes");
        let input_volume_dupes = {
            let n = names_of(&input["spec"], "volumes");
            n.len() - n.iter().collect::<BTreeSet<_>>().len()
        };
        prop_assert_eq!(volumes.len() - volumes.iter().collect::<BTreeSet<_>>().len(), input_volume_dupes);

        // Only the sidecar mounts the token or Secret volume.
        let source_volumes: Vec<&str> = spec["volumes"].as_array().into_iter().flatten()
            .filter(|v| v.get("projected").is_some() || v.get("secret").is_some())
            .filter(|v| {
                let n = v["name"].as_str().unwrap_or_default();
                n.starts_with(TOKEN_VOLUME) || n.starts_with(SECRET_VOLUME)
            })
            .filter_map(|v| v["name"].as_str())
            .collect();
        // The containers tempcreds added: the sidecar and, with a classic
        // sidecar, its run-once init container (names not in the input).
        let mut input_names = names_of(&input["spec"], "containers");
        input_names.extend(names_of(&input["spec"], "initContainers"));
        let added = |c: &Value| {
            let name = c["name"].as_str().unwrap_or_default();
            c["args"][0] == "run"
                && (name == sidecar.as_str() || !input_names.contains(&name))
        };
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                if added(c) {
                    continue;
                }
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    let n = m["name"].as_str().unwrap_or_default();
                    prop_assert!(!source_volumes.contains(&n), "container {} mounts {}", c["name"], n);
                }
            }
        }
    }
}

#[test]
fn the_generator_produces_injected_pods() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let sa = BTreeMap::new();
    let ctx = Context {
        namespace: "ns",
        service_account_annotations: &sa,
        namespace_labels: &Default::default(),
    };
    let config = ClusterConfig::with_image("img");
    let patched = (0..300)
        .filter(|_| {
            let (p, _) = pod().new_tree(&mut runner).unwrap().current();
            matches!(mutate(&p, &ctx, &config), Outcome::Patch { .. })
        })
        .count();
    assert!(
        patched > 60,
        "only {patched} of 300 generated pods were injected"
    );
}
