#!/usr/bin/env bash
# make demo: the whole tempcreds path on this machine, with no cluster and no
# AWS account.
#
#  1. starts a local kube-apiserver (hack/control-plane.sh) and moto's STS
#     server standing in for AWS STS;
#  2. runs tempcreds-webhook over TLS and registers it with the API server by
#     URL, for namespaces labelled tempcreds.io/injection=enabled;
#  3. creates an annotated pod and shows what the webhook injected;
#  4. runs the injected sidecar container's command and environment as a
#     local process (its volumes mapped to temporary directories, the
#     projected token obtained through a real TokenRequest), against moto;
#  5. shows the credentials file it wrote and runs `aws sts
#     get-caller-identity` with the app container's environment.
#
# Everything is stopped and removed at the end (TEMPCREDS_DEMO_KEEP=1 keeps
# the working directory for a look).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "${root}/hack/lib.sh"

if [[ -t 1 ]]; then bold=$'\033[1m'; dim=$'\033[2m'; off=$'\033[0m'; else bold=""; dim=""; off=""; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tempcreds-demo.XXXXXX")
pids=()
cleanup() {
  # Closing local-pod's input makes it stop the sidecar it started.
  if [[ -n "${local_pod:-}" ]]; then
    exec 4>&- 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$local_pod" 2>/dev/null || break; sleep 0.1; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "${root}/hack/control-plane.sh" stop "${work}/cp" >/dev/null 2>&1 || true
  if [[ "${TEMPCREDS_DEMO_KEEP:-}" == "1" ]]; then
    echo "kept ${work}"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # URL [curl args...]
  local url=$1; shift
  for _ in $(seq 1 150); do
    curl -fsS "$@" "$url" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "timed out waiting for $url"
}

venv="${TEMPCREDS_CACHE}/venv"
kubectl="${TEMPCREDS_CACHE}/bin/kubectl"

step "Building tempcreds-webhook and tempcreds-sidecar"
(cd "$root" && cargo build --quiet --locked -p tempcreds-webhook -p tempcreds-sidecar -p tempcreds-tests --bins)
target="${CARGO_TARGET_DIR:-${root}/target}/debug"

step "Starting a local control plane (etcd + kube-apiserver ${PIN_KUBE})"
"${root}/hack/control-plane.sh" start "${work}/cp"
# shellcheck disable=SC1091
source "${work}/cp/env"
k() { "$kubectl" "$@"; }

step "Starting moto's STS server (stands in for AWS STS)"
moto_port=$(free_port)
"${venv}/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"${work}/moto.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:${moto_port}/moto-api/"
sts="http://127.0.0.1:${moto_port}"
echo "STS endpoint: ${sts}"

step "Starting tempcreds-webhook over TLS"
tls="${work}/webhook-tls"
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=tempcreds-demo-ca" \
  -keyout "${tls}/ca.key" -out "${tls}/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "${tls}/tls.key" -out "${tls}/tls.csr" 2>/dev/null
openssl x509 -req -in "${tls}/tls.csr" -CA "${tls}/ca.crt" -CAkey "${tls}/ca.key" -CAcreateserial \
  -days 1 -out "${tls}/tls.crt" -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') 2>/dev/null
cat > "${work}/config.yaml" <<EOF
sidecar:
  image: ghcr.io/tempcreds/tempcreds-sidecar:0.1.0
region: us-east-1
stsEndpoint: ${sts}
EOF
show "cat config.yaml"; cat "${work}/config.yaml"
hook_port=$(free_port)
RUST_LOG=info "${target}/tempcreds-webhook" serve --listen "127.0.0.1:${hook_port}" \
  --tls-cert-file "${tls}/tls.crt" --tls-key-file "${tls}/tls.key" \
  --config "${work}/config.yaml" >"${work}/webhook.log" 2>&1 &
pids+=($!)
wait_for "https://127.0.0.1:${hook_port}/readyz" --cacert "${tls}/ca.crt"
echo "webhook ready on https://127.0.0.1:${hook_port}"

step "Registering the webhook with the API server (by URL, for labelled namespaces)"
k apply -f - <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: tempcreds-demo
webhooks:
- name: pods.tempcreds.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  timeoutSeconds: 5
  clientConfig:
    url: https://127.0.0.1:${hook_port}/mutate
    caBundle: $(base64 -w0 < "${tls}/ca.crt")
  rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
  namespaceSelector:
    matchLabels:
      tempcreds.io/injection: enabled
