#!/usr/bin/env bash
# Adds a real node to the local control plane of hack/control-plane.sh, and
# takes it away again without leaving anything behind on the host:
#
#   hack/node.sh start DIR   containerd, CNI bridge, kubelet,
#                            kube-controller-manager, kube-scheduler and
#                            kube-proxy;
#                            waits until the node is Ready and the `default`
#                            ServiceAccount and `kube-root-ca.crt` ConfigMap
#                            exist, then appends the node's variables to DIR/env
#   hack/node.sh stop DIR    stops all of it and undoes every change to the
#                            host; safe to run twice or after a failed start
#   hack/node.sh restart-kubelet DIR
#                            stops the kubelet (SIGTERM) and starts it again
#                            with the same settings; pods keep running. Its
#                            in-memory token cache is gone, so it requests
#                            new projected service-account tokens at once:
#                            the write a rotation does, without waiting 80%
#                            of a token's lifetime (at least 8 minutes)
#
# DIR is the control plane's directory (env, kubeconfig, pki/ca.{crt,key},
# pki/sa.key). Everything the node writes goes under DIR/node: configs, logs
# (DIR/node/*.log), pids (DIR/node/*.pid), containerd's root, state and
# socket, the kubelet's root dir and pod logs.
#
# The node is tainted `tempcreds.io/test-node:NoSchedule`: only pods that
# tolerate it run there (every image they use must be imported; no registry
# is ever contacted for the pods of tests that do not expect a node).
#
# DIR/env gains TEMPCREDS_NODE_NAME, TEMPCREDS_NODE_GATEWAY (the bridge's
# address: where pods reach servers on the host, which may listen on it as
# soon as start returns), TEMPCREDS_NODE_DIR, CONTAINERD_ADDRESS and
# CONTAINERD_NAMESPACE (so a bare `ctr images import FILE.tar` loads an image).
#
# Services: kube-proxy (iptables mode) makes Service IPs work on the node:
# pods reach the API server through the `kubernetes` Service (10.0.0.1:443)
# and the API server reaches webhook Services the way a real cluster's
# control-plane node does (its connections to a ClusterIP go through
# kube-proxy's OUTPUT rules). For pods to reach it, the API server must
# listen beyond loopback: hack/control-plane.sh does so with
# TEMPCREDS_APISERVER_FOR_PODS=1 (with-control-plane.sh --node sets it), and
# this script then points the `kubernetes` Service's endpoints at the
# bridge's gateway. kube-proxy's chains have fixed names in the host's one
# network namespace, so only one node per host runs it: a second node started
# while the first runs has no Service routing, and its env says
# TEMPCREDS_NODE_SERVICES=0. Its rules are removed with `kube-proxy --cleanup`
# when its node stops.
#
# Images: no registry is reachable. The pause image is built by
# hack/install-node-tools.sh; every docker/OCI archive named in
# TEMPCREDS_NODE_IMAGES (colon-separated paths) is imported too. Pods use
# `imagePullPolicy: Never`.
#
# Settings this machine kind needs (see NODE.md in the shared notes): root
# without CAP_SYS_RESOURCE makes containerd's `restrict_oom_score_adj` and the
# kubelet's `oomScoreAdj: 0` necessary; cgroup v1 needs `failCgroupV1: false`
# and the cgroupfs driver; the kubelet refuses a loopback node IP, so the
# node's address is the bridge's gateway address.
#
# Several nodes (of several control planes) can run at once: each takes the
# first free index N and with it bridge tcbrN, subnet 10.244.N.0/24, CNI
# network tempcreds-N and cgroup root /tempcreds-nodeN; every port is a free
# one. Host-wide state the kubelet and containerd change (sysctls, iptables,
# a few fixed paths) is recorded before the first node starts and restored
# when the last one stops (registry: TEMPCREDS_CACHE/nodes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"

cmd="${1:-}"
dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || die "usage: $0 start|stop|restart-kubelet DIR"
[[ -d "$dir" ]] || die "${dir} is not a directory (expected the control plane's directory)"
dir=$(cd "$dir" && pwd)
node="${dir}/node"
registry="${TEMPCREDS_CACHE}/nodes"
kubectl_bin="${TEMPCREDS_CACHE}/bin/kubectl"
node_name="${TEMPCREDS_NODE_NAME:-tempcreds-node}"
image_ns=k8s.io
# The node's NoSchedule taint; tests' pods tolerate it (tests/src/node.rs).
NODE_TAINT_KEY=tempcreds.io/test-node
components=(kube-proxy kube-scheduler kube-controller-manager kubelet containerd)

