//! The container images, checked the way a user or a security reviewer would:
//! reproducible, importable (OCI layout and Docker archive in one tar), run
//! as 65532, labelled, carrying the CA bundle and every shared library the
//! binary loads, and nothing to get a shell or install packages with.
//!
//! The archives are built here by `hack/build-image.py` from the debug
//! sidecar binary with the recipe of `hack/images.sh`, so no release build
//! is needed. When `TEMPCREDS_IMAGES_DIR` names a directory of images built
//! by `hack/images.sh` (as `make test` does), its `tempcreds-sidecar.tar` is
//! checked the same way.
//!
//! Archives are read with Python's tarfile (a few lines in [`DUMP`]), the
//! same standard library the writer needs, rather than a tar crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempcreds_tests::bins;

const REF: &str = "ghcr.io/tempcreds/tempcreds-sidecar:0.1.0";
const BIN: &str = "/usr/local/bin/tempcreds-sidecar";
const CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Prints an archive as JSON: its member names, the digest of every blob,
/// index.json, manifest.json, oci-layout, the manifest and config the
/// index points at, the layer's diff id and entries; extracts `MEMBER` of
/// the layer to `DEST`.
const DUMP: &str = r#"
import gzip, hashlib, io, json, os, sys, tarfile
archive, member, dest = sys.argv[1:4]
files, out = {}, {"members": [], "blobs": {}}
with tarfile.open(archive) as t:
    for m in t:
        out["members"].append(m.name)
        if m.isfile():
            files[m.name] = t.extractfile(m).read()
for name, data in files.items():
    if name.startswith("blobs/sha256/"):
        out["blobs"][name] = "sha256:" + hashlib.sha256(data).hexdigest()
for name in ("index.json", "manifest.json", "oci-layout"):
    out[name] = json.loads(files[name]) if name in files else None
blob = lambda d: files["blobs/sha256/" + d.split(":", 1)[1]]
manifest = json.loads(blob(out["index.json"]["manifests"][0]["digest"]))
out["manifest"] = manifest
out["config"] = json.loads(blob(manifest["config"]["digest"]))
raw = gzip.decompress(blob(manifest["layers"][0]["digest"]))
out["diff_id"] = "sha256:" + hashlib.sha256(raw).hexdigest()
out["layer_bytes"] = len(raw)
kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}
out["entries"] = {}
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    for m in t:
        out["entries"]["/" + m.name.rstrip("/")] = {
            "type": kinds.get(m.type, "other"), "mode": m.mode, "uid": m.uid, "gid": m.gid,
            "uname": m.uname, "gname": m.gname, "mtime": m.mtime, "link": m.linkname,
        }
        if "/" + m.name == member:
            open(dest, "wb").write(t.extractfile(m).read())
            os.chmod(dest, 0o755)
        if m.name in ("etc/passwd", "etc/group"):
            out[m.name] = t.extractfile(m).read().decode()
