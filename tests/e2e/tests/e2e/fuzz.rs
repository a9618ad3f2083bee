//! Schema-driven fuzzing: schemathesis (PyPI, pinned in `tests/e2e/py/requirements.txt`) reads
//! `/openapi.json` of a live stack and sends generated requests, valid and not, to every
//! operation with the admin key. No answer may be a 5xx, and every answer must match the document:
//! a documented status, a documented content type, a body of the documented schema.
//!
//! `make test` runs a small fixed-seed sample; `make fuzz` runs the same test at full size
//! (`RUNQ_FUZZ_EXAMPLES`, `RUNQ_FUZZ_PHASES`, `RUNQ_FUZZ_MIN_CASES`).

use std::process::Stdio;

use reqwest::Method;
use runq_e2e::{Env, Stack};
use serde_json::json;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Operations that can take the fuzzer's own key away (revoke it, rate-limit its workspace):
/// fuzzed last, in a pass of their own, so they cannot starve the others.
const SELF_HARMING: &str = "^/v1/(workspaces|api-keys|auth/api-keys)/";

/// A session's event stream has no end of its own: with no run going it waits for the session's
/// next one (reference `002_…`), so every generated call would only time out. The reference and
/// isolation tests cover it.
const WAITS: &str = "/sessions/\\{session_id\\}/events$";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One schemathesis run; returns whether it passed and how many cases it generated.
async fn schemathesis(stack: &Stack, filter: (&str, &str)) -> (bool, u64) {
    let examples = setting("RUNQ_FUZZ_EXAMPLES", "5");
    let phases = setting("RUNQ_FUZZ_PHASES", "examples,coverage,fuzzing");
    let out = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file", concat!(env!("CARGO_MANIFEST_DIR"), "/py/schemathesis.toml")])
        .args(["run", &format!("{}/openapi.json", stack.app.base)])
        .args(["--header", &format!("x-api-key: {}", stack.app.admin_key())])
        .args(["--checks", CHECKS, "--phases", &phases, "--max-examples", &examples])
        // the same cases on every run: a fixed seed, no example database carried between runs
        .args(["--seed", "14", "--generation-database", "none", "--workers", "1"])
        .args(["--request-timeout", "20", "--continue-on-failure", "--no-color"])
        .args([filter.0, filter.1])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3 must be installed (make test installs schemathesis with pip)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.is_empty() || out.status.success(), "schemathesis did not run: is it installed?");
    // the summary's "Test cases:" line: `3897 generated, 3897 passed`
    let generated = stdout
        .lines()
        .find_map(|line| {
            let (n, rest) = line.trim().split_once(' ')?;
            if rest.starts_with("generated") { n.parse().ok() } else { None }
        })
        .unwrap_or(0);
    (out.status.success(), generated)
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation_on_any_operation() {
    // runs end quickly whatever provider a generated request names
    let env = Env::new()
        .await
        .with("RUNQ_RUN_TIMEOUT_MS", "5000")
        .with("RUNQ_SYNC_TIMEOUT_MS", "3000")
        .with("RUNQ_PROVIDER_MAX_RETRIES", "0");
    let stack = Stack::start_with(env).await;
    // something to find: a deployed agent, a thread, a finished run
    stack.agent("demo", "openai", json!({"system_prompt": "You help."})).await;
    stack.app.call(Method::POST, "/v1/threads", Some(json!({"thread_id": "thr_demo"}))).await;
    stack.run(json!({"agent_id": "demo", "prompt": "hello", "thread_id": "thr_demo", "stream": false})).await;

    let (rest_ok, rest) = schemathesis(&stack, ("--exclude-path-regex", &format!("{SELF_HARMING}|{WAITS}"))).await;
    let (own_ok, own) = schemathesis(&stack, ("--include-path-regex", SELF_HARMING)).await;
    println!("schemathesis: {} cases generated", rest + own);
    assert!(rest_ok && own_ok, "schemathesis found failures (its report is above)");
    let min: u64 = setting("RUNQ_FUZZ_MIN_CASES", "100").parse().expect("RUNQ_FUZZ_MIN_CASES");
    assert!(rest + own >= min, "only {} cases generated, {min} wanted", rest + own);
}
