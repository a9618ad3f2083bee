// Drives runq's web console in headless Chromium (Debian's `chromium`, through playwright-core):
// sign in, see a run appear in the live list, open it and watch its text stream in, cancel a
// running run, look at the queue, roll an agent back, approve and deny tool calls that wait for a
// person. Prints {"ok": true, "steps": [...]} on success; on failure {"ok": false, "error": ...},
// a screenshot next to SCREENSHOT, and exit 1.
//
//   RUNQ_KEY=rq_… SCREENSHOT=target/console-run.png ROLLBACK_TO=ver_… node console.mjs http://127.0.0.1:PORT
//
// The agent `bot` must exist on the mock provider, and ROLLBACK_TO name one of its versions
// older than the deployed one; the agent `asker` must call the tool `lookup`, which needs approval.
import { chromium } from 'playwright-core';

const base = process.argv[2];
const key = process.env.RUNQ_KEY;
const screenshot = process.env.SCREENSHOT ?? 'console-run.png';
const rollbackTo = process.env.ROLLBACK_TO;
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = { timeout: 30_000 };

const steps = [];
const step = (name) => {
  steps.push(name);
  console.error(`· ${name}`);
};

/** Starts a streamed run and lets go of its stream at once (the run goes on): its id. */
async function startRun(prompt, agent = 'bot') {
  const res = await fetch(`${base}/v1/run`, {
    method: 'POST',
    headers: { 'x-api-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({ agent_id: agent, prompt, stream: true }),
  });
  if (!res.ok) throw new Error(`POST /v1/run: ${res.status} ${await res.text()}`);
  const id = res.headers.get('x-run-id');
  await res.body.cancel();
  return id;
}

async function getRun(id) {
  const res = await fetch(`${base}/v1/runs/${id}`, { headers: { 'x-api-key': key } });
  return res.json();
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1200, height: 760 } });
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(error.message));
try {
  await page.goto(`${base}/console`);
  await page.fill('#key', 'rq_not_a_key');
  await page.click('#sign-in');
  await page.waitForSelector('#login-error:has-text("Invalid API key")', WAIT);
  step('a wrong key is refused with the server message');

  await page.fill('#key', key);
  await page.click('#sign-in');
  await page.waitForSelector('#runs', WAIT);
  step('signed in');

  const sentence = 'When a worker dies mid-run, its lease expires and another worker takes the run over, '
    + 'while clients that were streaming reconnect with Last-Event-ID and miss nothing.';
  // about 30 words, 250 ms apart: long enough to open the run and watch it arrive
  const live = await startRun(`${sentence} [[mock delay=250]]`);
  await page.waitForSelector(`tr[data-run-id="${live}"]`, WAIT);
  step('a new run appeared in the live list');

  await page.click(`tr[data-run-id="${live}"]`);
  await page.waitForFunction(
    () => document.querySelector('#output')?.textContent.includes('Echo')
      && document.querySelector('#run-status [data-status]')?.dataset.status === 'running',
    null,
    WAIT,
  );
  step('its text streams in while it runs');
  await page.waitForSelector('#run-status [data-status="completed"]', WAIT);
  const shown = await page.textContent('#output');
  const stored = await getRun(live);
  if (shown !== stored.output) throw new Error(`the page shows ${JSON.stringify(shown)}, the run stored ${JSON.stringify(stored.output)}`);
  await page.screenshot({ path: screenshot });
  step('it completed, showing exactly the stored output');

  const slow = await startRun('go [[mock tokens=2000 delay=50]]');
  await page.evaluate((id) => { location.hash = `#/runs/${id}`; }, slow);
  await page.waitForFunction(() => document.querySelector('#output')?.textContent.includes('tok1'), null, WAIT);
  await page.click('#cancel');
  await page.waitForSelector('#run-status [data-status="cancelled"]', WAIT);
  if ((await getRun(slow)).status !== 'cancelled') throw new Error('the server did not cancel the run');
  step('a running run was cancelled');

  await page.click('nav a[data-page="queue"]');
  await page.waitForFunction(() => /^\d+$/.test(document.querySelector('[data-stat="queued"]')?.textContent), null, WAIT);
  step('the queue page shows counts');

  await page.click('nav a[data-page="agents"]');
  const rollback = `[data-agent="bot"] button[data-deploy="${rollbackTo}"]`;
  await page.waitForSelector(`${rollback}:has-text("Roll back")`, WAIT);
  await page.click(rollback);
  await page.waitForSelector(`[data-version="${rollbackTo}"] [data-status="deployed"]`, WAIT);
  step('an agent was rolled back to an older version');

  // a run that waits for approval: its page shows the call with Approve / Deny
  const lookup = '[[mock tool=lookup args={"city":"Paris"}]]';
  const waiting = await startRun(`weather? ${lookup}`, 'asker');
  await page.evaluate((id) => { location.hash = `#/runs/${id}`; }, waiting);
  const card = '#approvals [data-approval]';
  await page.waitForSelector(`${card} button[data-approve]`, WAIT);
  await page.waitForSelector(`${card} button[data-deny]`, WAIT);
  await page.waitForSelector('#run-status [data-status="requires_action"]', WAIT);
  const shownCall = await page.textContent(card);
  if (!shownCall.includes('lookup') || !shownCall.includes('"city": "Paris"')) throw new Error(`the approval shows ${shownCall}`);
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-approval.png') });
  step('a pending approval shows its tool, arguments and buttons');

  await page.click(`${card} button[data-approve]`);
  await page.waitForSelector('#approvals [data-decided="approved"]', WAIT);
  await page.waitForSelector('#run-status [data-status="completed"]', WAIT);
  const approved = await getRun(waiting);
  if (approved.status !== 'completed') throw new Error(`the run is ${approved.status} on the server`);
  await page.waitForFunction((text) => document.querySelector('#output')?.textContent.includes(text), approved.output, WAIT);
  step('approving it continued the run: it completed and its text streamed in');

  const denied = await startRun(`weather? ${lookup}`, 'asker');
  await page.evaluate((id) => { location.hash = `#/runs/${id}`; }, denied);
  await page.click(`${card} button[data-deny]`);
  await page.fill(`${card} input[name="reason"]`, 'not on a weekend');
  await page.click(`${card} button[data-confirm-deny]`);
  await page.waitForSelector('#run-status [data-status="completed"]', WAIT);
  const deniedRun = await getRun(denied);
  if (!deniedRun.output?.includes('not on a weekend')) throw new Error(`the model did not read the reason: ${deniedRun.output}`);
  await page.waitForFunction(() => document.querySelector('#output')?.textContent.includes('not on a weekend'), null, WAIT);
  step('denying asked for a reason, which the model read');

  if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join('; ')}`);
  console.log(JSON.stringify({ ok: true, steps, screenshot }));
} catch (error) {
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-failure.png') }).catch(() => {});
  console.log(JSON.stringify({ ok: false, error: String(error), steps, pageErrors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
