#!/usr/bin/env bash
# Runs a command with the local control plane up: installs the tools if
# needed, starts etcd and kube-apiserver in a temporary directory, exports
# their environment (KUBECONFIG, TEMPCREDS_APISERVER_URL, ...), runs the
# command and stops the control plane whatever the command's outcome.
#
#   hack/with-control-plane.sh cargo test --workspace
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"
[[ $# -gt 0 ]] || die "usage: $0 COMMAND [ARGS...]"

"${here}/install-tools.sh"
dir=$(mktemp -d "${TMPDIR:-/tmp}/tempcreds-cp.XXXXXX")
cleanup() {
  "${here}/control-plane.sh" stop "$dir" || true
  if [[ "${TEMPCREDS_KEEP_CONTROL_PLANE_DIR:-}" != "1" ]]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
"${here}/control-plane.sh" start "$dir"
# shellcheck disable=SC1091
source "${dir}/env"
export TEMPCREDS_CACHE
"$@"
