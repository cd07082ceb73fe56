#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and reports how
# many inputs each one executed (`make fuzz`).
#
#   hack/fuzz.sh              every target, FUZZ_SECONDS (default 60) each
#   hack/fuzz.sh token 300    one target for 300 s
#   FUZZ_KEEP_GOING=1 ...     keep fuzzing after a crash (libFuzzer's fork
#                             mode), collecting every crash in the time given
#
# cargo-fuzz needs nightly-only compiler flags (sanitizer, coverage
# instrumentation); RUSTC_BOOTSTRAP=1 allows them on the stable toolchain, so
# no second toolchain is installed. cargo-fuzz itself is installed into
# TEMPCREDS_CACHE when missing. Corpora live in fuzz/corpus/ (not committed;
# the seeds in fuzz/seeds/ start them), crashes in fuzz/artifacts/<target>/.
# Every crash found is fixed and kept as a regression test in the normal
# suite.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "${here}/lib.sh"
root="$(dirname "${here}")"
need cargo

export PATH="${TEMPCREDS_CACHE}/cargo/bin:${PATH}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz into ${TEMPCREDS_CACHE}/cargo"
  cargo install cargo-fuzz --locked --root "${TEMPCREDS_CACHE}/cargo"
fi
export RUSTC_BOOTSTRAP=1

targets=(admission_review annotations sts_url sts_response token credential_files)
seconds="${FUZZ_SECONDS:-60}"
if [[ $# -ge 1 ]]; then targets=("$1"); fi
if [[ $# -ge 2 ]]; then seconds="$2"; fi

cd "${root}/fuzz"
# AddressSanitizer catches memory errors only in unsafe code, which this
# workspace forbids; without it the targets run several times faster. Set
# FUZZ_SANITIZER=address to use it anyway.
sanitizer="${FUZZ_SANITIZER:-none}"
say "building ${targets[*]} (sanitizer: ${sanitizer})"
cargo fuzz build --sanitizer "${sanitizer}"
summary=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/${t}" "artifacts/${t}"
  seeds=()
  [[ -d "seeds/${t}" ]] && seeds=("seeds/${t}")
  log="$(mktemp)"
  say "fuzzing ${t} for ${seconds}s"
  keep_going=()
  [[ "${FUZZ_KEEP_GOING:-0}" == 1 ]] && keep_going=(-fork=1 -ignore_crashes=1)
  before="$(find "artifacts/${t}" -type f | wc -l)"
  if cargo fuzz run --sanitizer "${sanitizer}" "${t}" "corpus/${t}" "${seeds[@]}" -- \
      -max_total_time="${seconds}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "${keep_going[@]}" >"${log}" 2>&1 \
      && [[ "$(find "artifacts/${t}" -type f | wc -l)" == "${before}" ]]; then
    result="ok"
  else
    result="FAILED: $(( $(find "artifacts/${t}" -type f | wc -l) - before )) new crash(es) in fuzz/artifacts/${t}/"
    status=1
    tail -n 40 "${log}" >&2
  fi
  runs="$(grep -m1 '^stat::number_of_executed_units' "${log}" | awk '{print $2}' || true)"
  # Fork mode prints no final stats: its last status line has the total.
  [[ -z "${runs}" ]] && runs="$(grep -E '^#[0-9]+' "${log}" | tail -n1 | sed -E 's/^#([0-9]+).*/\1/' || true)"
  cov="$(grep -E '^#[0-9]+' "${log}" | tail -n1 | grep -o 'cov: [0-9]*' || true)"
  corpus="$(find "corpus/${t}" -type f | wc -l)"
  summary+=("$(printf '%-18s %-6s %12s executions in %ss, %s, corpus %s' "${t}" "${result}" "${runs:-?}" "${seconds}" "${cov:-cov: ?}" "${corpus}")")
  rm -f "${log}"
done
printf '%s\n' "${summary[@]}"
exit "${status}"
