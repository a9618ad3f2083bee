#!/usr/bin/env python3
"""runq soak: minutes of mixed load against a stack this script starts and stops itself.

`make soak` runs it (not CI). It starts the mock provider (with a small token delay), one
runq-api and two runq-workers on loopback, on a database (`runq_soak`, recreated each time) of the
local Postgres and a Redis prefix of its own, then keeps a mixed load going: streamed runs, sync
runs, async runs, small batches and cancels. Every minute it restarts a worker (SIGTERM: its runs
are handed to the other) and prints the RSS and open file descriptors of the API and the workers
(from /proc/<pid>/status and /proc/<pid>/fd) with the error count. At the end the load stops,
accepted work drains, and it prints the runs not in a terminal status (expected: 0) and the errors
(expected: 0). Exit status 1 when either is not 0.

Settings (environment): SOAK_MINUTES (10), SOAK_CLIENTS (6 load threads), SOAK_DRAIN_SECS (60),
SOAK_BIN_DIR (target/debug), SOAK_TOKEN_DELAY_MS (5), DATABASE_HOST_URL
(postgres://postgres@127.0.0.1:5432), REDIS_URL (redis://127.0.0.1:6379). Only the Python
standard library is used; every wait is bounded.
"""

import http.client
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "6"))
DRAIN_SECS = float(os.environ.get("SOAK_DRAIN_SECS", "60"))
BIN_DIR = os.path.join(ROOT, os.environ.get("SOAK_BIN_DIR", "target/debug"))
TOKEN_DELAY_MS = os.environ.get("SOAK_TOKEN_DELAY_MS", "5")
PG_URL = os.environ.get("DATABASE_HOST_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
DATABASE = "runq_soak"
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}
HTTP_TIMEOUT = 90  # seconds: longer than any run of the load, shorter than forever


def log(message):
    print(f"soak: {message}", flush=True)


# --- the stack ----------------------------------------------------------------------------------


