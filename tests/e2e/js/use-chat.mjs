#!/usr/bin/env node
// Chats with a runq agent the way `useChat` does, through the AI SDK's own DefaultChatTransport
// pointed straight at `POST /v1/run`: the transport posts `{...body, id, messages, trigger,
// messageId}` with UI messages, and reads the answer with the SDK's stream parser. Two turns on
// one chat id: the second must be answered on the same runq thread.
//
// Usage: node use-chat.mjs <base-url> <agent> <first> <second>
//   env RUNQ_KEY -> sent as `x-api-key`
//
// Prints one JSON line: {"ok":true,"chatId":"…","answers":["…","…"],"runIds":["run_…","run_…"]}
// or {"ok":false,"error":"…"} (exit status 1).

import { DefaultChatTransport, readUIMessageStream } from 'ai';

async function turn(transport, chatId, messages) {
  const stream = await transport.sendMessages({
    chatId,
    messages,
    trigger: 'submit-message',
    messageId: undefined,
    abortSignal: AbortSignal.timeout(30000),
  });
  let message = null;
  for await (const snapshot of readUIMessageStream({ stream })) message = snapshot;
  if (!message) throw new Error('the stream built no message');
  return message;
}

async function main([base, agent, first, second]) {
  const transport = new DefaultChatTransport({
    api: `${base}/v1/run`,
    headers: { 'x-api-key': process.env.RUNQ_KEY },
    body: { agent_id: agent },
  });
  const chatId = `chat${Date.now()}`;
  const user = (id, text) => ({ id, role: 'user', parts: [{ type: 'text', text }] });
  const messages = [user('u1', first)];
  const answers = [];
  const runIds = [];
  for (const [i, next] of [[1, null], [2, second]]) {
    if (next !== null) messages.push(user(`u${i}`, next));
    const answer = await turn(transport, chatId, messages);
    messages.push(answer);
    answers.push(answer.parts.filter((p) => p.type === 'text').map((p) => p.text).join(''));
    runIds.push(answer.metadata?.runId);
  }
  return { ok: true, chatId, answers, runIds };
}

main(process.argv.slice(2)).then(
  (out) => process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0)),
  (err) => process.stdout.write(`${JSON.stringify({ ok: false, error: String(err?.stack ?? err) })}\n`, () => process.exit(1)),
);
