#!/usr/bin/env node
// Self-test for parse-ui-stream.mjs: serves fixture streams from a local HTTP
// server and runs the parser against them as a child process (the way the Rust
// e2e tests do). Run: node selftest.mjs   (after `npm ci` in this directory)

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chunkKeyTable } from './chunk-keys.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const parser = join(here, 'parse-ui-stream.mjs');
const fixture = readFileSync(join(here, 'fixture.sse'), 'utf8');

const HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache',
  'x-vercel-ai-ui-message-stream': 'v1',
};

const frames = (...chunks) => chunks.map((c, i) => `id: ${i + 1}\ndata: ${JSON.stringify(c)}\n\n`).join('');
const textRun = (...middle) =>
  frames(
    { type: 'start', messageId: 'msg_1' },
    { type: 'start-step' },
    ...middle,
    { type: 'finish-step' },
    { type: 'finish' },
  ) + 'data: [DONE]\n\n';

const routes = {
  // the canonical fixture, written in small uneven slices with pauses
  '/ok': { body: fixture, slice: 13 },
  // same, CRLF line endings, split so a CR/LF pair straddles two writes
  '/ok-crlf': { body: fixture.replace(/\n/g, '\r\n'), slice: 7 },
  // unknown top-level key inside a known chunk type
  '/bogus': {
    body: fixture.replace(
      '{"type":"text-delta","id":"txt_1","delta":"world"}',
      '{"type":"text-delta","id":"txt_1","delta":"x","bogus":1}',
    ),
  },
  // finish with finishReason (declared by the SDK schema -> accepted)
  '/finish-reason': { body: textRun({ type: 'finish-step' }).replace('{"type":"finish"}', '{"type":"finish","finishReason":"stop"}') },
  // SDK schema violations
  '/bad-type': { body: textRun({ type: 'text-delta', id: 't', delta: 42 }) },
  '/unknown-chunk': { body: textRun({ type: 'text-shout', id: 't' }) },
  '/bad-finish-reason': { body: textRun().replace('{"type":"finish"}', '{"type":"finish","finishReason":"completed"}') },
  '/bad-json': { body: 'id: 1\ndata: {"type":"start"\n\n' },
  // SDK reducer violation: delta for a text part that was never started
  '/orphan-delta': { body: textRun({ type: 'text-delta', id: 'nope', delta: 'x' }) },
  // `error` chunks are protocol, not a parse failure
  '/error-chunk': { body: textRun({ type: 'error', errorText: 'provider exploded' }) },
  // stream cut before the terminator
  '/no-done': { body: fixture.replace('data: [DONE]\n\n', '') },
  // wrong response heads
  '/no-marker': { body: fixture, headers: { 'x-vercel-ai-ui-message-stream': undefined } },
  '/json-ctype': { body: fixture, headers: { 'content-type': 'application/json' } },
  '/500': { body: '{"error":"boom"}', status: 500, headers: { 'content-type': 'application/json' } },
};

let lastRequest = null;
const server = http.createServer((req, res) => {
  let reqBody = '';
  req.on('data', (d) => (reqBody += d));
  req.on('end', async () => {
    lastRequest = { method: req.method, url: req.url, headers: req.headers, body: reqBody };
    const route = routes[req.url];
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    const headers = { ...HEADERS, ...route.headers };
    for (const k of Object.keys(headers)) if (headers[k] === undefined) delete headers[k];
    res.writeHead(route.status ?? 200, headers);
    const buf = Buffer.from(route.body);
    const step = route.slice ?? buf.length;
    for (let i = 0; i < buf.length; i += step) {
      res.write(buf.subarray(i, i + step));
      if (route.slice) await new Promise((r) => setTimeout(r, 1));
    }
    res.end();
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;

function run(path, args = [], env = {}) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [parser, `${base}${path}`, ...args],
      { env: { ...process.env, ...env }, timeout: 20000 },
      (err, stdout, stderr) => {
        const lines = stdout.trim().split('\n');
        assert.equal(lines.length, 1, `${path}: want exactly one stdout line, got ${JSON.stringify(stdout)} / ${stderr}`);
        resolve({ code: err ? err.code : 0, out: JSON.parse(lines[0]), stderr });
      },
    );
  });
}

