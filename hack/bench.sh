#!/usr/bin/env bash
# Measures speed and footprint of tempcreds and writes bench/results.md
# (`make bench`). About twelve minutes on 2 cores once the release and
# profiling builds are cached; needs the same tools as `make test` (it
# installs them), and perf (Debian: linux-perf) for the profile.
#
#   1. criterion benches of the mutation, of the /mutate handler and of
#      recording a review's metrics
#   2. the release webhook over TLS under the load generator
#      (crates/webhook/examples/load.rs): fixed rates and saturation,
#      latency percentiles, peak RSS (VmHWM), CPU time per review
#   3. the webhook in the configuration users run, on the local
#      kube-apiserver: ServiceAccount and namespace watch caches, the role
#      from the ServiceAccount's annotation, a policy with namespace
#      selectors, `info` logging; pinned to CPU 0 with the load generator on
#      CPU 1: CPU per review (3 rounds at saturation), p99 at half of
#      saturation, peak RSS, and a perf profile (when perf is installed)
#   4. pod-creation latency on the local kube-apiserver with and without the
#      webhook registered (hack/bench-pods.py)
#   5. the release sidecar against moto: start to first file, RSS at refresh
#      10 and 100, RSS with 1, 3 and 9 profiles, CPU per refresh against a shell loop around
#      `aws sts assume-role` writing the same file, RSS over 10,000 refreshes
#      back to back (crates/sidecar/examples/refresh_soak.rs), idle wakeups
#      (context switches over 30 s, then an strace syscall count over 10 s),
#      stripped binary sizes
#
# BENCH_OUT overrides the results file; BENCH_QUICK=1 shortens every step
# (for trying the script, not for figures); BENCH_PROFILE=0 skips the perf
# profile (and its build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"
root="$(dirname "${here}")"
out="${BENCH_OUT:-${root}/bench/results.md}"
need cargo; need curl; need openssl; need python3

quick="${BENCH_QUICK:-0}"
if [[ "$quick" == 1 ]]; then
  load_secs=3; sat_secs=3; pods=30; refreshes=12; idle_secs=5; strace_secs=3; soak=300; aws_loops=3; crit=(--warm-up-time 1 --measurement-time 1)
else
  load_secs=8; sat_secs=10; pods=200; refreshes=100; idle_secs=30; strace_secs=10; soak=10000; aws_loops=20; crit=(--warm-up-time 1 --measurement-time 4)
fi
profile="${BENCH_PROFILE:-1}"
if [[ "$profile" == 1 ]] && ! command -v perf >/dev/null 2>&1; then
  say "perf is not installed (Debian: linux-perf): no profile"
  profile=0
fi
# The webhook measured on one CPU, its load generator on another.
if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null 2>&1; then
  pin_hook=(taskset -c 0); pin_load=(taskset -c 1); pinning="webhook pinned to CPU 0, load generator to CPU 1"
else
  pin_hook=(); pin_load=(); pinning="not pinned (fewer than 2 CPUs or no taskset)"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tempcreds-bench.XXXXXX")"
pids=()
cp_started=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ "$cp_started" == 1 ]]; then "${here}/control-plane.sh" stop "${work}/cp" >/dev/null 2>&1 || true; fi
  rm -rf "$work" "${shm:-}"
}
trap cleanup EXIT

