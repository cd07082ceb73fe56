#!/usr/bin/env bash
# Builds the images the tests run in pods, as OCI/Docker archives (see
# hack/build-image.py), cached under ${TEMPCREDS_CACHE}/test-images/ and
# rebuilt only when their inputs change. Prints the archive paths, one a
# line, in this order:
#
#   busybox.tar            tempcreds.local/test/busybox:1
#       Debian's busybox-static at /bin/busybox, a /bin symlink per applet,
#       nonroot 65532, /tmp. For pods that need a shell.
#   aws-go-app.tar         tempcreds.local/test/aws-go-app:1
#       tests/apps/aws-go-app (a static Go binary on the AWS SDK's default
#       chain), CA certificates, user 65532, no shell.
#   aws-go-app-shell.tar   tempcreds.local/test/aws-go-app-shell:1
#       The same plus busybox's sh and cat in /bin, for the credential_process
#       delivery mode. aws-sdk-go-v2 runs the profile's credential_process
#       through `sh -c`: DefaultNewCommandBuilder.NewCommand in
#       credentials/processcreds/provider.go (credentials v1.21.1) uses
#       cmdArgs = {"sh", "-c"} on every OS but Windows and exec.Command
#       finds `sh` through PATH, so the image's PATH includes /bin. Checked:
#       in the image without a shell the same profile fails with
#       `error in credential_process: exec: "sh": executable file not found
#       in $PATH`. tempcreds' profile runs `/bin/cat .../credentials.json`.
#
# Each archive has a NAME.tar.inputs stamp beside it holding the SHA-256 of
# everything the image is made from (this script, build-image.py, the
# binaries, the CA bundle, the Go sources and toolchain version).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "${root}/hack/lib.sh"
need python3
need sha256sum

cache="${TEMPCREDS_CACHE}/test-images"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$cache"

apt_install() {
  need apt-get
  say "installing Debian's $*"
  { apt-get install -y --no-install-recommends "$@" \
      || { apt-get update && apt-get install -y --no-install-recommends "$@"; }; } >&2 \
    || die "could not install $*; run: apt-get install $*"
}
[[ -x /bin/busybox ]] || apt_install busybox-static
[[ -s "$ca_bundle" ]] || apt_install ca-certificates
/bin/busybox --list >/dev/null 2>&1 \
  || die "/bin/busybox cannot list its applets; it should be Debian's busybox-static"

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
write_users "$staging"

# The parts every test image has: passwd with nonroot, /tmp, user 65532.
common=(
  --user 65532:65532
  --file "${staging}/passwd:/etc/passwd:0644"
  --file "${staging}/group:/etc/group:0644"
  --dir /tmp:1777
  --dir /home/nonroot:0700:65532:65532
)

# build NAME REF INPUT_FILE... -- BUILD_IMAGE_ARGS...: builds
# ${cache}/NAME.tar unless its stamp matches the inputs' hash.
build() {
  local name="$1" ref="$2"
  shift 2
  local inputs=("$0" "${root}/hack/lib.sh" "${root}/hack/build-image.py")
  while [[ "$1" != -- ]]; do inputs+=("$1"); shift; done
  shift
  local archive="${cache}/${name}.tar"
  local key
  key="$( { printf '%s\n' "$ref" "$@"; sha256sum "${inputs[@]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)"
  if [[ -s "$archive" && "$(cat "${archive}.inputs" 2>/dev/null)" == "$key" ]]; then
    say "${ref}: up to date (${archive})"
  else
    say "${ref}: building"
    rm -f "${archive}.inputs"
    python3 "${root}/hack/build-image.py" --name "$ref" --out "$archive" "${common[@]}" "$@"
    printf '%s\n' "$key" >"${archive}.inputs"
  fi
  printf '%s\n' "$archive"
}

# /bin/busybox plus a symlink per applet `busybox --list` prints.
busybox_args=(--file /bin/busybox:/bin/busybox:0755)
while read -r applet; do
  [[ "$applet" == busybox ]] || busybox_args+=(--symlink "/bin/${applet}:busybox")
done < <(/bin/busybox --list | LC_ALL=C sort)
build busybox tempcreds.local/test/busybox:1 /bin/busybox -- \
  "${busybox_args[@]}" --env PATH=/bin --cmd '["/bin/sh"]'

# The Go app: static, -trimpath, no VCS stamp, so the same sources and Go
# version give the same binary. go.sum is committed (-mod=readonly).
need go
app_dir="${root}/tests/apps/aws-go-app"
app_sources=("${app_dir}/go.mod" "${app_dir}/go.sum" "${app_dir}"/*.go)
go_version="$(go env GOVERSION)"
app_key="$( { printf '%s\n' "$go_version"; sha256sum "${app_sources[@]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)"
app_bin="${cache}/aws-go-app-bin/aws-go-app-${app_key:0:16}"
if [[ ! -x "$app_bin" ]]; then
  say "building tests/apps/aws-go-app with ${go_version}"
  mkdir -p "$(dirname "$app_bin")"
  rm -f "$(dirname "$app_bin")"/aws-go-app-*
  (cd "$app_dir" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS=-mod=readonly \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o "${app_bin}.tmp" .)
  mv "${app_bin}.tmp" "$app_bin"
fi

app_args=(
  --file "${app_bin}:/usr/local/bin/aws-go-app:0755"
  --file "${ca_bundle}:${ca_bundle}:0644"
  --entrypoint '["/usr/local/bin/aws-go-app"]'
  --env PATH=/usr/local/bin:/bin
  --env "SSL_CERT_FILE=${ca_bundle}"
)
build aws-go-app tempcreds.local/test/aws-go-app:1 "$app_bin" "$ca_bundle" -- \
  "${app_args[@]}"
build aws-go-app-shell tempcreds.local/test/aws-go-app-shell:1 "$app_bin" "$ca_bundle" /bin/busybox -- \
  "${app_args[@]}" --file /bin/busybox:/bin/busybox:0755 \
  --symlink /bin/sh:busybox --symlink /bin/cat:busybox
