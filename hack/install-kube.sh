#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests run from the Go module
# k8s.io/kubernetes at a pinned version, in one `go build` so they share the
# compiled packages, and caches them outside the repository, by version:
#
#   kube-apiserver            the control plane (hack/control-plane.sh)
#   kubelet                   the node (hack/node.sh)
#   kube-controller-manager   Jobs, ServiceAccounts, the root CA ConfigMap
#   kube-scheduler            binds pods to the node
#   kube-proxy                Service IPs on the node
#
# k8s.io/kubernetes is not meant to be used as a dependency: its go.mod points
# every k8s.io/* staging module at ./staging/src/..., which the module zip does
# not contain. So we read that go.mod from the module cache and replace each of
# those modules with its published v0.X.Y tag, then build the cmd/ packages.
#
# Idempotent: if the binaries for this version exist, it only prints where.
# A cold build takes 5 minutes on 2 idle cores (283 s measured), about 10 while
# other builds run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version="${PIN_KUBE}"
out="${KUBE_BIN_DIR}"
cmds=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy)
if [[ -f "${out}/.complete" ]]; then
  say "Kubernetes ${version} binaries already built: ${out}"
  exit 0
fi

need go
staging_version="v0.${version#v1.}"
build_dir="${TEMPCREDS_CACHE}/build/kube-${version}"
mkdir -p "$build_dir"

say "downloading k8s.io/kubernetes@${version} into the Go module cache"
mod_dir=$(cd "$build_dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${version}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')

say "writing a build module with replaces for every staging module (=> ${staging_version})"
{
  echo "module tempcreds.local/kube-build"
  echo
  echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
  echo
  echo "require k8s.io/kubernetes ${version}"
  echo
  # Every line of the form `k8s.io/foo => ./staging/src/k8s.io/foo`.
  grep -E '^\s*k8s\.io/[^ ]+ => \./staging/src/' "${mod_dir}/go.mod" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} > "${build_dir}/go.mod"
{
  echo '//go:build tools'
  echo
  echo 'package tools'
  echo
  for c in "${cmds[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/${c}\""; done
} > "${build_dir}/tools.go"

say "resolving dependencies (go mod tidy)"
(cd "$build_dir" && go mod tidy)

say "building ${cmds[*]} ${version} with CGO_ENABLED=0 (5 to 10 minutes cold on 2 cores)"
start=$(date +%s)
# Stamp the version the way Kubernetes' own build does (hack/lib/version.sh):
# clients such as helm check the server's version against charts' kubeVersion,
# and the kubelet reports it as the node's version.
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done
rm -rf "${out}.tmp" && mkdir -p "${out}.tmp"
pkgs=()
for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
(cd "$build_dir" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" \
   -o "${out}.tmp/" "${pkgs[@]}")
touch "${out}.tmp/.complete"
rm -rf "$out" && mv "${out}.tmp" "$out"
say "built ${cmds[*]} into ${out} in $(( $(date +%s) - start ))s"