wait_for() { # URL [curl args...]
  local url=$1; shift
  for _ in $(seq 1 300); do
    curl -fsS "$@" "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "timed out waiting for $url"
}
status_kib() { # PID FIELD -> value in KiB
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}
cpu_ticks() { # PID -> utime+stime in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
ctxt() { # PID -> voluntary+nonvoluntary context switches of all its threads
  cat /proc/"$1"/task/*/status | awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s}'
}
field() { # "RESULT k=v ..." KEY
  tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'
}
ms() { awk -v us="$1" 'BEGIN {printf "%.2f ms", us / 1000}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { printf '%s\n' "$@" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "–" hi}'; }

"${here}/install-tools.sh"
if ! command -v strace >/dev/null 2>&1; then
  say "installing strace (for the idle-wakeup syscall count)"
  if [[ $(id -u) == 0 ]]; then apt-get install -y -qq strace >/dev/null || true
  else sudo -n apt-get install -y -qq strace >/dev/null || true; fi
fi

cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
mem_total="$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
machine="$(nproc) CPUs ($(nproc --all) online), ${cpu_model}, ${mem_total} RAM, Linux $(uname -r)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
cpu_busy() { # percent of all CPUs busy over the next second
  local a b
  a=($(head -n1 /proc/stat)); sleep 1; b=($(head -n1 /proc/stat))
  awk -v u=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) )) \
      -v i=$(( (b[4]+b[5]) - (a[4]+a[5]) )) 'BEGIN {printf "%.0f%%", 100 * u / (u + i)}'
}
busy_before="$(cpu_busy)"
rustc_version="$(rustc --version)"
# What is measured: the commit (and whether crates/ differ from it) when the
# build starts.
commit="$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo ' (with uncommitted changes under crates/)')"
say "machine: ${machine}; load average ${load_before}"

step() { say "== $*"; }

step "release build (binaries, the load generator, the refresh soak)"
(cd "$root" && cargo build --release --locked -p tempcreds-webhook --bins --example load \
  && cargo build --profile release-sidecar --locked -p tempcreds-sidecar --bins --example refresh_soak)
rel="${CARGO_TARGET_DIR:-${root}/target}/release"
# The sidecar as shipped: built for size (Cargo.toml's release-sidecar).
rel_sidecar="${CARGO_TARGET_DIR:-${root}/target}/release-sidecar"
load_bin="${rel}/examples/load"
if [[ "$profile" == 1 ]]; then
  # The release webhook with its symbols kept, for perf (Cargo.toml's
  # profiling profile).
  (cd "$root" && cargo build --profile profiling --locked -p tempcreds-webhook --bins)
fi
profiling_bin="${CARGO_TARGET_DIR:-${root}/target}/profiling/tempcreds-webhook"

step "criterion: the mutation and the /mutate handler"
(cd "$root" && cargo bench --locked -p tempcreds-webhook --bench mutate -- "${crit[@]}" --noplot) | tee "${work}/criterion.txt"
crit_dir="${CARGO_TARGET_DIR:-${root}/target}/criterion"
crit_us() { # GROUP NAME -> "median (±CI)" in µs
  python3 - "$crit_dir/$1/$2/new/estimates.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["median"]
ci = e["confidence_interval"]
if e["point_estimate"] < 1000:
    print(f'{e["point_estimate"]:.0f} ns ({ci["lower_bound"]:.0f}–{ci["upper_bound"]:.0f})')
else:
    print(f'{e["point_estimate"] / 1000:.1f} µs ({ci["lower_bound"] / 1000:.1f}–{ci["upper_bound"] / 1000:.1f})')
PY
}
declare -A crit_result
for g in mutate handler; do
  for n in small typical large; do crit_result[$g/$n]="$(crit_us $g $n)"; done
done
crit_result[mutate/not-opted-in]="$(crit_us mutate not-opted-in)"
for n in record record-atomics encode; do crit_result[metrics/$n]="$(crit_us metrics $n)"; done

step "webhook over TLS under load"
tls="${work}/tls"; mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=tempcreds-bench-ca" \
  -keyout "${tls}/ca.key" -out "${tls}/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "${tls}/tls.key" -out "${tls}/tls.csr" 2>/dev/null
openssl x509 -req -in "${tls}/tls.csr" -CA "${tls}/ca.crt" -CAkey "${tls}/ca.key" -CAcreateserial \
  -days 1 -out "${tls}/tls.crt" -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') 2>/dev/null
printf 'sidecar:\n  image: ghcr.io/tempcreds/tempcreds-sidecar:0.1.0\nregion: us-east-1\n' >"${work}/config.yaml"
# No Service routes to this local process: it may stop at once on SIGTERM.
# The log is kept out of the config's directory: the webhook watches that
# directory, and each log line would wake its watch.
mkdir -p "${work}/logs"
hook_bin="${rel}/tempcreds-webhook"
hook_config="${work}/config.yaml"
hook_prefix=()
start_webhook() { # PORT [ENV...] ; runs "${hook_prefix[@]}" "$hook_bin" with $hook_config; sets hook_pid
  local port=$1; shift
  env -i PATH="$PATH" HOME="$work" RUST_LOG=warn "$@" "${hook_prefix[@]}" "$hook_bin" serve \
    --listen "127.0.0.1:${port}" --tls-cert-file "${tls}/tls.crt" --tls-key-file "${tls}/tls.key" \
    --config "$hook_config" --log-format json --shutdown-delay 0 >>"${work}/logs/webhook.log" 2>&1 &
  hook_pid=$!
  pids+=("$hook_pid")
  wait_for "https://127.0.0.1:${port}/readyz" --cacert "${tls}/ca.crt"
}
hook_port="$(free_port)"
start_webhook "$hook_port"
url="https://127.0.0.1:${hook_port}/mutate"
rss_idle="$(status_kib "$hook_pid" VmRSS)"
declare -A load_result
for rate in 1000 3000 5000; do
  load_result[$rate]="$("$load_bin" "$url" "${tls}/ca.crt" 32 "$load_secs" "$rate" | tee -a "${work}/load.txt" | grep '^RESULT')"
done
ticks_before="$(cpu_ticks "$hook_pid")"
load_result[sat]="$("$load_bin" "$url" "${tls}/ca.crt" 32 "$sat_secs" 0 | tee -a "${work}/load.txt" | grep '^RESULT')"
ticks_after="$(cpu_ticks "$hook_pid")"
hook_hwm="$(status_kib "$hook_pid" VmHWM)"
hook_rss="$(status_kib "$hook_pid" VmRSS)"
sat_reviews="$(field "${load_result[sat]}" reviews)"
cpu_per_review="$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v n="$sat_reviews" \
  'BEGIN {printf "%.0f µs", t / hz * 1e6 / n}')"
kill "$hook_pid"; wait "$hook_pid" 2>/dev/null || true
cat "${work}/load.txt"

step "the local kube-apiserver"
"${here}/control-plane.sh" start "${work}/cp" >/dev/null
cp_started=1
# shellcheck disable=SC1091
source "${work}/cp/env"
kubectl="${TEMPCREDS_CACHE}/bin/kubectl"

step "webhook in the cluster configuration (${pinning})"
# 50 namespaces with a labelled namespace and an annotated ServiceAccount
# each, so the caches hold more than the one the reviews name.
{
  for i in $(seq 1 50); do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-%d, labels: {team: t%d}}\n' "$i" "$i"
    printf -- '---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: team-%d, annotations: {tempcreds.io/role-arn: "arn:aws:iam::123456789012:role/t%d-app"}}\n' "$i" "$i"
  done
  printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {team: web}}\n'
  printf -- '---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: web, annotations: {tempcreds.io/role-arn: "arn:aws:iam::123456789012:role/web-reader"}}\n'
} | "$kubectl" apply -f - >/dev/null
cat >"${work}/config-cluster.yaml" <<YAML
sidecar:
  image: ghcr.io/tempcreds/tempcreds-sidecar:0.1.0
region: us-east-1
policy:
  allowedSources: [web-identity]
  roles:
  - namespaces: [payments, "payments-*"]
    roleArns: ["arn:aws:iam::123456789012:role/payments-*"]
  - namespaceSelector: {matchLabels: {team: data}}
    roleArns: ["arn:aws:iam::123456789012:role/data-*", "arn:aws:iam::*:role/shared-reader"]
  - namespaceSelector: {matchLabels: {team: web}}
    roleArns: ["arn:aws:iam::123456789012:role/web-*"]
YAML
# What a Deployment's ReplicaSet sends: no tempcreds annotation on the pod,
# the role from its ServiceAccount.
cat >"${work}/review-cluster.json" <<'JSON'
{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"bench","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"web","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-7d9f8c-","namespace":"web","labels":{"app":"web","pod-template-hash":"7d9f8c"}},"spec":{"serviceAccountName":"web","containers":[{"name":"web","image":"example.com/web:1","ports":[{"containerPort":8080}],"env":[{"name":"LOG_LEVEL","value":"info"}],"volumeMounts":[{"name":"kube-api-access","mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","readOnly":true}]}],"volumes":[{"name":"kube-api-access","projected":{"sources":[{"serviceAccountToken":{"path":"token","expirationSeconds":3607}}]}}]}}}}
JSON
review_cluster="${work}/review-cluster.json"
hook_config="${work}/config-cluster.yaml"
hook_prefix=("${pin_hook[@]}")
hook_port="$(free_port)"
# /readyz answers once both watch caches have synced.
start_webhook "$hook_port" KUBECONFIG="$KUBECONFIG" RUST_LOG=info
cluster_url="https://127.0.0.1:${hook_port}/mutate"
cluster_load() { # SECONDS RATE
  "${pin_load[@]}" "$load_bin" "$cluster_url" "${tls}/ca.crt" 32 "$1" "$2" "$review_cluster" | tee -a "${work}/cluster.txt" | grep '^RESULT'
}
answer="$(curl -fsS --cacert "${tls}/ca.crt" -H 'content-type: application/json' --data @"$review_cluster" "$cluster_url")"
grep -q '"patch"' <<<"$answer" || die "the cluster configuration's review was not patched: ${answer}"
cluster_load 2 0 >/dev/null # warm-up
cluster_cpu=(); cluster_thr=()
for round in 1 2 3; do
  t0="$(cpu_ticks "$hook_pid")"
  r="$(cluster_load "$sat_secs" 0)"
  t1="$(cpu_ticks "$hook_pid")"
  cluster_cpu+=("$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$(field "$r" reviews)" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')")
  cluster_thr+=("$(field "$r" achieved)")
done
cluster_cpu_median="$(median "${cluster_cpu[@]}")"
cluster_thr_median="$(median "${cluster_thr[@]}")"
half_rate=$((cluster_thr_median / 2))
cluster_half="$(cluster_load "$load_secs" "$half_rate")"
cluster_hwm="$(status_kib "$hook_pid" VmHWM)"
kill "$hook_pid"; wait "$hook_pid" 2>/dev/null || true
cat "${work}/cluster.txt"

profile_summary="not measured (BENCH_PROFILE=0 or no perf)"
if [[ "$profile" == 1 ]]; then
  step "perf profile of the webhook in the cluster configuration"
  hook_bin="$profiling_bin"
  hook_port="$(free_port)"
  start_webhook "$hook_port" KUBECONFIG="$KUBECONFIG" RUST_LOG=info
  cluster_url="https://127.0.0.1:${hook_port}/mutate"
  cluster_load $((sat_secs + 4)) 0 >/dev/null &
  profile_load=$!
  sleep 2
  if perf record -F 499 --call-graph dwarf,32768 -p "$hook_pid" -o "${work}/perf.data" -- sleep "$((sat_secs / 2 + 1))" >"${work}/perf-record.log" 2>&1; then
    perf script -i "${work}/perf.data" 2>/dev/null | python3 "${here}/perf-summary.py" >"${work}/profile.txt"
    profile_summary="$(cat "${work}/profile.txt")"
  else
    profile_summary="perf record failed: $(tail -n1 "${work}/perf-record.log")"
  fi
  wait "$profile_load" || true
  kill "$hook_pid"; wait "$hook_pid" 2>/dev/null || true
  hook_bin="${rel}/tempcreds-webhook"
fi
hook_prefix=()
hook_config="${work}/config.yaml"

step "pod creation on the local kube-apiserver, with and without the webhook"
hook_port="$(free_port)"
start_webhook "$hook_port" KUBECONFIG="$KUBECONFIG"
ca_b64="$(base64 -w0 "${tls}/ca.crt")"
"$kubectl" apply -f - >/dev/null <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: tempcreds-bench
webhooks:
- name: pods.tempcreds.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:${hook_port}/mutate
    caBundle: ${ca_b64}
  rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
  namespaceSelector:
    matchLabels:
      tempcreds.io/injection: enabled
YAML
for ns in bench-with bench-without; do
  "$kubectl" create namespace "$ns" >/dev/null
  # No controller-manager runs here: create the ServiceAccount pods use.
  "$kubectl" -n "$ns" create serviceaccount default >/dev/null
done
"$kubectl" label namespace bench-with tempcreds.io/injection=enabled >/dev/null
sleep 1 # let the API server's webhook configuration cache see the registration
pods_result="$(python3 "${here}/bench-pods.py" "$KUBECONFIG" bench-with bench-without "$pods" | tee "${work}/pods.txt" | grep '^RESULT')"
cat "${work}/pods.txt"
kill "$hook_pid"; wait "$hook_pid" 2>/dev/null || true
"${here}/control-plane.sh" stop "${work}/cp" >/dev/null 2>&1 || true
cp_started=0

step "sidecar against moto"
moto_port="$(free_port)"
"${TEMPCREDS_CACHE}/venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"${work}/moto.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:${moto_port}/moto-api/"
: >"${work}/empty"
# Each sidecar gets its own key directory, as in a pod: the directory is
# watched, and another process reading files in it would wake the watcher.
sidecar_env=(env -i PATH="$PATH" HOME="$work" AWS_CONFIG_FILE="${work}/empty" AWS_SHARED_CREDENTIALS_FILE="${work}/empty"
  AWS_EC2_METADATA_DISABLED=true)
# In a pod the credentials volume is memory-backed (emptyDir, medium
# Memory): the sidecars' output directories are on a tmpfs here too, where
# fsync costs nothing (on this machine's disk it was half of a refresh's CPU).
if [[ "$(stat -f -c %T /dev/shm 2>/dev/null)" == tmpfs ]]; then
  shm="$(mktemp -d /dev/shm/tempcreds-bench.XXXXXX)"
else
  shm="${work}/shm"; mkdir -p "$shm"
fi
sidecar_setup() { # DIR: writes DIR/keys, sets sidecar_flags (`run`'s flags for DIR, output in $shm)
  local dir=$1
  local keys="${dir}/keys"
  mkdir -p "$dir/keys" "${shm}/${dir##*/}"
  printf 'AKIABENCHEXAMPLE0001' >"${keys}/id"
  printf 'benchSecretAccessKeyValue+1' >"${keys}/secret"
  sidecar_flags=(--output-dir "${shm}/${dir##*/}" --source secret --role-arn arn:aws:iam::123456789012:role/bench
    --access-key-id-file "${keys}/id" --secret-access-key-file "${keys}/secret"
    --region us-east-1 --sts-endpoint "http://127.0.0.1:${moto_port}")
}
sidecar() { # DIR ARGS... (replaces the shell: run it in a subshell or with &)
  local dir=$1; shift
  sidecar_setup "$dir"
  exec "${sidecar_env[@]}" "${rel_sidecar}/tempcreds-sidecar" run "${sidecar_flags[@]}" "$@"
}
cpu_ns() { # PID -> CPU time of its live threads in ns (/proc/PID/task/*/schedstat)
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'
}

