-- The console's script (scimrun ui): plain JavaScript, no build step, no library. It reads
-- everything through the JSON API (/api/...) with the token taken from the URL's fragment, and
-- builds the page with DOM calls only (never innerHTML: dead letters hold what providers
-- answered, which must not become markup).
return [==[
'use strict';
(() => {
  const view = document.getElementById('view');
  const TOKEN_KEY = 'scimrun-ui-token';
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let info = null;
  let timers = [];
  let routeSeq = 0;

  // ---- helpers --------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style') Object.assign(el.style, v); // CSSOM: allowed by the page's CSP, unlike style=""
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  // replaces el's children; arrays are flattened, null/undefined/false left out
  function put(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false)
      .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
    return el;
  }
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function time(t) {
    if (!t) return '-';
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function clockMs(t) {
    const d = new Date(t * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  function duration(s) {
    if (s === undefined || s === null || isNaN(s)) return '-';
    s = Math.max(0, s);
    if (s < 10) return s.toFixed(2) + ' s';
    if (s < 60) return Math.round(s) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }
  const STATUS_PILL = {
    completed: 'ok', running: 'info', interrupted: 'warn', failed: 'bad', completed_with_dead_letters: 'warn',
    pending: 'warn', replayed: 'ok', dropped: '', started: 'info', compensated: 'warn',
    closed: 'ok', open: 'bad', half_open: 'warn',
  };
  const pill = (s) => h('span', { class: 'pill ' + (STATUS_PILL[s] || '') }, String(s).replace(/_/g, ' '));
  const q = (obj) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
    const s = p.toString();
    return s ? '?' + s : '';
  };
  function toast(text, ms = 6000) {
    const t = document.getElementById('toast');
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, ms);
  }
  function copyButton(text) {
    return h('button', { class: 'small', type: 'button', onclick: async (ev) => {
      try { await navigator.clipboard.writeText(text); ev.target.textContent = 'Copied'; }
      catch (e) { ev.target.textContent = 'Select and copy'; }
      setTimeout(() => { ev.target.textContent = 'Copy'; }, 1500);
    } }, 'Copy');
  }
  const cmd = (text, attrs) => h('div', { class: 'cmdline' }, h('pre', Object.assign({ class: 'cmd' }, attrs || {}),
    text), copyButton(text));
  function every(ms, fn) { timers.push(setInterval(fn, ms)); }
  function params(text) {
    try { return JSON.stringify(JSON.parse(text || '{}')); } catch (e) { return text; }
  }

  // ---- the API --------------------------------------------------------------------------
  class ApiError extends Error {}
  async function api(path, opts = {}) {
    const headers = { Accept: 'application/json', Authorization: 'Bearer ' + token };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const res = await fetch('/api/' + path, { method: opts.method || 'GET', headers, body, cache: 'no-store',
      credentials: 'omit' });
    let doc = null;
    try { doc = await res.json(); } catch (e) { doc = null; }
    if (!res.ok) {
      const err = new ApiError((doc && doc.error) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return doc;
  }

  // ---- token ----------------------------------------------------------------------------
  function takeTokenFromUrl() {
    const m = location.hash.match(/^#token=([^&]*)(?:&(.*))?$/);
    if (!m) return;
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', location.pathname + (m[2] ? '#' + decodeURIComponent(m[2]) : '#/runs'));
  }
  function loginPage(message) {
    put(view, h('div', { class: 'login' },
      h('h2', {}, 'The console needs its token'),
      h('p', {}, message || 'Open the URL that scimrun ui printed (it ends in #token=...), or paste the token here.'),
      h('input', { type: 'text', id: 'token-input', placeholder: 'token', autocomplete: 'off' }),
      h('button', { class: 'primary', type: 'button', onclick: () => {
        token = document.getElementById('token-input').value.trim();
        sessionStorage.setItem(TOKEN_KEY, token);
        start();
      } }, 'Open')));
  }

  // ---- confirmation dialog --------------------------------------------------------------
  function confirmAction({ title, body, cli, reason, ok }) {
    const dlg = document.getElementById('confirm');
    document.getElementById('confirm-title').textContent = title;
    put(document.getElementById('confirm-body'), ...body);
    document.getElementById('confirm-cli').textContent = cli;
    const label = document.getElementById('confirm-reason-label');
    const area = document.getElementById('confirm-reason');
    label.hidden = !reason;
    area.value = '';
    const okb = document.getElementById('confirm-ok');
    okb.textContent = ok || 'Confirm';
    return new Promise((resolve) => {
      const done = (answer) => {
        okb.onclick = null;
        document.getElementById('confirm-cancel').onclick = null;
        dlg.onclose = null;
        if (dlg.open) dlg.close();
        resolve(answer);
      };
      okb.onclick = () => {
        if (reason && !area.value.trim()) { area.focus(); area.placeholder = 'say why they are dropped'; return; }
        done({ reason: area.value.trim() });
      };
      document.getElementById('confirm-cancel').onclick = () => done(null);
      dlg.onclose = () => done(null);
      dlg.showModal();
      if (reason) area.focus(); else okb.focus();
    });
  }

  // ---- actions (Replay, Drop) ------------------------------------------------------------
  function policyChoice() {
    const el = document.querySelector('input[name=policy]:checked');
    return el ? el.value : 'current';
  }
  function replayCommand(ids, policy) {
    return `scimrun dlq replay ${ids.join(' ')}${policy === 'original' ? ' --policy original' : ''}` +
      `${info.cli.state}${info.cli.replay}${info.cli.token_env}`;
  }
  function dropCommand(ids) {
    return `scimrun dlq drop ${ids.join(' ')} --reason REASON${info.cli.state}`;
  }
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  async function replay(ids, what, after) {
    const policy = policyChoice();
    const answer = await confirmAction({
      title: `Replay ${plural(ids.length, 'dead letter', 'dead letters')}?`,
      body: [h('p', {}, `${what}: ${plural(ids.length, 'request', 'requests')} will be sent again `,
        policy === 'original' ? 'with the policy each run recorded (its snapshot)' : 'with the current policy files',
        ', with the current token. A success becomes the step\'s result; resume the run to go on from there.'),
      h('p', { class: 'muted' }, 'ids: ' + ids.slice(0, 40).join(', ') + (ids.length > 40 ? ', ...' : ''))],
      cli: replayCommand(ids, policy), ok: `Replay ${ids.length}`,
    });
    if (!answer) return;
    working(`Replaying ${plural(ids.length, 'dead letter', 'dead letters')}... (retries follow the policy: ` +
      'this can take a while)');
    try {
      const res = await api('dlq/replay', { method: 'POST', body: { ids, policy } });
      showResult(res, 'replay');
    } catch (e) { showError(e); }
    if (after) after();
  }
  async function drop(ids, what, after) {
    const answer = await confirmAction({
      title: `Drop ${plural(ids.length, 'dead letter', 'dead letters')}?`,
      body: [h('p', {}, `${what}: the ${ids.length === 1 ? 'entry leaves' : 'entries leave'} the queue and ` +
        'nothing is sent; the items stay failed in their runs.'),
      h('p', { class: 'muted' }, 'ids: ' + ids.slice(0, 40).join(', ') + (ids.length > 40 ? ', ...' : ''))],
      cli: dropCommand(ids), reason: true, ok: `Drop ${ids.length}`,
    });
    if (!answer) return;
    try {
      const res = await api('dlq/drop', { method: 'POST', body: { ids, reason: answer.reason } });
      showResult(res, 'drop');
    } catch (e) { showError(e); }
    if (after) after();
  }
  function working(text) {
    const box = document.getElementById('result');
    if (box) put(box, h('div', { class: 'note', dataset: { test: 'working' } }, text));
  }
  function showResult(res, kind) {
    const box = document.getElementById('result');
    const lines = kind === 'replay'
      ? [`${res.replayed} replayed, ${res.still_failing} still failing`]
      : [`${res.dropped} dropped` + (res.refused ? `, ${res.refused} refused` : '')];
    for (const r of res.results || []) if (!r.ok) lines.push(`#${r.id}: ${r.why}`);
    toast(lines[0]);
    if (!box) return;
    put(box, h('div', { class: 'result', dataset: { test: 'result' } },
      h('strong', {}, lines[0]), lines.slice(1).map((l) => h('div', {}, l)),
      (res.resume || []).length ? h('p', {}, 'Continue the runs from the replayed steps with:') : null,
      (res.resume || []).map((c) => cmd(c)),
      res.command ? h('p', { class: 'muted' }, 'Same as: ', h('code', {}, res.command)) : null));
  }
  function showError(e) {
    const box = document.getElementById('result');
    toast('Refused: ' + e.message, 9000);
    if (box) put(box, h('div', { class: 'error', dataset: { test: 'error' } }, e.message));
  }
  const canAct = () => info && !info.read_only;

  // ---- pages ----------------------------------------------------------------------------
  async function runsPage(query) {
    const status = query.get('status') || '';
    const workflow = query.get('workflow') || '';
    const go = (k, v) => { query.set(k, v); location.hash = '#/runs' + q(Object.fromEntries(query)); };
    const tbody = h('tbody');
    const stamp = h('span', { class: 'muted' });
    put(view,
      h('h1', {}, 'Runs'),
      h('div', { class: 'toolbar' },
        h('label', {}, 'Status', h('select', { id: 'filter-status', onchange: (e) => go('status', e.target.value) },
          h('option', { value: '' }, 'all'),
          info.statuses.map((s) => h('option', { value: s, selected: s === status }, s.replace(/_/g, ' '))))),
        h('label', {}, 'Workflow', h('select', { id: 'filter-workflow',
          onchange: (e) => go('workflow', e.target.value) },
        h('option', { value: '' }, 'all'),
        info.workflows.map((w) => h('option', { value: w, selected: w === workflow }, w)))),
        stamp),
      h('table', { id: 'runs' }, h('thead', {}, h('tr', {},
        ['Run', 'Status', 'Workflow', 'Started', 'Finished', 'Elapsed', 'Progress'].map((c) => h('th', {}, c)),
        ['Created', 'Updated', 'Skipped', 'Adopted', 'Failed', 'Dead letters'].map((c) => h('th', { class: 'num' },
          c)))), tbody));
    let running = false;
    async function refresh() {
      const runs = await api('runs' + q({ status, workflow, limit: 100 }));
      running = runs.some((r) => r.status === 'running');
      put(tbody, ...runs.map((r) => {
        const c = r.counts;
        const p = r.progress;
        let prog = '-';
        if (p && r.status === 'running') {
          const pct = p.total ? Math.min(100, Math.round(100 * p.done / p.total)) : 0;
          prog = h('span', {}, h('span', { class: 'bar' }, h('span', { style: { width: pct + '%' } })),
            p.total ? `${p.done}/${p.total}` : `${p.done} done`, p.in_flight ? ` (${p.in_flight} in flight)` : '');
        } else if (p && p.total) {
          prog = `${p.done}/${p.total}`;
        }
        return h('tr', { dataset: { run: r.id } },
          h('td', { class: 'mono' }, h('a', { href: '#/runs/' + encodeURIComponent(r.id) }, r.id)),
          h('td', {}, pill(r.status)), h('td', {}, r.workflow_name), h('td', {}, time(r.created_at)),
          h('td', {}, time(r.finished_at)), h('td', {}, duration(r.elapsed)), h('td', {}, prog),
          [c.created, c.updated, c.skipped, c.adopted, c.failed].map((n) => h('td', { class: 'num' }, n ?? '-')),
          h('td', { class: 'num' }, c.dead_letters > 0
            ? h('a', { href: '#/dlq' + q({ run: r.id }) }, c.dead_letters) : '0'));
      }));
      if (!runs.length) tbody.append(h('tr', {}, h('td', { colspan: 13, class: 'muted' }, 'no runs')));
      stamp.textContent = (running ? 'live: ' : '') + 'refreshed ' + time(Date.now() / 1000).slice(11);
      setLive(running);
    }
    await refresh();
    every(2000, () => { if (running || !document.hidden) refresh().catch(() => {}); });
  }

  function setLive(on) {
    const el = document.getElementById('live');
    el.hidden = !on;
    el.textContent = on ? 'live' : '';
  }

  async function runPage(id, query) {
    const head = h('div');
    const itemsBox = h('div');
    put(view, head, h('h2', {}, 'Items'), itemsBox);
    const state = { q: query.get('q') || '', state: query.get('state') || '', class: query.get('class') || '',
      offset: Number(query.get('offset') || 0) };
    let run = null;
    async function refreshHead() {
      run = await api('runs/' + encodeURIComponent(id));
      const c = run.counts;
      const p = run.progress;
      const st = run.steps || {};
      const card = (k, v, extra) => h('div', Object.assign({ class: 'card' }, extra || {}), h('div', { class: 'k' }, k),
        h('div', { class: 'v' }, v));
      const targets = run.targets || [];
      const pol = run.policy;
      put(head,
        h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.id), pill(run.status),
          h('span', { class: 'muted' }, run.workflow_name)),
        h('div', { class: 'cards' },
          card('Items done', p ? (p.total ? `${p.done}/${p.total}` : p.done) : '-'),
          card('Created', c.created ?? '-'), card('Updated', c.updated ?? '-'), card('Skipped', c.skipped ?? '-'),
          card('Adopted', c.adopted ?? '-'), card('Failed', c.failed),
          card('Dead letters', c.dead_letters > 0 ? h('a', { href: '#/dlq' + q({ run: run.id }) }, c.dead_letters)
            : 0, { dataset: { test: 'dead-letters' } }),
          card('Elapsed', duration(run.elapsed)),
          card('Steps', `${st.completed || 0} done, ${st.failed || 0} failed`),
          card('In doubt', st.started || 0)),
        h('dl', { class: 'kv' },
          h('dt', {}, 'Workflow'), h('dd', { class: 'mono' }, run.workflow_path),
          h('dt', {}, 'Started'), h('dd', {}, time(run.created_at)),
          h('dt', {}, 'Finished'), h('dd', {}, time(run.finished_at)),
          h('dt', {}, 'Parameters'), h('dd', { class: 'mono' }, params(run.params_json)),
          p && p.retries ? [h('dt', {}, 'Retries'), h('dd', {}, `${p.retries} ` +
            JSON.stringify(p.retries_by_class || {}))] : null),
        run.resume ? [h('h2', {}, 'Resume'), cmd(run.resume, { id: 'resume-cmd' })]
          : h('p', { class: 'muted' }, 'This run finished; there is nothing to resume.'),
        h('h2', {}, 'Targets: breaker and rate limit'),
        targets.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Target', 'Breaker', 'Since', 'Rate limit',
          'Waited'].map((x) => h('th', {}, x)))), h('tbody', {}, targets.map((t) => h('tr', {},
          h('td', { class: 'mono' }, t.name), h('td', {}, pill(t.breaker),
            t.open_until && t.breaker === 'open' ? ` until ${time(t.open_until)}` : ''),
          h('td', {}, time(t.breaker_since)), h('td', {}, t.rps > 0 ? `${t.rps.toFixed(1)} req/s` : 'none'),
          h('td', {}, duration(t.waited_s))))))
          : h('p', { class: 'muted' }, 'No target recorded (the run made no request, or was recorded by an ' +
            'older scimrun).'),
        h('details', { id: 'policy' }, h('summary', {}, 'Policy snapshot: ',
          pol ? `${pol.spec || pol.file || '?'} (sha256 ${String(pol.sha256 || '').slice(0, 12)})` : 'none recorded'),
        pol && pol.overrides && pol.overrides.length ? h('p', {}, 'Flags: ',
          h('code', {}, pol.overrides.map((o) => `${o.flag} ${o.arg}`).join(' '))) : null,
        h('pre', {}, JSON.stringify(pol && (pol.values || pol), null, 2))));
      setLive(run.status === 'running');
    }
    const tbody = h('tbody');
    const pager = h('div', { class: 'pager' });
    const search = h('input', { type: 'search', id: 'item-search', placeholder: 'key or userName', value: state.q });
    const stateSel = h('select', { id: 'item-state' });
    const classSel = h('select', { id: 'item-class' });
    let debounce = null;
    const remember = () => history.replaceState(null, '', '#/runs/' + encodeURIComponent(id) +
      q({ q: state.q, state: state.state, class: state.class, offset: state.offset || '' }));
    search.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { state.q = search.value; state.offset = 0; remember(); refreshItems(); }, 250);
    });
    stateSel.addEventListener('change', () => { state.state = stateSel.value; state.offset = 0; remember();
      refreshItems(); });
    classSel.addEventListener('change', () => { state.class = classSel.value; state.offset = 0; remember();
      refreshItems(); });
    put(itemsBox, h('div', { class: 'toolbar' }, h('label', {}, 'Search', search),
      h('label', {}, 'State', stateSel), h('label', {}, 'Class', classSel)),
    h('table', { id: 'items' }, h('thead', {}, h('tr', {}, ['Step (item)', 'State', 'Attempts', 'Class', 'Rule',
      'Error', 'Dead letter', 'Updated'].map((x) => h('th', {}, x)))), tbody), pager);
    function options(sel, counts, current) {
      const keys = Object.keys(counts || {}).sort();
      if (current && !keys.includes(current)) keys.push(current);
      put(sel, h('option', { value: '' }, 'all'),
        keys.map((k) => h('option', { value: k, selected: k === current }, `${k} (${(counts || {})[k] || 0})`)));
    }
    async function refreshItems() {
      const res = await api(`runs/${encodeURIComponent(id)}/items` + q({ q: state.q, state: state.state,
        class: state.class, offset: state.offset, limit: 100 }));
      options(stateSel, res.states, state.state);
      options(classSel, res.classes, state.class);
      put(tbody, ...res.items.map((it) => h('tr', { dataset: { key: it.key } },
        h('td', { class: 'mono' }, h('a', {
          href: `#/runs/${encodeURIComponent(id)}/items/${encodeURIComponent(it.key)}` }, it.key)),
        h('td', {}, pill(it.state)), h('td', { class: 'num' }, it.attempts),
        h('td', {}, it.class ? `${it.class}${it.status ? ' ' + it.status : ''}${it.scim_type ? ' ' + it.scim_type : ''}`
          : ''),
        h('td', { class: 'mono' }, it.rule || ''), h('td', { class: 'err' }, it.detail || ''),
        h('td', {}, it.dead_letter ? h('a', { href: '#/dlq/' + it.dead_letter.id }, `#${it.dead_letter.id} `,
          pill(it.dead_letter.state)) : ''),
        h('td', {}, time(it.updated_at)))));
      if (!res.items.length) tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'no matching item')));
      const from = res.total ? res.offset + 1 : 0;
      const to = res.offset + res.items.length;
      put(pager, h('span', { class: 'muted', id: 'items-count' }, `${from}-${to} of ${res.total}`),
        h('button', { class: 'small', disabled: res.offset === 0, onclick: () => {
          state.offset = Math.max(0, res.offset - res.limit); remember(); refreshItems(); } }, 'Previous'),
        h('button', { class: 'small', disabled: to >= res.total, onclick: () => {
          state.offset = res.offset + res.limit; remember(); refreshItems(); } }, 'Next'));
    }
    await refreshHead();
    await refreshItems();
    every(2000, () => {
      if (run && run.status === 'running') { refreshHead().catch(() => {}); refreshItems().catch(() => {}); }
    });
  }

  function attemptsTable(history) {
    if (!history || !history.length) {
      return h('p', { class: 'muted' }, 'No attempt recorded: the step\'s requests went through at the first try ' +
        '(only a step that ran into trouble keeps its history).');
    }
    const t0 = history[0].at;
    return h('table', { id: 'attempts' }, h('thead', {}, h('tr', {}, ['Time', '+s', 'Event', 'Operation', 'Attempt',
      'Status / error', 'Class', 'Rule', 'Delay chosen', 'Why'].map((x) => h('th', {}, x)))),
    h('tbody', {}, history.map((ev) => h('tr', {},
      h('td', { class: 'mono' }, clockMs(ev.at)), h('td', { class: 'num' }, (ev.at - t0).toFixed(3)),
      h('td', {}, ev.type), h('td', { class: 'mono' }, ev.op || ''), h('td', { class: 'num' }, ev.attempt || ''),
      h('td', {}, ev.status ? 'HTTP ' + ev.status : (ev.kind || (ev.type === 'success' ? 'ok' : ''))),
      h('td', {}, ev.class || ''), h('td', { class: 'mono' }, ev.rule || ''),
      h('td', {}, ev.retry ? `${Number(ev.delay || 0).toFixed(3)} s` : (ev.type === 'wait'
        ? `waited ${Number(ev.seconds || 0).toFixed(3)} s (${ev.reason})` : '')),
      h('td', {}, ev.why || '')))));
  }

  function dlqActions(e, after) {
    if (e.state !== 'pending') return h('span', { class: 'muted' }, e.state);
    if (!canAct()) return h('span', { class: 'muted' }, 'read-only');
    return h('span', {},
      h('button', { class: 'small replay', type: 'button', disabled: !e.replayable,
        title: e.replayable ? e.commands.replay : 'not replayable: see the entry',
        onclick: () => replay([e.id], `Dead letter #${e.id} (${e.step_key})`, after) }, 'Replay'), ' ',
      h('button', { class: 'small danger drop', type: 'button', title: e.commands.drop,
        onclick: () => drop([e.id], `Dead letter #${e.id} (${e.step_key})`, after) }, 'Drop'));
  }

  function policyPicker() {
    return h('span', { class: 'toolbar', id: 'policy-choice' }, 'Replay with',
      h('label', {}, h('input', { type: 'radio', name: 'policy', value: 'current', checked: true }),
        'the current policy files'),
      h('label', {}, h('input', { type: 'radio', name: 'policy', value: 'original' }),
        'the original policy (each run\'s snapshot)'));
  }

  async function itemPage(id, key) {
    const it = await api(`runs/${encodeURIComponent(id)}/items/${encodeURIComponent(key)}`);
    const err = it.error;
    const render = () => itemPage(id, key).catch(fatal);
    put(view,
      h('h1', {}, 'Item ', h('span', { class: 'mono' }, it.key), pill(it.state),
        h('span', { class: 'muted' }, 'run ', h('a', { href: '#/runs/' + encodeURIComponent(id) }, id))),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Attempts'), h('dd', {}, it.attempts),
        h('dt', {}, 'Started'), h('dd', {}, time(it.started_at)),
        h('dt', {}, 'Updated'), h('dd', {}, time(it.updated_at)),
        err ? [h('dt', {}, 'Error'), h('dd', { class: 'err' },
          `${err.class || '?'}${err.status ? ' ' + err.status : ''}` +
          `${err.scim_type ? ' ' + err.scim_type : ''}: ${err.detail || ''}`),
        h('dt', {}, 'Rule'), h('dd', { class: 'mono' }, err.rule || '-'),
        h('dt', {}, 'Request'), h('dd', { class: 'mono' }, `${err.method || ''} ${err.url || ''}`)] : null,
        it.todo ? [h('dt', {}, 'What to do'), h('dd', { id: 'todo' }, it.todo)] : null,
        it.related.length ? [h('dt', {}, 'Same item'), h('dd', {}, it.related.map((r) => h('span', {},
          h('a', { href: `#/runs/${encodeURIComponent(id)}/items/${encodeURIComponent(r.key)}` }, r.key), ' ',
          pill(r.state), ' ')))] : null),
      h('div', { id: 'result' }),
      it.dead_letters.length ? [h('h2', {}, 'Dead letters'), canAct() ? policyPicker() : null,
        h('table', {}, h('tbody', {}, it.dead_letters.map((e) => h('tr', { dataset: { dlqId: e.id } },
          h('td', {}, h('a', { href: '#/dlq/' + e.id }, '#' + e.id)), h('td', {}, pill(e.state)),
          h('td', { class: 'mono' }, e.commands.replay), h('td', {}, dlqActions(e, render))))))] : null,
      h('h2', {}, 'Attempts'), attemptsTable(it.history),
      h('h2', {}, 'Request payload'),
      it.payload ? h('pre', { id: 'payload' }, JSON.stringify(it.payload, null, 2))
        : h('p', { class: 'muted' }, 'Kept only with a dead letter (never a token or a header).'),
      it.result ? h('details', {}, h('summary', {}, 'Recorded result'),
        h('pre', {}, JSON.stringify(it.result, null, 2))) : null,
      h('h2', {}, 'Resume the run'), cmd(it.resume));
  }

  async function dlqEntryPage(idText) {
    const e = await api('dlq/' + encodeURIComponent(idText));
    const render = () => dlqEntryPage(idText).catch(fatal);
    put(view,
      h('h1', {}, `Dead letter #${e.id}`, pill(e.state), h('span', { class: 'muted' }, 'run ',
        h('a', { href: '#/runs/' + encodeURIComponent(e.run_id) }, e.run_id))),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Step'), h('dd', { class: 'mono' }, h('a', {
          href: `#/runs/${encodeURIComponent(e.run_id)}/items/${encodeURIComponent(e.step_key || '')}` }, e.step_key)),
        h('dt', {}, 'Operation'), h('dd', { class: 'mono' }, `${e.operation || '?'}  ${e.method || ''} ${e.url || ''}`),
        h('dt', {}, 'Class'), h('dd', {}, `${e.class || '?'}${e.status ? ' ' + e.status : ''}` +
          `${e.scim_type ? ' ' + e.scim_type : ''}`),
        h('dt', {}, 'Rule'), h('dd', { class: 'mono' }, e.rule || '-'),
        h('dt', {}, 'Error'), h('dd', { class: 'err' }, e.last_error || ''),
        h('dt', {}, 'What to do'), h('dd', {}, e.todo || '-'),
        h('dt', {}, 'First failed'), h('dd', {}, time(e.first_failed_at)),
        h('dt', {}, 'Last failed'), h('dd', {}, time(e.last_failed_at))),
      canAct() && e.state === 'pending' ? policyPicker() : null,
      h('div', { class: 'toolbar', dataset: { dlqId: e.id } }, dlqActions(e, render)),
      h('div', { id: 'result' }),
      h('h2', {}, 'Commands'), cmd(e.commands.show), e.state === 'pending' ? [cmd(e.commands.replay),
        cmd(e.commands.drop)] : null,
      h('h2', {}, 'Attempts'), attemptsTable(e.history),
      h('h2', {}, 'Request payload'),
      e.payload ? h('pre', { id: 'payload' }, JSON.stringify(e.payload, null, 2)) : h('p', { class: 'muted' }, 'none'));
  }

  async function dlqPage(query) {
    const filter = { state: query.has('state') ? query.get('state') : 'pending', run: query.get('run') || '',
      q: query.get('q') || '' };
    const go = () => { location.hash = '#/dlq' + q(Object.assign({}, filter, { state: filter.state || 'all' })); };
    if (filter.state === 'all') filter.state = '';
    const groupsBox = h('div', { id: 'groups' });
    const selectedBar = h('div', { class: 'toolbar', id: 'dlq-actions' });
    const search = h('input', { type: 'search', id: 'dlq-search', placeholder: 'step or error', value: filter.q });
    search.addEventListener('change', () => { filter.q = search.value; go(); });
    put(view,
      h('h1', {}, 'Dead letters'),
      h('div', { class: 'toolbar' },
        h('label', {}, 'State', h('select', { id: 'dlq-state',
          onchange: (e) => { filter.state = e.target.value; go(); } },
          ['pending', 'replayed', 'dropped', ''].map((s) => h('option', { value: s || 'all',
            selected: s === filter.state }, s || 'all')))),
        h('label', {}, 'Run', h('input', { type: 'text', id: 'dlq-run', value: filter.run, placeholder: 'every run',
          size: 28, onchange: (e) => { filter.run = e.target.value.trim(); go(); } })),
        h('label', {}, 'Search', search),
        canAct() && filter.state === 'pending' ? policyPicker() : null),
      canAct() && filter.state === 'pending' ? selectedBar : null,
      h('div', { id: 'result' }),
      groupsBox);
    const selected = new Set();
    let entries = [];
    function updateSelected() {
      const ids = [...selected].sort((a, b) => a - b);
      const pending = entries.filter((e) => e.state === 'pending');
      const matching = pending.filter((e) => e.replayable).map((e) => e.id);
      const filtered = filter.run || filter.q ? 'matching the filter' : 'pending';
      put(selectedBar,
        h('button', { type: 'button', id: 'replay-selected', class: 'primary', disabled: !ids.length,
          onclick: () => replay(ids, 'The selected entries', refresh) }, `Replay selected (${ids.length})`), ' ',
        h('button', { type: 'button', id: 'drop-selected', class: 'danger', disabled: !ids.length,
          onclick: () => drop(ids, 'The selected entries', refresh) }, `Drop selected (${ids.length})`),
        h('span', { class: 'spacer' }),
        h('button', { type: 'button', id: 'replay-matching', disabled: !matching.length,
          onclick: () => replay(matching, `Every entry ${filtered}`, refresh) },
        `Replay all ${filtered} (${matching.length})`), ' ',
        h('button', { type: 'button', id: 'drop-matching', class: 'danger', disabled: !pending.length,
          onclick: () => drop(pending.map((e) => e.id), `Every entry ${filtered}`, refresh) },
        `Drop all ${filtered} (${pending.length})`));
    }
    async function refresh() {
      const state = filter.state || undefined;
      const [groups, list] = await Promise.all([
        api('dlq/groups' + q({ state: state || 'pending', run: filter.run, q: filter.q })),
        api('dlq' + q({ state, run: filter.run, q: filter.q }))]);
      entries = list;
      for (const id of [...selected]) if (!list.some((e) => e.id === id && e.state === 'pending')) selected.delete(id);
      updateSelected();
      const byGroup = new Map();
      const keyOf = (e) => [e.class, e.status, e.scim_type, e.rule].join('|');
      for (const e of entries) {
        if (!byGroup.has(keyOf(e))) byGroup.set(keyOf(e), []);
        byGroup.get(keyOf(e)).push(e);
      }
      const pendingView = !filter.state || filter.state === 'pending';
      const cards = [];
      const shown = new Set();
      for (const g of pendingView ? groups : []) {
        const k = [g.class, g.status, g.scim_type, g.rule].join('|');
        shown.add(k);
        cards.push(groupCard(g, byGroup.get(k) || []));
      }
      for (const [k, list2] of byGroup) {
        if (shown.has(k)) continue;
        const e = list2[0];
        cards.push(groupCard({ label: [e.status, e.scim_type].filter(Boolean).join(' ') || e.class, class: e.class,
          rule: e.rule, count: list2.length, ids: list2.map((x) => x.id), todo: null }, list2, true));
      }
      put(groupsBox, ...(cards.length ? cards : [h('p', { class: 'muted', id: 'dlq-empty' },
        filter.state === 'pending' ? 'No dead letter is waiting.' : 'No dead letter matches.')]));
      loadInfo().catch(() => {});
    }
    function groupCard(g, list, other) {
      const pending = list.filter((e) => e.state === 'pending');
      const ids = pending.filter((e) => e.replayable).map((e) => e.id);
      const allIds = pending.map((e) => e.id);
      const what = `${g.count} \u00d7 ${g.label}`;
      const allBox = h('input', { type: 'checkbox', title: 'select all of this group', onchange: (ev) => {
        for (const e of pending) { if (ev.target.checked) selected.add(e.id); else selected.delete(e.id); }
        for (const cb of ev.target.closest('.group').querySelectorAll('input.pick')) cb.checked = ev.target.checked;
        updateSelected();
      } });
      return h('section', { class: 'group', dataset: { group: g.label } },
        h('div', { class: 'head' },
          h('span', { class: 'title' }, h('span', { class: 'times' }, `${g.count} \u00d7 `), g.label),
          pill(g.class || '?'), h('span', { class: 'muted mono' }, 'rule ' + (g.rule || '-')),
          g.operations ? h('span', { class: 'muted' }, Object.entries(g.operations).map(([op, n]) => `${op} ${n}`)
            .join(', ')) : null,
          h('span', { class: 'spacer' }),
          canAct() && !other && allIds.length ? [
            h('button', { type: 'button', class: 'primary replay-group', disabled: !ids.length,
              onclick: () => replay(ids, `All of "${what}"`, refresh) }, `Replay all ${ids.length}`),
            h('button', { type: 'button', class: 'danger drop-group',
              onclick: () => drop(allIds, `All of "${what}"`, refresh) }, `Drop all ${allIds.length}`)] : null),
        g.todo ? h('div', { class: 'todo' }, 'What to do: ', g.todo) : null,
        !other && allIds.length ? h('div', { class: 'cmd' }, cmd(replayCommand(ids.length ? ids : allIds,
          'current'))) : null,
        h('table', {}, h('thead', {}, h('tr', {},
          canAct() && pending.length ? h('th', {}, allBox) : null,
          ['#', 'Step', 'Operation', 'Error', 'Run', 'Failed', 'State', ''].map((x) => h('th', {}, x)))),
        h('tbody', {}, list.map((e) => h('tr', { dataset: { dlqId: e.id } },
          canAct() && pending.length ? h('td', {}, e.state === 'pending' ? h('input', { type: 'checkbox', class: 'pick',
            checked: selected.has(e.id), onchange: (ev) => {
              if (ev.target.checked) selected.add(e.id); else selected.delete(e.id);
              updateSelected();
            } }) : '') : null,
          h('td', {}, h('a', { href: '#/dlq/' + e.id }, e.id)),
          h('td', { class: 'mono' }, h('a', { href: `#/runs/${encodeURIComponent(e.run_id)}/items/` +
            encodeURIComponent(e.step_key || '') }, e.step_key)),
          h('td', { class: 'mono' }, e.operation || ''), h('td', { class: 'err' }, e.last_error || ''),
          h('td', { class: 'mono' }, h('a', { href: '#/runs/' + encodeURIComponent(e.run_id) }, e.run_id)),
          h('td', {}, time(e.last_failed_at)), h('td', {}, pill(e.state)),
          h('td', {}, dlqActions(e, refresh)))))));
    }
    await refresh();
  }

  async function auditPage(query) {
    const filter = { run: query.get('run') || '', user: query.get('user') || '', limit: query.get('limit') || '500' };
    const go = () => { location.hash = '#/audit' + q(filter); };
    const rows = await api('audit' + q(filter));
    const changeText = (list) => (list || []).map((c) => {
      if (c.added) return `${c.attribute}: +${c.added.length}`;
      if (c.removed) return `${c.attribute}: -${c.removed.length}`;
      if (c.after === undefined) return `${c.attribute}: ${JSON.stringify(c.before)} -> (removed)`;
      if (c.before === undefined || c.before === null) return `${c.attribute} = ${JSON.stringify(c.after)}`;
      return `${c.attribute}: ${JSON.stringify(c.before)} -> ${JSON.stringify(c.after)}`;
    }).join('; ');
    const who = (r) => {
      if (!String(r.operation).startsWith('console.')) return 'run';
      const get = (a) => ((r.changes || []).find((c) => c.attribute === a) || {}).after;
      return `${get('by') || '?'} from ${get('from') || '?'}`;
    };
    put(view,
      h('h1', {}, 'Audit trail'),
      h('p', { class: 'muted' }, 'Every write made at a provider and every action of this console, append-only. ' +
        'Same as: ', h('code', {}, `scimrun audit${filter.run ? ' --run ' + filter.run : ''}` +
        `${filter.user ? ' --user ' + filter.user : ''} --limit ${filter.limit}${info.cli.state}`)),
      h('div', { class: 'toolbar' },
        h('label', {}, 'Run', h('input', { type: 'text', id: 'audit-run', value: filter.run, size: 28,
          onchange: (e) => { filter.run = e.target.value.trim(); go(); } })),
        h('label', {}, 'User', h('input', { type: 'text', id: 'audit-user', value: filter.user,
          onchange: (e) => { filter.user = e.target.value.trim(); go(); } })),
        h('label', {}, 'Newest', h('select', { onchange: (e) => { filter.limit = e.target.value; go(); } },
          ['100', '500', '2000', '10000'].map((n) => h('option', { value: n, selected: n === filter.limit }, n))))),
      h('table', { id: 'audit' }, h('thead', {}, h('tr', {}, ['Time', 'By', 'Operation', 'Result', 'Resource',
        'Item', 'Changes', 'Detail', 'Run'].map((x) => h('th', {}, x)))),
      h('tbody', {}, rows.length ? rows.slice().reverse().map((r) => h('tr', { dataset: { op: r.operation } },
        h('td', {}, time(r.at)), h('td', {}, who(r)), h('td', { class: 'mono' }, r.operation),
        h('td', {}, r.result + (r.status ? ' ' + r.status : '')),
        h('td', { class: 'mono' }, `${r.resource_type || '?'}/${r.resource_id || '?'}` +
          (r.resource_name ? ` (${r.resource_name})` : '') + (r.member_id ? ` member ${r.member_id}` : '')),
        h('td', { class: 'mono' }, r.item || ''),
        h('td', { class: 'wrap' }, changeText((r.changes || []).filter((c) => !['by', 'from'].includes(c.attribute) ||
          !String(r.operation).startsWith('console.')))),
        h('td', { class: 'err wrap' }, r.detail || ''),
        h('td', { class: 'mono' }, h('a', { href: '#/runs/' + encodeURIComponent(r.run_id) }, r.run_id))))
        : h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'nothing recorded')))));
  }

  // ---- routing --------------------------------------------------------------------------
  async function loadInfo() {
    info = await api('info');
    document.getElementById('state-file').textContent = info.state;
    document.getElementById('mode').hidden = !info.read_only;
    const n = document.getElementById('dlq-count');
    n.hidden = !info.pending_dead_letters;
    n.textContent = info.pending_dead_letters;
    return info;
  }
  function fatal(e) {
    if (e instanceof ApiError && e.status === 401) { loginPage('The token was refused: ' + e.message); return; }
    put(view, h('div', { class: 'error', id: 'page-error' }, e.message || String(e)));
  }
  async function route() {
    for (const t of timers) clearInterval(t);
    timers = [];
    setLive(false);
    const seq = ++routeSeq;
    const hash = location.hash.replace(/^#\/?/, '');
    const [pathPart, queryPart] = hash.split('?');
    const parts = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
    const query = new URLSearchParams(queryPart || '');
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === (parts[0] ||
      'runs'));
    try {
      if (!info) await loadInfo();
      if (seq !== routeSeq) return;
      if (!parts.length || (parts[0] === 'runs' && parts.length === 1)) await runsPage(query);
      else if (parts[0] === 'runs' && parts.length === 2) await runPage(parts[1], query);
      else if (parts[0] === 'runs' && parts[2] === 'items' && parts.length >= 4) {
        await itemPage(parts[1], parts.slice(3).join('/'));
      } else if (parts[0] === 'dlq' && parts.length === 1) await dlqPage(query);
      else if (parts[0] === 'dlq' && parts.length === 2) await dlqEntryPage(parts[1]);
      else if (parts[0] === 'audit') await auditPage(query);
      else put(view, h('p', {}, 'No such page. ', h('a', { href: '#/runs' }, 'Runs')));
      document.body.dataset.page = parts[0] || 'runs';
      document.body.dataset.ready = String(seq);
    } catch (e) { fatal(e); }
  }
  function start() {
    if (!token) { loginPage(); return; }
    info = null;
    route();
  }
  window.addEventListener('hashchange', () => {
    if (/^#token=/.test(location.hash)) { takeTokenFromUrl(); start(); return; }
    route();
  });
  setInterval(() => { if (info && token) loadInfo().catch(() => {}); }, 5000);
  takeTokenFromUrl();
  start();
})();
]==]