class Process:
    """A binary of the workspace whose log goes to a file; `wait_for` finds a line of it."""

    def __init__(self, name, env, logs):
        self.name = name
        self.log_path = os.path.join(logs, f"{name}-{time.strftime('%H%M%S')}-{secrets.token_hex(2)}.log")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, name)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self):
        return self.proc.pid

    def wait_for(self, pattern, timeout=30):
        """The first match of `pattern` in the log within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited ({self.proc.returncode}); see {self.log_path}")
            with open(self.log_path) as f:
                found = re.search(pattern, f.read())
            if found:
                return found
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not log /{pattern}/ within {timeout} s; see {self.log_path}")

    def stop(self, timeout=20):
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.log_file.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} {self.pid} did not stop within {timeout} s: SIGKILL")
                self.proc.kill()
                self.proc.wait(5)
        self.log_file.close()

    def usage(self):
        """(RSS in MiB, open file descriptors), from /proc."""
        with open(f"/proc/{self.pid}/status") as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return rss_kb / 1024, len(os.listdir(f"/proc/{self.pid}/fd"))


def psql(sql, database="postgres"):
    out = subprocess.run(
        ["psql", f"{PG_URL}/{database}", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {sql}\n{out.stderr}")
    return out.stdout


class Stack:
    """Mock provider, one API, two workers."""

    def __init__(self, logs):
        self.logs = logs
        self.started = []  # every process, for `stop`
        self.restarts = 0

    def start(self):
        psql(f"drop database if exists {DATABASE} with (force)")
        psql(f"create database {DATABASE}")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        self.key = "rq_" + "".join(secrets.choice(alphabet) for _ in range(32))
        self.env = dict(
            os.environ,
            DATABASE_URL=f"{PG_URL}/{DATABASE}?sslmode=disable",
            REDIS_URL=REDIS_URL,
            RUNQ_REDIS_PREFIX=f"runq_soak_{os.getpid()}",
            RUNQ_MASTER_KEY=secrets.token_hex(32),
            RUNQ_ADMIN_KEY=self.key,
            RUNQ_BIND="127.0.0.1:0",
            RUNQ_MOCK_BIND="127.0.0.1:0",
            RUNQ_MOCK_DELAY_MS=TOKEN_DELAY_MS,
            RUNQ_LOG_FORMAT="text",
            RUST_LOG="warn,runq_api=info,runq_worker=info,runq_mock=info",
            RUNQ_ALLOW_PRIVATE_TARGETS="true",
            # the admin workspace's plan must not throttle the load
            RUNQ_PLAN_FREE_LIMIT="1000000000",
            RUNQ_PLAN_PRO_LIMIT="1000000000",
            RUNQ_SHUTDOWN_GRACE_MS="3000",
            RUNQ_DB_MAX_CONNECTIONS="8",
        )
        self.env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self.mock = self.process("runq-mock")
        self.mock_url = "http://" + self.mock.wait_for(r"listening addr=(\S+)").group(1)
        self.api = self.process("runq-api")
        self.api_addr = self.api.wait_for(r"listening addr=(\S+)").group(1)
        self.workers = [self.start_worker(), self.start_worker()]

    def process(self, name):
        process = Process(name, self.env, self.logs)
        self.started.append(process)
        return process

    def start_worker(self):
        worker = self.process("runq-worker")
        worker.wait_for(r"worker started")
        return worker

    def restart_a_worker(self):
        """SIGTERM the oldest worker (it hands its runs over), then start a new one."""
        old = self.workers.pop(0)
        old.stop()
        self.workers.append(self.start_worker())
        self.restarts += 1

    def stop(self):
        for process in reversed(self.started):
            process.stop()


# --- the client ---------------------------------------------------------------------------------


class Client:
    def __init__(self, addr, key):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.key = key

    def request(self, method, path, body=None, accept="application/json"):
        """(status, parsed JSON or None); one connection per request."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            headers = {"x-api-key": self.key, "accept": accept}
            data = None
            if body is not None:
                data = json.dumps(body)
                headers["content-type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            raw = res.read()
            try:
                return res.status, json.loads(raw) if raw else None
            except ValueError:
                return res.status, raw[:200]
        finally:
            conn.close()

    def stream(self, body):
        """POST /v1/run streamed: (status, parts, saw [DONE])."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            headers = {"x-api-key": self.key, "content-type": "application/json", "accept": "text/event-stream"}
            conn.request("POST", "/v1/run", body=json.dumps({**body, "stream": True}), headers=headers)
            res = conn.getresponse()
            if res.status != 200:
                return res.status, [res.read()[:200]], False
            parts, done = [], False
            while True:
                line = res.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == "data: [DONE]":
                    done = True
                    break
                if line.startswith("data: "):
                    parts.append(json.loads(line[6:]))
            return res.status, parts, done
        finally:
            conn.close()


# --- the load -----------------------------------------------------------------------------------


class Tally:
    """Requests and errors, in total and per minute; a few error samples for the report."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = 0
        self.samples = []
        self.operations = []  # accepted operations, checked at the end

    def ok(self, kind):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def error(self, kind, what):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.errors += 1
            if len(self.samples) < 20:
                self.samples.append(f"{time.strftime('%H:%M:%S')} {kind}: {what}")

    def snapshot(self):
        with self.lock:
            return dict(self.counts), self.errors


def prompt(tokens, tag):
    return f"[[mock tokens={tokens}]] {tag}"


def one_stream(client, tally):
    status, parts, done = client.stream({"agent_id": "soak", "prompt": prompt(random.randint(10, 60), "stream")})
    finish = [p for p in parts if isinstance(p, dict) and p.get("type") in ("finish", "error")]
    if status != 200 or not done or len(finish) != 1 or finish[0].get("type") != "finish":
        tally.error("stream", f"status {status}, [DONE] {done}, last parts {parts[-3:]}")
    else:
        tally.ok("stream")


def one_sync(client, tally):
    status, body = client.request("POST", "/v1/run", {"agent_id": "soak", "prompt": prompt(20, "sync"), "stream": False})
    if status == 200 and body.get("status") == "completed":
        tally.ok("sync")
    elif status == 202:  # outlived the sync wait: follow the operation
        tally.ok("sync")
        tally.operations.append(body["operation_id"])
    else:
        tally.error("sync", f"{status} {body}")


def one_async(client, tally):
    status, body = client.request("POST", "/v1/run", {"agent_id": "soak", "prompt": prompt(30, "async"), "async": True})
    if status == 202:
        tally.ok("async")
        tally.operations.append(body["operation_id"])
    else:
        tally.error("async", f"{status} {body}")


def one_batch(client, tally):
    items = [{"query": prompt(10, f"batch {i}")} for i in range(random.randint(2, 5))]
    status, body = client.request("POST", "/v1/run", {"agent_id": "soak", "batch": items})
    if status == 202:
        tally.ok("batch")
        tally.operations.append(body["operation_id"])
    else:
        tally.error("batch", f"{status} {body}")


def one_cancel(client, tally):
    """An async run of ~2 s, cancelled after a moment: it ends cancelled (or completed, if it won)."""
    body = {"agent_id": "soak", "prompt": f"[[mock tokens=200 delay=10]] cancel me", "async": True}
    status, accepted = client.request("POST", "/v1/run", body)
    if status != 202:
        tally.error("cancel", f"start: {status} {accepted}")
        return
    time.sleep(random.uniform(0.05, 0.5))
    status, answer = client.request("POST", f"/v1/runs/{accepted['run_id']}/cancel")
    if status == 202 or (status == 409 and answer["error"]["code"] == "run_finished"):
        tally.ok("cancel")
        tally.operations.append(accepted["operation_id"])
    else:
        tally.error("cancel", f"{status} {answer}")


MIX = [(one_stream, 4), (one_sync, 2), (one_async, 2), (one_batch, 1), (one_cancel, 1)]


def load(client, tally, until):
    actions = [action for action, weight in MIX for _ in range(weight)]
    while time.monotonic() < until:
        action = random.choice(actions)
        try:
            action(client, tally)
        except Exception as e:  # a broken connection, a timeout: an error of the service
            tally.error(action.__name__.removeprefix("one_"), repr(e))


def drain(client, tally, deadline):
    """Waits for every accepted operation to finish; returns those that did not."""
    left = list(tally.operations)
    while left and time.monotonic() < deadline:
        still = []
        for op in left:
            status, body = client.request("GET", f"/v1/operations/{op}")
            if status != 200:
                tally.error("drain", f"GET /v1/operations/{op}: {status} {body}")
            elif body["status"] not in ("succeeded", "failed", "cancelled"):
                still.append(op)
        left = still
        if left:
            time.sleep(1)
    return left


# --- the soak -----------------------------------------------------------------------------------


def usage_line(stack):
    parts = []
    rss, fds = stack.api.usage()
    parts.append(f"api rss={rss:6.1f}MiB fds={fds:4d}")
    for i, worker in enumerate(stack.workers):
        rss, fds = worker.usage()
        parts.append(f"worker{i}(pid {worker.pid}) rss={rss:6.1f}MiB fds={fds:4d}")
    return "  ".join(parts)


def setup(client, mock_url):
    steps = [
        ("/v1/providers", {"name": "mock", "kind": "openai", "base_url": f"{mock_url}/v1", "api_key": "sk-soak"}),
        ("/v1/agents", {"name": "soak", "slug": "soak"}),
        ("/v1/agents/soak/versions", {"provider": "mock", "model": "mock-model", "deploy": True}),
    ]
    for path, body in steps:
        status, answer = client.request("POST", path, body)
        if status != 201:
            raise SystemExit(f"setup: POST {path} → {status} {answer}")


def main():
    for name in ("runq-api", "runq-worker", "runq-mock"):
        if not os.path.exists(os.path.join(BIN_DIR, name)):
            raise SystemExit(f"{BIN_DIR}/{name} is missing: cargo build --bins (make soak does)")
    logs = tempfile.mkdtemp(prefix="runq-soak-")
    log(f"{MINUTES:g} min of load, {CLIENTS} clients, token delay {TOKEN_DELAY_MS} ms; logs in {logs}")
    stack = Stack(logs)
    try:
        stack.start()
        client = Client(stack.api_addr, stack.key)
        setup(client, stack.mock_url)
        tally = Tally()
        start = time.monotonic()
        until = start + MINUTES * 60
        threads = [threading.Thread(target=load, args=(client, tally, until), daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        log(f"minute  0  {usage_line(stack)}  errors=0")
        minute, last = 0, {}
        while time.monotonic() < until:
            time.sleep(max(0, min(start + 60 * (minute + 1), until) - time.monotonic()))
            minute += 1
            counts, errors = tally.snapshot()
            done = sum(counts.values()) - sum(last.values())
            last = counts
            log(f"minute {minute:2d}  {usage_line(stack)}  requests={done} errors={errors}")
            if time.monotonic() < until:
                stack.restart_a_worker()
        for thread in threads:
            thread.join(HTTP_TIMEOUT + 10)
        log(f"load stopped; draining (at most {DRAIN_SECS:g} s)")
        undrained = drain(client, tally, time.monotonic() + DRAIN_SECS)
        not_terminal = int(psql("select count(*) from runs where status not in "
                                "('completed', 'failed', 'cancelled', 'timed_out')", DATABASE).strip() or 0)
        by_status = psql("select status || '=' || count(*) from runs group by status order by status", DATABASE)
        # a run that failed or timed out is an error of the service: the mock never fails
        failed = psql("select id || ' ' || status || ' ' || coalesce(error::text, '') from runs "
                      "where status in ('failed', 'timed_out') limit 5", DATABASE).splitlines()
        failed_count = int(
            psql("select count(*) from runs where status in ('failed', 'timed_out')", DATABASE).strip())
        counts, errors = tally.snapshot()
        log(f"after drain  {usage_line(stack)}")
        log("requests: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" (total {sum(counts.values())})")
        log(f"worker restarts: {stack.restarts}")
        log("runs by status: " + ", ".join(by_status.split()))
        log(f"operations not finished after the drain: {len(undrained)}")
        log(f"runs not terminal: {not_terminal}")
        log(f"runs failed or timed out: {failed_count}")
        for line in failed:
            log(f"  {line}")
        log(f"errors: {errors}")
        for sample in tally.samples:
            log(f"  {sample}")
        return 0 if errors == 0 and not_terminal == 0 and failed_count == 0 and not undrained else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