# Start to first file: `run --once`, from exec to exit after the files are written.
firsts=()
for i in 1 2 3 4 5 6; do
  t0=$(date +%s%N)
  (sidecar "${work}/once-${i}" --once 2>/dev/null)
  t1=$(date +%s%N)
  [[ -s "${shm}/once-${i}/credentials" ]] || die "run --once wrote no credentials"
  [[ $i -gt 1 ]] && firsts+=($(( (t1 - t0) / 1000 )))  # the first run warms the page cache
done
first_file_us="$(median "${firsts[@]}")"
first_file_max_us="$(printf '%s\n' "${firsts[@]}" | sort -n | tail -n1)"

# RSS over refreshes: a refresh due every ~1-2 s (900 s sessions refreshed
# 898 s before expiry), measured at the 10th and the last refresh. Runs in
# the background while the idle sidecar below is measured.
sidecar "${work}/busy" --health-addr "127.0.0.1:$(free_port)" \
  --session-duration 900 --refresh-before 898s >"${work}/busy.log" 2>&1 &
busy_pid=$!
pids+=("$busy_pid")
(
  writes() { grep -c 'credentials written' "${work}/busy.log" 2>/dev/null || true; }
  until [[ $(writes) -ge 11 ]]; do sleep 0.1; done
  status_kib "$busy_pid" VmRSS >"${work}/rss10"
  cpu_ns "$busy_pid" >"${work}/cpu10"
  until [[ $(writes) -ge $((refreshes / 2 + 6)) ]]; do sleep 0.1; done
  status_kib "$busy_pid" VmRSS >"${work}/rssmid"
  until [[ $(writes) -ge $((refreshes + 1)) ]]; do sleep 0.1; done
  cpu_ns "$busy_pid" >"${work}/cpu100"
  status_kib "$busy_pid" VmRSS >"${work}/rss100"
  status_kib "$busy_pid" VmHWM >"${work}/hwm100"
) &
monitor=$!

