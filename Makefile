# cephdr's tasks. `make test` and `make demo` set up everything they need first (scripts/setup.sh).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: setup fmt lint generate check-generated test unit demo bench

setup:
	scripts/setup.sh >/dev/null

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The CRDs from the Rust types, the chart's copy of them (Helm installs charts/cephdr/crds/ itself), and the
# resource reference rendered from their schemas.
generate:
	$(CARGO) run --locked --quiet -- crds --out crds --reference docs/reference.md
	rm -f charts/cephdr/crds/*.yaml
	cp crds/*.cephdr.io.yaml charts/cephdr/crds/

# CI fails when the committed CRDs, the chart's copy or the reference differ from what the Rust types generate.
GENERATED := crds/ charts/cephdr/crds/ docs/reference.md
check-generated: generate
	git diff --exit-code -- $(GENERATED) || { echo "generated files are stale: run 'make generate' and commit" >&2; exit 1; }
	test -z "$$(git status --porcelain -- $(GENERATED))" || { echo "generated files are not committed: run 'make generate' and commit" >&2; exit 1; }

# Everything: lint, generated files, unit tests, integration tests against a real kube-apiserver, and the
# end-to-end tests against two real Ceph sites.
test: setup lint check-generated
	CEPHDR_TESTBED_BIN=$$(scripts/setup.sh | tail -n1) $(CARGO) test --workspace --locked --no-fail-fast

# Only the tests that need no external process.
unit:
	$(CARGO) test --workspace --locked --lib --bins

# The local demo: control plane, two Ceph sites, an agent per site, the operator, deploy/examples, data
# replicated both ways (RBD and S3), a planned failover. `make demo DEMO_ARGS=--keep` keeps it running.
demo: setup
	$(CARGO) build --locked --quiet --bin cephdr
	CEPHDR_TESTBED_BIN=$$(scripts/setup.sh | tail -n1) CEPHDR_BIN=$${CARGO_TARGET_DIR:-target}/debug/cephdr \
	  $(CARGO) run --locked --quiet -p cephdr-e2e --bin cephdr-demo -- $(DEMO_ARGS)

# Benchmarks, not tests (results in docs/benchmarks.md): the sync engine's core on an in-memory stream, then
# cephdr sync vs `rbd export-diff | rbd import-diff` vs `rsync --inplace` on two real Ceph sites, then a
# planned failover of 1, 10 and 100 images by a FailoverRequest vs the runbooks' shell loop (its time is
# Ceph's, so a debug build measures the same), then a release-built operator started cold on 1,000
# resources over 10,000 simulated images.
bench: setup
	$(CARGO) bench --locked --bench sync_core
	$(CARGO) run --locked --release --quiet -p cephdr-e2e --bin cephdr-bench-sync
	CEPHDR_TESTBED_BIN=$$(scripts/setup.sh | tail -n1) \
	  $(CARGO) run --locked --quiet -p cephdr-e2e --bin cephdr-bench-failover
	$(CARGO) build --locked --release --quiet --bin cephdr
	CEPHDR_TESTBED_BIN=$$(scripts/setup.sh | tail -n1) CEPHDR_BIN=$${CARGO_TARGET_DIR:-target}/release/cephdr \
	  $(CARGO) run --locked --release --quiet -p cephdr-e2e --bin cephdr-bench-scale
