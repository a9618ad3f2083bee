#!/usr/bin/env node
// Streams a runq agent's answer through the official `openai` npm package, unmodified.
//
// Usage: node openai-stream.mjs <base-url> <api-key> <agent> <prompt>
// Prints one JSON line: {"ok":true,"text":"…","finish":"stop","runId":"run_…"} or {"ok":false,"error":"…"}.

import OpenAI from 'openai';

async function main([base, apiKey, agent, prompt]) {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 30000 });
  const { data: stream, response } = await client.chat.completions
    .create({ model: agent, messages: [{ role: 'user', content: prompt }], stream: true })
    .withResponse();
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return { ok: true, text, finish, runId: response.headers.get('x-run-id') };
}

main(process.argv.slice(2)).then(
  (out) => process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0)),
  (err) => process.stdout.write(`${JSON.stringify({ ok: false, error: String(err?.stack ?? err) })}\n`, () => process.exit(1)),
);