# Idle: default refresh (half of a 1 h session), so nothing is due.
health_port="$(free_port)"
sidecar "${work}/idle" --health-addr "127.0.0.1:${health_port}" >"${work}/idle.log" 2>&1 &
idle_pid=$!
pids+=("$idle_pid")
wait_for "http://127.0.0.1:${health_port}/readyz"
sleep 2
idle_threads="$(ls /proc/${idle_pid}/task | wc -l)"
c0="$(ctxt "$idle_pid")"; sleep "$idle_secs"; c1="$(ctxt "$idle_pid")"
idle_switches=$((c1 - c0))
idle_rss="$(status_kib "$idle_pid" VmRSS)"
strace_summary="strace not available"
if command -v strace >/dev/null 2>&1; then
  timeout -s INT "$strace_secs" strace -f -c -p "$idle_pid" -o "${work}/strace.txt" 2>/dev/null || true
  if [[ -s "${work}/strace.txt" ]]; then
    calls="$(awk '$NF == "total" {print $4}' "${work}/strace.txt")"
    strace_summary="${calls:-0} system calls in ${strace_secs} s"
    cat "${work}/strace.txt"
  else
    strace_summary="0 system calls in ${strace_secs} s"
  fi
fi
kill "$idle_pid"; wait "$idle_pid" 2>/dev/null || true

