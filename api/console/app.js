// runq console: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// It signs in with an API key (kept in sessionStorage, so it is forgotten with the tab) and then
// uses the same public /v1 routes and SSE streams as any other client. Pages, by URL hash:
//   #/runs          live list of runs (polled), filtered by status and agent
//   #/runs/<id>     one run: its event stream rendered as it arrives (or replayed), cancel button,
//                   approve / deny buttons for tool calls that wait for a person
//   #/queue         queued and running runs, the oldest wait
//   #/agents        agents and their versions; deploy or roll back a version

const KEY = 'runq.key';
const POLL_MS = 1000;
const TERMINAL = ['completed', 'failed', 'cancelled', 'timed_out'];
const STATUSES = ['queued', 'running', 'requires_action', ...TERMINAL];

const main = document.getElementById('main');
const filters = { status: '', agent: '' };
let agentNames = {}; // agt_… → slug, for display
let stopPage = () => {}; // ends the current page's polling and streams

// ---------- helpers ----------

/** Builds an element; children are nodes or text (never parsed as HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else if (value !== false && value != null) el.setAttribute(name, value);
  }
  el.append(...children.flat().filter((c) => c != null).map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const key = () => sessionStorage.getItem(KEY);
const badge = (status) => h('span', { class: `status ${status}`, 'data-status': status }, status);
const agentName = (id) => agentNames[id] ?? id;

function duration(ms) {
  if (ms == null) return '–';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function ago(iso) {
  if (!iso) return '–';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

/** How long a run took, or has taken so far. */
function latency(run) {
  if (run.execution_time_ms != null) return duration(run.execution_time_ms);
  return run.started_at ? duration(Date.now() - Date.parse(run.started_at)) : '–';
}

class ApiError extends Error {
  constructor(message, status, requestId) {
    super(requestId ? `${message} (request id ${requestId})` : message);
    this.status = status;
  }
}

/** Calls the API with the key; errors carry the server's message and request id. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { 'x-api-key': key() };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(data?.message ?? res.statusText, res.status, res.headers.get('x-request-id'));
  return data;
}

/** Calls `tick` now and then every POLL_MS until the page changes; errors are shown in `errors`. */
function poll(tick, errors) {
  let live = true;
  (async () => {
    while (live) {
      try {
        await tick();
        errors.textContent = '';
      } catch (e) {
        if (e.status === 401) return signOut(e.message);
        errors.textContent = e.message;
      }
      await sleep(POLL_MS);
    }
  })();
  return () => { live = false; };
}

// ---------- the run's event stream (AI SDK UI message stream over SSE) ----------

/** Reads `GET /v1/runs/{id}/events?after=N` with fetch (EventSource cannot send the key header),
 * calling `onPart(part, seq)` for each part after seq `after`, to `[DONE]` (true); a dropped
 * connection resumes after the last seq seen. */
async function follow(id, onPart, signal, after = 0) {
  let last = after;
  for (let attempt = 0; attempt < 6 && !signal.aborted; attempt++) {
    try {
      const res = await fetch(`/v1/runs/${id}/events?after=${last}`, {
        headers: { 'x-api-key': key(), accept: 'text/event-stream' },
        signal,
      });
      if (!res.ok) throw new ApiError((await res.json().catch(() => null))?.message ?? res.statusText, res.status);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = parseFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!frame) continue;
          if (frame.id != null) {
            if (frame.id <= last) continue; // seen before a resume
            last = frame.id;
          }
          if (frame.data === '[DONE]') return true;
          onPart(JSON.parse(frame.data), last);
        }
      }
    } catch (e) {
      if (signal.aborted || e.status) return false;
    }
    await sleep(300 * (attempt + 1));
  }
  return false;
}

function parseFrame(raw) {
  let id = null;
  const data = [];
  for (const line of raw.split('\n')) {
    if (line.startsWith('id:')) id = Number(line.slice(3).trim());
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  return data.length ? { id, data: data.join('\n') } : null;
}

// ---------- pages ----------

function loginPage(message = '') {
  const input = h('input', { type: 'password', id: 'key', placeholder: 'rq_…', autocomplete: 'off', required: true });
  const error = h('div', { class: 'error-box', id: 'login-error' }, message);
  const submit = async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    try {
      await api('/v1/runs?limit=1');
      location.hash = '#/runs';
      route();
    } catch (e) {
      sessionStorage.removeItem(KEY);
      error.textContent = e.message;
    }
  };
  main.replaceChildren(
    h('form', { class: 'card login', onsubmit: submit },
      h('h1', {}, 'Sign in'),
      h('p', { class: 'muted' }, 'Use a runq API key. It is kept in this tab only (session storage).'),
      input,
      h('button', { class: 'primary', type: 'submit', id: 'sign-in' }, 'Sign in'),
      error),
  );
  input.focus();
  return () => {};
}

