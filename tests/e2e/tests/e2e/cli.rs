//! The `runq` CLI binary against the real stack, as a person at a terminal would use it (but
//! with stderr not a terminal: the batch progress bar falls back to plain lines). The CLI is a
//! spawned binary; the API and worker it talks to run in the test process.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::Method;
use runq_e2e::{EchoTool, Env, Stack, TERMINAL, bin, eventually, signal, wait_exit};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// `runq …` pointed at the stack's API with `key`.
fn runq(stack: &Stack, key: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("runq"));
    cmd.args(args)
        .env("RUNQ_URL", &stack.app.base)
        .env("RUNQ_API_KEY", key)
        // what `runq login` saved on this machine plays no part
        .env("RUNQ_CONFIG", "/nonexistent/runq-config.json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `runq …` with the admin key to its end (60 s at most).
async fn run(stack: &Stack, args: &[&str]) -> Output {
    let child = runq(stack, stack.app.admin_key(), args).spawn().expect("spawn runq");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("runq finished within 60 s")
        .expect("runq output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `run_…` the CLI's closing line names.
fn run_id_in(stderr: &str) -> String {
    stderr.split_whitespace().find(|w| w.starts_with("run_")).expect("a run id on stderr").to_owned()
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runq-cli-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test]
async fn run_streams_text_equal_to_the_stored_output_and_shows_tool_calls() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({"tools": ["current_time"], "system_prompt": "You help {{company}}."})).await;

    let out =
        run(&stack, &["run", "bot", "what time is it? [[mock tool=current_time]]", "--var", "company=Acme"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("· tool current_time"), "tool calls are shown: {stderr}");
    let id = run_id_in(&stderr);
    assert!(stderr.contains(&format!("{id} completed")), "{stderr}");
    assert!(stderr.contains("tokens in"), "usage is shown: {stderr}");
    let (_, stored) = stack.app.call(Method::GET, &format!("/v1/runs/{id}"), None).await;
    assert_eq!(stdout.strip_suffix('\n'), stored["output"].as_str(), "stdout is the answer and only the answer");

    let out = run(&stack, &["run", "bot", "hello", "--var", "company=Acme", "--thread", "thr_cli", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("--json prints the run as JSON");
    assert_eq!(printed["status"], "completed");
    assert_eq!(printed["output"], "Echo: hello");
    assert_eq!(printed["thread_id"], "thr_cli");
}

#[tokio::test]
async fn a_failed_run_and_an_unknown_agent_exit_non_zero_with_the_servers_message() {
    let stack = Stack::start_with(Env::new().await.with("RUNQ_PROVIDER_MAX_RETRIES", "0")).await;
    stack.agent("bot", "openai", json!({})).await;

    let out = run(&stack, &["run", "bot", "fail [[mock fault=500]]"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{} failed", run_id_in(&stderr))), "{stderr}");

    let out = run(&stack, &["run", "nobody", "hi"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: Agent not found (agent_not_found, HTTP 404, request id "), "{stderr}");
    assert!(!stderr.contains("Api {"), "no debug dump: {stderr}");

    let child = runq(&stack, "rq_not_a_key", &["runs", "ls"]).spawn().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Invalid API key (unauthorized, HTTP 401"), "{stderr}");

    let out = Command::new(bin("runq"))
        .args(["--url", "http://127.0.0.1:9", "runs", "ls"])
        .env("RUNQ_CONFIG", "/nonexistent/runq-config.json")
        .output()
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach http://127.0.0.1:9/v1/runs"), "the failing URL is named: {stderr}");
}

#[tokio::test]
async fn a_batch_of_a_thousand_queries_writes_a_thousand_result_lines_and_resumes_by_operation() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({"system_prompt": "You help {{company}}."})).await;
    let dir = scratch_dir();
    let queries: Vec<String> = (0..1000)
        .map(|i| match i % 2 {
            0 => json!({"query": format!("q{i}"), "variables": {"company": "Acme"}}).to_string(),
            _ => json!({"query": format!("q{i}"), "variables": {"company": "Initech"}}).to_string(),
        })
        .collect();
    let input = dir.join("queries.jsonl");
    std::fs::write(&input, queries.join("\n") + "\n").unwrap();
    let results = dir.join("results.jsonl");

    let out = run(&stack, &["batch", "bot", input.to_str().unwrap(), "--out", results.to_str().unwrap()]).await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1000/1000 done"), "plain progress lines without a terminal: {stderr}");
    assert!(stderr.contains("1000 results: 1000 completed, 0 not completed"), "{stderr}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&results).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i, "{line}");
        assert_eq!(line["status"], "completed", "{line}");
        assert_eq!(line["output"], format!("Echo: q{i}"), "results are in file order");
    }

    let operation = stderr.split_whitespace().find(|w| w.starts_with("op_")).expect("operation id").to_owned();
    let out = run(&stack, &["batch", "--operation", &operation]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1000, "a resumed batch writes the same results");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ctrl_c_cancels_the_run_on_the_server() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let mut child =
        runq(&stack, stack.app.admin_key(), &["run", "bot", "go [[mock tokens=2000 delay=50]]"]).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), stdout.read_exact(&mut first))
        .await
        .expect("text streams within 30 s")
        .unwrap();

    signal(&child, "INT");
    let status = wait_exit(&mut child, Duration::from_secs(30)).await.expect("runq exits after Ctrl-C");
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(stderr.contains("interrupted: run run_"), "{stderr}");

    let (_, runs) = stack.app.call(Method::GET, "/v1/runs", None).await;
    let id = runs["data"][0]["id"].as_str().unwrap().to_owned();
    let status = eventually(Duration::from_secs(30), || async {
        let (_, run) = stack.app.call(Method::GET, &format!("/v1/runs/{id}"), None).await;
        let status = run["status"].as_str().unwrap_or_default().to_owned();
        TERMINAL.contains(&status.as_str()).then_some(status)
    })
    .await;
    assert_eq!(status.as_deref(), Some("cancelled"));
}

/// The `apr_…` a `runq run` that paused names in its approve command.
fn approval_in(stderr: &str) -> String {
    let line = stderr.lines().find(|l| l.contains("runq approvals approve apr_")).expect("an approve command");
    line.split_whitespace().last().unwrap().to_owned()
}

/// Polls the run until it ends (30 s at most).
async fn finished_run(stack: &Stack, id: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let (_, run) = stack.app.call(Method::GET, &format!("/v1/runs/{id}"), None).await;
        TERMINAL.contains(&run["status"].as_str().unwrap_or_default()).then_some(run)
    })
    .await
    .unwrap_or_else(|| panic!("run {id} did not finish within 30 s"))
}

const LOOKUP: &str = r#"weather? [[mock tool=lookup args={"city":"Paris"}]]"#;

#[tokio::test]
async fn a_run_that_needs_approval_exits_waiting_and_approving_it_completes_the_run() {
    let stack = Stack::start().await;
    let tool = EchoTool::start().await;
    stack.approval_agent("bot", &tool).await;

    let out = run(&stack, &["run", "bot", LOOKUP]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "exit 3: the run waits for a person: {stderr}");
    let follow = follow_command(&stderr);
    let approval = approval_in(&stderr);
    assert!(approval.starts_with("apr_"), "{stderr}");
    assert!(stderr.contains(&format!(r#"approval {approval} needed: tool lookup {{"city":"Paris"}}"#)), "{stderr}");
    assert!(stderr.contains(&format!("runq approvals deny {approval} --reason")), "{stderr}");
    let id = run_id_in(&stderr);
    assert!(stderr.contains(&format!("{id} requires_action")), "{stderr}");
    let (_, waiting) = stack.app.call(Method::GET, &format!("/v1/runs/{id}"), None).await;
    assert_eq!(waiting["status"], "requires_action");
    assert_eq!(waiting["pending_approvals"][0]["id"], approval.as_str(), "{waiting}");
    assert_eq!(tool.calls(), 0, "nothing runs before the approval");

    let out = run(&stack, &["approvals", "ls", "--status", "pending"]).await;
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = listed.lines().find(|l| l.starts_with(&approval)).unwrap_or_else(|| panic!("{listed}"));
    for cell in ["pending", "lookup", r#"{"city":"Paris"}"#, id.as_str()] {
        assert!(row.contains(cell), "{cell} in {row}");
    }

    let out = run(&stack, &["approvals", "approve", &approval, "--payload-hash", "00"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(payload_hash_mismatch, HTTP 409, request id "), "{stderr}");

    // a tail of the waiting run replays it to the pause and exits waiting, with the same advice
    let out = run(&stack, &["runs", "tail", &id]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(follow_command(&text(&out.stderr)), follow);
    // the closing line's command follows the run once decided: start it before deciding
    let args: Vec<&str> = follow.split_whitespace().skip(1).collect();
    let tail = runq(&stack, stack.app.admin_key(), &args).spawn().unwrap();

    let out = run(&stack, &["approvals", "approve", &approval, "--reason", "looks fine"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("approved {approval}: tool lookup")), "{}", text(&out.stdout));
    let done = finished_run(&stack, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], r#"Tool lookup returned: {"got":{"city":"Paris"}}"#);
    assert_eq!(tool.calls(), 1);

    let tailed = tokio::time::timeout(Duration::from_secs(60), tail.wait_with_output()).await.unwrap().unwrap();
    assert!(tailed.status.success(), "{}", text(&tailed.stderr));
    assert_eq!(text(&tailed.stdout).strip_suffix('\n'), done["output"].as_str(), "the continuation streamed");
    // a replay from the start goes on past the pause too
    let out = run(&stack, &["runs", "tail", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).strip_suffix('\n'), done["output"].as_str());

    let out = run(&stack, &["approvals", "approve", &approval]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a second decision is refused: {stderr}");
    assert!(stderr.starts_with("error: This approval is already approved (approval_decided, HTTP 409, request id "));
    assert!(!stderr.contains("Api {"), "no debug dump: {stderr}");
}

/// The `runq runs tail … --after N` command of a waiting run's closing line.
fn follow_command(stderr: &str) -> String {
    let line = stderr.lines().find(|l| l.starts_with("the run waits for")).unwrap_or_else(|| panic!("{stderr}"));
    let command = line.split(": ").last().unwrap().to_owned();
    assert!(command.starts_with("runq runs tail run_") && command.contains(" --after "), "{line}");
    command
}

#[tokio::test]
async fn a_denied_call_tells_the_model_why_and_cannot_be_decided_twice() {
    let stack = Stack::start().await;
    let tool = EchoTool::start().await;
    stack.approval_agent("bot", &tool).await;

    let out = run(&stack, &["run", "bot", LOOKUP, "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let waiting: Value = serde_json::from_slice(&out.stdout).expect("--json prints the waiting run");
    assert_eq!(waiting["status"], "requires_action");
    let approval = waiting["pending_approvals"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(approval_in(&text(&out.stderr)), approval, "the approve command is shown with --json too");
    let id = waiting["id"].as_str().unwrap();

    let out = run(&stack, &["approvals", "deny", &approval, "--reason", "not today"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("denied {approval}: tool lookup (not today)\n"));
    let done = finished_run(&stack, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["output"].as_str().unwrap().contains("not today"), "the model read the reason: {done}");
    assert_eq!(tool.calls(), 0, "a denied call never runs");

    let out = run(&stack, &["approvals", "ls", "--status", "denied"]).await;
    assert!(
        text(&out.stdout).lines().any(|l| l.starts_with(&approval) && l.contains("denied")),
        "{}",
        text(&out.stdout)
    );
    let out = run(&stack, &["approvals", "ls", "--status", "pending"]).await;
    assert!(!text(&out.stdout).contains(&approval), "{}", text(&out.stdout));

    for decision in ["deny", "approve"] {
        let out = run(&stack, &["approvals", decision, &approval]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("This approval is already denied (approval_decided, HTTP 409"), "{stderr}");
        assert!(stderr.contains("hint: someone decided first"), "{stderr}");
    }
}

#[tokio::test]
async fn agents_keys_and_runs_are_managed_and_a_run_is_tailed_from_any_seq() {
    let stack = Stack::start().await;
    let provider = json!({"name": "mock", "kind": "openai", "base_url": stack.mock.base_url(), "api_key": "sk-test"});
    let (status, _) = stack.app.call(Method::POST, "/v1/providers", Some(provider)).await;
    assert!(status.is_success());

    let out = run(&stack, &["agents", "create", "Helper", "--provider", "mock", "--model", "m", "--deploy"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(deployed)"), "{}", text(&out.stdout));
    let out = run(&stack, &["agents", "ls"]).await;
    assert!(text(&out.stdout).lines().any(|l| l.contains("helper") && l.contains("ver_")), "{}", text(&out.stdout));

    let (_, v2) = stack
        .app
        .call(Method::POST, "/v1/agents/helper/versions", Some(json!({"provider": "mock", "model": "m2"})))
        .await;
    let v2 = v2["id"].as_str().unwrap();
    let out = run(&stack, &["agents", "deploy", "helper", v2]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&stack, &["agents", "versions", "helper"]).await;
    assert!(text(&out.stdout).lines().any(|l| l.starts_with(v2) && l.contains("yes")), "{}", text(&out.stdout));

    let out = run(&stack, &["keys", "create", "app", "--scope", "run"]).await;
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("rq_"), "the key alone on stdout: {key}");
    let out = run(&stack, &["run", "helper", "one two three"]).await;
    assert!(out.status.success());
    let id = run_id_in(&text(&out.stderr));
    let child = runq(&stack, &key, &["runs", "ls", "--status", "completed", "--agent", "helper"]).spawn().unwrap();
    let listed = text(&child.wait_with_output().await.unwrap().stdout);
    assert!(listed.lines().any(|l| l.starts_with(&id) && l.contains("completed")), "{listed}");

    let out = run(&stack, &["runs", "tail", &id]).await;
    assert_eq!(text(&out.stdout), "Echo: one two three\n");
    let events = stack.sse(stack.app.with_key(Method::GET, &format!("/v1/runs/{id}/events"), &key)).await;
    let first = events.frames.iter().find(|f| f.data.contains("text-delta")).unwrap();
    let first_delta: Value = serde_json::from_str(&first.data).unwrap();
    let after = first.id.unwrap().to_string();
    let out = run(&stack, &["runs", "tail", &id, "--after", &after]).await;
    let rest = "Echo: one two three\n".strip_prefix(first_delta["delta"].as_str().unwrap()).unwrap();
    assert_eq!(text(&out.stdout), rest, "tail starts after the seq given");
    let out = run(&stack, &["runs", "cancel", &id]).await;
    assert!(text(&out.stderr).contains("run_finished"), "{}", text(&out.stderr));

    let out = run(&stack, &["keys", "ls"]).await;
    let key_id =
        text(&out.stdout).lines().find(|l| l.contains(" app ")).unwrap().split_whitespace().next().unwrap().to_owned();
    let out = run(&stack, &["keys", "revoke", &key_id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let child = runq(&stack, &key, &["runs", "ls"]).spawn().unwrap();
    assert_eq!(child.wait_with_output().await.unwrap().status.code(), Some(1), "a revoked key stops working");
}

#[tokio::test]
async fn login_checks_the_key_and_saves_it_for_later_commands() {
    let stack = Stack::start().await;
    let dir = scratch_dir();
    let config = dir.join("runq").join("config.json");
    let runq_saved = |args: &[&str]| {
        let mut cmd = Command::new(bin("runq"));
        cmd.args(args)
            .env("RUNQ_CONFIG", &config)
            .env_remove("RUNQ_URL")
            .env_remove("RUNQ_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let login = |key: String| {
        let mut child = runq_saved(&["login", "--url", &stack.app.base]).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        async move {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{key}\n").as_bytes()).await.unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };

    let out = login("rq_not_a_key".into()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Invalid API key"), "{}", text(&out.stderr));
    assert!(!config.exists(), "a refused key is not saved");

    let out = login(stack.app.admin_key().to_owned()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only its owner may read the key");

    let out = runq_saved(&["runs", "ls"]).output().await.unwrap();
    assert!(out.status.success(), "later commands use the saved URL and key: {}", text(&out.stderr));
    let out = runq_saved(&["logout"]).output().await.unwrap();
    assert!(out.status.success() && !config.exists());
    let _ = std::fs::remove_dir_all(dir);
}
