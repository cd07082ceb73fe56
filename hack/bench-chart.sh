#!/usr/bin/env bash
# The chart on the real node, as an operator installs it; run by
# hack/bench-node.sh inside `hack/with-control-plane.sh --node` (it needs
# the node's environment). Prints markdown table rows:
#
#   - `helm install --wait` → both webhook replicas Ready (3 installs, each
#     uninstalled after);
#   - pod-creation latency through the in-cluster webhook (its Service,
#     kube-proxy, two replicas): hack/bench-pods.py over BENCH_CHART_PODS
#     pods (default 200) per series, against a namespace without webhook.
#
# The pods never run (the node's taint is not tolerated): what is measured
# is the API server's create, with and without the webhook's call.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"
root="$(dirname "${here}")"
pods="${BENCH_CHART_PODS:-200}"
images="${TEMPCREDS_IMAGES_DIR:-${root}/target/images}"
helm_bin="${TEMPCREDS_CACHE}/bin/helm"
kubectl_bin="${TEMPCREDS_CACHE}/bin/kubectl"
[[ -n "${TEMPCREDS_NODE_NAME:-}" ]] || die "run inside hack/with-control-plane.sh --node"
[[ "${TEMPCREDS_NODE_SERVICES:-0}" == 1 ]] || die "the node has no Service routing (kube-proxy)"

export HELM_CACHE_HOME="${TMPDIR:-/tmp}/tempcreds-helm-home/cache"
export HELM_CONFIG_HOME="${TMPDIR:-/tmp}/tempcreds-helm-home/config"
export HELM_DATA_HOME="${TMPDIR:-/tmp}/tempcreds-helm-home/data"

for image in tempcreds-webhook tempcreds-sidecar; do
  ctr images import "${images}/${image}.tar" >/dev/null
done

install() { # RELEASE
  "$helm_bin" install "$1" "${root}/charts/tempcreds" --namespace "$1" --create-namespace \
    --wait --timeout 180s \
    --set image.pullPolicy=Never --set sidecar.image.pullPolicy=Never \
    --set defaults.region=us-east-1 \
    --set-json 'tolerations=[{"key":"tempcreds.io/test-node","operator":"Exists","effect":"NoSchedule"}]' \
    --set-json "webhook.namespaceSelector.matchLabels={\"tempcreds-bench/release\":\"$1\",\"tempcreds.io/injection\":null}" \
    >/dev/null
}

times=()
for i in 1 2 3; do
  t0=${EPOCHREALTIME}
  install "bench-tempcreds-${i}"
  times+=("$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "${EPOCHREALTIME}")")
  "$helm_bin" uninstall "bench-tempcreds-${i}" --namespace "bench-tempcreds-${i}" --wait >/dev/null
done
say "helm install → webhook Ready: ${times[*]} s"
echo "| \`helm install --wait\` → 2 webhook replicas Ready (3 installs) | ${times[*]} s | | hack/bench-chart.sh |"

install bench-tempcreds
"$kubectl_bin" create namespace bench-with >/dev/null
"$kubectl_bin" label namespace bench-with tempcreds-bench/release=bench-tempcreds >/dev/null
"$kubectl_bin" create namespace bench-without >/dev/null
# helm's --wait ends when the pods are Ready; kube-proxy routes their Service
# a moment later. Wait until an opted-in pod is injected (dry run).
probe='{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"probe-","annotations":{"tempcreds.io/role-arn":"arn:aws:iam::123456789012:role/bench"}},"spec":{"containers":[{"name":"app","image":"example.com/app:1"}]}}'
for _ in $(seq 1 300); do
  "$kubectl_bin" -n bench-with create --dry-run=server -f - -o name <<< "$probe" >/dev/null 2>&1 && break
  sleep 0.2
done
result=$(python3 "${here}/bench-pods.py" "$KUBECONFIG" bench-with bench-without "$pods" | tee /dev/stderr | grep '^RESULT')
field() { sed -nE "s/.* $1=([0-9.-]+).*/\1/p" <<< "$result"; }
echo "| pod creation through the in-cluster webhook (Service, kube-proxy, 2 replicas), ${pods} opted-in pods | median $(field with_p50_ms) ms, p99 $(field with_p99_ms) ms | | hack/bench-pods.py |"
echo "| pod creation, no webhook, ${pods} pods | median $(field without_p50_ms) ms, p99 $(field without_p99_ms) ms | | hack/bench-pods.py |"
echo "| added by the in-cluster webhook | median $(field added_p50_ms) ms, p99 $(field added_p99_ms) ms (the call alone, pods not opted in: median $(field call_p50_ms) ms) | | |"
