// Verifies one webhook delivery with the Standard Webhooks reference library, as a receiver
// would. Input on stdin: {"secret": "whsec_…", "headers": {name: value}, "body": "raw body"}.
// Prints {"ok": true, "payload": …} or {"ok": false, "error": "…"}.
import { Webhook } from "standardwebhooks";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { secret, headers, body } = JSON.parse(input);
try {
  const payload = new Webhook(secret).verify(body, headers);
  console.log(JSON.stringify({ ok: true, payload }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }));
}
