#!/usr/bin/env bash
# Builds cert-manager's controller and CA injector from the Go module
# github.com/cert-manager/cert-manager at a pinned version, and renders its
# CRDs, into one cache directory keyed by version (CERT_MANAGER_DIR in
# lib.sh):
#
#   cert-manager-controller   Issuers, Certificates, CertificateRequests
#   cert-manager-cainjector   fills caBundle from cert-manager.io/inject-ca-from
#   crds.yaml                 the six CRDs, for `kubectl apply -f`
#
# hack/cert-manager.sh runs them against hack/control-plane.sh's API server,
# so the chart's certificates.mode=cert-manager can be tested for real.
#
# The two mains are ours (hack/cert-manager/*/main.go): cert-manager's own
# live in the modules .../controller-binary and .../cainjector-binary, which
# the Go module proxy does not serve, and the full controller also needs
# github.com/Venafi/vcert/v5, which the proxy refuses ("This module version is
# not available"). Each main's comment says what it runs and leaves out.
#
# The CRDs: the module carries them as Helm templates of its chart
# (deploy/charts/cert-manager/templates/crd-*.yaml, each wrapped in
# `{{- if or .Values.crds.enabled .Values.installCRDs }}`, with templated
# labels). We render them with the project's helm exactly as cert-manager's
# release makes cert-manager.crds.yaml (make/manifests.mk: `helm template`
# with crds.enabled=true), after stamping the chart with the version as its
# release tooling does. (deploy/crds/*.yaml holds the same schemas, but its
# README says it is build input, not for installing.)
#
# Idempotent: a warm run only prints where things are. A cold run (empty Go
# module and build caches) took 4.5 minutes on 2 cores that other builds kept
# busy (load 4 to 5): 8 s resolving and downloading, 263 s compiling; the
# largest compile process peaked at 1.1 GB. With the Kubernetes build's cache
# warm it takes under 3 minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"

version="${PIN_CERT_MANAGER}"
out="${CERT_MANAGER_DIR}"
helm="${TEMPCREDS_CACHE}/bin/helm"
if [[ -f "${out}/.complete" ]]; then
  say "cert-manager ${version} already built: ${out}"
  exit 0
fi

need go
[[ -x "$helm" ]] || die "helm is not installed; run hack/install-kubectl-helm.sh"
build_dir="${TEMPCREDS_CACHE}/build/cert-manager-${version}"
rm -rf "$build_dir" && mkdir -p "$build_dir"
cp -r "${here}/cert-manager/controller" "${here}/cert-manager/cainjector" "$build_dir/"
cat > "${build_dir}/go.mod" <<GOMOD
module tempcreds.local/cert-manager-build

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')

require github.com/cert-manager/cert-manager ${version}
GOMOD

say "resolving github.com/cert-manager/cert-manager@${version} (go mod tidy)"
(cd "$build_dir" && go mod tidy)
mod_dir=$(cd "$build_dir" && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)

rm -rf "${out}.tmp" && mkdir -p "${out}.tmp"

say "rendering the CRDs from ${mod_dir#"$(go env GOMODCACHE)/"}/deploy/charts/cert-manager"
chart="${build_dir}/chart"
cp -r "${mod_dir}/deploy/charts/cert-manager" "$chart"
chmod -R u+w "$chart" # the module cache is read-only
# The chart in the module says v0.0.0; the release tooling sets the real
# version, which the CRDs carry in their app.kubernetes.io/version label.
sed -i -E "s/^(version|appVersion): v0\.0\.0\$/\1: ${version}/" "${chart}/Chart.yaml"
show=()
for f in "${chart}"/templates/crd-*.yaml; do show+=(--show-only "templates/${f##*/}"); done
"$helm" template cert-manager "$chart" --namespace cert-manager \
  --set crds.enabled=true "${show[@]}" > "${out}.tmp/crds.yaml"
n=$(grep -c '^kind: CustomResourceDefinition$' "${out}.tmp/crds.yaml" || true)
for crd in certificates issuers clusterissuers certificaterequests; do
  grep -q "^  name: \"${crd}.cert-manager.io\"\$" "${out}.tmp/crds.yaml" \
    || die "the rendered CRDs lack ${crd}.cert-manager.io"
done
say "rendered ${n} CRDs into crds.yaml"

say "building cert-manager-controller and cert-manager-cainjector ${version} with CGO_ENABLED=0 (about 4 minutes cold on 2 cores)"
start=$(date +%s)
# -p 2: two compile jobs at most (the machine's two cores; the largest job
# takes about 1 GB). AppVersion is what cert-manager's own build stamps; it
# appears in the logs and the User-Agent.
(cd "$build_dir" && CGO_ENABLED=0 go build -p 2 -trimpath \
   -ldflags="-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=${version}" \
   -o "${out}.tmp/" ./controller ./cainjector)
mv "${out}.tmp/controller" "${out}.tmp/cert-manager-controller"
mv "${out}.tmp/cainjector" "${out}.tmp/cert-manager-cainjector"
touch "${out}.tmp/.complete"
rm -rf "$out" && mv "${out}.tmp" "$out"
say "built cert-manager ${version} into ${out} in $(( $(date +%s) - start ))s"