# Sysctls the kubelet (vm.*, kernel.*) and the bridge plugin (forwarding)
# set, restored on stop. Any other key found changed is reported.
restored_sysctls=(
  net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.default.forwarding
  net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
)
# Keys that change by themselves, or belong to interfaces that come and go.
volatile_sysctls='^(fs\.(dentry-state|file-nr|inode-nr|inode-state|aio-nr|quota\.)|kernel\.(ns_last_pid|random\.|pty\.nr)|net\.netfilter\.nf_conntrack_count|net\.(ipv4|ipv6)\.(conf|neigh)\.(tcbr|veth))'
# Paths outside DIR that the kubelet, containerd and libcni always use.
# (/run/mount: libmount's lock directory, made by the first mount(8).)
host_paths=(/var/log/containers /var/log/pods /var/lib/kubelet /var/lib/kubelet/device-plugins
            /run/containerd /run/containerd/s /run/containerd/fifo /var/lib/cni /var/lib/cni/results
            /run/mount)

now() { echo "${EPOCHREALTIME}"; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
kc() { KUBECONFIG="${dir}/kubeconfig" "$kubectl_bin" "$@"; }
ctr_() { ctr -a "${node}/containerd/containerd.sock" -n "$image_ns" "$@"; }
# Whether any of the PIDs runs. A killed orphan stays a zombie until PID 1
# reaps it (here up to a second later): a zombie does not count.
running() {
  local pid state
  for pid in "$@"; do
    state=$(sed 's/.*) //' "/proc/${pid}/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -n "$state" && "$state" != Z ]] && return 0
  done
  return 1
}
alive() { [[ -f "$1" ]] && running "$(cat "$1")"; }

# ------------------------------------------------------------------ registry
# One file per running node, named by its index N, holding its DIR; the
# host's state before the first of them started lives in baseline/.

node_live() { # DIR
  local d="$1" c
  for c in "${components[@]}"; do alive "${d}/node/${c}.pid" && return 0; done
  # A node still starting has no pid yet: its start marker is recent.
  [[ -n "$(find "${d}/node/starting" -newermt '5 minutes ago' 2>/dev/null)" ]]
}

# Prints the DIRs of the other running nodes.
live_peers() {
  local entry d
  for entry in "${registry}"/[0-9]*; do
    [[ -f "$entry" ]] || continue
    d=$(cat "$entry")
    [[ "$d" == "$dir" ]] && continue
    if node_live "$d"; then echo "$d"; fi
  done
}

with_registry_lock() {
  mkdir -p "$registry"
  ( flock 9; "$@" ) 9<"$registry"
}

# ---------------------------------------------------------------- snapshots

snapshot_host() { # OUTDIR: the state stop restores and the report compares
  local out="$1"
  mkdir -p "$out"
  sysctl -a 2>/dev/null | sort > "${out}/sysctl"
  iptables-save 2>/dev/null | grep -v '^#' > "${out}/iptables" || true
  ip6tables-save 2>/dev/null | grep -v '^#' > "${out}/ip6tables" || true
  local p
  for p in "${host_paths[@]}"; do [[ -e "$p" ]] && echo "$p"; done > "${out}/host-paths" || true
}

# Records the host state, or copies the one recorded when a still-running
# peer started (this node's start must not count the peer's changes).
take_baseline() {
  if [[ -n "$(live_peers)" && -f "${registry}/baseline/sysctl" ]]; then
    say "another node is running: keeping the host state it recorded"
  else
    rm -rf "${registry}/baseline"
    snapshot_host "${registry}/baseline"
  fi
  rm -rf "${node}/baseline"
  cp -r "${registry}/baseline" "${node}/baseline"
  echo "$dir" > "${registry}/${index}"
}

# ------------------------------------------------------------------- start

pick_index_and_bridge() {
  # The bridge is created up-front with the gateway address, so servers on
  # the host can listen there before any pod exists; the bridge plugin
  # accepts an existing bridge that already has its gateway address.
  local n
  for n in $(seq 0 63); do
    [[ -e "${registry}/${n}" ]] && continue
    if ip link add "tcbr${n}" type bridge 2>/dev/null; then
      index=$n
      echo "$n" > "${node}/index"
      ip addr add "10.244.${n}.1/24" dev "tcbr${n}"
      ip link set "tcbr${n}" up
      take_baseline
      return 0
    fi
  done
  die "no free node index (bridges tcbr0..tcbr63 all exist)"
}

client_cert() { # NAME SUBJECT: NODE/NAME.kubeconfig (lib.sh)
  write_client_kubeconfig "$dir" "$node" "$1" "$2"
}

# The kubelet's command line, for start and restart-kubelet.
start_kubelet() {
  start_component kubelet "${KUBE_BIN_DIR}/kubelet" \
    --config "${node}/kubelet/config.yaml" \
    --kubeconfig "${node}/kubelet.kubeconfig" \
    --root-dir "${node}/kubelet/root" --cert-dir "${node}/kubelet/pki" \
    --hostname-override "$node_name" --node-ip "$gateway" \
    --v="${TEMPCREDS_NODE_LOG_LEVEL:-1}"
}

restart_kubelet() {
  [[ -f "${node}/kubelet.pid" && ! -f "${node}/stopped" ]] || die "no running node in ${node}"
  # shellcheck disable=SC1091
  source "${dir}/env"
  node_name="$TEMPCREDS_NODE_NAME"
  gateway="$TEMPCREDS_NODE_GATEWAY"
  mv "${node}/kubelet.log" "${node}/kubelet.log.1"
  stop_pids kubelet
  local t0 port
  t0=$(now)
  start_kubelet
  port=$(awk '$1 == "healthzPort:" {print $2}' "${node}/kubelet/config.yaml")
  until curl -fsS "http://127.0.0.1:${port}/healthz" >/dev/null 2>&1; do
    check_running
    (( EPOCHSECONDS - ${t0%.*} < 120 )) || die "the kubelet is not healthy 120s after its restart; log: ${node}/kubelet.log"
    sleep 0.2
  done
  say "kubelet restarted in $(since "$t0")s"
}

start_component() { # NAME COMMAND...
  local name="$1"; shift
  "$@" >"${node}/${name}.log" 2>&1 &
  echo $! > "${node}/${name}.pid"
}

check_running() {
  local c
  for c in "${components[@]}"; do
    [[ -f "${node}/${c}.pid" ]] || continue
    if ! alive "${node}/${c}.pid"; then
      tail -n 25 "${node}/${c}.log" >&2
      die "${c} exited; log: ${node}/${c}.log"
    fi
  done
}

write_containerd_config() {
  local c="${node}/containerd"
  mkdir -p "$c" "${node}/cni/net.d"
  cat > "${c}/config.toml" <<TOML
version = 2
root = "${c}/root"
state = "${c}/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "${c}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "${c}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "tempcreds.local/test/pause:1"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Otherwise network namespaces live in /run/netns, outside DIR.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${c}/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${node}/cni/net.d"
    max_conf_num = 1
TOML
  # ipMasq is off: pods only talk to each other and to the host.
  cat > "${node}/cni/net.d/10-tempcreds.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "tempcreds-${index}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "tcbr${index}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${node}/cni/ipam",
        "ranges": [[{"subnet": "10.244.${index}.0/24", "gateway": "10.244.${index}.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

write_kubelet_config() {
  local k="${node}/kubelet"
  mkdir -p "$k"
  cat > "${k}/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${node}/containerd/containerd.sock
address: ${gateway}
port: ${kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${kubelet_healthz_port}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${dir}/pki/ca.crt}
authorization:
  mode: Webhook
# cgroup v1, cgroupfs, no swap accounting, no CAP_SYS_RESOURCE.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /tempcreds-node${index}
failSwapOn: false
oomScoreAdj: 0
# The kubelet would add KUBE-FIREWALL and canary chains for kube-proxy.
makeIPTablesUtilChains: false
# Small, shared disks: no image GC, eviction only when nearly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
podLogsDir: ${node}/pod-logs
volumePluginDir: ${k}/volume-plugins
serializeImagePulls: false
shutdownGracePeriod: 0s
# Only pods that tolerate this taint run here: the tests' own pods, whose
# images are imported. Pods of other tests (images from registries this
# machine must not contact) stay Pending instead of pulling.
registerWithTaints:
- key: ${NODE_TAINT_KEY}
  effect: NoSchedule
YAML
}

# Creates this node's cgroup root in every v1 hierarchy (the kubelet checks
# that it exists); a new cpuset cgroup starts without CPUs or memory nodes.
make_cgroup_root() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f "${h}cgroup.procs" && ! -f "${h}cgroup.controllers" ]] || continue
    mkdir -p "${h}tempcreds-node${index}"
    if [[ -f "${h}cpuset.cpus" ]]; then
      cat "${h}cpuset.cpus" > "${h}tempcreds-node${index}/cpuset.cpus"
      cat "${h}cpuset.mems" > "${h}tempcreds-node${index}/cpuset.mems"
    fi
  done
}

import_images() {
  local archive
  local -a archives=("$pause_archive")
  IFS=: read -r -a extra <<< "${TEMPCREDS_NODE_IMAGES:-}"
  for archive in "${extra[@]}"; do
    [[ -n "$archive" ]] || continue
    [[ -f "$archive" ]] || die "TEMPCREDS_NODE_IMAGES names ${archive}, which does not exist"
    archives+=("$archive")
  done
  for archive in "${archives[@]}"; do
    ctr_ images import --snapshotter overlayfs "$archive" >>"${node}/images.log" 2>&1 \
      || { tail -n 5 "${node}/images.log" >&2; die "importing ${archive} failed"; }
  done
  say "imported ${#archives[@]} image archive(s)"
}

# ------------------------------------------------------------- kube-proxy

# Takes the host's one kube-proxy slot for this node; fails if a live peer
# holds it. Runs under the registry lock.
claim_kube_proxy() {
  local holder="${registry}/kube-proxy.dir"
  if [[ -f "$holder" && "$(cat "$holder")" != "$dir" ]] && node_live "$(cat "$holder")"; then
    return 1
  fi
  echo "$dir" > "$holder"
}

# Removes kube-proxy's rules if this node ran it, and frees the slot.
release_kube_proxy() {
  local holder="${registry}/kube-proxy.dir"
  [[ -f "$holder" && "$(cat "$holder")" == "$dir" ]] || return 0
  "${KUBE_BIN_DIR}/kube-proxy" --cleanup --v=0 >>"${node}/kube-proxy.log" 2>&1 \
    || say "warning: kube-proxy --cleanup failed; see ${node}/kube-proxy.log"
  rm -f "$holder"
}

start_kube_proxy() {
  client_cert kube-proxy "/CN=system:kube-proxy"
  # Conntrack sizes and timeouts left as the host has them (0), no
  # route_localnet (localhostNodePorts false), NodePorts on the bridge only.
  cat > "${node}/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${node}/kube-proxy.kubeconfig
hostnameOverride: ${node_name}
mode: iptables
clusterCIDR: 10.244.${index}.0/24
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:${proxy_healthz_port}
metricsBindAddress: 127.0.0.1:${proxy_metrics_port}
nodePortAddresses: ["${gateway}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
YAML
  start_component kube-proxy "${KUBE_BIN_DIR}/kube-proxy" \
    --config "${node}/kube-proxy.yaml" --v=1
}

# The `kubernetes` Service's EndpointSlice (what kube-proxy reads): the API
# server's port on the bridge's gateway (hack/control-plane.sh with TEMPCREDS_APISERVER_FOR_PODS
# listens there and leaves these to us).
route_kubernetes_service() {
  if [[ "${TEMPCREDS_APISERVER_BIND:-127.0.0.1}" != 0.0.0.0 ]]; then
    say "the API server listens on loopback only: pods cannot reach it through the kubernetes Service"
    return 0
  fi
  kc apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: tempcreds-test-node
addressType: IPv4
endpoints:
- addresses: ["${gateway}"]
  conditions: {ready: true}
ports:
- {name: https, port: ${TEMPCREDS_APISERVER_PORT}, protocol: TCP}
YAML
}

# Waits until kube-proxy has synced and, when pods can reach the API server,
# until the `kubernetes` Service answers on its ClusterIP from the host (the
# path the API server's own calls to webhook Services take too).
wait_services() {
  local t0="$1" ip
  ip=$(kc -n default get service kubernetes -o 'jsonpath={.spec.clusterIP}')
  until curl -fsS "http://127.0.0.1:${proxy_healthz_port}/healthz" >/dev/null 2>&1 \
        && { [[ "${TEMPCREDS_APISERVER_BIND:-127.0.0.1}" != 0.0.0.0 ]] \
             || curl -fsS --cacert "${dir}/pki/ca.crt" "https://${ip}/readyz" >/dev/null 2>&1; }; do
    check_running
    if (( EPOCHSECONDS - ${t0%.*} > 120 )); then
      die "Service ${ip} not routed 120s after the node started; log: ${node}/kube-proxy.log"
    fi
    sleep 0.2
  done
}

wait_ready() {
  local t0="$1"
  until [[ "$(kc get node "$node_name" \
              -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] \
        && kc -n default get serviceaccount default >/dev/null 2>&1 \
        && kc -n default get configmap kube-root-ca.crt >/dev/null 2>&1 \
        && curl -fsSk "https://127.0.0.1:${scheduler_port}/readyz" >/dev/null 2>&1; do
    check_running
    if (( EPOCHSECONDS - ${t0%.*} > 120 )); then
      kc get node "$node_name" -o yaml >&2 || true
      die "node not ready after 120s; logs: ${node}/*.log"
    fi
    sleep 0.2
  done
}

append_env() {
  # Replace the block of an earlier start, if any.
  sed -i '/^# node: begin$/,/^# node: end$/d' "${dir}/env"
  cat >> "${dir}/env" <<ENV
# node: begin
export TEMPCREDS_NODE_NAME='${node_name}'
export TEMPCREDS_NODE_GATEWAY='${gateway}'
export TEMPCREDS_NODE_DIR='${node}'
export TEMPCREDS_NODE_SERVICES='${services}'
export CONTAINERD_ADDRESS='${node}/containerd/containerd.sock'
export CONTAINERD_NAMESPACE='${image_ns}'
# node: end
ENV
}

start() {
  local t0 bin
  t0=$(now)
  [[ $(id -u) == 0 ]] || die "the node needs root (containerd, runc, network, cgroups)"
  [[ -f "${dir}/env" && -f "${dir}/pki/ca.key" && -f "${dir}/pki/sa.key" ]] \
    || die "${dir} is not a running control plane's directory (start hack/control-plane.sh first)"
  for bin in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    [[ -x "${KUBE_BIN_DIR}/${bin}" ]] || die "${bin} ${PIN_KUBE} is not built; run hack/install-tools.sh"
  done
  [[ -x "$kubectl_bin" ]] || die "kubectl is not installed; run hack/install-tools.sh"
  pause_archive=$("${here}/install-node-tools.sh" --pause-archive)
  # shellcheck disable=SC1091
  source "${dir}/env"
  if [[ -d "$node" && ! -f "${node}/stopped" ]]; then
    say "cleaning up an earlier node in ${node}"
    ( stop )
  fi
  mkdir -p "$node"
  rm -f "${node}/stopped"
  touch "${node}/starting"
  # A failed start undoes itself; the logs stay in DIR/node.
  trap 'say "start failed: stopping what was started (logs stay in ${node})"; stop' EXIT
  reap_stale_nodes
  with_registry_lock pick_index_and_bridge
  index=$(cat "${node}/index")
  gateway="10.244.${index}.1"

  client_cert kubelet "/O=system:nodes/CN=system:node:${node_name}"
  client_cert kube-controller-manager "/CN=system:kube-controller-manager"
  client_cert kube-scheduler "/CN=system:kube-scheduler"
  # RBAC without the Node authorizer: bind the node's user to system:node.
  kc create clusterrolebinding "tempcreds-node:${node_name}" --clusterrole system:node \
    --user "system:node:${node_name}" --dry-run=client -o yaml | kc apply -f - >/dev/null

  write_containerd_config
  say "starting containerd (node ${index}: bridge tcbr${index}, gateway ${gateway})"
  start_component containerd containerd --config "${node}/containerd/config.toml" --log-level info
  until ctr_ version >/dev/null 2>&1; do
    check_running
    (( EPOCHSECONDS - ${t0%.*} < 60 )) || die "containerd did not answer within 60s; log: ${node}/containerd.log"
    sleep 0.05
  done
  import_images

  kubelet_port=$(free_port); kubelet_healthz_port=$(free_port)
  kcm_port=$(free_port); scheduler_port=$(free_port)
  proxy_healthz_port=$(free_port); proxy_metrics_port=$(free_port)
  write_kubelet_config
  make_cgroup_root
  say "starting kubelet on ${gateway}:${kubelet_port}, kube-controller-manager, kube-scheduler"
  start_kubelet
  start_component kube-controller-manager "${KUBE_BIN_DIR}/kube-controller-manager" \
    --kubeconfig "${node}/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "${node}/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "${node}/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --cert-dir "${node}/kcm-certs" \
    --leader-elect=false --use-service-account-credentials \
    --root-ca-file "${dir}/pki/ca.crt" \
    --service-account-private-key-file "${dir}/pki/sa.key" \
    --cluster-signing-cert-file "${dir}/pki/ca.crt" --cluster-signing-key-file "${dir}/pki/ca.key" \
    --controllers '*' --kube-api-qps 200 --kube-api-burst 400 --v=1
  start_component kube-scheduler "${KUBE_BIN_DIR}/kube-scheduler" \
    --kubeconfig "${node}/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "${node}/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "${node}/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$scheduler_port" --cert-dir "${node}/scheduler-certs" \
    --leader-elect=false --v=1

  services=0
  if with_registry_lock claim_kube_proxy; then
    services=1
    start_kube_proxy
  else
    say "warning: the node of $(cat "${registry}/kube-proxy.dir") runs this host's kube-proxy: no Service IPs on this node"
  fi
  wait_ready "$t0"
  if (( services )); then
    route_kubernetes_service
    wait_services "$t0"
  fi
  append_env
  rm -f "${node}/starting"
  trap - EXIT
  say "node ${node_name} Ready in $(since "$t0")s: source ${dir}/env"
}

# -------------------------------------------------------------------- stop

# Stops the named components together: SIGTERM, then SIGKILL after 5s.
stop_pids() { # NAME...
  local name pid pids=()
  for name in "$@"; do
    [[ -f "${node}/${name}.pid" ]] || continue
    pid=$(cat "${node}/${name}.pid")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "${node}/${name}.pid"
  done
  (( ${#pids[@]} )) || return 0
  for _ in $(seq 1 50); do
    running "${pids[@]}" || break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do
    running "${pids[@]}" || break
    sleep 0.1
  done
}

# Container ids this containerd has known, from its state and CRI metadata.
container_ids() {
  find "${node}/containerd/state/io.containerd.runtime.v2.task/${image_ns}" \
       "${node}/containerd/root/io.containerd.grpc.v1.cri/sandboxes" \
       "${node}/containerd/root/io.containerd.grpc.v1.cri/containers" \
       -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -u
}

kill_containers() {
  local sock="${node}/containerd/containerd.sock" id pid
  if alive "${node}/containerd.pid"; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      timeout 10 ctr -a "$sock" -n "$image_ns" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pids containerd
  # Shims outlive containerd: find ours by the address they were given.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address ${sock}( |$)" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Whatever still runs in the pods' cgroups (containers whose shim died).
  local round procs
  for round in $(seq 1 50); do
    procs=$(find /sys/fs/cgroup/*/"tempcreds-node${index}" -name cgroup.procs -exec cat {} + 2>/dev/null \
            | sort -u || true)
    [[ -n "$procs" ]] || break
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null || true
    sleep 0.1
  done
}

# Mount points under DIR, innermost (latest) first.
mounts_under_dir() {
  awk -v d="${dir}/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | tac
}

unmount_all() {
  local m round
  for round in 1 2 3; do
    [[ -n "$(mounts_under_dir)" ]] || return 0
    for m in $(mounts_under_dir); do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
  if [[ -n "$(mounts_under_dir)" ]]; then
    mounts_under_dir >&2
    say "warning: the mounts above are still under ${dir}"
  fi
}

# Rules whose comment names our CNI network, and the chains they jump to;
# with no other node running, also every CNI-*/KUBE-* chain that was not
# there before the first node started, with the rules jumping to it, and
# (nf_tables) the tables the plugins created. IPv4 and IPv6 alike.
clean_iptables() { # ALONE(0|1)
  local alone="$1" ipt table chain rule
  local net="tempcreds-${index}"
  for ipt in iptables ip6tables; do
    command -v "${ipt}-save" >/dev/null || continue
    local before="${node}/baseline/${ipt}"
    for table in filter nat mangle raw; do
      local dump chains=()
      dump=$("${ipt}-save" -t "$table" 2>/dev/null) || continue
      # Ours: `-m comment --comment "[dnat ]name: \"tempcreds-N\" id: ..."`.
      while IFS= read -r rule; do
        [[ -n "$rule" ]] || continue
        chain=$(sed -nE 's/.* -j (CNI-[^ ]+).*/\1/p' <<< "$rule")
        [[ -n "$chain" ]] && chains+=("$chain")
        eval "$ipt -t $table -D ${rule#-A }" 2>/dev/null || true
      done < <(grep -E "^-A .*name: \\\\\"${net}\\\\\"" <<< "$dump" || true)
      if (( alone )); then
        while IFS= read -r chain; do
          [[ -n "$chain" ]] || continue
          grep -q "^:${chain} " "$before" 2>/dev/null && continue
          chains+=("$chain")
        done < <(sed -nE 's/^:((CNI|KUBE)-[^ ]+) .*/\1/p' <<< "$dump")
      fi
      (( ${#chains[@]} )) || continue
      for chain in $(printf '%s\n' "${chains[@]}" | sort -u); do
        # Drop the rules jumping to it, then flush and delete it.
        while IFS= read -r rule; do
          eval "$ipt -t $table -D ${rule#-A }" 2>/dev/null || true
        done < <("${ipt}-save" -t "$table" | grep -E "^-A .* -j ${chain}( |$)" || true)
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $(printf '%s\n' "${chains[@]}" | sort -u); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
    # With nf_tables a table stays, empty, after its last chain is gone.
    (( alone )) && command -v nft >/dev/null && [[ "$("$ipt" --version)" == *nf_tables* ]] || continue
    local family=ip
    [[ "$ipt" == ip6tables ]] && family=ip6
    for table in filter nat mangle raw; do
      grep -qx "\*${table}" "$before" 2>/dev/null && continue
      nft list table "$family" "$table" >/dev/null 2>&1 || continue
      # Only built-in chains without rules are left: nothing of anyone's.
      if ! "${ipt}-save" -t "$table" | grep -qE '^-A |^:[^ ]+ - '; then
        nft delete table "$family" "$table" 2>/dev/null || true
      fi
    done
  done
}

clean_network() { # ALONE
  local link id
  if [[ -n "${index:-}" ]]; then
    for link in $(ip -o link show master "tcbr${index}" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$link" 2>/dev/null || true
    done
    ip link del "tcbr${index}" 2>/dev/null || true
    rm -f /var/lib/cni/results/"tempcreds-${index}"-* 2>/dev/null || true
    # containerd's own loopback network, cached per sandbox.
    for id in $(container_ids); do rm -f "/var/lib/cni/results/cni-loopback-${id}-lo"; done
    clean_iptables "$1"
  fi
}

clean_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/"tempcreds-node${index}"; do
    [[ -d "$root" ]] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d "$root" ]] && say "warning: could not remove cgroup ${root}"
  done
  return 0
}

clean_host_paths() { # ALONE
  local alone="$1" id link p
  # Shim sockets of our containers (a killed shim does not remove its own).
  for id in $(container_ids); do
    rm -f "/run/containerd/s/$(printf '%s' "${node}/containerd/containerd.sock/${image_ns}/${id}" \
      | sha256sum | cut -d' ' -f1)"
  done
  # The kubelet's links to our pods' logs.
  for link in /var/log/containers/*.log; do
    [[ -L "$link" ]] || continue
    [[ "$(readlink "$link")" == "${node}/"* ]] && rm -f "$link"
  done
  if (( alone )); then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock \
          /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
    # Directories the node created, deepest first, when empty.
    for p in /var/lib/cni/results /var/lib/cni /run/containerd/s /run/containerd/fifo /run/containerd \
             /var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/pods /var/log/containers \
             /run/mount; do
      [[ -d "$p" ]] || continue
      grep -qx "$p" "${node}/baseline/host-paths" 2>/dev/null && continue
      rmdir "$p" 2>/dev/null || say "warning: ${p} is not empty; left in place"
    done
  fi
}

restore_sysctls() {
  local saved="${node}/baseline/sysctl" key want have changed=()
  [[ -f "$saved" ]] || return 0
  for key in "${restored_sysctls[@]}"; do
    want=$(awk -v k="$key" -F' = ' '$1 == k {print $2}' "$saved")
    [[ -n "$want" ]] || continue
    have=$(sysctl -n "$key" 2>/dev/null) || continue
    if [[ "$have" != "$want" ]]; then
      sysctl -qw "${key}=${want}" >/dev/null || say "warning: could not restore ${key}=${want}"
      changed+=("${key}=${want}")
    fi
  done
  (( ${#changed[@]} )) && say "restored sysctls: ${changed[*]}"
  # Report anything else that differs (not restored: not known to be ours).
  local other
  other=$(diff <(grep -Ev "$volatile_sysctls" "$saved") \
               <(sysctl -a 2>/dev/null | sort | grep -Ev "$volatile_sysctls") \
          | sed -nE 's/^> (.*)/\1/p' || true)
  if [[ -n "$other" ]]; then
    say "warning: sysctls changed since the node started (not restored):"
    printf '  %s\n' "$other" >&2
  fi
  return 0
}

# Nodes whose stop never ran (a killed harness): stop them now if their
# directory is still there, else remove what is left of their network.
reap_stale_nodes() {
  local entry d n
  for entry in "${registry}"/[0-9]*; do
    [[ -f "$entry" ]] || continue
    d=$(cat "$entry"); n=$(basename "$entry")
    [[ "$d" == "$dir" ]] && continue
    node_live "$d" && continue
    say "cleaning up node ${n} of ${d}, which was not stopped"
    if [[ -d "${d}/node" ]]; then
      "$0" stop "$d" || true
    else
      ip link del "tcbr${n}" 2>/dev/null || true
    fi
    rm -f "$entry"
  done
}

finish_stop() { # runs under the registry lock
  local alone=1
  [[ -n "$(live_peers)" ]] && alone=0
  clean_network "$alone"
  clean_host_paths "$alone"
  if (( alone )); then
    restore_sysctls
    rm -rf "${registry}/baseline"
  else
    say "another node is running: it restores the sysctls when it stops"
  fi
  if [[ -n "${index:-}" && -f "${registry}/${index}" && "$(cat "${registry}/${index}")" == "$dir" ]]; then
    rm -f "${registry}/${index}"
  fi
  rmdir "$registry" 2>/dev/null || true
}

stop() {
  trap - EXIT
  # Best effort from here on: every step runs whatever failed before it.
  set +e
  [[ -d "$node" ]] || return 0
  if [[ -f "${node}/stopped" ]]; then
    say "the node in ${node} is already stopped"
    return 0
  fi
  index=$(cat "${node}/index" 2>/dev/null || true)
  # After an interrupted stop, another node may have taken the index since.
  local owner
  owner=$(cat "${registry}/${index:-none}" 2>/dev/null)
  if [[ -n "$index" && -n "$owner" && "$owner" != "$dir" ]]; then
    say "warning: index ${index} now belongs to the node of ${owner}: leaving its bridge, cgroups and rules alone"
    index=""
  fi
  say "stopping the node in ${node}"
  # Controllers first, so nothing recreates pods; then the kubelet, so
  # nothing restarts the containers killed next.
  stop_pids kube-proxy kube-scheduler kube-controller-manager kubelet
  with_registry_lock release_kube_proxy
  kill_containers
  unmount_all
  if [[ -n "$index" ]]; then
    clean_cgroups
    with_registry_lock finish_stop
  fi
  rm -f "${node}/starting"
  touch "${node}/stopped"
  if command -v "$kubectl_bin" >/dev/null && [[ -f "${dir}/kubeconfig" ]]; then
    kc delete clusterrolebinding "tempcreds-node:${node_name}" --ignore-not-found \
      --request-timeout 3s >/dev/null 2>&1 || true
  fi
  say "node stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart-kubelet) restart_kubelet ;;
  *) die "usage: $0 start|stop|restart-kubelet DIR" ;;
esac