function runsPage() {
  const errors = h('div', { class: 'muted', id: 'errors' });
  const body = h('tbody', { id: 'runs' });
  const statusSelect = h('select', { id: 'filter-status', onchange: (e) => { filters.status = e.target.value; } },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((s) => h('option', { value: s, selected: s === filters.status }, s)));
  const agentSelect = h('select', { id: 'filter-agent', onchange: (e) => { filters.agent = e.target.value; } },
    h('option', { value: '' }, 'All agents'));
  main.replaceChildren(
    h('div', { class: 'toolbar' }, h('h1', {}, 'Runs'), h('span', { class: 'grow' }), statusSelect, agentSelect),
    h('table', {},
      h('thead', {}, h('tr', {}, ['Run', 'Status', 'Agent', 'Latency', 'Tokens', 'Created']
        .map((t, i) => h('th', { class: i >= 3 && i <= 4 ? 'num' : null }, t)))),
      body),
    errors,
  );
  // agent names need a `manage` key; with a run-only key the filter offers none
  api('/v1/agents?limit=100').then((page) => {
    agentNames = Object.fromEntries(page.data.map((a) => [a.id, a.slug]));
    agentSelect.append(...page.data.map((a) => h('option', { value: a.id, selected: a.id === filters.agent }, a.slug)));
  }).catch(() => {});
  return poll(async () => {
    const query = new URLSearchParams({ limit: '50' });
    if (filters.status) query.set('status', filters.status);
    if (filters.agent) query.set('agent_id', filters.agent);
    const page = await api(`/v1/runs?${query}`);
    body.replaceChildren(...page.data.map((run) =>
      h('tr', { class: 'link', 'data-run-id': run.id, onclick: () => { location.hash = `#/runs/${run.id}`; } },
        h('td', {}, h('a', { href: `#/runs/${run.id}`, class: 'mono' }, run.id)),
        h('td', {}, badge(run.status)),
        h('td', {}, agentName(run.agent_id)),
        h('td', { class: 'num' }, latency(run)),
        h('td', { class: 'num' }, run.usage?.total_tokens || '–'),
        h('td', {}, ago(run.created_at)))));
    if (!page.data.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No runs yet.')));
  }, errors);
}

function runPage(id) {
  const controller = new AbortController();
  const status = h('span', { id: 'run-status' });
  const cancel = h('button', { class: 'danger', id: 'cancel', disabled: true }, 'Cancel run');
  const facts = h('dl', { class: 'facts' });
  const output = h('div', { class: 'output', id: 'output' });
  const caret = h('span', { class: 'caret' });
  const mode = h('span', { class: 'muted', id: 'stream-mode' });
  const errors = h('div', { class: 'error-box', id: 'run-error', hidden: true });
  const approvals = h('div', { id: 'approvals' });
  main.replaceChildren(
    h('div', { class: 'toolbar' },
      h('a', { href: '#/runs' }, '← Runs'), h('h1', { class: 'mono' }, id), status, h('span', { class: 'grow' }), cancel),
    h('div', { class: 'card' }, facts),
    approvals,
    h('div', { class: 'card' }, h('div', { class: 'toolbar' }, h('strong', {}, 'Output'), mode), output, errors),
  );

  let run = null;
  const showError = (message) => { errors.hidden = false; errors.textContent = message; };
  const fact = (label, value) => [h('dt', {}, label), h('dd', {}, value)];

  // tool calls that wait for a person: a card each, with Approve and Deny (which asks why)
  let wake = () => {}; // ends the wait for a decision, made here or anywhere else
  let shown = null; // the pending approvals on screen, so a poll does not wipe a half-typed reason
  const decided = [];
  const approvalCard = (approval) => {
    const note = h('div', { class: 'error-box', hidden: true });
    const decide = async (decision, body) => {
      for (const button of card.querySelectorAll('button')) button.disabled = true;
      try {
        const answer = await api(`/v1/approvals/${approval.id}/${decision}`, { method: 'POST', body });
        decided.push(h('div', { class: 'card approval', 'data-decided': answer.status },
          h('strong', {}, answer.status === 'approved' ? 'Approved' : 'Denied'), ` tool ${approval.tool_name}`,
          answer.reason ? ` · ${answer.reason}` : ''));
        card.replaceWith(decided.at(-1));
        await refresh(); // the run goes on once none of its calls waits
      } catch (e) {
        note.hidden = false;
        note.textContent = e.message;
        for (const button of card.querySelectorAll('button')) button.disabled = false;
      }
    };
    const reason = h('input', { name: 'reason', placeholder: 'Why? The model is told.', required: true });
    const denyForm = h('form', {
      class: 'actions', hidden: true,
      onsubmit: (event) => { event.preventDefault(); decide('deny', { reason: reason.value.trim() }); },
    }, reason, h('button', { class: 'danger', type: 'submit', 'data-confirm-deny': true }, 'Deny'));
    const buttons = h('div', { class: 'actions' },
      // the hash says what was approved: a call whose arguments differ is refused
      h('button', { class: 'primary', 'data-approve': true,
        onclick: () => decide('approve', { payload_hash: approval.payload_hash }) }, 'Approve'),
      h('button', { class: 'danger', 'data-deny': true,
        onclick: () => { buttons.hidden = true; denyForm.hidden = false; reason.focus(); } }, 'Deny…'));
    const card = h('div', { class: 'card approval', 'data-approval': approval.id },
      h('strong', {}, 'Approval needed'), ' for tool ', h('span', { class: 'mono', 'data-tool': true }, approval.tool_name),
      h('pre', { class: 'mono args' }, JSON.stringify(approval.arguments, null, 2)),
      h('div', { class: 'muted' }, `expires ${new Date(approval.expires_at).toLocaleString()}`),
      buttons, denyForm, note);
    return card;
  };
  const showApprovals = () => {
    const pending = run.status === 'requires_action' ? run.pending_approvals ?? [] : [];
    const ids = pending.map((a) => a.id).join();
    if (ids === shown) return;
    shown = ids;
    approvals.replaceChildren(...decided, ...pending.map(approvalCard));
  };

  const refresh = async () => {
    run = await api(`/v1/runs/${id}`);
    status.replaceChildren(badge(run.status));
    showApprovals();
    if (run.status !== 'requires_action') wake();
    cancel.disabled = TERMINAL.includes(run.status);
    const usage = run.usage ?? {};
    facts.replaceChildren(
      ...fact('Agent', agentName(run.agent_id)), ...fact('Version', h('span', { class: 'mono' }, run.version_id)),
      ...fact('Thread', h('span', { class: 'mono' }, run.thread_id)), ...fact('Attempt', run.attempt),
      ...fact('Created', ago(run.created_at)), ...fact('Latency', latency(run)),
      ...fact('Tokens in / out', `${usage.input_tokens ?? 0} / ${usage.output_tokens ?? 0}`),
      ...fact('Operation', run.operation_id ?? '–'));
    if (run.error?.message) showError(run.error.message);
    return run;
  };

  // the stream: text parts grow a text node, tool parts become blocks
  let text = null;
  let lastSeq = 0;
  let paused = false; // the stream ended at a pause: the run waits for a person
  const tools = {};
  const onPart = (part, seq) => {
    lastSeq = seq;
    mode.textContent = `${mode.dataset.label} · event ${seq}`;
    switch (part.type) {
      case 'text-start': text = null; break;
      case 'text-delta':
        if (!text) { text = document.createTextNode(''); output.insertBefore(text, caret); }
        text.appendData(part.delta);
        break;
      case 'tool-input-available':
        tools[part.toolCallId] = h('span', { class: 'io' }, 'running…');
        output.insertBefore(h('div', { class: 'tool' }, h('strong', {}, `tool ${part.toolName}`),
          h('span', { class: 'io mono' }, JSON.stringify(part.input)), tools[part.toolCallId]), caret);
        text = null;
        break;
      case 'tool-output-available':
        tools[part.toolCallId]?.replaceChildren(`→ ${JSON.stringify(part.output)}`);
        break;
      case 'tool-approval-request': tools[part.toolCallId]?.replaceChildren('waiting for approval…'); break;
      case 'tool-output-denied': tools[part.toolCallId]?.replaceChildren('denied'); break;
      case 'finish': paused = part.messageMetadata?.status === 'requires_action'; break;
      case 'error': showError(part.errorText); break;
      case 'data-run': if (run && run.status === 'queued') refresh().catch(() => {}); break;
    }
  };

  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      const answer = await api(`/v1/runs/${id}/cancel`, { method: 'POST' });
      status.replaceChildren(badge(answer.status));
    } catch (e) {
      showError(e.message);
    }
  });

  (async () => {
    try {
      await refresh();
      mode.dataset.label = TERMINAL.includes(run.status) ? 'replay of a finished run' : 'live';
      mode.textContent = mode.dataset.label;
      output.append(caret);
      // the run object's status moves while the stream plays: keep the header current
      const stopStatus = poll(async () => { if (!TERMINAL.includes(run.status)) await refresh(); }, h('span'));
      controller.signal.addEventListener('abort', stopStatus);
      let done;
      for (;;) {
        paused = false;
        done = await follow(id, onPart, controller.signal, lastSeq);
        if (controller.signal.aborted) return;
        if (!done || !paused) break;
        // paused: once the run goes on (decided here or elsewhere, or long ago in a replay), its
        // events continue after the last seq seen
        await refresh();
        if (run.status === 'requires_action') {
          caret.hidden = true;
          mode.dataset.label = 'waiting for approval';
          mode.textContent = mode.dataset.label;
          await new Promise((resolve) => { wake = resolve; });
          wake = () => {};
          caret.hidden = false;
          mode.dataset.label = 'live';
        }
      }
      stopStatus();
      caret.remove();
      if (!done) showError('The stream was interrupted; reload to resume.');
      // the run's record is final once its last event is out; re-read until it says so
      for (let i = 0; i < 20 && !TERMINAL.includes((await refresh()).status); i++) await sleep(200);
    } catch (e) {
      if (!controller.signal.aborted) showError(e.message);
    }
  })();
  return () => controller.abort();
}

