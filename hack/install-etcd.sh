#!/usr/bin/env bash
# Builds etcd from its Go module (go.etcd.io/etcd/server/v3) at a pinned
# version and caches the binary outside the repository.
#
# Why not Debian's etcd-server? Debian 12 ships 3.4.23, older than the
# 3.4.29 / 3.5.11 whose health endpoints kube-apiserver 1.31+ relies on; the
# API server does not report healthy against it (see README, "Test harness").
#
# The etcd binary's own main package lives in the repository's root module,
# which is not meant to be depended on; its whole body is a call to
# etcdmain.Main, so we build an identical two-line main against the server
# module instead.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version="${PIN_ETCD}"
out="${ETCD_BIN_PATH}"
if [[ -x "$out" ]]; then
  say "etcd ${version} already built: $out"
  exit 0
fi

need go
build_dir="${TEMPCREDS_CACHE}/build/etcd-${version}"
mkdir -p "$build_dir"
cat > "${build_dir}/go.mod" <<GOMOD
module tempcreds.local/etcd-build

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')

require go.etcd.io/etcd/server/v3 ${version}
GOMOD
cat > "${build_dir}/main.go" <<'GO'
// The etcd server, exactly as go.etcd.io/etcd/v3's main.go starts it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GO

say "resolving go.etcd.io/etcd/server/v3@${version}"
(cd "$build_dir" && go mod tidy)
say "building etcd ${version} with CGO_ENABLED=0"
start=$(date +%s)
(cd "$build_dir" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "${out}.tmp" .)
mv "${out}.tmp" "$out"
say "built $out in $(( $(date +%s) - start ))s"