# RSS per additional profile: idle sidecars with 1, 3 and 9 profiles (9 is
# the most a pod may ask for), each additional profile its own role with the
# same keys, measured once every profile is written (/readyz).
profile_counts=(1 3 9)
profile_rss=()
for n in "${profile_counts[@]}"; do
  dir="${work}/profiles-${n}"
  port="$(free_port)"
  extra=()
  for ((i = 1; i < n; i++)); do
    extra+=(--and-profile "p${i}" --source secret --role-arn "arn:aws:iam::123456789012:role/bench-${i}"
      --access-key-id-file "${dir}/keys/id" --secret-access-key-file "${dir}/keys/secret")
  done
  sidecar "$dir" --health-addr "127.0.0.1:${port}" "${extra[@]}" >"${dir}.log" 2>&1 &
  profiles_pid=$!
  pids+=("$profiles_pid")
  wait_for "http://127.0.0.1:${port}/readyz"
  sleep 2
  profile_rss+=("$(status_kib "$profiles_pid" VmRSS)")
  kill "$profiles_pid"; wait "$profiles_pid" 2>/dev/null || true
done
per_profile_kib=$(( (profile_rss[2] - profile_rss[0]) / (profile_counts[2] - profile_counts[0]) ))

wait "$monitor"
busy_refreshes=$(( $(grep -c 'credentials written' "${work}/busy.log") - 1 ))
# CPU per refresh of the running sidecar, from refresh 10 to the last
# (the writes counted when each was sampled).
refresh_cpu_us="$(awk -v a="$(cat "${work}/cpu10")" -v b="$(cat "${work}/cpu100")" -v n=$((refreshes - 10)) \
  'BEGIN {printf "%.0f", (b - a) / n / 1000}')"
