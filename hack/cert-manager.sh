#!/usr/bin/env bash
# Starts and stops cert-manager (controller and CA injector, built by
# hack/install-cert-manager.sh) as host processes against the control plane
# of hack/control-plane.sh, so the chart's certificates.mode=cert-manager can
# be tested for real: selfSigned and CA Issuers issue Certificates into
# Secrets, and the CA injector fills the caBundle of webhook configurations
# annotated cert-manager.io/inject-ca-from.
#
#   hack/cert-manager.sh start DIR   apply the CRDs, start both, wait until ready
#   hack/cert-manager.sh stop DIR    stop both and wait for them (safe to repeat)
#
# DIR is the control plane's directory (DIR/env, DIR/kubeconfig, DIR/pki).
# Logs, pids, client certificates and kubeconfigs go to DIR/cert-manager/.
#
# Each component connects as its own client certificate, signed by the
# control plane's CA, in system:masters: cert-manager's RBAC lives in its Helm
# chart and binds ServiceAccounts; the harness tests tempcreds, not that RBAC,
# and distinct users keep the two apart in the API server's logs.
#
# ClusterIssuers keep their Secrets in the namespace cert-manager (created
# here), as in an install of the chart into that namespace. There is no leader
# election (one replica) and no ACME code at all (see
# hack/cert-manager/controller/main.go), so nothing reaches for the network.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

cmd="${1:-}"
dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || die "usage: $0 start|stop DIR"
[[ -d "$dir" ]] || die "${dir} is not a directory (expected the control plane's directory)"
dir=$(cd "$dir" && pwd)
cm="${dir}/cert-manager"
kubectl_bin="${TEMPCREDS_CACHE}/bin/kubectl"
components=(cainjector controller)
# ClusterIssuers' Secrets live here (--cluster-resource-namespace).
CERT_MANAGER_NAMESPACE=cert-manager

kc() { KUBECONFIG="${dir}/kubeconfig" "$kubectl_bin" "$@"; }

stop() {
  local name pidfile pid
  for name in "${components[@]}"; do
    pidfile="${cm}/${name}.pid"
    [[ -f "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping cert-manager ${name} (pid ${pid})"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  done
}

# client_cert NAME: DIR/cert-manager/NAME.kubeconfig for a client
# certificate of user cert-manager-NAME in system:masters (lib.sh).
client_cert() {
  write_client_kubeconfig "$dir" "$cm" "$1" "/O=system:masters/CN=cert-manager-$1"
}

# wait_ready NAME PORT: until NAME's /readyz answers 200, or it exits.
wait_ready() {
  local name=$1 port=$2 start_s=$SECONDS
  until curl -fsS --max-time 2 "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "${cm}/${name}.pid")" 2>/dev/null; then
      tail -n 30 "${cm}/${name}.log" >&2
      die "cert-manager ${name} exited; log: ${cm}/${name}.log"
    fi
    if (( SECONDS - start_s > 60 )); then
      tail -n 30 "${cm}/${name}.log" >&2
      die "cert-manager ${name} not ready after 60s; log: ${cm}/${name}.log"
    fi
    sleep 0.2
  done
}

start() {
  [[ -f "${dir}/env" && -f "${dir}/pki/ca.key" ]] \
    || die "no control plane in ${dir}; start one with hack/control-plane.sh start ${dir}"
  [[ -x "$CERT_MANAGER_CONTROLLER_BIN" && -x "$CERT_MANAGER_CAINJECTOR_BIN" && -f "$CERT_MANAGER_CRDS" ]] \
    || die "cert-manager ${PIN_CERT_MANAGER} is not built; run hack/install-tools.sh"
  [[ -x "$kubectl_bin" ]] || die "kubectl is not installed; run hack/install-tools.sh"
  # shellcheck disable=SC1091
  source "${dir}/env"
  stop
  mkdir -p "$cm"
  local start_s=$SECONDS

  say "applying cert-manager ${PIN_CERT_MANAGER}'s CRDs"
  kc apply -f "$CERT_MANAGER_CRDS" >"${cm}/crds-apply.log"
  kc wait --for=condition=Established --timeout=60s -f "$CERT_MANAGER_CRDS" >/dev/null
  kc create namespace "$CERT_MANAGER_NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null

  client_cert controller
  client_cert cainjector
  local controller_port cainjector_port
  controller_port=$(free_port); cainjector_port=$(free_port)

  # Whatever stops start from finishing stops what it started.
  trap stop EXIT
  say "starting cert-manager controller and cainjector ${PIN_CERT_MANAGER} (probes on 127.0.0.1:${controller_port}, :${cainjector_port})"
  "$CERT_MANAGER_CONTROLLER_BIN" \
    --kubeconfig "${cm}/controller.kubeconfig" \
    --cluster-resource-namespace "$CERT_MANAGER_NAMESPACE" \
    --health-address "127.0.0.1:${controller_port}" \
    --v=2 >>"${cm}/controller.log" 2>&1 &
  echo $! > "${cm}/controller.pid"
  "$CERT_MANAGER_CAINJECTOR_BIN" \
    --kubeconfig "${cm}/cainjector.kubeconfig" \
    --health-address "127.0.0.1:${cainjector_port}" \
    --v=2 >>"${cm}/cainjector.log" 2>&1 &
  echo $! > "${cm}/cainjector.pid"

  wait_ready controller "$controller_port"
  wait_ready cainjector "$cainjector_port"
  trap - EXIT
  say "cert-manager ready in $(( SECONDS - start_s ))s (logs in ${cm})"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop DIR" ;;
esac
