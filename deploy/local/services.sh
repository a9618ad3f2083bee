#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL answer on 127.0.0.1, starting them (and installing them from
# Debian packages when absent) if they do not. Used by `make run` and `make test`.
set -euo pipefail

PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port
  for _ in $(seq 1 100); do listening "$2" && return 0; sleep 0.2; done
  echo "services: $1 did not come up on 127.0.0.1:$2" >&2
  exit 1
}

apt_install() {
  echo "services: installing $* from Debian packages" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  listening "$REDIS_PORT" && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/runq.log
  wait_for redis "$REDIS_PORT"
}

ensure_postgres() {
  listening "$PGPORT" && return 0
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
    # local development and tests connect as postgres over TCP without a password
    local hba
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n 1)
    $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for postgres "$PGPORT"
}

ensure_redis
ensure_postgres
echo "services: redis on 127.0.0.1:$REDIS_PORT, postgres on 127.0.0.1:$PGPORT"
