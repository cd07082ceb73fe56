#!/usr/bin/env bash
# make demo: the whole tempcreds path on this machine, with no cluster and no
# AWS account.
#
#  1. starts a local kube-apiserver (hack/control-plane.sh) and moto's STS
#     server standing in for AWS STS;
#  2. runs tempcreds-webhook over TLS and registers it with the API server by
#     URL, for namespaces labelled tempcreds.io/injection=enabled;
#  3. adds a real node (containerd, kubelet, controllers: hack/node.sh; root)
#     with the sidecar image `make images` builds and a test app image: a
#     static Go program on the AWS SDK for Go v2 (tests/apps/aws-go-app);
#  4. creates an annotated pod and shows what the webhook injected;
#  5. watches the kubelet run it: the native sidecar gets credentials from
#     STS with the token the kubelet projected, the app starts once they are
#     written, its own SDK calls sts:GetCallerIdentity and prints which
#     credential provider answered, and the pod completes;
#  6. shows the sidecar's log and the STS calls moto recorded.
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
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "${root}/hack/node.sh" stop "${work}/cp" >/dev/null 2>&1 || true
  "${root}/hack/control-plane.sh" stop "${work}/cp" >/dev/null 2>&1 || true
  if [[ "${TEMPCREDS_DEMO_KEEP:-}" == "1" ]]; then
    echo "kept ${work}"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

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

[[ $(id -u) == 0 ]] || die "make demo runs a real node (containerd, kubelet): run it as root"

step "Building tempcreds-webhook, and the images the node runs"
(cd "$root" && cargo build --quiet --locked -p tempcreds-webhook --bins)
target="${CARGO_TARGET_DIR:-${root}/target}/debug"
show "make images   (release binaries packed into OCI archives, no container engine)"
"${root}/hack/images.sh" 2>&1 | grep -E '^(image|tempcreds-)' || true
sidecar_archive="${root}/target/images/tempcreds-sidecar.tar"
app_archive=$("${root}/hack/test-images.sh" | grep '/aws-go-app.tar$')

step "Starting a local control plane (etcd + kube-apiserver ${PIN_KUBE})"
"${root}/hack/control-plane.sh" start "${work}/cp"
# shellcheck disable=SC1091
source "${work}/cp/env"
k() { "$kubectl" "$@"; }

step "Adding a node: containerd, kubelet, kube-controller-manager, kube-scheduler"
TEMPCREDS_NODE_IMAGES="${sidecar_archive}:${app_archive}" "${root}/hack/node.sh" start "${work}/cp"
# shellcheck disable=SC1091
source "${work}/cp/env"
show "kubectl get nodes -o wide"; k get nodes -o wide

step "Starting moto's STS server (stands in for AWS STS) where pods reach the host"
moto_port=$(free_port)
MOTO_ENABLE_RECORDING=true MOTO_RECORDER_FILEPATH="${work}/sts-calls.jsonl" \
  "${venv}/bin/moto_server" -H "$TEMPCREDS_NODE_GATEWAY" -p "$moto_port" >"${work}/moto.log" 2>&1 &
pids+=($!)
sts="http://${TEMPCREDS_NODE_GATEWAY}:${moto_port}"
wait_for "${sts}/moto-api/"
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
  imagePullPolicy: Never
region: us-east-1
stsEndpoint: ${sts}
allowHttpStsEndpoint: true
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
pod_yaml=$(cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: reporter
  namespace: demo
  annotations:
    tempcreds.io/role-arn: arn:aws:iam::123456789012:role/reporter
spec:
  serviceAccountName: reporter
  restartPolicy: Never
  tolerations: [{key: tempcreds.io/test-node, operator: Exists, effect: NoSchedule}]
  containers:
  - name: app
    image: tempcreds.local/test/aws-go-app:1
    imagePullPolicy: Never
    # Three sts:GetCallerIdentity calls through the SDK's default chain.
    command: [/usr/local/bin/aws-go-app, -count, "3", -interval, 2s]
    env:
    - {name: AWS_ENDPOINT_URL_STS, value: "${sts}"}
    securityContext:
      runAsNonRoot: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
EOF
)
show "kubectl create namespace demo && kubectl label namespace demo tempcreds.io/injection=enabled"
k create namespace demo >/dev/null
k label namespace demo tempcreds.io/injection=enabled >/dev/null
show "kubectl -n demo create serviceaccount reporter"
k -n demo create serviceaccount reporter
show "kubectl apply -f - <<EOF"; echo "$pod_yaml"
t_create=$SECONDS
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
        print("  startupProbe:", json.dumps(c["startupProbe"].get("httpGet") or c["startupProbe"].get("exec")))
for c in spec["containers"]:
    print(f"container {c['name']}:")
    print("  env:   ", {e['name']: e.get('value') for e in c.get('env', [])})
    print("  mounts:", [f"{m['name']}:{m['mountPath']}{' (ro)' if m.get('readOnly') else ''}" for m in c.get("volumeMounts", [])])
print("volumes:", [v["name"] + ":" + next(k for k in v if k != "name") for v in spec.get("volumes", [])])
PY

step "The kubelet runs it: native sidecar first, the app once credentials are written"
show "kubectl -n demo get pod reporter   (watched until it completes)"
last=""
for _ in $(seq 1 600); do
  line=$(k -n demo get pod reporter --no-headers \
    -o custom-columns='PHASE:.status.phase,SIDECAR-STARTED:.status.initContainerStatuses[0].started,APP-STATE:.status.containerStatuses[0].state' 2>/dev/null \
    | sed -E 's/map\[([a-z]+):map\[[^]]*\]\]/\1/g') || true
  if [[ "$line" != "$last" ]]; then printf '  %4ss  %s\n' "$(( SECONDS - t_create ))" "$line"; last="$line"; fi
  case "$line" in Succeeded*|Failed*) break ;; esac
  sleep 0.2
done
phase=$(k -n demo get pod reporter -o jsonpath='{.status.phase}')

step "The sidecar's log (JSON lines; secrets never appear)"
show "kubectl -n demo logs reporter -c tempcreds"
k -n demo logs reporter -c tempcreds | cut -c1-240

step "The app's own AWS SDK calls"
show "kubectl -n demo logs reporter -c app"
k -n demo logs reporter -c app

step "What STS saw (moto's recorder)"
python3 - "${work}/sts-calls.jsonl" <<'PY'
import base64, json, sys, urllib.parse
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    e = json.loads(line)
    body = e.get("body") or ""
    if e.get("body_encoded"):
        body = base64.b64decode(body).decode()
    p = dict(urllib.parse.parse_qsl(body))
    if "Action" in p:
        token = "with the kubelet's projected token" if "WebIdentityToken" in p else ""
        print(" ", p["Action"], p.get("RoleArn", ""), p.get("RoleSessionName", ""), token)
PY

[[ "$phase" == Succeeded ]] || die "the pod ended ${phase:-unknown}; see the logs above"
step "Done"
echo "The pod asked for a role with one annotation. The kubelet ran the injected"
echo "sidecar from its image with a token only it could read; the app started once"
echo "credentials were written, its unmodified AWS SDK used them, and the pod completed."
