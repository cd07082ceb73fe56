#!/usr/bin/env bash
# Renders manifests/tempcreds.yaml, the plain-YAML install, from the Helm
# chart with its default values (release "tempcreds" in namespace
# "tempcreds"). A test fails when the committed file drifts from the chart:
# run this after changing the chart.
#
#   hack/render-manifests.sh            rewrite manifests/tempcreds.yaml
#   hack/render-manifests.sh --stdout   print it instead
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "${root}/hack/lib.sh"
helm="${TEMPCREDS_CACHE}/bin/helm"
[[ -x "$helm" ]] || "${root}/hack/install-kubectl-helm.sh"

render() {
  cat <<'HEADER'
# tempcreds — plain YAML install, rendered from charts/tempcreds with default
# values by hack/render-manifests.sh. Do not edit: change the chart instead.
#
#   kubectl apply -f manifests/tempcreds.yaml
#   kubectl label namespace my-app tempcreds.io/injection=enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: tempcreds
  labels:
    app.kubernetes.io/name: tempcreds
HEADER
  "$helm" template tempcreds "${root}/charts/tempcreds" --namespace tempcreds
}

if [[ "${1:-}" == "--stdout" ]]; then
  render
else
  mkdir -p "${root}/manifests"
  render > "${root}/manifests/tempcreds.yaml"
  say "wrote manifests/tempcreds.yaml"
fi
