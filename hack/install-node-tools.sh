#!/usr/bin/env bash
# Installs what the test node (hack/node.sh) needs besides the Kubernetes
# binaries (hack/install-kube.sh):
#
#   - from apt, when missing: containerd, runc, the CNI plugins
#     (/usr/lib/cni: bridge, host-local, portmap), iptables and conntrack;
#   - the pause image tempcreds.local/test/pause:1, a tiny static Go program
#     (tests/apps/pause) written as an image archive with hack/build-image.py
#     and cached under TEMPCREDS_CACHE/test-images/, keyed by a hash of its
#     source and of this recipe.
#
#   hack/install-node-tools.sh                  install, quiet when done
#   hack/install-node-tools.sh --pause-archive  the same, then print the
#                                               pause image archive's path
#
# Idempotent; a warm run takes well under a second.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"

print_archive=0
case "${1:-}" in
  "") ;;
  --pause-archive) print_archive=1 ;;
  *) die "usage: $0 [--pause-archive]" ;;
esac

# Debian package → a file it installs, to tell whether it is there.
declare -A pkg_file=(
  [containerd]=/usr/bin/containerd
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [iptables]=/usr/sbin/iptables
  [conntrack]=/usr/sbin/conntrack
)
missing=()
for pkg in containerd runc containernetworking-plugins iptables conntrack; do
  [[ -e "${pkg_file[$pkg]}" ]] || missing+=("$pkg")
done
if (( ${#missing[@]} )) && [[ $(id -u) != 0 ]]; then
  # Only the node (hack/node.sh, root only) needs them.
  say "not installing ${missing[*]}: not root (the test node needs them, and root)"
elif (( ${#missing[@]} )); then
  need apt-get
  say "installing ${missing[*]} with apt-get"
  # Only refresh the package lists when apt cannot find a package.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
  for pkg in "${missing[@]}"; do
    [[ -e "${pkg_file[$pkg]}" ]] || die "${pkg} was installed but ${pkg_file[$pkg]} is missing"
  done
fi

# The pause image. Bump the recipe tag when the build below changes.
recipe=pause-r1
src="${here}/../tests/apps/pause"
src=$(cd "$src" && pwd)
key=$( { echo "$recipe"; (cd "$src" && sha256sum go.mod ./*.go); } | sha256sum | cut -c1-16)
images="${TEMPCREDS_CACHE}/test-images"
archive="${images}/pause-${key}.tar"
if [[ ! -f "$archive" ]]; then
  need go
  mkdir -p "$images"
  work=$(mktemp -d "${images}/.pause.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  say "building the pause image (tests/apps/pause) into ${archive}"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -buildid=" \
     -o "${work}/pause" .)
  "${here}/build-image.py" --name tempcreds.local/test/pause:1 --out "${work}/pause.tar" \
    --entrypoint '["/pause"]' --user 65535:65535 \
    --label org.opencontainers.image.source=tests/apps/pause \
    --file "${work}/pause:/pause:0755"
  mv "${work}/pause.tar" "$archive"
fi
if (( print_archive )); then
  echo "$archive"
fi
