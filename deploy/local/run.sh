#!/usr/bin/env bash
# The local demo stack, in the foreground: mock provider, runq-api and runq-worker on the Redis and
# Postgres that deploy/local/services.sh made sure of, plus a demo agent to run. `make run` calls it
# after building the debug binaries. Ctrl-C (or SIGTERM) stops everything it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

STATE=.run
BIN=target/debug
API_PORT=8080
MOCK_PORT=8089
API_URL=http://127.0.0.1:$API_PORT
PG=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)
DATABASE_URL=postgres://postgres@127.0.0.1:5432/runq?sslmode=disable
REDIS_URL=redis://127.0.0.1:6379

say() { printf 'run: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mkdir -p "$STATE"

# --- secrets --------------------------------------------------------------------------------------
# Both keys persist in .run/ so the API key printed below keeps working across restarts and the
# provider secrets sealed in Postgres stay readable.
new_master_key=false
if [ ! -s "$STATE/master.key" ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/master.key")
  new_master_key=true
fi
if [ ! -s "$STATE/admin.key" ]; then
  # head reads first so nothing upstream can die of SIGPIPE under pipefail.
  chars=$(head -c 4096 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  (umask 077 && printf 'rq_%s' "${chars:0:32}" >"$STATE/admin.key")
fi
MASTER_KEY=$(<"$STATE/master.key")
ADMIN_KEY=$(<"$STATE/admin.key")
[[ $MASTER_KEY =~ ^[0-9a-f]{64}$ ]] || die "$STATE/master.key is not 64 hex characters; delete it (and the runq database) to start afresh"
[[ $ADMIN_KEY =~ ^rq_[A-Za-z0-9]{32}$ ]] || die "$STATE/admin.key is malformed; delete it to mint a new one"

# --- database -------------------------------------------------------------------------------------
# The API applies migrations itself; only the database has to exist.
if [ "$("${PG[@]}" -c "select 1 from pg_database where datname = 'runq'")" != 1 ]; then
  "${PG[@]}" -c 'create database runq'
  say "created database runq"
elif $new_master_key; then
  # Provider secrets in the old database were sealed with a key that is gone: runs would fail to
  # decrypt them. Say so rather than silently serving a broken demo.
  say "warning: $STATE/master.key is new but database runq already exists; providers created before"
  say "         cannot be decrypted. For a clean demo: psql -h 127.0.0.1 -U postgres -c 'drop database runq'"
fi

# --- processes ------------------------------------------------------------------------------------
for port in "$API_PORT" "$MOCK_PORT"; do
  if listening "$port"; then
    die "port $port is already in use (another 'make run'? see: ss -ltnp 'sport = :$port')"
  fi
done
for bin in runq-api runq-mock; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing; build it with: cargo build --bins"
done

declare -A NAME=() # pid -> process name, for messages
PIDS=()

# shellcheck disable=SC2317 # invoked through the traps below
stop_all() {
  trap - EXIT INT TERM
  local alive=() pid
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && alive+=("$pid")
  done
  if [ "${#alive[@]}" -gt 0 ]; then
    say "stopping ${#alive[@]} process(es)"
    kill -TERM "${alive[@]}" 2>/dev/null || true
    # The worker may spend its shutdown grace (10 s by default) finishing runs; wait a bit longer,
    # then make sure nothing of ours outlives the script.
    for _ in $(seq 1 60); do
      alive=()
      for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive+=("$pid")
      done
      [ "${#alive[@]}" -eq 0 ] && break
      sleep 0.25
    done
    if [ "${#alive[@]}" -gt 0 ]; then
      kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
  fi
  wait 2>/dev/null || true
}
trap stop_all EXIT
# Exiting from these traps runs the EXIT trap, so shutdown happens once, in one place.
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME ENV... -- runs target/debug/runq-NAME in the background, logging to .run/NAME.log.
start() {
  local name=$1
  shift
  env "$@" "$BIN/runq-$name" >"$STATE/$name.log" 2>&1 &
  PIDS+=("$!")
  NAME[$!]=runq-$name
}

show_log() { # NAME: the part of a log that explains an exit
  local log=$STATE/$1.log
  say "last lines of $log:"
  # anyhow's report is the useful part; a RUST_BACKTRACE stack would push it out of a plain tail.
  if grep -q '^Error:' "$log"; then
    sed -n '/^Error:/,/^Stack backtrace:/p' "$log" | grep -v '^Stack backtrace:' | head -n 20 >&2
  else
    tail -n 20 "$log" >&2
  fi
  if grep -q 'previously applied but has been modified' "$log"; then
    say "hint: database runq was migrated by a different build; for a fresh demo database run"
    say "      psql -h 127.0.0.1 -U postgres -c 'drop database runq'"
  fi
}

died() { # NAME PID: fails with its log when the process is gone
  if ! kill -0 "$2" 2>/dev/null; then
    say "runq-$1 exited during start-up"
    show_log "$1"
    exit 1
  fi
}

# wait_http NAME PID URL SECONDS
wait_http() {
  local deadline=$((SECONDS + $4))
  until curl -fsS -o /dev/null --max-time 1 "$3" 2>/dev/null; do
    died "$1" "$2"
    [ "$SECONDS" -lt "$deadline" ] || die "runq-$1 did not answer $3 within $4 s; see $STATE/$1.log"
    sleep 0.2
  done
}

# A per-token delay makes streaming visible to a person watching curl.
start mock RUNQ_MOCK_BIND="127.0.0.1:$MOCK_PORT" RUNQ_MOCK_DELAY_MS=30
wait_http mock "${PIDS[-1]}" "http://127.0.0.1:$MOCK_PORT/health" 10

# A local demo posts webhooks to receivers on this machine: allow private targets here only.
STORE_ENV=(DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" RUNQ_MASTER_KEY="$MASTER_KEY"
           RUNQ_ALLOW_PRIVATE_TARGETS=true)
start api "${STORE_ENV[@]}" RUNQ_BIND="127.0.0.1:$API_PORT" RUNQ_ADMIN_KEY="$ADMIN_KEY"
wait_http api "${PIDS[-1]}" "$API_URL/health" 30

if [ -x "$BIN/runq-worker" ]; then
  start worker "${STORE_ENV[@]}"
  worker_pid=${PIDS[-1]}
  # The worker has no port to probe: wait for its start-up line, and accept a quiet one that
  # stays alive.
  for _ in $(seq 1 50); do
    died worker "$worker_pid"
    grep -q 'worker started' "$STATE/worker.log" && break
    sleep 0.2
  done
else
  say "warning: $BIN/runq-worker is missing: runs will stay queued"
fi

# --- demo agent -----------------------------------------------------------------------------------
# Through the public management API, so this doubles as a smoke test of it. Every step tolerates
# what an earlier run already created.

# call METHOD PATH [JSON]: prints the HTTP status; the body lands in .run/response.json.
call() {
  local args=(-sS -o "$STATE/response.json" -w '%{http_code}' -X "$1" -H "x-api-key: $ADMIN_KEY")
  if [ $# -ge 3 ]; then
    args+=(-H 'content-type: application/json' --data "$3")
  fi
  curl "${args[@]}" "$API_URL$2"
}

expect() { # WHAT STATUS ALLOWED...
  local what=$1 status=$2 ok
  shift 2
  for ok in "$@"; do
    [ "$status" = "$ok" ] && return 0
  done
  die "$what failed with HTTP $status: $(cat "$STATE/response.json" 2>/dev/null)"
}

expect "creating provider mock" "$(call POST /v1/providers \
  '{"name":"mock","kind":"openai","base_url":"http://127.0.0.1:'"$MOCK_PORT"'/v1","api_key":"sk-mock"}')" 201 409
# the workspace's default model: agents created from a system prompt alone (reference 002) run on it
expect "registering model mock-echo" "$(call POST /v1/llm-providers/mock/models \
  '{"model_id":"mock-echo","display_name":"Mock echo"}')" 201 409
expect "creating agent demo" "$(call POST /v1/agents \
  '{"name":"Demo","slug":"demo","description":"Echo agent on the offline mock provider"}')" 201 409
expect "reading agent demo" "$(call GET /v1/agents/demo)" 200
# Only the first run deploys a version; later runs keep whatever the user deployed since.
if grep -q '"deployed_version_id":null' "$STATE/response.json"; then
  expect "creating a version of demo" "$(call POST /v1/agents/demo/versions \
    '{"provider":"mock","model":"mock-echo","system_prompt":"You are a helpful assistant for {{company}}.","tools":["current_time"],"deploy":true}')" 201
fi
# New workspaces start on the `free` plan (100 requests per window): someone trying the demo in a
# loop would soon meet 429s, so the local demo workspace gets the unlimited plan.
if [ "$(call GET /v1/workspace)" = 200 ] && ! grep -q '"plan":"enterprise"' "$STATE/response.json"; then
  workspace=$(grep -o '"id":"wsp_[0-9a-f]*"' "$STATE/response.json" | head -n 1 | cut -d'"' -f4)
  plan_status=$(call PATCH "/v1/workspaces/$workspace" '{"plan":"enterprise"}')
  [ "$plan_status" = 200 ] || say "warning: could not lift the demo workspace's rate limit (HTTP $plan_status)"
fi
rm -f "$STATE/response.json"

cat <<EOF

  runq is up.

  API          $API_URL        (docs: $API_URL/docs)
  API key      $ADMIN_KEY   (workspace "default"; manages it and runs agents)
  agent        demo, on the offline mock provider at http://127.0.0.1:$MOCK_PORT
  logs         $STATE/api.log  $STATE/worker.log  $STATE/mock.log

  Stream a run:
    curl -N $API_URL/v1/run -H "x-api-key: $ADMIN_KEY" -H 'content-type: application/json' -d '{"agent_id":"demo","prompt":"Hello runq","variables":{"company":"Acme"},"stream":true}'

  Or wait for the whole answer (stream false, or POST /api/v1/run):
    curl $API_URL/v1/run -H "x-api-key: $ADMIN_KEY" -H 'content-type: application/json' -d '{"agent_id":"demo","prompt":"Hello runq","variables":{"company":"Acme"},"stream":false}'

  Ctrl-C stops everything.

EOF

# --- foreground -----------------------------------------------------------------------------------
# Any child dying takes the stack down, so a half-running demo never looks healthy.
status=0
wait -n "${PIDS[@]}" || status=$?
for pid in "${PIDS[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    say "${NAME[$pid]} exited (status $status); stopping the rest"
    show_log "${NAME[$pid]#runq-}"
    break
  fi
done
exit 1
