#!/usr/bin/env bash
# Creates the Python venv the tests use: moto's real STS server (moto_server),
# the AWS CLI and boto3, at pinned versions, cached outside the repository.
#
# Idempotent: the venv is keyed by a hash of the pinned requirements, so a
# change of pins builds a new venv and an unchanged one is reused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

requirements=$(cat <<'REQ'
moto[server]==5.2.5
awscli==1.46.2
boto3==1.44.5
REQ
)
key=$(printf '%s' "$requirements" | sha256sum | cut -c1-12)
venv="${TEMPCREDS_CACHE}/venv-${key}"

if [[ -x "${venv}/bin/moto_server" && -x "${venv}/bin/aws" && -f "${venv}/.complete" ]]; then
  say "python tools already installed: ${venv}"
else
  need python3
  say "creating venv ${venv} with: $(echo $requirements)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  printf '%s\n' "$requirements" > "${venv}/requirements.txt"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check -r "${venv}/requirements.txt"
  touch "${venv}/.complete"
  say "installed: $("${venv}/bin/pip" freeze | grep -iE '^(moto|awscli|boto3|botocore)=' | tr '\n' ' ')"
fi
ln -sfn "$venv" "${TEMPCREDS_CACHE}/venv"
