# runq — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test services build lint fmt clean-test-dbs

## run: bring up the local demo stack (Redis, Postgres, mock provider, API, worker)
run: services
	$(CARGO) build --bins
	./deploy/local/run.sh

## test: every test, against real Redis and Postgres (started here when not running)
test: services clean-test-dbs
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

build:
	$(CARGO) build --bins

# end-to-end tests create one database each (runq_test_*); drop what earlier runs left behind
clean-test-dbs:
	@psql -h 127.0.0.1 -U postgres -Atc "select datname from pg_database where datname like 'runq_test_%'" \
	  | while read -r db; do psql -h 127.0.0.1 -U postgres -qc "drop database if exists \"$$db\"" >/dev/null; done
