#!/usr/bin/env python3
"""Writes a container image from files, reproducibly, without a container engine.

  hack/build-image.py --name REF --out FILE.tar \\
     [--entrypoint JSON-ARRAY] [--cmd JSON-ARRAY] [--user 65532:65532] \\
     [--env K=V]... [--workdir DIR] [--label K=V]... \\
     [--file SRC:DEST[:MODE[:UID:GID]]]... [--dir DEST[:MODE[:UID:GID]]]... \\
     [--symlink DEST:TARGET]... [--with-libs]

REF is a full reference with a tag (ghcr.io/tempcreds/tempcreds-sidecar:0.1.0).
The image has one gzip layer holding exactly the given entries and their
parent directories (0755, root). MODE is octal; a --file without one gets
0755 when its source is executable, else 0644; UID:GID default to 0:0.
--with-libs adds, for every --file that is a dynamically linked ELF, the
shared libraries `ldd` lists, copied as real files to the paths ldd prints
(mode 0644; the dynamic loader named in the ELF's PT_INTERP gets 0755).

FILE.tar is both an OCI image layout (oci-layout, index.json, blobs/sha256/)
and a Docker archive (manifest.json), the pair `docker save` writes since
Docker 25, so `ctr images import`, `docker load`, `skopeo copy
oci-archive:FILE.tar:TAG ...` / `docker-archive:FILE.tar` and `crane push`
all read it. Same inputs give a byte-identical archive: entries sorted,
timestamps from SOURCE_DATE_EPOCH (default 0), no user or group names,
gzip without name or time, JSON with sorted keys.

Prints one summary line to stderr (reference, manifest digest, layer and
archive sizes); hack/images.sh parses its key=value fields.

Standard library only.
"""
import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

PROG = "build-image.py"
BUFSIZE = 1 << 20

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class UsageError(Exception):
    """A bad argument or input file; printed without a traceback, exit 2."""


# ---------------------------------------------------------------- arguments


def parse_mode(text, what):
    value = text[2:] if text.lower().startswith("0o") else text
    if not re.fullmatch(r"[0-7]{1,4}", value):
        raise UsageError(f"{what}: bad mode {text!r}: expected octal such as 0755, 0644 or 1777")
    return int(value, 8)


def parse_id(text, what):
    if not re.fullmatch(r"[0-9]{1,7}", text):
        raise UsageError(f"{what}: bad uid/gid {text!r}: expected a number")
    return int(text)


def parse_dest(text, what):
    if not text.startswith("/"):
        raise UsageError(f"{what}: DEST {text!r} is not absolute (it must start with /)")
    parts = [p for p in text.split("/") if p]
    if not parts:
        raise UsageError(f"{what}: DEST {text!r} names the root directory")
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"{what}: DEST {text!r} contains . or .. components")
    return "/".join(parts)  # relative, as layer tars store it


def parse_tail(fields, what):
    """[MODE[:UID:GID]] -> (mode or None, uid, gid)."""
    if len(fields) == 0:
        return None, 0, 0
    if len(fields) == 1:
        return parse_mode(fields[0], what), 0, 0
    if len(fields) == 3:
        return parse_mode(fields[0], what), parse_id(fields[1], what), parse_id(fields[2], what)
    raise UsageError(f"{what}: expected [:MODE[:UID:GID]] after DEST, got {':'.join(fields)!r}")


def parse_kv(text, what):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"{what}: expected KEY=VALUE, got {text!r}")
    return key, value


def parse_json_array(text, what):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what}: not JSON ({e}): {text!r}; expected e.g. '[\"/usr/local/bin/app\"]'")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{what}: expected a JSON array of strings, got {text!r}")
    return value


def parse_ref(ref):
    """Returns the tag of a name:tag reference."""
    name, sep, tag = ref.rpartition(":")
    if "@" in ref or not sep or "/" in tag or not name:
        raise UsageError(f"--name: {ref!r} has no tag; expected e.g. ghcr.io/tempcreds/tempcreds-sidecar:0.1.0")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise UsageError(f"--name: bad tag {tag!r} in {ref!r}")
    if not re.fullmatch(r"[a-z0-9]+([._-]+[a-z0-9]+|:[0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*", name):
        raise UsageError(f"--name: bad repository {name!r} in {ref!r} (lower case, digits, . _ - and /)")
    return tag