rssmid="$(cat "${work}/rssmid")"; rss10="$(cat "${work}/rss10")"; rss100="$(cat "${work}/rss100")"; hwm100="$(cat "${work}/hwm100")"
kill "$busy_pid"; wait "$busy_pid" 2>/dev/null || true

# The do-it-yourself sidecar: a shell loop around `aws sts assume-role`
# writing the same credentials file, its CPU (user + system of every process
# it starts) per refresh.
aws_dir="${shm}/aws-loop"; mkdir -p "$aws_dir"
aws_cpu_us="$("${sidecar_env[@]}" AWS_ACCESS_KEY_ID=AKIABENCHEXAMPLE0001 AWS_SECRET_ACCESS_KEY='benchSecretAccessKeyValue+1' \
  AWS_DEFAULT_REGION=us-east-1 python3 - "${TEMPCREDS_CACHE}/venv/bin/aws" "$moto_port" "$aws_dir" "$aws_loops" <<'PY'
import resource, subprocess, sys
loop = r"""
for _ in $(seq 1 "$4"); do
  read -r id secret token < <("$1" sts assume-role --endpoint-url "http://127.0.0.1:$2" \
    --role-arn arn:aws:iam::123456789012:role/bench --role-session-name bench --duration-seconds 900 \
    --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text)
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = %s\n' \
    "$id" "$secret" "$token" >"$3/credentials.tmp"
  mv "$3/credentials.tmp" "$3/credentials"
done
"""
subprocess.run(["bash", "-c", loop, "loop", *sys.argv[1:]], check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(round((r.ru_utime + r.ru_stime) * 1e6 / int(sys.argv[4])))
PY
)"
grep -q '^aws_session_token = .' "${aws_dir}/credentials" || die "the aws CLI loop wrote no credentials"

# Memory over many refreshes: the sidecar's refresh back to back.
sidecar_setup "${work}/soak"
soak_result="$("${sidecar_env[@]}" "${rel_sidecar}/examples/refresh_soak" "$soak" "${sidecar_flags[@]}" 2>"${work}/soak.log" \
  | tee "${work}/soak.txt" | grep '^RESULT')" || die "refresh soak failed: $(tail -n3 "${work}/soak.log")"
soak_points="$(field "$soak_result" rss_kib | tr ',' '\n' | awk -F: '{printf "%s%s: %.1f MiB", (NR > 1 ? " → " : ""), $1, $2 / 1024}')"
soak_growth="$(field "$soak_result" rss_kib | tr ',' '\n' | awk -F: 'NR == 1 {a = $2} {b = $2} END {print b - a}')"

size() { stat -c %s "$1" | awk '{printf "%.1f MiB (%d bytes)", $1 / 1048576, $1}'; }
stripped() { if file "$1" 2>/dev/null | grep -q 'not stripped'; then echo "not stripped"; else echo "stripped"; fi; }
webhook_size="$(size "${rel}/tempcreds-webhook"), $(stripped "${rel}/tempcreds-webhook")"
sidecar_size="$(size "${rel_sidecar}/tempcreds-sidecar"), $(stripped "${rel_sidecar}/tempcreds-sidecar")"

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
lr() { lrr "${load_result[$1]}"; }
lrr() { # RESULT line -> "achieved/s, p50 / p99 / p99.9, errors"
  local r="$1"
  echo "$(field "$r" achieved)/s; p50 $(ms "$(field "$r" p50_us)"), p99 $(ms "$(field "$r" p99_us)"), p99.9 $(ms "$(field "$r" p999_us)"); $(field "$r" errors) errors"
}
pf() { field "$pods_result" "$1"; }