EOF

step "Creating an opted-in namespace, a ServiceAccount and an annotated pod"
pod_yaml=$(cat <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: reporter
  namespace: demo
  annotations:
    tempcreds.io/role-arn: arn:aws:iam::123456789012:role/reporter
spec:
  serviceAccountName: reporter
  containers:
  - name: app
    image: amazon/aws-cli
    command: ["aws", "sts", "get-caller-identity"]
EOF
)
show "kubectl create namespace demo && kubectl label namespace demo tempcreds.io/injection=enabled"
k create namespace demo >/dev/null
k label namespace demo tempcreds.io/injection=enabled >/dev/null
show "kubectl -n demo create serviceaccount reporter"
k -n demo create serviceaccount reporter
show "kubectl apply -f - <<EOF"; echo "$pod_yaml"
echo "$pod_yaml" | k apply -f -

step "The pod as the API server stored it (what tempcreds injected)"
k -n demo get pod reporter -o json > "${work}/pod.json"
python3 - "${work}/pod.json" <<'PY'
import json, sys
pod = json.load(open(sys.argv[1]))
spec = pod["spec"]
print("annotations:", {k: v for k, v in pod["metadata"].get("annotations", {}).items() if k.startswith("tempcreds.io/")})
for c in spec.get("initContainers", []):
    print(f"initContainer {c['name']} (restartPolicy={c.get('restartPolicy')}):")
    print("  image:", c["image"])
    print("  args: ", " ".join(c.get("args", [])))
    print("  mounts:", [f"{m['name']}:{m['mountPath']}{' (ro)' if m.get('readOnly') else ''}" for m in c.get("volumeMounts", [])])
    if "startupProbe" in c:
        print("  startupProbe:", json.dumps(c["startupProbe"].get("httpGet")))
for c in spec["containers"]:
    print(f"container {c['name']}:")
    print("  env:   ", {e['name']: e.get('value') for e in c.get('env', [])})
    print("  mounts:", [f"{m['name']}:{m['mountPath']}{' (ro)' if m.get('readOnly') else ''}" for m in c.get("volumeMounts", [])])
print("volumes:", [v["name"] + ":" + next(k for k in v if k != "name") for v in spec.get("volumes", [])])
PY

step "Running the injected sidecar as a local process, against moto"
echo "(its volumes mapped to directories; the projected token from a real TokenRequest"
echo " with the injected audience and lifetime)"
mkfifo "${work}/local-pod.ctl"
"${target}/local-pod" demo reporter "${work}/pod" < "${work}/local-pod.ctl" > "${work}/local-pod.log" 2>&1 &
local_pod=$!
pids+=("$local_pod")
exec 4> "${work}/local-pod.ctl"
for _ in $(seq 1 300); do
  [[ -f "${work}/pod/app.env" ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "${work}/local-pod.log"; die "the sidecar did not start"; }
  sleep 0.2
done
[[ -f "${work}/pod/app.env" ]] || { cat "${work}/local-pod.log"; die "the sidecar did not get ready"; }
show "$(cat "${work}/pod/sidecar.cmd")"
echo "sidecar ready: credentials written"

step "What the app container sees"
mapfile -t app_env < "${work}/pod/app.env"
for kv in "${app_env[@]}"; do echo "  $kv"; done
creds=""
for kv in "${app_env[@]}"; do [[ "$kv" == AWS_SHARED_CREDENTIALS_FILE=* ]] && creds="${kv#*=}"; done
[[ -n "$creds" ]] || die "the app container has no AWS_SHARED_CREDENTIALS_FILE"
show "cat \$AWS_SHARED_CREDENTIALS_FILE   (secrets shortened for display)"
sed -E 's/^(aws_secret_access_key|aws_session_token) = (.{8}).*/\1 = \2…/' "$creds"
ls -l "$(dirname "$creds")"

step "aws sts get-caller-identity with the app's environment"
show "aws sts get-caller-identity --endpoint-url ${sts}"
env -i PATH="$PATH" HOME="$work" AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
  "${app_env[@]}" "${venv}/bin/aws" sts get-caller-identity --endpoint-url "$sts" --region us-east-1

step "Done"
echo "The pod asked for a role with one annotation; only the sidecar saw the"
echo "service-account token, and the app used temporary credentials it wrote."
