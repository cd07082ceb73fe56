#!/usr/bin/env bash
# Starts and stops a local Kubernetes control plane for tests and the demo,
# the way controller-runtime's envtest does: etcd on loopback and
# kube-apiserver with generated certificates, no kubelet, no controllers.
#
#   hack/control-plane.sh start DIR   start, write DIR/kubeconfig and DIR/env
#   hack/control-plane.sh stop DIR    stop both processes and wait for them
#
# DIR/env is a shell file exporting KUBECONFIG, TEMPCREDS_APISERVER_URL,
# TEMPCREDS_APISERVER_CA and TEMPCREDS_SA_ISSUER.
#
# TEMPCREDS_APISERVER_FOR_PODS=1 (hack/with-control-plane.sh --node sets it)
# readies the API server for pods of a node that hack/node.sh adds later:
# it listens on every address (so pods reach it on the node's bridge, whose
# address is only known when the node starts) instead of loopback only, and
# leaves the `kubernetes` Service's endpoints to hack/node.sh
# (--endpoint-reconciler-type none): it would advertise 127.0.0.1, which
# means the pod itself inside a pod. Clients still use 127.0.0.1.
#
# The API server is set up so that the parts tempcreds needs are real:
# service-account signing keys and an HTTPS issuer (TokenRequest, projected
# tokens, /.well-known/openid-configuration and its JWKS), RBAC authorization
# (so the chart's least-privilege rules are exercised), the ServiceAccount
# admission plugin and admission webhooks. An admin client certificate in
# system:masters is written to the kubeconfig.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

cmd="${1:-}"
dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || die "usage: $0 start|stop DIR"

stop() {
  for name in kube-apiserver etcd; do
    local pidfile="${dir}/${name}.pid"
    [[ -f "$pidfile" ]] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping ${name} (pid ${pid})"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

gen_certs() {
  local pki="${dir}/pki"
  mkdir -p "$pki"
  say "generating CA, serving, admin client and service-account keys in ${pki}"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tempcreds-test-ca" \
    -keyout "${pki}/ca.key" -out "${pki}/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "${pki}/apiserver.key" -out "${pki}/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "${pki}/apiserver.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" \
    -CAcreateserial -days 30 -out "${pki}/apiserver.crt" -extfile <(printf '%s\n' \
      "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
      "extendedKeyUsage=serverAuth") 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=tempcreds-admin" \
    -keyout "${pki}/admin.key" -out "${pki}/admin.csr" 2>/dev/null
  openssl x509 -req -in "${pki}/admin.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" \
    -CAcreateserial -days 30 -out "${pki}/admin.crt" \
    -extfile <(echo "extendedKeyUsage=clientAuth") 2>/dev/null
  openssl genrsa -out "${pki}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub" 2>/dev/null
}

start() {
  local etcd_bin="${TEMPCREDS_ETCD_BIN:-${ETCD_BIN_PATH}}"
  local kas_bin="${KUBE_APISERVER_BIN}"
  [[ -x "$etcd_bin" ]] || die "etcd ${PIN_ETCD} is not built; run hack/install-tools.sh"
  [[ -x "$kas_bin" ]] || die "kube-apiserver ${PIN_KUBE} is not built; run hack/install-tools.sh"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  stop
  gen_certs
  local etcd_port etcd_peer_port api_port
  etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port)

  say "starting etcd ${PIN_ETCD} on 127.0.0.1:${etcd_port}"
  rm -rf "${dir}/etcd-data"
  "$etcd_bin" --data-dir "${dir}/etcd-data" --name tempcreds-test \
    --listen-client-urls "http://127.0.0.1:${etcd_port}" \
    --advertise-client-urls "http://127.0.0.1:${etcd_port}" \
    --listen-peer-urls "http://127.0.0.1:${etcd_peer_port}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer_port}" \
    --initial-cluster "tempcreds-test=http://127.0.0.1:${etcd_peer_port}" \
    --unsafe-no-fsync --log-level warn \
    >"${dir}/etcd.log" 2>&1 &
  echo $! > "${dir}/etcd.pid"

  local url="https://127.0.0.1:${api_port}"
  local pki="${dir}/pki"
  local bind=127.0.0.1 reconciler=lease
  if [[ "${TEMPCREDS_APISERVER_FOR_PODS:-0}" == "1" ]]; then
    bind=0.0.0.0 reconciler=none
  fi
  say "starting kube-apiserver ${PIN_KUBE} on ${url}"
  "$kas_bin" \
    --etcd-servers "http://127.0.0.1:${etcd_port}" \
    --bind-address "$bind" --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --endpoint-reconciler-type "$reconciler" \
    --cert-dir "${dir}/cert-dir" \
    --tls-cert-file "${pki}/apiserver.crt" --tls-private-key-file "${pki}/apiserver.key" \
    --client-ca-file "${pki}/ca.crt" \
    --kubelet-client-certificate "${pki}/admin.crt" --kubelet-client-key "${pki}/admin.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer "$url" \
    --service-account-key-file "${pki}/sa.pub" \
    --service-account-signing-key-file "${pki}/sa.key" \
    --api-audiences "${url},sts.amazonaws.com" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --profiling=false \
    --v=1 \
    >"${dir}/kube-apiserver.log" 2>&1 &
  echo $! > "${dir}/kube-apiserver.pid"

  cat > "${dir}/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: ${url}
    certificate-authority: ${pki}/ca.crt
users:
- name: admin
  user:
    client-certificate: ${pki}/admin.crt
    client-key: ${pki}/admin.key
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KC

  say "waiting for kube-apiserver to report ready"
  local start_s=$SECONDS
  until curl -fsS --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" --key "${pki}/admin.key" \
      "${url}/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "${dir}/kube-apiserver.pid")" 2>/dev/null; then
      tail -n 30 "${dir}/kube-apiserver.log" >&2
      die "kube-apiserver exited; log: ${dir}/kube-apiserver.log"
    fi
    if ! kill -0 "$(cat "${dir}/etcd.pid")" 2>/dev/null; then
      tail -n 30 "${dir}/etcd.log" >&2
      die "etcd exited; log: ${dir}/etcd.log"
    fi
    if (( SECONDS - start_s > 90 )); then
      curl -sS --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" --key "${pki}/admin.key" \
        "${url}/readyz?verbose" >&2 || true
      die "kube-apiserver not ready after 90s; log: ${dir}/kube-apiserver.log"
    fi
    sleep 0.3
  done
  cat > "${dir}/env" <<ENV
export KUBECONFIG='${dir}/kubeconfig'
export TEMPCREDS_APISERVER_URL='${url}'
export TEMPCREDS_APISERVER_CA='${pki}/ca.crt'
export TEMPCREDS_SA_ISSUER='${url}'
export TEMPCREDS_APISERVER_PORT='${api_port}'
export TEMPCREDS_APISERVER_BIND='${bind}'
ENV
  say "control plane ready in $(( SECONDS - start_s ))s: source ${dir}/env"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop DIR" ;;
esac
