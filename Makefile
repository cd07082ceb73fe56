# tempcreds — the commands a contributor runs.
#
#   make test    everything CI runs: format check, clippy, unit tests and the
#                end-to-end tests against a real kube-apiserver, a real node
#                (containerd + kubelet; root) running the images built here,
#                and moto's STS server (installs the tools it needs into
#                ~/.cache/tempcreds)
#   make demo    the whole path on this machine, no cluster or AWS account needed
#   make tools   only install the test tools
#   make build   debug build of both binaries
#   make release release build of both binaries (target/release/tempcreds-webhook,
#                target/release-sidecar/tempcreds-sidecar) and of the kubectl
#                plugin (target/release/kubectl-tempcreds)
#   make images  the two container images as OCI/Docker archives in
#                target/images (release build, no container engine needed)
#   make bench   speed and footprint figures, written to bench/results.md
#   make bench-node  figures of injected pods on the real node (root),
#                written to bench/node-results.md
#   make fuzz    every fuzz target for FUZZ_SECONDS (default 60) each

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test tools rust-toolchain fmt-check clippy unit e2e demo build release images clean-tools bench bench-node fuzz

test: tools fmt-check clippy e2e

tools: rust-toolchain
	hack/install-tools.sh

rust-toolchain:
	hack/install-rust-components.sh

fmt-check: rust-toolchain
	$(CARGO) fmt --all -- --check

clippy: rust-toolchain
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Unit tests only: no control plane, no moto.
unit:
	$(CARGO) test --workspace --locked --lib --bins

# Every test (unit, integration, end-to-end) with the control plane and a
# real node up (containerd, kubelet, controllers: hack/node.sh, needs root).
# The node runs the images `make images` builds and hack/test-images.sh's.
e2e: tools images
	TEMPCREDS_IMAGES_DIR=$(CURDIR)/target/images \
	  hack/with-control-plane.sh --node $(CARGO) test --workspace --locked --no-fail-fast

demo: tools
	hack/demo.sh

build:
	$(CARGO) build --workspace --bins --locked

# The sidecar is built for size (profile release-sidecar, see Cargo.toml).
release:
	$(CARGO) build --release --locked -p tempcreds-webhook -p kubectl-tempcreds --bins
	$(CARGO) build --profile release-sidecar --locked -p tempcreds-sidecar --bins

# ghcr.io/tempcreds/tempcreds-{sidecar,webhook}:VERSION written from files by
# hack/build-image.py; IMAGES_PROFILE and IMAGES_OUT: see hack/images.sh.
images:
	CARGO=$(CARGO) hack/images.sh

# Benchmarks, load (also in the cluster configuration, with a perf
# profile), pod-creation latency and sidecar footprint (about twelve minutes
# once built); see hack/bench.sh.
bench: tools
	hack/bench.sh

# Injected pods on the real node: start latency, deletion, Jobs, sidecar
# memory, image sizes; written to bench/node-results.md (root).
bench-node: tools
	hack/bench-node.sh

# cargo-fuzz targets in fuzz/ (a workspace of its own); see hack/fuzz.sh.
fuzz:
	hack/fuzz.sh

clean-tools:
	rm -rf "$${TEMPCREDS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/tempcreds}"
