#!/usr/bin/env node
// Reads one runq UI message stream (AI SDK "UI message stream" protocol v1) and
// checks it with the AI SDK's own, unmodified client-side machinery:
//
//   parseJsonEventStream({ stream, schema: uiMessageChunkSchema })   (ai)
//     -> throw on a failed parse, exactly like DefaultChatTransport does
//        (HttpChatTransport.processResponseStream)
//     -> readUIMessageStream({ stream })                              (ai)
//        = the SDK's reducer (processUIMessageStream) building the UIMessage.
//
// On top of that the harness is strict: a chunk carrying a top-level key the
// SDK schema does not declare for its type is an error (current SDKs accept and
// keep such keys; see chunk-keys.mjs). SSE `id:` lines and the `data: [DONE]`
// terminator are invisible after SDK parsing, so a tee of the byte stream feeds
// a small line scanner that records them.
//
// Usage: node parse-ui-stream.mjs <url> [json-body]
//   json-body given -> POST it (content-type: application/json), else GET.
//   env RUNQ_KEY        -> sent as `x-api-key`
//   env RUNQ_HEADERS    -> JSON object of extra request headers (e.g. last-event-id)
//   env RUNQ_TIMEOUT_MS -> overall deadline, default 30000
//
// Prints exactly one JSON line on stdout:
//   {"ok":true,"message":<UIMessage|null>,"text":"...","chunkTypes":[...],
//    "ids":[1,2,...],"done":true,"errorChunks":["<errorText of each error chunk>"]}
//   {"ok":false,"error":"..."}                        (exit status 1; 2 on bad usage)

// Imported dynamically so a missing `npm ci` still yields the one-line JSON answer.
let parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema, chunkKeyTable, unknownKeys;
async function loadSdk() {
  try {
    ({ parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } = await import('ai'));
    ({ chunkKeyTable, unknownKeys } = await import('./chunk-keys.mjs'));
  } catch (err) {
    throw new Error(`cannot load the ai SDK (run \`npm ci --prefix tests/e2e/js\` first): ${err.message}`);
  }
}

class HarnessError extends Error {
  name = 'HarnessError';
}