mkdir -p "$(dirname "$out")"
cat >"$out" <<MD
# tempcreds measurements

Written by \`make bench\` (hack/bench.sh) on $(date -u +%Y-%m-%d) at commit ${commit} (as built when it started).

**Machine:** ${machine}; ${rustc_version}.
**Load average:** ${load_before} before, ${load_after} after (1, 5, 15 min).
CPU busy in the second before it started: ${busy_before} (other work on the machine).
The load generator, the API server and moto run on the same CPUs as the
process measured, so the webhook figures are for the webhook and its client
sharing $(nproc) CPUs.

| what | result | goal | how |
|---|---|---|---|
| mutation, small pod (median, 95% CI) | ${crit_result[mutate/small]} | | \`cargo bench -p tempcreds-webhook --bench mutate\` |
| mutation, typical pod | ${crit_result[mutate/typical]} | ≤ 50 µs | same |
| mutation, large pod (16 containers) | ${crit_result[mutate/large]} | | same |
| pod not opted in | ${crit_result[mutate/not-opted-in]} | | same |
| /mutate handler in process (decode, mutate, encode): small / typical / large | ${crit_result[handler/small]} / ${crit_result[handler/typical]} / ${crit_result[handler/large]} | | same |
| one review's metrics recorded (counter + histogram, prometheus-client); the former hand-written atomics | ${crit_result[metrics/record]}; ${crit_result[metrics/record-atomics]} | ≤ 5 µs | same |
| one /metrics scrape encoded (Prometheus text) | ${crit_result[metrics/encode]} | | same |
| webhook over TLS, 1,000 reviews/s offered | $(lr 1000) | | \`load URL CA 32 ${load_secs} 1000\` |
| webhook over TLS, 3,000/s offered | $(lr 3000) | | \`load URL CA 32 ${load_secs} 3000\` |
| webhook over TLS, 5,000/s offered | $(lr 5000) | ≥ 5,000/s, p99 ≤ 5 ms | \`load URL CA 32 ${load_secs} 5000\` |
| webhook over TLS, saturation (32 connections) | $(lr sat) | | \`load URL CA 32 ${sat_secs}\` |
| webhook CPU per review at saturation | ${cpu_per_review} | | utime+stime from /proc/PID/stat |
| webhook peak RSS (VmHWM) after all load runs | $(mib "$hook_hwm") (idle before load: $(mib "$rss_idle"), after: $(mib "$hook_rss") VmRSS) | ≤ 30 MiB | /proc/PID/status |
| **cluster configuration** (${pinning}; ServiceAccount and namespace caches, role from the ServiceAccount, policy with namespace selectors, \`info\` logging): CPU per review at saturation | median ${cluster_cpu_median} µs (rounds: $(range "${cluster_cpu[@]}") µs) | ≤ 60 µs | utime+stime of \`serve\` over 3 rounds of \`load URL CA 32 ${sat_secs} 0 REVIEW\` |
| cluster configuration: saturation throughput (32 connections, one CPU) | median ${cluster_thr_median}/s (rounds: $(range "${cluster_thr[@]}")/s) | | same |
| cluster configuration: at 50% of saturation (${half_rate}/s offered) | $(lrr "$cluster_half") | p99 ≤ 2 ms | \`load URL CA 32 ${load_secs} ${half_rate} REVIEW\` |
| cluster configuration: peak RSS (VmHWM) after all its runs | $(mib "$cluster_hwm") | ≤ 16 MiB | /proc/PID/status |
| pod creation, sequential, ${pods} pods each: opted in, with the webhook | median $(pf with_p50_ms) ms, p99 $(pf with_p99_ms) ms | | \`hack/bench-pods.py\` |
| pod creation, opted in, no webhook registered for the namespace | median $(pf without_p50_ms) ms, p99 $(pf without_p99_ms) ms | | same |
| pod creation with the webhook, pod not opted in (call answered without a patch) | median $(pf plain_p50_ms) ms, p99 $(pf plain_p99_ms) ms | | same |
| pod creation, no webhook, the pod as the webhook leaves it (created already injected) | median $(pf injected_p50_ms) ms, p99 $(pf injected_p99_ms) ms | | same |
| added by the webhook for an opted-in pod | median +$(pf added_p50_ms) ms, p99 +$(pf added_p99_ms) ms (the call alone, median: +$(pf call_p50_ms) ms; the larger pod alone, median: +$(pf size_p50_ms) ms) | median ≤ 1 ms | differences |
| sidecar RSS at refresh 10 → $((refreshes / 2 + 5)) → ${busy_refreshes} | $(mib "$rss10") → $(mib "$rssmid") → $(mib "$rss100") ($(( (rss100 - rss10) )) KiB more; VmHWM $(mib "$hwm100")) | ≤ 8 MiB, no growth | VmRSS, refresh every ~1.5 s against moto |
| sidecar RSS with ${profile_counts[0]} / ${profile_counts[1]} / ${profile_counts[2]} profiles, all written | $(mib "${profile_rss[0]}") / $(mib "${profile_rss[1]}") / $(mib "${profile_rss[2]}") (${per_profile_kib} KiB per additional profile) | ≤ 8 MiB | VmRSS of an idle sidecar once /readyz answers 200 |
| sidecar RSS over ${soak} refreshes back to back | ${soak_points} (${soak_growth} KiB more) | flat | \`refresh_soak ${soak} RUN_FLAGS\` (the sidecar's refresh without its wait) |
| CPU per refresh: the sidecar; a shell loop around \`aws sts assume-role\` writing the same file | ${refresh_cpu_us} µs; $(awk -v u="$aws_cpu_us" 'BEGIN {printf "%.0f ms", u / 1000}') ($(awk -v a="$aws_cpu_us" -v b="$refresh_cpu_us" 'BEGIN {printf "%.0f", a / b}')× the sidecar's) | ≥ 150× less than the loop | sidecar: /proc/PID/task/*/schedstat from refresh 10 to ${refreshes}; loop: getrusage of ${aws_loops} iterations |
| sidecar start to first file | median $(ms "$first_file_us") (max $(ms "$first_file_max_us"), 5 runs) | | \`tempcreds-sidecar run --once\`, exec to exit |
| sidecar idle wakeups | ${idle_switches} context switches in ${idle_secs} s (threads: ${idle_threads}); ${strace_summary}; VmRSS $(mib "$idle_rss") | nothing but timer and file events | /proc/PID/task/*/status, \`strace -f -c -p PID\` |
| release binary sizes | webhook ${webhook_size}; sidecar ${sidecar_size} | sidecar ≤ 8 MiB | \`stat\`, \`file\` |

Definitions:
- Fixed-rate runs are open loop: request *i* is due at start + *i*/rate; when
  every connection was still busy at that time its latency counts from then,
  so queueing behind slow answers is included.
  Saturation is closed loop: each connection sends as soon as its previous
  answer arrives. Every run first opens its 32 keep-alive TLS connections.
- The typical pod is tests/fixtures/webhook/existing-volumes-and-init-containers;
  small is one container; large is 12 containers and 4 init containers with
  20 env variables and 3 mounts each, 40 volumes and 30 annotations.
- Pod creation: ${pods} rounds (after 5 warm-up rounds) of four pods
  created one after another over one kept-alive connection: opted in and
  not opted in, in a namespace routed to the webhook (failurePolicy Fail,
  timeout 10 s, ServiceAccount cache on), and opted in, in a namespace that
  is not, where also a copy of the first pod the webhook mutated is
  created as it was stored. The opted-in pod the webhook mutates is larger
  (sidecar, volumes, probes), so the API server also validates and stores
  more; the last series measures that part alone.

## Where the webhook's CPU goes (cluster configuration)

\`perf record -F 499 --call-graph dwarf\` of the release webhook with its
symbols kept (Cargo.toml's profiling profile) during a saturation run,
summarised by hack/perf-summary.py:

\`\`\`
${profile_summary}
\`\`\`

## Raw output

\`\`\`
$(grep -E '^(mutate|handler)/' -A1 "${work}/criterion.txt" | grep -E '^(mutate|handler)/|time:' | paste - - | sed 's/  */ /g')
$(grep -v '^RESULT' "${work}/load.txt")
$(grep -v '^RESULT' "${work}/cluster.txt")
$(grep -v '^RESULT' "${work}/pods.txt")
$(grep -v '^RESULT' "${work}/soak.txt")
idle sidecar strace -f -c over ${strace_secs} s:
$(cat "${work}/strace.txt" 2>/dev/null || echo "(none)")
\`\`\`
MD
say "results written to ${out}"
cat "$out"
