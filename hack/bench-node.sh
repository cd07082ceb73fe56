#!/usr/bin/env bash
# Figures of the real test node and of injected pods on it, written to
# bench/node-results.md (`make bench-node`; root, like the node):
#
#   - node start: `hack/node.sh start` to Ready, over three control planes;
#   - the images' sizes (`make images`);
#   - pod create -> app running with and without injection, pod deletion,
#     a Job's completion after its app exits, the sidecar's memory in the
#     running pod (tests/src/bin/node-bench.rs, BENCH_NODE_ROUNDS rounds,
#     default 10);
#   - the chart on the node: `helm install` to both webhook replicas Ready,
#     and pod-creation latency through the in-cluster webhook against no
#     webhook (hack/bench-chart.sh, BENCH_CHART_PODS pods, default 200).
#
# The cold build time of the node's binaries is the one hack/install-kube.sh
# prints when it builds them ("built ... in Ns").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"
root="$(dirname "${here}")"
out="${BENCH_NODE_OUT:-${root}/bench/node-results.md}"
rounds="${BENCH_NODE_ROUNDS:-10}"
[[ $(id -u) == 0 ]] || die "the node needs root"

work="$(mktemp -d "${TMPDIR:-/tmp}/tempcreds-bench-node.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"${here}/install-tools.sh"
say "building the images and node-bench"
"${here}/images.sh" 2>"${work}/images.err" | tee "${work}/images.txt"
(cd "$root" && cargo build --quiet --locked -p tempcreds-tests --bin node-bench)
target="${CARGO_TARGET_DIR:-${root}/target}"

starts=()
for i in 1 2 3; do
  "${here}/with-control-plane.sh" --node true 2>"${work}/start-${i}.txt"
  starts+=("$(sed -n 's/.*Ready in \([0-9.]*\)s.*/\1/p' "${work}/start-${i}.txt" | tail -n1)")
done
say "node start to Ready: ${starts[*]} s"

say "pods on the node (${rounds} rounds)"
TEMPCREDS_IMAGES_DIR="${target}/images" \
  "${here}/with-control-plane.sh" --node "${target}/debug/node-bench" "$rounds" > "${work}/pods.txt"

say "the chart on the node"
TEMPCREDS_IMAGES_DIR="${target}/images" \
  "${here}/with-control-plane.sh" --node "${here}/bench-chart.sh" > "${work}/chart.txt"

commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
  echo "# tempcreds on a real node"
  echo
  echo "Written by \`make bench-node\` (hack/bench-node.sh) on $(date -u +%Y-%m-%d) at commit ${commit}."
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "The node (containerd, kubelet, controllers), the API server, moto and the"
  echo "pods share these CPUs."
  echo
  echo "| what | result | goal | how |"
  echo "|---|---|---|---|"
  echo "| node start → Ready (containerd, kubelet, controller manager, scheduler; 3 runs) | ${starts[*]} s | | \`hack/node.sh start\` |"
  awk 'NR > 1 && $1 ~ /^tempcreds-/ && $2 ~ /:/ {printf "| image %s, uncompressed / archive | %s %s / %s %s | %s | `make images` |\n", $1, $3, $4, $5, $6, ($1 == "tempcreds-sidecar" ? "≤ 10 MiB" : "")}' "${work}/images.txt"
  cat "${work}/pods.txt"
  cat "${work}/chart.txt"
} > "$out"
cat "$out"
say "wrote ${out}"