function emit(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

function describe(err) {
  if (err == null) return String(err);
  let msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  // TypeValidationError / JSONParseError carry the offending value and zod issues.
  if (err.value !== undefined && !msg.includes('Value:')) msg += ` | value: ${JSON.stringify(err.value)}`;
  if (err.cause?.issues) msg += ` | issues: ${JSON.stringify(err.cause.issues)}`;
  else if (err.cause?.message && !msg.includes(err.cause.message)) msg += ` (${err.cause.message})`;
  return msg;
}

async function main(argv) {
  const [url, body] = argv;
  if (!url || argv.length > 2) {
    emit({ ok: false, error: 'usage: node parse-ui-stream.mjs <url> [json-body]' }, 2);
    return;
  }

  const headers = { accept: 'text/event-stream' };
  if (process.env.RUNQ_HEADERS) Object.assign(headers, JSON.parse(process.env.RUNQ_HEADERS));
  if (process.env.RUNQ_KEY) headers['x-api-key'] = process.env.RUNQ_KEY;
  let method = 'GET';
  if (body !== undefined) {
    JSON.parse(body); // fail early on a malformed body argument
    method = 'POST';
    headers['content-type'] = 'application/json';
  }

  const abort = new AbortController();
  const timeoutMs = Number(process.env.RUNQ_TIMEOUT_MS ?? 30000);
  const timer = setTimeout(
    () => abort.abort(new HarnessError(`timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );

  await loadSdk();
  const keyTable = await chunkKeyTable();

  const res = await fetch(url, { method, headers, body, signal: abort.signal });

  // 1. response head
  const ctype = res.headers.get('content-type') ?? '';
  const marker = res.headers.get('x-vercel-ai-ui-message-stream');
  if (res.status !== 200) {
    let text = '';
    try { text = (await res.text()).slice(0, 500); } catch {}
    throw new HarnessError(`HTTP status ${res.status} (want 200): ${text}`);
  }
  if (!ctype.toLowerCase().startsWith('text/event-stream')) {
    throw new HarnessError(`content-type is ${JSON.stringify(ctype)} (want text/event-stream)`);
  }
  if (marker !== 'v1') {
    throw new HarnessError(`x-vercel-ai-ui-message-stream is ${JSON.stringify(marker)} (want "v1")`);
  }
  if (!res.body) throw new HarnessError('response has no body');

  const [sdkBytes, rawBytes] = res.body.tee();

  // 2a. side pass over the raw SSE text: `id:` values and the [DONE] terminator
  const rawPass = scanSse(rawBytes);
  rawPass.catch(() => {}); // awaited below; don't let an early SDK failure leave it unhandled

  // 2b. the SDK's own parser + schema validation, failing hard like DefaultChatTransport
  const chunkTypes = [];
  const errorChunks = [];
  const failures = [];
  const chunks = parseJsonEventStream({ stream: sdkBytes, schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(parsed, controller) {
        if (!parsed.success) throw parsed.error; // same as HttpChatTransport.processResponseStream
        const chunk = parsed.value;
        const extra = unknownKeys(keyTable, chunk);
        if (extra?.length) {
          throw new HarnessError(
            `chunk ${JSON.stringify(chunk)} has key(s) ${JSON.stringify(extra)} not in the ai SDK schema for ` +
              `"${chunk.type}" (allowed: ${JSON.stringify(keyTable.get(chunk.type.startsWith('data-') ? 'data-*' : chunk.type).keys)})`,
          );
        }
        chunkTypes.push(chunk.type);
        if (chunk.type === 'error') errorChunks.push(chunk.errorText);
        controller.enqueue(chunk); // unmodified: the SDK's parsed value
      },
    }),
  );

  // 2c. the SDK's reducer. An `error` chunk is protocol, not a failure: the SDK
  // reports it through onError as `new Error(errorText)`; anything else reaching
  // onError (parse/validation errors, UIMessageStreamError from the reducer) is.
  let pendingErrorTexts = 0;
  let message = null;
  const snapshots = readUIMessageStream({
    stream: chunks.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          if (chunk.type === 'error') pendingErrorTexts++;
          controller.enqueue(chunk);
        },
      }),
    ),
    terminateOnError: false,
    onError(err) {
      if (pendingErrorTexts > 0 && err?.constructor === Error && errorChunks.includes(err.message)) {
        pendingErrorTexts--;
        return;
      }
      failures.push(err);
    },
  });
  for await (const snapshot of snapshots) message = snapshot;
  if (failures.length) {
    abort.abort();
    throw failures[0];
  }

  const { ids, done } = await rawPass;
  clearTimeout(timer);

  const text = (message?.parts ?? [])
    .filter((p) => p.type === 'text')
    .map((p) => p.text)
    .join('');
  return { ok: true, message, text, chunkTypes, ids, done, errorChunks };
}

// Minimal SSE line scanner (WHATWG event-stream rules): records `id:` values in
// order and whether the last dispatched event's data is exactly `[DONE]`.
async function scanSse(byteStream) {
  const ids = [];
  let lastData = null; // data of the last dispatched event
  let data = null; // data buffer of the event being built
  let rest = '';
  let sawCR = false;

  const line = (l) => {
    if (l === '') {
      if (data !== null) lastData = data;
      data = null;
      return;
    }
    if (l.startsWith(':')) return; // comment / keep-alive
    const colon = l.indexOf(':');
    const field = colon === -1 ? l : l.slice(0, colon);
    let value = colon === -1 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data = data === null ? value : `${data}\n${value}`;
    else if (field === 'id') {
      const n = Number(value);
      if (value === '' || !Number.isSafeInteger(n)) throw new HarnessError(`non-numeric SSE id: ${JSON.stringify(value)}`);
      ids.push(n);
    }
  };

  for await (const piece of byteStream.pipeThrough(new TextDecoderStream())) {
    let s = piece;
    if (sawCR && s.startsWith('\n')) s = s.slice(1); // CRLF split across reads
    sawCR = s.endsWith('\r');
    const parts = (rest + s).split(/\r\n|\r|\n/);
    rest = parts.pop();
    for (const l of parts) line(l);
  }
  // A trailing partial event (no blank line) is not dispatched, per the SSE spec.
  return { ids, done: lastData === '[DONE]' };
}

main(process.argv.slice(2)).then(
  (out) => out && emit(out, 0),
  (err) => emit({ ok: false, error: describe(err) }, 1),
);
