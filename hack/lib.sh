# Shared settings for the hack/ scripts. Sourced, not run.
#
# Everything heavy is cached outside the repository, under TEMPCREDS_CACHE
# (default ~/.cache/tempcreds), so a second run is fast and the checkout stays
# clean.

: "${TEMPCREDS_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/tempcreds}"
export TEMPCREDS_CACHE

# Pinned tool versions. Change them here only.
: "${PIN_KUBE:=v1.36.3}"
: "${PIN_ETCD:=v3.6.16}"
: "${PIN_KUBECTL_LAYER:=2.2.2}"
: "${PIN_CERT_MANAGER:=v1.21.2}"
export PIN_KUBE PIN_ETCD PIN_KUBECTL_LAYER PIN_CERT_MANAGER

mkdir -p "${TEMPCREDS_CACHE}/bin"

# Where the built binaries are cached. The Kubernetes directory's suffix names
# the build recipe: bump it when the build flags or the set of binaries
# change, so binaries built the old way are not reused.
KUBE_BIN_DIR="${TEMPCREDS_CACHE}/kube-${PIN_KUBE}-b3"
KUBE_APISERVER_BIN="${KUBE_BIN_DIR}/kube-apiserver"
ETCD_BIN_PATH="${TEMPCREDS_CACHE}/bin/etcd-${PIN_ETCD}"
# cert-manager's controller, CA injector and CRDs (hack/install-cert-manager.sh).
# The mains are ours (hack/cert-manager/*/main.go), so the directory's suffix
# is a hash of them and of the build script: editing either builds anew
# instead of reusing binaries built from the old sources.
CERT_MANAGER_DIR="${TEMPCREDS_CACHE}/cert-manager-${PIN_CERT_MANAGER}-$(
  cd "$(dirname "${BASH_SOURCE[0]}")" &&
    cat cert-manager/controller/main.go cert-manager/cainjector/main.go install-cert-manager.sh |
    sha256sum | cut -c1-10)"
CERT_MANAGER_CONTROLLER_BIN="${CERT_MANAGER_DIR}/cert-manager-controller"
CERT_MANAGER_CAINJECTOR_BIN="${CERT_MANAGER_DIR}/cert-manager-cainjector"
CERT_MANAGER_CRDS="${CERT_MANAGER_DIR}/crds.yaml"

say() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { say "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not on PATH"; }
# A TCP port on 127.0.0.1 that is free now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Writes DIR/passwd and DIR/group with root and nonroot (65532), the user
# every image built here runs as.
write_users() {
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$1/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$1/group"
}

# Writes OUT/NAME.kubeconfig for a client certificate (OUT/pki/NAME.{key,crt},
# EC P-256, 30 days) with SUBJECT, signed by the control plane's CA in CPDIR
# (CPDIR/pki/ca.{crt,key}), for the API server at TEMPCREDS_APISERVER_URL.
# The user name in the kubeconfig is NAME.
write_client_kubeconfig() { # CPDIR OUT NAME SUBJECT
  local cp="$1" out="$2" name="$3" subject="$4"
  local pki="${out}/pki"
  mkdir -p "$pki"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    -keyout "${pki}/${name}.key" -out "${pki}/${name}.csr" 2>/dev/null
  openssl x509 -req -in "${pki}/${name}.csr" -CA "${cp}/pki/ca.crt" -CAkey "${cp}/pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -out "${pki}/${name}.crt" \
    -extfile <(echo "extendedKeyUsage=clientAuth") 2>/dev/null
  cat > "${out}/${name}.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: ${TEMPCREDS_APISERVER_URL}
    certificate-authority: ${cp}/pki/ca.crt
users:
- name: ${name}
  user:
    client-certificate: ${pki}/${name}.crt
    client-key: ${pki}/${name}.key
contexts:
- name: local
  context: {cluster: local, user: ${name}}
current-context: local
KC
}