def source_date_epoch():
    text = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not re.fullmatch(r"[0-9]{1,11}", text):
        raise UsageError(f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds")
    return int(text)


# ---------------------------------------------------------------- the tree


class Tree:
    """The layer's entries, keyed by relative path (no leading /)."""

    def __init__(self):
        self.entries = {}

    def add(self, path, entry, what):
        old = self.entries.get(path)
        if old is not None and old != entry:
            raise UsageError(f"{what}: /{path} is given twice, differently: {describe(old)} and {describe(entry)}")
        self.entries[path] = entry

    def complete(self):
        """Adds missing parent directories; checks no entry sits under a non-directory."""
        for path in list(self.entries):
            parts = path.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                entry = self.entries.setdefault(parent, {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0})
                if entry["type"] != "dir":
                    raise UsageError(f"/{path} is inside /{parent}, which is a {entry['type']}, not a directory")

    def sorted(self):
        return sorted(self.entries.items(), key=lambda kv: kv[0].split("/"))


def describe(entry):
    if entry["type"] == "file":
        return f"file from {entry['src']} mode {entry['mode']:04o}"
    if entry["type"] == "symlink":
        return f"symlink to {entry['target']}"
    return f"directory mode {entry['mode']:04o}"


def add_file(tree, spec):
    what = f"--file {spec}"
    fields = spec.split(":")
    if len(fields) < 2:
        raise UsageError(f"{what}: expected SRC:DEST[:MODE[:UID:GID]]")
    src, dest = fields[0], parse_dest(fields[1], what)
    if not src:
        raise UsageError(f"{what}: SRC is empty")
    if not os.path.exists(src):
        raise UsageError(f"{what}: source file {src} does not exist")
    if not os.path.isfile(src):
        raise UsageError(f"{what}: source {src} is not a regular file")
    if not os.access(src, os.R_OK):
        raise UsageError(f"{what}: source file {src} is not readable")
    mode, uid, gid = parse_tail(fields[2:], what)
    if mode is None:
        mode = 0o755 if os.stat(src).st_mode & 0o100 else 0o644
    tree.add(dest, {"type": "file", "src": os.path.realpath(src), "mode": mode, "uid": uid, "gid": gid}, what)
    return src


def add_dir(tree, spec):
    what = f"--dir {spec}"
    fields = spec.split(":")
    dest = parse_dest(fields[0], what)
    mode, uid, gid = parse_tail(fields[1:], what)
    tree.add(dest, {"type": "dir", "mode": 0o755 if mode is None else mode, "uid": uid, "gid": gid}, what)


def add_symlink(tree, spec):
    what = f"--symlink {spec}"
    dest, sep, target = spec.partition(":")
    if not sep or not target:
        raise UsageError(f"{what}: expected DEST:TARGET")
    tree.add(parse_dest(dest, what), {"type": "symlink", "target": target, "mode": 0o777, "uid": 0, "gid": 0}, what)


# ---------------------------------------------------------------- ELF and ldd


def elf_interp_and_dynamic(path):
    """(PT_INTERP path or None, has PT_DYNAMIC) for an ELF file; (None, False) otherwise."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            return None, False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        if is64:
            f.seek(32)
            (phoff,) = struct.unpack(endian + "Q", f.read(8))
            f.seek(54)
        else:
            f.seek(28)
            (phoff,) = struct.unpack(endian + "I", f.read(4))
            f.seek(42)
        phentsize, phnum = struct.unpack(endian + "HH", f.read(4))
        interp, dynamic = None, False
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            header = f.read(phentsize)
            (p_type,) = struct.unpack(endian + "I", header[:4])
            if p_type == 2:  # PT_DYNAMIC
                dynamic = True
            elif p_type == 3:  # PT_INTERP
                if is64:
                    offset, _, _, filesz = struct.unpack(endian + "QQQQ", header[8:40])
                else:
                    offset, _, _, filesz = struct.unpack(endian + "IIII", header[4:20])
                f.seek(offset)
                interp = f.read(filesz).rstrip(b"\0").decode()
        return interp, dynamic


def shared_libraries(src):
    """[(path, is_loader)] the dynamic ELF `src` loads, from ldd; [] for a static file."""
    interp, dynamic = elf_interp_and_dynamic(src)
    if interp is None and not dynamic:
        return []
    if shutil.which("ldd") is None:
        raise UsageError(f"--with-libs: {src} is dynamically linked but ldd is not on PATH")
    out = subprocess.run(["ldd", src], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    text = out.stdout + out.stderr
    if "statically linked" in text or "not a dynamic executable" in text:
        return []
    if out.returncode != 0:
        raise UsageError(f"--with-libs: ldd {src} failed: {text.strip()}")
    libs, missing = [], []
    for line in out.stdout.splitlines():
        line = line.strip()
        m = re.fullmatch(r"(\S+) => not found", line)
        if m:
            missing.append(m.group(1))
            continue
        m = re.fullmatch(r"(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)", line)
        if m:
            libs.append((m.group(1), m.group(1) == interp))
    if missing:
        raise UsageError(f"--with-libs: {src} needs {', '.join(missing)}, which ldd cannot find on this machine")
    if interp is not None and not any(loader for _, loader in libs):
        libs.append((interp, True))
    return libs


def add_libraries(tree, sources):
    for src in sources:
        for path, is_loader in shared_libraries(src):
            what = f"--with-libs (needed by {src})"
            entry = {"type": "file", "src": os.path.realpath(path), "mode": 0o755 if is_loader else 0o644, "uid": 0, "gid": 0}
            dest = parse_dest(path, what)
            old = tree.entries.get(dest)
            if old is not None and old["type"] == "file" and old["src"] == entry["src"]:
                continue  # given explicitly with --file; keep that mode
            tree.add(dest, entry, what)


# ---------------------------------------------------------------- writing


class HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, sink):
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self):
        self.sink.flush()

    def digest(self):
        return "sha256:" + self.sha.hexdigest()


def tar_info(name, entry, mtime):
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.mode = entry["mode"]
    info.uid, info.gid = entry["uid"], entry["gid"]
    info.uname = info.gname = ""
    if entry["type"] == "dir":
        info.type = tarfile.DIRTYPE
    elif entry["type"] == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry["target"]
    else:
        info.type = tarfile.REGTYPE
        info.size = os.path.getsize(entry["src"])
    return info


def write_layer(tree, mtime, sink):
    """Writes the gzip layer to `sink`; returns (diff_id, uncompressed size, digest, size)."""
    compressed = HashingWriter(sink)
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=compressed, mtime=0) as gz:
        raw = HashingWriter(gz)
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, entry in tree.sorted():
                info = tar_info(path, entry, mtime)
                if entry["type"] == "file":
                    with open(entry["src"], "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return raw.digest(), raw.size, compressed.digest(), compressed.size


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def add_bytes(tar, name, data, mtime):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def build(args):
    tag = parse_ref(args.name)
    mtime = source_date_epoch()
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    container = {}
    if args.user:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", args.user):
            raise UsageError(f"--user: bad user {args.user!r}; expected UID[:GID] such as 65532:65532")
        container["User"] = args.user
    if args.env:
        container["Env"] = [f"{k}={v}" for k, v in (parse_kv(e, f"--env {e}") for e in args.env)]
    if args.entrypoint is not None:
        container["Entrypoint"] = parse_json_array(args.entrypoint, "--entrypoint")
    if args.cmd is not None:
        container["Cmd"] = parse_json_array(args.cmd, "--cmd")
    if args.workdir:
        container["WorkingDir"] = "/" + parse_dest(args.workdir, "--workdir")
    if args.label:
        container["Labels"] = dict(parse_kv(label, f"--label {label}") for label in args.label)

    tree = Tree()
    sources = [add_file(tree, spec) for spec in args.file]
    for spec in args.dir:
        add_dir(tree, spec)
    for spec in args.symlink:
        add_symlink(tree, spec)
    if args.with_libs:
        add_libraries(tree, sources)
    tree.complete()
    if not tree.entries:
        raise UsageError("the image would be empty: give at least one --file, --dir or --symlink")

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out: directory {out_dir} does not exist")

    with tempfile.TemporaryFile(dir=out_dir) as layer_file:
        diff_id, layer_raw_size, layer_digest, layer_size = write_layer(tree, mtime, layer_file)

        config = canonical_json({
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": container,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": f"hack/{PROG} ({len(tree.entries)} entries)"}],
        })
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = canonical_json({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer_size}],
        })
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = canonical_json({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [{
                "mediaType": MT_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        })
        blob = lambda digest: "blobs/sha256/" + digest.split(":", 1)[1]
        docker_manifest = canonical_json([{
            "Config": blob(config_digest),
            "RepoTags": [args.name],
            "Layers": [blob(layer_digest)],
        }])

        members = {
            blob(config_digest): config,
            blob(manifest_digest): manifest,
            blob(layer_digest): layer_file,
            "index.json": index,
            "manifest.json": docker_manifest,
            "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        }
        fd, tmp_out = tempfile.mkstemp(dir=out_dir, prefix=".build-image-", suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in ("blobs", "blobs/sha256"):
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    info.uname = info.gname = ""
                    tar.addfile(info)
                for name in sorted(members):
                    data = members[name]
                    if isinstance(data, bytes):
                        add_bytes(tar, name, data, mtime)
                    else:
                        info = tarfile.TarInfo(name)
                        info.size, info.mtime, info.mode = layer_size, mtime, 0o644
                        info.uname = info.gname = ""
                        data.seek(0)
                        tar.addfile(info, data)
            os.chmod(tmp_out, 0o644)
            os.replace(tmp_out, args.out)
        except BaseException:
            os.unlink(tmp_out)
            raise

    archive_size = os.path.getsize(args.out)
    print(
        f"{PROG}: {args.out}: ref={args.name} digest={manifest_digest} "
        f"layer_bytes={layer_raw_size} layer_gzip_bytes={layer_size} archive_bytes={archive_size} "
        f"entries={len(tree.entries)}",
        file=sys.stderr,
    )


def main(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n", 1)[0])
    p.add_argument("--name", required=True, help="full reference with a tag, e.g. ghcr.io/o/img:1.0")
    p.add_argument("--out", required=True, help="the archive to write")
    p.add_argument("--entrypoint", help="JSON array")
    p.add_argument("--cmd", help="JSON array")
    p.add_argument("--user", help="e.g. 65532:65532")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--workdir", metavar="DIR")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--file", action="append", default=[], metavar="SRC:DEST[:MODE[:UID:GID]]")
    p.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE[:UID:GID]]")
    p.add_argument("--symlink", action="append", default=[], metavar="DEST:TARGET")
    p.add_argument("--with-libs", action="store_true", help="add the shared libraries of dynamic ELF --files")
    args = p.parse_args(argv)
    try:
        build(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