let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}\n${e.stack}`);
    process.exitCode = 1;
  }
}

function assertGood(out, code) {
  assert.equal(code, 0, JSON.stringify(out));
  assert.equal(out.ok, true);
  assert.equal(out.text, 'Hello world');
  assert.equal(out.done, true);
  assert.deepEqual(out.ids, Array.from({ length: 13 }, (_, i) => i + 1));
  assert.deepEqual(out.chunkTypes, [
    'start', 'start-step', 'tool-input-available', 'tool-output-available', 'finish-step',
    'start-step', 'text-start', 'text-delta', 'text-delta', 'text-end', 'data-run', 'finish-step', 'finish',
  ]);
  const m = out.message;
  assert.equal(m.id, 'msg_1');
  assert.equal(m.role, 'assistant');
  assert.deepEqual(m.metadata, {
    runId: 'run_1',
    threadId: 'thr_1',
    usage: { input_tokens: 3, output_tokens: 2 },
    status: 'completed',
  });
  const tool = m.parts.find((p) => p.type === 'tool-current_time');
  assert.ok(tool, 'tool part present');
  assert.equal(tool.toolCallId, 'call_1');
  assert.equal(tool.state, 'output-available');
  assert.deepEqual(tool.input, {});
  assert.deepEqual(tool.output, { now: '2026-11-23T00:00:00Z' });
  // transient data parts are not kept in the message
  assert.ok(!m.parts.some((p) => p.type === 'data-run'));
  assert.deepEqual(m.parts.map((p) => p.type), ['step-start', 'tool-current_time', 'step-start', 'text']);
  assert.equal(m.parts[3].state, 'done');
}

function assertFails(out, code, re) {
  assert.equal(code, 1, JSON.stringify(out));
  assert.equal(out.ok, false);
  assert.equal(typeof out.error, 'string');
  assert.match(out.error, re);
}

await check('fixture parses (GET)', async () => {
  const { out, code } = await run('/ok');
  assertGood(out, code);
  assert.equal(lastRequest.method, 'GET');
  assert.equal(lastRequest.headers.accept, 'text/event-stream');
  assert.equal(lastRequest.headers['x-api-key'], undefined);
});

await check('fixture parses (POST with body, RUNQ_KEY, RUNQ_HEADERS)', async () => {
  const { out, code } = await run('/ok', ['{"input":"hi"}'], {
    RUNQ_KEY: 'rq_test',
    RUNQ_HEADERS: '{"last-event-id":"0"}',
  });
  assertGood(out, code);
  assert.equal(lastRequest.method, 'POST');
  assert.equal(lastRequest.body, '{"input":"hi"}');
  assert.equal(lastRequest.headers['content-type'], 'application/json');
  assert.equal(lastRequest.headers.accept, 'text/event-stream');
  assert.equal(lastRequest.headers['x-api-key'], 'rq_test');
  assert.equal(lastRequest.headers['last-event-id'], '0');
});

await check('fixture parses with CRLF line endings split across writes', async () => {
  const { out, code } = await run('/ok-crlf');
  assertGood(out, code);
});

await check('unknown key in a chunk is rejected', async () => {
  const { out, code } = await run('/bogus');
  assertFails(out, code, /"bogus"/);
});

await check('finish accepts finishReason', async () => {
  const { out, code } = await run('/finish-reason');
  assert.equal(code, 0, JSON.stringify(out));
  assert.equal(out.ok, true);
});

await check('SDK schema: wrong field type rejected', async () => {
  const { out, code } = await run('/bad-type');
  assertFails(out, code, /TypeValidationError/);
});
await check('SDK schema: unknown chunk type rejected', async () => {
  const { out, code } = await run('/unknown-chunk');
  assertFails(out, code, /TypeValidationError/);
});
await check('SDK schema: finishReason outside the enum rejected', async () => {
  const { out, code } = await run('/bad-finish-reason');
  assertFails(out, code, /TypeValidationError/);
});
await check('SDK parser: malformed JSON rejected', async () => {
  const { out, code } = await run('/bad-json');
  assertFails(out, code, /JSONParseError/);
});
await check('SDK reducer: text-delta without text-start rejected', async () => {
  const { out, code } = await run('/orphan-delta');
  assertFails(out, code, /UIMessageStreamError|missing text part/);
});
await check('error chunk is reported, not a failure', async () => {
  const { out, code } = await run('/error-chunk');
  assert.equal(code, 0, JSON.stringify(out));
  assert.equal(out.ok, true);
  assert.deepEqual(out.errorChunks, ['provider exploded']);
  assert.ok(out.chunkTypes.includes('error'));
});
await check('missing [DONE] -> done:false', async () => {
  const { out, code } = await run('/no-done');
  assert.equal(code, 0, JSON.stringify(out));
  assert.equal(out.done, false);
  assert.equal(out.text, 'Hello world');
});
await check('missing x-vercel-ai-ui-message-stream header rejected', async () => {
  const { out, code } = await run('/no-marker');
  assertFails(out, code, /x-vercel-ai-ui-message-stream/);
});
await check('wrong content-type rejected', async () => {
  const { out, code } = await run('/json-ctype');
  assertFails(out, code, /content-type/);
});
await check('non-200 rejected', async () => {
  const { out, code } = await run('/500');
  assertFails(out, code, /HTTP status 500/);
});

// The per-type key table the strict check uses, read from the installed SDK.
// Pinned here so an `ai` upgrade that changes the protocol surface is noticed.
const EXPECTED_KEYS = {
  start: ['type', 'messageId', 'messageMetadata'],
  'start-step': ['type'],
  'text-start': ['type', 'id', 'providerMetadata'],
  'text-delta': ['type', 'id', 'delta', 'providerMetadata'],
  'text-end': ['type', 'id', 'providerMetadata'],
  'tool-input-start': ['type', 'toolCallId', 'toolName', 'inputEncoding', 'providerExecuted', 'providerMetadata', 'toolMetadata', 'dynamic', 'title'],
  'tool-input-delta': ['type', 'toolCallId', 'inputTextDelta'],
  'tool-input-available': ['type', 'toolCallId', 'toolName', 'input', 'providerExecuted', 'providerMetadata', 'toolMetadata', 'dynamic', 'title'],
  'tool-output-available': ['type', 'toolCallId', 'output', 'providerExecuted', 'providerMetadata', 'toolMetadata', 'dynamic', 'preliminary'],
  'tool-output-error': ['type', 'toolCallId', 'errorText', 'providerExecuted', 'providerMetadata', 'toolMetadata', 'dynamic'],
  'finish-step': ['type'],
  finish: ['type', 'finishReason', 'messageMetadata'],
  error: ['type', 'errorText'],
  abort: ['type', 'reason'],
  'data-*': ['type', 'id', 'data', 'transient'],
};
await check('chunk key table derived from the SDK schema', async () => {
  const table = await chunkKeyTable();
  for (const [type, keys] of Object.entries(EXPECTED_KEYS)) {
    assert.deepEqual(table.get(type)?.keys, keys, type);
  }
});

server.close();
if (process.argv.includes('--table')) {
  for (const [type, { keys, required }] of await chunkKeyTable()) {
    console.log(`${type}: ${keys.map((k) => (required.includes(k) ? k : `${k}?`)).join(', ')}`);
  }
}
console.log(process.exitCode ? 'selftest FAILED' : `selftest passed (${passed} checks)`);
