#!/usr/bin/env bash
# Builds the two release container images from files, without a container
# engine (`make images`):
#
#   target/images/tempcreds-sidecar.tar   ghcr.io/tempcreds/tempcreds-sidecar:VERSION
#   target/images/tempcreds-webhook.tar   ghcr.io/tempcreds/tempcreds-webhook:VERSION
#
# VERSION is the workspace version in Cargo.toml, which must equal the
# chart's appVersion (the chart pulls that tag). Each archive is an OCI image
# layout and a Docker archive at once (see hack/build-image.py):
#
#   ctr -n k8s.io images import target/images/tempcreds-sidecar.tar
#   skopeo copy oci-archive:target/images/tempcreds-sidecar.tar:VERSION docker://...
#   crane push target/images/tempcreds-sidecar.tar ghcr.io/tempcreds/tempcreds-sidecar:VERSION
#
# The content is what crates/*/Dockerfile builds on distroless cc: the
# glibc-linked binary at /usr/local/bin, the glibc libraries ldd lists for
# it, CA certificates, /etc/passwd and /etc/group with root and nonroot
# (65532), /etc/nsswitch.conf, the LICENSE, /tmp and /home/nonroot. No
# shell, no package manager. Same commit and same host packages give the
# same image digest (SOURCE_DATE_EPOCH defaults to 0).
#
#   IMAGES_PROFILE  cargo profile to build and take the binaries from
#                   (default release; `dev` for a quick build in tests)
#   IMAGES_OUT      output directory (default target/images)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "${root}/hack/lib.sh"
need python3
need ldd

profile="${IMAGES_PROFILE:-release}"
out="${IMAGES_OUT:-${root}/target/images}"
# The release sidecar is built for size (Cargo.toml's release-sidecar).
declare -A profiles=([tempcreds-webhook]="$profile" [tempcreds-sidecar]="$profile")
if [[ "$profile" == release ]]; then profiles[tempcreds-sidecar]=release-sidecar; fi
profile_dir() { if [[ "$1" == dev ]]; then echo debug; else echo "$1"; fi; }
ca_bundle=/etc/ssl/certs/ca-certificates.crt

if [[ ! -s "$ca_bundle" ]]; then
  say "installing Debian's ca-certificates for ${ca_bundle}"
  need apt-get
  { apt-get install -y --no-install-recommends ca-certificates \
      || { apt-get update && apt-get install -y --no-install-recommends ca-certificates; }; } >&2 \
    || die "could not install ca-certificates; install it (apt-get install ca-certificates) and retry"
  [[ -s "$ca_bundle" ]] || die "${ca_bundle} is still missing after installing ca-certificates"
fi

for name in tempcreds-webhook tempcreds-sidecar; do
  say "building ${name} (cargo profile ${profiles[$name]})"
  "${CARGO:-cargo}" build --profile "${profiles[$name]}" --locked \
    -p "$name" --bins --manifest-path "${root}/Cargo.toml"
done

# name version repository description, one line per binary crate.
metadata="$("${CARGO:-cargo}" metadata --no-deps --format-version 1 --manifest-path "${root}/Cargo.toml" \
  | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] in ("tempcreds-sidecar", "tempcreds-webhook"):
        print(p["name"], p["version"], p["repository"] or "", " ".join((p["description"] or "").split()), sep="\t")
')"
target_dir="$("${CARGO:-cargo}" metadata --no-deps --format-version 1 --manifest-path "${root}/Cargo.toml" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "${root}/charts/tempcreds/Chart.yaml")"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
write_users "$staging"
cat >"${staging}/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF

mkdir -p "$out"
summaries=()
while IFS=$'\t' read -r name version repository description; do
  [[ "$version" == "$app_version" ]] \
    || die "${name} version ${version} (Cargo.toml) differs from appVersion ${app_version} in charts/tempcreds/Chart.yaml: the chart would pull an image this does not build"
  binary="${target_dir}/$(profile_dir "${profiles[$name]}")/${name}"
  [[ -x "$binary" ]] || die "${binary} was not built"
  ref="ghcr.io/tempcreds/${name}:${version}"
  log="${staging}/${name}.log"
  python3 "${root}/hack/build-image.py" --name "$ref" --out "${out}/${name}.tar" \
    --entrypoint "[\"/usr/local/bin/${name}\"]" \
    --user 65532:65532 \
    --env PATH=/usr/local/bin \
    --env "SSL_CERT_FILE=${ca_bundle}" \
    --label "org.opencontainers.image.source=${repository}" \
    --label "org.opencontainers.image.version=${version}" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "org.opencontainers.image.title=${name}" \
    --label "org.opencontainers.image.description=${description}" \
    --label "org.opencontainers.image.revision=${revision}" \
    --file "${binary}:/usr/local/bin/${name}:0755" \
    --with-libs \
    --file "${staging}/passwd:/etc/passwd:0644" \
    --file "${staging}/group:/etc/group:0644" \
    --file "${staging}/nsswitch.conf:/etc/nsswitch.conf:0644" \
    --file "${ca_bundle}:${ca_bundle}:0644" \
    --file "${root}/LICENSE:/usr/share/doc/tempcreds/LICENSE:0644" \
    --dir /tmp:1777 \
    --dir /home/nonroot:0700:65532:65532 \
    2>"$log" || { cat "$log" >&2; die "building ${ref} failed"; }
  cat "$log" >&2
  summaries+=("${name}	$(tail -n 1 "$log")")
done <<<"$metadata"

# The table: image, reference, uncompressed size, archive size, digest.
printf '%s\n' "${summaries[@]}" | python3 -c '
import re, sys
rows = []
for line in sys.stdin:
    name, summary = line.rstrip("\n").split("\t", 1)
    f = dict(re.findall(r"(\w+)=(\S+)", summary))
    rows.append((name, f["ref"], int(f["layer_bytes"]), int(f["archive_bytes"]), f["digest"]))
mib = lambda n: f"{n / 2**20:.1f} MiB"
table = [("image", "reference", "uncompressed", "archive", "digest")]
table += [(n, r, mib(u), mib(a), d) for n, r, u, a, d in rows]
widths = [max(len(row[i]) for row in table) for i in range(5)]
for row in table:
    print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
for n, r, u, a, d in rows:
    if n == "tempcreds-sidecar":
        verdict = "within" if u <= 10 * 2**20 else "OVER"
        print(f"\n{n}: {mib(u)} uncompressed, {verdict} the 10 MiB goal")
'
say "archives in ${out}"