function queuePage() {
  const errors = h('div', { class: 'muted' });
  const stat = (name, label) => h('div', { class: 'card stat' },
    h('div', { class: 'value', 'data-stat': name }, '–'), h('div', { class: 'label' }, label));
  const updated = h('span', { class: 'muted' });
  main.replaceChildren(
    h('div', { class: 'toolbar' }, h('h1', {}, 'Queue'), h('span', { class: 'grow' }), updated),
    h('div', { class: 'stats' }, stat('queued', 'Queued'), stat('running', 'In flight'), stat('oldest', 'Oldest wait')),
    errors,
  );
  const set = (name, value) => { main.querySelector(`[data-stat="${name}"]`).textContent = value; };
  return poll(async () => {
    const queue = await api('/v1/queue');
    set('queued', queue.queued);
    set('running', queue.running);
    set('oldest', queue.oldest_wait_ms == null ? '–' : duration(queue.oldest_wait_ms));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }, errors);
}

function agentsPage() {
  const list = h('div', { id: 'agents' });
  const errors = h('div', { class: 'error-box', hidden: true });
  main.replaceChildren(h('div', { class: 'toolbar' }, h('h1', {}, 'Agents')), errors, list);
  const load = async () => {
    const agents = (await api('/v1/agents?limit=100')).data;
    const cards = await Promise.all(agents.map(async (agent) => {
      const versions = (await api(`/v1/agents/${agent.id}/versions?limit=20`)).data;
      const deployed = versions.find((v) => v.deployed);
      const action = (version) => {
        if (version.deployed) return badge('deployed');
        const label = deployed && version.number < deployed.number ? 'Roll back' : 'Deploy';
        return h('button', {
          'data-deploy': version.id,
          onclick: async (event) => {
            event.target.disabled = true;
            await api(`/v1/agents/${agent.id}/deploy`, { method: 'POST', body: { version_id: version.id } })
              .then(load, (e) => { errors.hidden = false; errors.textContent = e.message; });
          },
        }, label);
      };
      return h('div', { class: 'card agent', 'data-agent': agent.slug },
        h('h2', {}, agent.name, ' ', h('span', { class: 'muted mono' }, agent.slug)),
        h('div', { class: 'muted' }, agent.description ?? '', ' ', h('span', { class: 'mono' }, agent.id)),
        versions.length
          ? h('table', {},
            h('thead', {}, h('tr', {}, ['Version', 'Id', 'Model', 'Created', ''].map((t) => h('th', {}, t)))),
            h('tbody', {}, versions.map((v) => h('tr', { 'data-version': v.id },
              h('td', {}, `v${v.number}`), h('td', { class: 'mono' }, v.id), h('td', {}, v.model),
              h('td', {}, ago(v.created_at)), h('td', {}, action(v))))))
          : h('p', { class: 'muted' }, 'No versions yet.'));
    }));
    list.replaceChildren(...(cards.length ? cards : [h('p', { class: 'muted' }, 'No agents yet.')]));
  };
  load().catch((e) => { errors.hidden = false; errors.textContent = e.message; });
  return () => {};
}

// ---------- routing ----------

function signOut(message = '') {
  sessionStorage.removeItem(KEY);
  location.hash = '';
  route(message);
}

function route(message) {
  stopPage();
  const signedIn = Boolean(key());
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('sign-out').hidden = !signedIn;
  if (!signedIn) {
    stopPage = loginPage(typeof message === 'string' ? message : '');
    return;
  }
  const [page = 'runs', id] = location.hash.replace(/^#\/?/, '').split('/');
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('active', link.dataset.page === page);
  if (page === 'runs' && id) stopPage = runPage(decodeURIComponent(id));
  else if (page === 'queue') stopPage = queuePage();
  else if (page === 'agents') stopPage = agentsPage();
  else stopPage = runsPage();
}

document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', () => route());
route();
