// Drives `scimrun ui` in headless Chromium (Debian's /usr/bin/chromium, through puppeteer-core
// pinned in package-lock.json) as an operator would: the runs page, a run, a failed item, the
// dead-letter page, Replay of one entry (confirmed), Drop of another (with a reason), the count
// a group's Replay shows before confirming, the audit page; and a request without the token.
// A screenshot of each page goes to OUT_DIR. Started by spec/browser/ui_browser_spec.lua, which
// checks the provider's records and the state file afterwards.
//
//   [REPLAY_ID=N DROP_ID=M] node drive.js URL OUT_DIR
//   URL as scimrun ui printed it (http://127.0.0.1:PORT/#token=...); REPLAY_ID and DROP_ID name the
//   entries to act on (default: the first of the first group).
//
// Prints one JSON line on stdout: { replayed, replayed_key, dropped, dropped_key, group, group_count,
// no_token_status, wrong_token_status, page_no_token_status, screenshots }. Exits 1 on any failure
// (a JavaScript error on the page included).
'use strict';
const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const [url, outDir] = process.argv.slice(2);
if (!url || !outDir) {
  console.error('usage: node drive.js URL OUT_DIR');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const origin = new URL(url).origin;
const result = { screenshots: [] };
const pageErrors = [];

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function shot(page, name) {
  const file = path.join(outDir, name);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
}

// Waits until the router has rendered a page (body[data-ready] changes) and no request is pending.
async function settled(page, before) {
  await page.waitForFunction((b) => document.body.dataset.ready && document.body.dataset.ready !== b,
    { timeout: 15000 }, before || '');
}

// Clicks what opens the confirmation dialog and waits for it to open. A list that re-renders
// between puppeteer finding the button and the click (a slow machine, the sanitizer build)
// swallows the click; the dialog is modal and needs its own OK, so clicking again until it is
// open can never act twice.
async function openConfirm(page, selector) {
  for (let attempt = 1; ; attempt++) {
    await page.click(selector);
    try {
      await page.waitForSelector('#confirm[open]', { timeout: 5000 });
      return;
    } catch (e) {
      if (attempt === 4) throw e;
    }
  }
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    // --no-sandbox: Chromium's sandbox cannot start as root (the test machines run as root)
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1360, height: 860 });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { // the page must need nothing its Content-Security-Policy refuses
      if (/Content Security Policy/i.test(m.text())) pageErrors.push(m.text());
    });
    page.on('dialog', (d) => d.dismiss()); // no alert() is expected
    page.setDefaultTimeout(20000);

    // 1. the runs page of the state file: a run with dead letters
    await page.goto(url);
    await page.waitForSelector('#runs tbody tr[data-run]');
    const runRow = await page.$eval('#runs tbody tr[data-run]', (tr) => ({
      id: tr.dataset.run, text: tr.textContent,
      dl: Number(tr.querySelector('td:last-child').textContent),
    }));
    check(/completed with dead letters/.test(runRow.text), 'the run shows its status: ' + runRow.text);
    check(runRow.dl >= 2, 'the run lists its dead letters: ' + runRow.dl);
    check(!page.url().includes('token='), 'the token leaves the address bar: ' + page.url());
    result.run = runRow.id;
    await shot(page, '01-runs.png');

    // 2. the run: counts, items filtered by state
    let ready = await page.evaluate(() => document.body.dataset.ready);
    await page.click(`#runs tr[data-run="${runRow.id}"] a`);
    await settled(page, ready);
    await page.waitForSelector('#items tbody tr[data-key]');
    await page.select('#item-state', 'failed');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#items tbody tr[data-key]')];
      return rows.length > 0 && rows.every((r) => r.textContent.includes('failed'));
    });
    await shot(page, '02-run.png');

    // 3. a failed item: its attempts and its request payload
    const itemKey = await page.$eval('#items tbody tr[data-key]', (tr) => tr.dataset.key);
    ready = await page.evaluate(() => document.body.dataset.ready);
    await page.click(`#items tr[data-key="${itemKey}"] a`);
    await settled(page, ready);
    await page.waitForSelector('#attempts tbody tr');
    const attempts = await page.$$eval('#attempts tbody tr', (rows) => rows.map((r) => r.textContent));
    check(attempts.some((t) => /failure/.test(t) && /HTTP \d{3}/.test(t)), 'the attempts show the failure');
    check(await page.$('#payload'), 'the item shows its request payload');
    await shot(page, '03-item.png');

    // 4. the dead letters, grouped by class and rule
    ready = await page.evaluate(() => document.body.dataset.ready);
    await page.click('nav a[data-nav=dlq]');
    await settled(page, ready);
    await page.waitForSelector('section.group tr[data-dlq-id] button.replay');
    await shot(page, '04-dead-letters.png');

    // 5. Replay of one entry, confirmed
    const groups = await page.$$eval('section.group', (gs) => gs.map((g) => ({
      label: g.dataset.group, ids: [...g.querySelectorAll('tr[data-dlq-id]')].map((r) => Number(r.dataset.dlqId)),
      keys: [...g.querySelectorAll('tr[data-dlq-id] td:nth-child(3)')].map((td) => td.textContent),
    })));
    const first = groups.find((g) => g.ids.length > 0);
    result.replayed = Number(process.env.REPLAY_ID) || first.ids[0];
    const keyOf = (id) => page.$eval(`tr[data-dlq-id="${id}"] td:nth-child(3)`, (td) => td.textContent);
    result.replayed_key = await keyOf(result.replayed);
    await openConfirm(page, `tr[data-dlq-id="${result.replayed}"] button.replay`);
    const dialog = await page.$eval('#confirm', (d) => d.textContent);
    check(dialog.includes('Replay 1 dead letter'), 'the dialog counts the entries: ' + dialog);
    check(dialog.includes(`scimrun dlq replay ${result.replayed} --state `), 'the dialog shows the command: ' + dialog);
    await shot(page, '05-confirm-replay.png');
    await page.click('#confirm-ok');
    await page.waitForSelector('[data-test=result], [data-test=error]');
    const replayText = await page.$eval('#result', (d) => d.textContent);
    check(replayText.includes('1 replayed, 0 still failing'), 'the page reports the replay: ' + replayText);
    await page.waitForFunction((id) => !document.querySelector(`tr[data-dlq-id="${id}"]`), {}, result.replayed);
    await shot(page, '06-replayed.png');

    // 6. Drop of another entry, with a reason
    const left = await page.$$eval('section.group', (gs) => gs.map((g) => ({
      ids: [...g.querySelectorAll('tr[data-dlq-id]')].map((r) => Number(r.dataset.dlqId)),
      keys: [...g.querySelectorAll('tr[data-dlq-id] td:nth-child(3)')].map((td) => td.textContent),
    })));
    const other = left.find((g) => g.ids.length > 0);
    result.dropped = Number(process.env.DROP_ID) || other.ids[0];
    result.dropped_key = await keyOf(result.dropped);
    await openConfirm(page, `tr[data-dlq-id="${result.dropped}"] button.drop`);
    await page.click('#confirm-ok'); // without a reason: refused by the dialog itself
    check(await page.$('#confirm[open]'), 'a drop needs a reason');
    await page.type('#confirm-reason', 'a duplicate in the HR export (browser spec)');
    await shot(page, '07-confirm-drop.png');
    await page.click('#confirm-ok');
    await page.waitForFunction(() => /1 dropped/.test(document.getElementById('result').textContent));
    await page.waitForFunction((id) => !document.querySelector(`tr[data-dlq-id="${id}"]`), {}, result.dropped);

    // 7. a group's Replay shows how many it will send before anything is sent; cancelled here
    const group = await page.$eval('section.group', (g) => ({
      label: g.dataset.group, n: g.querySelectorAll('tr[data-dlq-id] button.replay:not([disabled])').length,
      first: Number(g.querySelector('tr[data-dlq-id]').dataset.dlqId),
    }));
    result.untouched = group.first; // still pending: the refused requests below name it
    result.group = group.label;
    result.group_count = group.n;
    await openConfirm(page, 'section.group button.replay-group');
    const groupDialog = await page.$eval('#confirm', (d) => d.textContent);
    check(groupDialog.includes(`Replay ${group.n} dead letter`), 'the group dialog counts: ' + groupDialog);
    check(groupDialog.includes(`\u00d7 ${group.label}"`), 'the dialog names the group: ' + groupDialog);
    await shot(page, '08-confirm-group.png');
    await page.click('#confirm-cancel');
    await page.waitForFunction(() => !document.querySelector('#confirm[open]'));

    // ... and so does Replay of everything a filter matches (here: one step's key)
    const key = await keyOf(group.first);
    ready = await page.evaluate(() => document.body.dataset.ready);
    await page.type('#dlq-search', key);
    await page.keyboard.press('Enter');
    await settled(page, ready);
    await page.waitForSelector('#replay-matching');
    const matching = await page.$eval('#replay-matching', (b) => b.textContent);
    check(/matching the filter \(1\)/.test(matching), 'the filter matches one entry: ' + matching);
    await openConfirm(page, '#replay-matching');
    check((await page.$eval('#confirm', (d) => d.textContent)).includes('Replay 1 dead letter?'), 'filter count');
    await page.click('#confirm-cancel');

    // 8. the audit page: the two actions, who and from where
    ready = await page.evaluate(() => document.body.dataset.ready);
    await page.click('nav a[data-nav=audit]');
    await settled(page, ready);
    await page.waitForSelector('#audit tbody tr[data-op="console.dlq.replay"]');
    const audit = await page.$$eval('#audit tbody tr[data-op^="console."]', (rows) => rows.map((r) => r.textContent));
    check(audit.some((t) => /replayed/.test(t) && /from 127\.0\.0\.1/.test(t)), 'the replay is audited: ' + audit);
    check(audit.some((t) => /dropped/.test(t) && /duplicate in the HR export/.test(t)), 'the drop is audited');
    await page.screenshot({ path: path.join(outDir, '09-audit.png') }); // the newest rows: the page is long
    result.screenshots.push(path.join(outDir, '09-audit.png'));

    // 9. a request without the token, or with a wrong one, is refused (from the page and from outside)
    result.page_no_token_status = await page.evaluate(async () => (await fetch('/api/runs')).status);
    result.no_token_status = (await fetch(origin + '/api/dlq')).status;
    result.wrong_token_status = (await fetch(origin + '/api/dlq', { headers: { Authorization: 'Bearer nope' } }))
      .status;
    const post = await fetch(origin + '/api/dlq/drop', { method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ids: [result.untouched], reason: 'no token' }) });
    result.post_no_token_status = post.status;
    const fresh = await browser.newPage();
    fresh.on('pageerror', (e) => pageErrors.push(e.message));
    await fresh.goto(origin + '/#/dlq'); // a new tab: no token in its session
    await fresh.waitForSelector('#token-input');
    await shot(fresh, '10-no-token.png');
  } finally {
    await browser.close();
  }
  check(pageErrors.length === 0, 'no JavaScript error on the pages: ' + pageErrors.join('; '));
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  if (pageErrors.length) console.error('page errors: ' + pageErrors.join('; '));
  process.exit(1);
});