print(json.dumps(out))
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `hack/build-image.py` with `args`, SOURCE_DATE_EPOCH unset (0).
fn build_image(args: &[String]) -> Output {
    Command::new("python3")
        .arg(root().join("hack/build-image.py"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run python3 hack/build-image.py")
}

/// The sidecar image as `hack/images.sh` builds it, from `binary`.
fn sidecar_image_args(binary: &Path, work: &Path, out: &Path) -> Vec<String> {
    std::fs::write(
        work.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(work.join("group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
    std::fs::write(
        work.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )
    .unwrap();
    let file = |src: &Path, dest: &str| format!("--file={}:{dest}:0644", src.display());
    let label = |kv: &str| format!("--label=org.opencontainers.image.{kv}");
    vec![
        format!("--name={REF}"),
        format!("--out={}", out.display()),
        format!("--entrypoint=[\"{BIN}\"]"),
        "--user=65532:65532".into(),
        "--env=PATH=/usr/local/bin".into(),
        format!("--env=SSL_CERT_FILE={CA}"),
        label("source=https://github.com/tempcreds/tempcreds"),
        label("version=0.1.0"),
        label("licenses=Apache-2.0"),
        label("title=tempcreds-sidecar"),
        label("description=the credential sidecar"),
        label("revision=test"),
        format!("--file={}:{BIN}:0755", binary.display()),
        "--with-libs".into(),
        file(&work.join("passwd"), "/etc/passwd"),
        file(&work.join("group"), "/etc/group"),
        file(&work.join("nsswitch.conf"), "/etc/nsswitch.conf"),
        file(Path::new(CA), CA),
        file(&root().join("LICENSE"), "/usr/share/doc/tempcreds/LICENSE"),
        "--dir=/tmp:1777".into(),
        "--dir=/home/nonroot:0700:65532:65532".into(),
    ]
}

/// An archive read by [`DUMP`], with the sidecar binary extracted.
struct Image {
    archive: PathBuf,
    dump: Value,
    binary: PathBuf,
}

impl Image {
    fn read(archive: &Path, work: &Path) -> Image {
        let binary = work.join("extracted-binary");
        let out = Command::new("python3")
            .args(["-c", DUMP])
            .arg(archive)
            .arg(BIN)
            .arg(&binary)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "reading {}: {}",
            archive.display(),
            text(&out)
        );
        Image {
            archive: archive.to_owned(),
            dump: serde_json::from_slice(&out.stdout).expect("JSON from the dump script"),
            binary,
        }
    }

    fn entries(&self) -> BTreeMap<String, Value> {
        serde_json::from_value(self.dump["entries"].clone()).unwrap()
    }

    fn entry(&self, path: &str) -> Value {
        self.dump["entries"].get(path).cloned().unwrap_or_else(|| {
            panic!(
                "{} has no {path}; entries: {:?}",
                self.archive.display(),
                self.entries().keys()
            )
        })
    }

    fn manifest_digest(&self) -> String {
        self.dump["index.json"]["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The shared libraries `ldd` lists for `binary`: (path, is the loader).
fn ldd(binary: &Path) -> Vec<(String, bool)> {
    let out = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .expect("run ldd");
    assert!(
        out.status.success(),
        "ldd {}: {}",
        binary.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once(" => ") {
                Some((_, rest)) => rest,
                None => line,
            };
            let path = path.split(" (0x").next()?;
            path.starts_with('/')
                .then(|| (path.to_owned(), !line.contains(" => ")))
        })
        .collect()
}

/// Everything a reviewer checks in a sidecar image archive.
fn check_sidecar_image(image: &Image) {
    let d = &image.dump;
    let name = image.archive.display();

    // An OCI layout and a Docker archive, consistent with each other.
    assert_eq!(d["oci-layout"]["imageLayoutVersion"], "1.0.0", "{name}");
    let index = &d["index.json"]["manifests"][0];
    let image_ref = index["annotations"]["io.containerd.image.name"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no io.containerd.image.name: {index}"));
    let (repo, tag) = image_ref.rsplit_once(':').unwrap();
    assert_eq!(repo, "ghcr.io/tempcreds/tempcreds-sidecar", "{name}");
    assert_eq!(
        index["annotations"]["org.opencontainers.image.ref.name"], tag,
        "{name}"
    );
    let docker = &d["manifest.json"][0];
    assert_eq!(docker["RepoTags"], serde_json::json!([image_ref]), "{name}");
    let config_blob = format!(
        "blobs/sha256/{}",
        d["manifest"]["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    assert_eq!(docker["Config"], config_blob.as_str(), "{name}");
    let layer_digest = d["manifest"]["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        docker["Layers"],
        serde_json::json!([format!(
            "blobs/sha256/{}",
            layer_digest.trim_start_matches("sha256:")
        )]),
        "{name}"
    );
    assert_eq!(
        d["manifest"]["layers"].as_array().unwrap().len(),
        1,
        "{name}: one layer"
    );
    for (blob, digest) in d["blobs"].as_object().unwrap() {
        assert_eq!(
            blob.trim_start_matches("blobs/sha256/"),
            digest.as_str().unwrap().trim_start_matches("sha256:"),
            "{name}: blob {blob} does not match its digest"
        );
    }
    assert_eq!(
        d["config"]["rootfs"]["diff_ids"],
        serde_json::json!([d["diff_id"]]),
        "{name}: diff_ids"
    );

    // The configuration: non-root, the binary as entrypoint, labels.
    let config = &d["config"];
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["User"], "65532:65532", "{name}");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!([BIN]));
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(
        env.contains(&Value::from(format!("SSL_CERT_FILE={CA}"))),
        "{name}: Env {env:?}"
    );
    let labels = &config["config"]["Labels"];
    for key in [
        "source",
        "version",
        "licenses",
        "title",
        "description",
        "revision",
    ] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_default();
        assert!(!value.is_empty(), "{name}: label {key} missing: {labels}");
    }
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.version"], tag,
        "{name}: version label and tag differ"
    );

    // The layer: the binary, its libraries, CA bundle, users, and no shell
    // or package manager.
    let entries = image.entries();
    for (path, e) in &entries {
        assert!(
            e["uname"] == "" && e["gname"] == "",
            "{name}: {path} carries owner names"
        );
        let owner = (e["uid"].as_u64(), e["gid"].as_u64());
        if path == "/home/nonroot" {
            assert_eq!(owner, (Some(65532), Some(65532)));
        } else {
            assert_eq!(
                owner,
                (Some(0), Some(0)),
                "{name}: {path} not owned by root"
            );
        }
        for part in path.split('/') {
            assert!(
                ![
                    "sh", "bash", "dash", "ash", "busybox", "apt", "apt-get", "dpkg"
                ]
                .contains(&part),
                "{name}: {path} is a shell or package manager"
            );
        }
    }
    let bin = image.entry(BIN);
    assert_eq!(
        (bin["type"].as_str(), bin["mode"].as_u64()),
        (Some("file"), Some(0o755))
    );
    assert_eq!(image.entry(CA)["type"], "file");
    assert_eq!(
        image.entry("/usr/share/doc/tempcreds/LICENSE")["type"],
        "file"
    );
    assert_eq!(image.entry("/etc/nsswitch.conf")["type"], "file");
    assert_eq!(image.entry("/tmp")["mode"], 0o1777);
    assert_eq!(image.entry("/home/nonroot")["mode"], 0o700);
    assert!(
        d["etc/passwd"]
            .as_str()
            .unwrap()
            .contains("nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"),
        "{name}: /etc/passwd {}",
        d["etc/passwd"]
    );
    assert!(
        d["etc/group"]
            .as_str()
            .unwrap()
            .contains("nonroot:x:65532:")
    );

    let libs = ldd(&image.binary);
    assert!(
        libs.iter().any(|(_, loader)| *loader),
        "{name}: ldd names no dynamic loader: {libs:?}"
    );
    for (lib, loader) in libs {
        let e = image.entry(&lib);
        assert_eq!(e["type"], "file", "{name}: {lib} must be a real file");
        if loader {
            assert_eq!(e["mode"], 0o755, "{name}: the dynamic loader {lib}");
        }
    }
}

#[test]
fn the_sidecar_image_is_reproducible_nonroot_and_has_its_libraries_and_no_shell() {
    let work = tempfile::tempdir().unwrap();
    let binary = bins::bin("tempcreds-sidecar");
    let (a, b) = (work.path().join("a.tar"), work.path().join("b.tar"));
    for out in [&a, &b] {
        let built = build_image(&sidecar_image_args(&binary, work.path(), out));
        assert!(built.status.success(), "build-image.py: {}", text(&built));
        assert!(
            text(&built).contains("digest=sha256:"),
            "no summary: {}",
            text(&built)
        );
    }
    let (image_a, image_b) = (Image::read(&a, work.path()), Image::read(&b, work.path()));
    assert_eq!(image_a.manifest_digest(), image_b.manifest_digest());
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds from the same files differ byte for byte"
    );
    for e in image_a.entries().values() {
        assert_eq!(e["mtime"], 0, "SOURCE_DATE_EPOCH unset means mtime 0");
    }
    assert_eq!(image_a.dump["config"]["created"], "1970-01-01T00:00:00Z");
    check_sidecar_image(&image_a);
}

#[test]
fn the_sidecar_image_of_this_test_run_passes_the_same_checks() {
    let Some(dir) = std::env::var_os("TEMPCREDS_IMAGES_DIR") else {
        eprintln!("TEMPCREDS_IMAGES_DIR is not set: no images of this run to check");
        return;
    };
    let archive = Path::new(&dir).join("tempcreds-sidecar.tar");
    assert!(
        archive.is_file(),
        "TEMPCREDS_IMAGES_DIR={} has no tempcreds-sidecar.tar; build it with hack/images.sh",
        Path::new(&dir).display()
    );
    let work = tempfile::tempdir().unwrap();
    check_sidecar_image(&Image::read(&archive, work.path()));
}

#[test]
fn bad_inputs_are_named_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("image.tar");
    let missing = work.path().join("no-such-binary");
    let cases = [
        (
            format!("--file={}:/usr/local/bin/app", missing.display()),
            format!("source file {} does not exist", missing.display()),
        ),
        (
            format!(
                "--file={}:usr/local/bin/app",
                root().join("LICENSE").display()
            ),
            "is not absolute".to_owned(),
        ),
        ("--dir=/tmp:0999".to_owned(), "bad mode '0999'".to_owned()),
    ];
    for (arg, expected) in cases {
        let built = build_image(&[
            format!("--name={REF}"),
            format!("--out={}", out.display()),
            arg.clone(),
        ]);
        let message = text(&built);
        assert_eq!(built.status.code(), Some(2), "{arg}: {message}");
        assert!(
            message.contains(&expected) && !message.contains("Traceback"),
            "{arg}: expected a one-line error containing {expected:?}, got {message:?}"
        );
        assert_eq!(
            std::fs::read_dir(work.path()).unwrap().count(),
            0,
            "{arg}: something was written"
        );
    }
}
