#!/usr/bin/env bash
# Runs a command with the local control plane up: installs the tools if
# needed, starts etcd and kube-apiserver in a temporary directory, exports
# their environment (KUBECONFIG, TEMPCREDS_APISERVER_URL, ...), runs the
# command and stops the control plane whatever the command's outcome.
#
#   hack/with-control-plane.sh cargo test --workspace
#
# With a node (containerd, kubelet, kube-controller-manager, kube-scheduler:
# hack/node.sh; root only), so real pods run; TEMPCREDS_NODE_* and
# CONTAINERD_ADDRESS are exported too:
#
#   hack/with-control-plane.sh --node cargo test ...
#   TEMPCREDS_NODE=1 hack/with-control-plane.sh cargo test ...
#
# TEMPCREDS_NODE_IMAGES (colon-separated image archives) are imported into
# the node's containerd; TEMPCREDS_KEEP_CONTROL_PLANE_DIR=1 keeps the
# directory (logs, configs) afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"
with_node="${TEMPCREDS_NODE:-0}"
if [[ "${1:-}" == "--node" ]]; then with_node=1; shift; fi
[[ $# -gt 0 ]] || die "usage: $0 [--node] COMMAND [ARGS...]"

"${here}/install-tools.sh"
dir=$(mktemp -d "${TMPDIR:-/tmp}/tempcreds-cp.XXXXXX")
cleanup() {
  if [[ "$with_node" == "1" ]]; then "${here}/node.sh" stop "$dir" || true; fi
  # The command may have started cert-manager (hack/cert-manager.sh).
  if [[ -d "${dir}/cert-manager" ]]; then "${here}/cert-manager.sh" stop "$dir" || true; fi
  "${here}/control-plane.sh" stop "$dir" || true
  if [[ "${TEMPCREDS_KEEP_CONTROL_PLANE_DIR:-}" == "1" ]]; then
    say "kept ${dir}"
  elif grep -q " ${dir}/" /proc/self/mountinfo; then
    say "not removing ${dir}: something is still mounted under it"
  else
    rm -rf --one-file-system "$dir"
  fi
}
trap cleanup EXIT
if [[ "$with_node" == "1" ]]; then export TEMPCREDS_APISERVER_FOR_PODS=1; fi
"${here}/control-plane.sh" start "$dir"
if [[ "$with_node" == "1" ]]; then
  "${here}/node.sh" start "$dir"
fi
# shellcheck disable=SC1091
source "${dir}/env"
export TEMPCREDS_CACHE
"$@"
