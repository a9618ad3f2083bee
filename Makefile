# runq — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# Postgres of the tests: the end-to-end harness creates its databases (runq_test_*) on the server
# RUNQ_TEST_POSTGRES_URL names; `#[sqlx::test]` tests create theirs (_sqlx_test_*) on the server of
# DATABASE_URL and record them in that database's _sqlx_test schema
RUNQ_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432
TEST_DATABASE_URL ?= $(RUNQ_TEST_POSTGRES_URL)/postgres?sslmode=disable

.PHONY: run test fuzz services js-deps tools browser build install lint fmt clean-test-dbs bench bench-quick soak

## run: bring up the local demo stack (Redis, Postgres, mock provider, API, worker)
run: services
	$(CARGO) build --bins
	./deploy/local/run.sh

## test: every test, against real Redis and Postgres (started here when not running)
test: services clean-test-dbs js-deps tools browser
	$(CARGO) build --bins
	DATABASE_URL='$(TEST_DATABASE_URL)' $(CARGO) nextest run --workspace --all-targets --no-fail-fast; status=$$?; $(MAKE) --no-print-directory clean-test-dbs; exit $$status

## fuzz: schemathesis against a live stack's /openapi.json, at least 5,000 generated requests over
## every operation (make test runs a small sample of the same test)
fuzz: services js-deps
	$(CARGO) build --bins
	RUNQ_FUZZ_EXAMPLES=60 RUNQ_FUZZ_MIN_CASES=5000 \
	  $(CARGO) test -p runq-e2e --test e2e -- --exact fuzz::schemathesis_finds_no_server_error_and_no_schema_violation_on_any_operation --nocapture

# what the tests drive besides the binaries: nextest runs them; curl and jq run reference 002's shell example
tools:
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	@command -v jq >/dev/null && command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq curl >/dev/null; }

## lint: formatting and clippy, as CI checks them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

services:
	./deploy/local/services.sh

# real clients the end-to-end tests drive: the AI SDK (`ai`), the `openai` npm and Python
# packages, schemathesis (fuzzing from /openapi.json), the Standard Webhooks library (npm `standardwebhooks`) verifying webhook signatures;
# playwright-core drives the web console in the browser below
js-deps:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --prefix tests/e2e/js --no-audit --no-fund --loglevel=error
	python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/e2e/py/requirements.txt

# the console tests run Debian's chromium headless
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

build:
	$(CARGO) build --bins

## install: the `runq` command-line client, into ~/.cargo/bin
install:
	$(CARGO) install --locked --path cli

# end-to-end tests create one database each (runq_test_*), `#[sqlx::test]` tests one per test
# (_sqlx_test_*, left in place when the test fails): dropped before and after the tests, with
# sqlx's record of them
clean-test-dbs:
	@psql '$(TEST_DATABASE_URL)' -Atc "select datname from pg_database \
	    where datname like 'runq\_test\_%' or datname like '\_sqlx\_test\_%'" \
	  | while read -r db; do psql '$(TEST_DATABASE_URL)' -qc "drop database if exists \"$$db\"" >/dev/null; done
	@psql '$(TEST_DATABASE_URL)' -qc "do \$$\$$ begin if to_regclass('_sqlx_test.databases') is not null then \
	    delete from _sqlx_test.databases d where not exists (select 1 from pg_database where datname = d.db_name); \
	  end if; end \$$\$$"

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

## soak: 10 min of mixed load (SOAK_MINUTES=N to change) with a worker restart every minute; prints
## RSS and open fds of API and workers each minute, then errors and runs not terminal (both 0)
soak: services
	$(CARGO) build --bins
	python3 tests/soak/soak.py
