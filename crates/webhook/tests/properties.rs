//! Properties of the mutation for arbitrary pods, with arbitrary
//! `volumeMounts` (names, paths, readOnly) in every kind of container: a
//! second pass changes nothing, no container but the sidecar mounts the
//! token or Secret volume, every other mount of the credentials volume is
//! read-only, the patched pod is as valid as the input (mounts name
//! volumes of the pod, mount paths unique per container, container and
//! volume names unique), and nothing panics.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};
use tempcreds_core::paths::{OUTPUT_DIR, SECRET_DIR, TOKEN_DIR};
use tempcreds_webhook::mutate::normalize_mount_path;
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

/// Mount paths, some of them the credentials path written differently.
fn mount_path() -> impl Strategy<Value = String> {
    // Mostly other paths: a clash at the credentials path denies the pod.
    prop_oneof![
        1 => Just("/var/run/tempcreds".to_owned()),
        1 => Just("/var/run/tempcreds/".to_owned()),
        1 => Just("/var/run//tempcreds".to_owned()),
        1 => Just("/var/run/tempcreds/.".to_owned()),
        2 => Just("/var/run/secrets/tempcreds/serviceaccount".to_owned()),
        20 => "/[a-z]{1,3}(/[a-z.]{1,3}){0,2}/?",
    ]
}

fn volume_mounts() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        (name(), mount_path(), proptest::option::of(any::<bool>())),
        0..3,
    )
    .prop_map(|mounts| {
        json!(
            mounts
                .into_iter()
                .map(|(name, path, read_only)| {
                    let mut m = json!({"name": name, "mountPath": path});
                    if let Some(r) = read_only {
                        m["readOnly"] = json!(r);
                    }
                    m
                })
                .collect::<Vec<_>>()
        )
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        name(),
        env(),
        proptest::option::of(prop_oneof![Just(8099i64), 1i64..65535]),
        any::<bool>(),
        volume_mounts(),
    )
        .prop_map(|(name, env, port, sidecar, mounts)| {
            let mut c = json!({"name": name, "image": "x", "env": env, "volumeMounts": mounts});
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
        Just(("tempcreds.io/skip-containers", "tempcreds-credentials")),
        Just(("tempcreds.io/injected", "tempcreds")),
        Just(("tempcreds.io/injected", "a")),
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
        proptest::collection::vec(container(), 0..2),
        proptest::collection::vec(name(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(annotations, containers, init, ephemeral, volumes, native)| {
                let mut spec = json!({"containers": containers});
                if !init.is_empty() {
                    spec["initContainers"] = json!(init);
                }
                if !ephemeral.is_empty() {
                    spec["ephemeralContainers"] = json!(ephemeral);
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
            },
        )
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

        // The containers tempcreds added: the sidecar and, with a classic
        // sidecar, its run-once init container (names not in the input).
        let mut input_names = names_of(&input["spec"], "containers");
        input_names.extend(names_of(&input["spec"], "initContainers"));
        let added = |c: &Value| {
            let name = c["name"].as_str().unwrap_or_default();
            c["args"][0] == "run"
                && (name == sidecar.as_str() || !input_names.contains(&name))
        };
        let all_containers = |pod: &'_ Value| -> Vec<Value> {
            ["initContainers", "containers", "ephemeralContainers"]
                .iter()
                .flat_map(|l| pod["spec"][*l].as_array().cloned().unwrap_or_default())
                .collect()
        };
        let mounts = |c: &Value| c["volumeMounts"].as_array().cloned().unwrap_or_default();

        // The injected volumes, by what the sidecar mounts where.
        let sidecar_c = all_containers(&once).into_iter().find(|c| c["name"] == sidecar.as_str()).unwrap();
        let at = |path: &str| mounts(&sidecar_c).iter()
            .find(|m| m["mountPath"] == path)
            .and_then(|m| m["name"].as_str().map(str::to_owned));
        let credentials = at(OUTPUT_DIR).expect("the sidecar mounts the credentials volume");
        let source = at(TOKEN_DIR).or_else(|| at(SECRET_DIR));
        // The injected volumes are new: no name the input's volumes or mounts used.
        let input_used: BTreeSet<String> = all_containers(&input).iter()
            .flat_map(&mounts)
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .chain(names_of(&input["spec"], "volumes").into_iter().map(str::to_owned))
            .collect();
        prop_assert!(!input_used.contains(&credentials), "credentials volume {credentials} was in use");
        if let Some(source) = &source {
            prop_assert!(!input_used.contains(source), "source volume {source} was in use");
        }

        for c in all_containers(&once) {
            if added(&c) {
                continue;
            }
            for m in mounts(&c) {
                let n = m["name"].as_str().unwrap_or_default();
                // No container but the sidecar mounts the token or the keys.
                prop_assert!(source.as_deref() != Some(n), "container {} mounts {}", c["name"], n);
                // Every other mount of the credentials volume is read-only.
                if n == credentials {
                    prop_assert_eq!(&m["readOnly"], &json!(true), "container {} mounts {} writable", c["name"], n);
                }
            }
        }

        // As valid as the input: a mount names a volume of the pod unless
        // the same mount was dangling in the input already, and no
        // container mounts two volumes at one path unless it did before.
        let volume_names: BTreeSet<&str> = names_of(spec, "volumes").into_iter().collect();
        let input_volume_names: BTreeSet<&str> = names_of(&input["spec"], "volumes").into_iter().collect();
        let input_containers = all_containers(&input);
        for c in all_containers(&once) {
            // (Generated names repeat: compare with every input container
            // of the same name.)
            let before: Vec<&Value> = input_containers.iter().filter(|i| i["name"] == c["name"]).collect();
            for m in mounts(&c) {
                let n = m["name"].as_str().unwrap_or_default();
                if !volume_names.contains(n) {
                    let was_dangling = before.iter().any(|b| mounts(b).contains(&m))
                        && !input_volume_names.contains(n);
                    prop_assert!(was_dangling, "container {} mounts {n}, not a volume of the pod", c["name"]);
                }
            }
            let paths = |c: &Value| -> (usize, usize) {
                let all: Vec<String> = mounts(c).iter()
                    .filter_map(|m| m["mountPath"].as_str().map(normalize_mount_path))
                    .collect();
                let unique: BTreeSet<&String> = all.iter().collect();
                (all.len(), unique.len())
            };
            let (n, u) = paths(&c);
            let dupes_before = before.iter().map(|b| { let (n, u) = paths(b); n - u }).max().unwrap_or(0);
            prop_assert!(n - u <= dupes_before, "container {} mounts two volumes at one path", c["name"]);
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
