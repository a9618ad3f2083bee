# runq — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test services js-deps build lint fmt clean-test-dbs bench bench-quick

## run: bring up the local demo stack (Redis, Postgres, mock provider, API, worker)
run: services
	$(CARGO) build --bins
	./deploy/local/run.sh

## test: every test, against real Redis and Postgres (started here when not running)
test: services clean-test-dbs js-deps
	$(CARGO) build --bins
	$(CARGO) nextest run --workspace --all-targets --no-fail-fast

## lint: formatting and clippy, as CI checks them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

services:
	./deploy/local/services.sh

# the AI SDK (npm package `ai`) parses a live stream in one end-to-end test; the Standard
# Webhooks library (npm package `standardwebhooks`) verifies webhook signatures in others
js-deps:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --prefix tests/e2e/js --no-audit --no-fund --loglevel=error

build:
	$(CARGO) build --bins

# end-to-end tests create one database each (runq_test_*); drop what earlier runs left behind
clean-test-dbs:
	@psql -h 127.0.0.1 -U postgres -Atc "select datname from pg_database where datname like 'runq_test_%'" \
	  | while read -r db; do psql -h 127.0.0.1 -U postgres -qc "drop database if exists \"$$db\"" >/dev/null; done

# The benchmarks start their own mock provider, API and worker (ports chosen by the OS), use their
# own database (runq_bench) and Redis prefix, and only report: no figure fails the run. Thousands
# of open streams need the open-files limit raised; the processes the bench starts inherit it.
BENCH_ULIMIT = ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)";

## bench: every performance target of DESIGN.md at full size (≤ 10 min); results in bench/results/
bench: services
	$(CARGO) build --release --bins
	$(BENCH_ULIMIT) ./target/release/runq-bench --full

## bench-quick: the same scenarios with smaller N (≤ 2 min)
bench-quick: services
	$(CARGO) build --release --bins
	$(BENCH_ULIMIT) ./target/release/runq-bench --quick
