// Per-chunk-type key table, read at runtime from the AI SDK's own
// `uiMessageChunkSchema` (the zod union the SDK validates every UI message
// stream chunk against).
//
// Why: since vercel/ai#17010 (backported to ai 5.x/6.x as #17520/#17474) every
// variant of that union is a `z.looseObject`, so the SDK accepts -- and
// preserves -- unknown top-level keys in a chunk. runq's e2e tests want to be
// strict, so parse-ui-stream.mjs rejects any top-level key the SDK's schema
// does not declare for the chunk's type. The table comes from the installed
// schema, not from a hand-written list, so it follows `ai` upgrades.
//
// How: the schema object is opaque (a validator; its JSON-schema export throws
// on the `data-*` custom type), so we validate a Proxy with no properties.
// zod parses every union member in order, reading each declared key of the
// member's shape (starting with `type`), and reports one issue list per member
// (the `type` literal it expected + the required keys it missed). Splitting the
// read log on `type` and zipping it with the per-member issues gives, per chunk
// type, all declared keys and the required ones. Every assumption is checked;
// if a future zod/ai changes the mechanics this throws instead of guessing.

import { uiMessageChunkSchema } from 'ai';

export const DATA_TYPE = 'data-*';

let cached;

/** @returns {Promise<Map<string, {keys: string[], required: string[]}>>} */
export async function chunkKeyTable() {
  cached ??= derive();
  return cached;
}

async function derive() {
  const reads = [];
  const probe = new Proxy(Object.create(null), {
    get(_t, key) {
      if (typeof key === 'string') reads.push(key);
      return undefined;
    },
    has: () => false,
    ownKeys: () => [],
    getOwnPropertyDescriptor: () => undefined,
  });

  const result = await uiMessageChunkSchema().validate(probe);
  const fail = (why) => {
    throw new Error(`cannot derive chunk key table from the ai SDK schema: ${why}`);
  };
  if (result.success) fail('an empty object validated');
  const issues = result.error?.issues;
  if (!Array.isArray(issues) || issues.length !== 1 || issues[0].code !== 'invalid_union') {
    fail('expected a single invalid_union issue');
  }
  const members = issues[0].errors;

  const segments = [];
  for (const key of reads) {
    if (key === 'type') segments.push([]);
    else if (segments.length === 0) fail(`key "${key}" read before "type"`);
    else segments.at(-1).push(key);
  }
  if (segments.length !== members.length) {
    fail(`${segments.length} shapes read but ${members.length} union members`);
  }

  const table = new Map();
  members.forEach((memberIssues, i) => {
    const typeIssues = memberIssues.filter((x) => x.path?.length === 1 && x.path[0] === 'type');
    if (typeIssues.length !== 1) fail(`union member ${i}: no single "type" issue`);
    const ti = typeIssues[0];
    let type;
    if (ti.code === 'invalid_value' && ti.values?.length === 1 && typeof ti.values[0] === 'string') {
      type = ti.values[0];
    } else if (ti.code === 'custom' && /data-/.test(ti.message ?? '')) {
      type = DATA_TYPE;
    } else {
      fail(`union member ${i}: unrecognised "type" issue ${JSON.stringify(ti)}`);
    }
    if (table.has(type)) fail(`duplicate chunk type ${type}`);
    const keys = ['type', ...segments[i]];
    const required = [
      'type',
      ...memberIssues
        .filter((x) => x !== ti && x.path?.length === 1)
        .map((x) => String(x.path[0])),
    ];
    for (const k of required) if (!keys.includes(k)) fail(`${type}: required key ${k} not read`);
    table.set(type, { keys, required });
  });
  return table;
}

/** Top-level keys of `chunk` that the SDK schema does not declare for its type. */
export function unknownKeys(table, chunk) {
  const type = typeof chunk?.type === 'string' && chunk.type.startsWith('data-') ? DATA_TYPE : chunk?.type;
  const entry = table.get(type);
  if (!entry) return null; // the SDK's own validation already rejected it
  return Object.keys(chunk).filter((k) => !entry.keys.includes(k));
}
