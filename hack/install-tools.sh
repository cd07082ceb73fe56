#!/usr/bin/env bash
# Installs every tool the tests and the demo need, into TEMPCREDS_CACHE
# (default ~/.cache/tempcreds): the Python venv (moto, awscli, boto3),
# kubectl and helm, etcd, the Kubernetes binaries and cert-manager (after
# helm, which renders its CRDs). Idempotent; a warm run takes about a second.
set -euo pipefail
here="$(dirname "$0")"
source "${here}/lib.sh"
"${here}/install-python-tools.sh"
"${here}/install-kubectl-helm.sh"
"${here}/install-etcd.sh"
"${here}/install-kube.sh"
"${here}/install-cert-manager.sh"
"${here}/install-node-tools.sh"
say "all tools ready under ${TEMPCREDS_CACHE}"
