#!/usr/bin/env bash
# Makes sure rustfmt and clippy are present for the active Rust toolchain
# (rustup installs them on demand; a minimal profile leaves them out).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need cargo
for component in rustfmt clippy; do
  sub=${component/rustfmt/fmt}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    need rustup
    say "installing the Rust component ${component}"
    rustup component add "$component"
  fi
done
