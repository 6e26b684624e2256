// herd's pages in a real browser: Debian's headless chromium driven by
// playwright-core (never a browser playwright downloads), against real
// herd serve and herd route processes on 127.0.0.1.
//
//   chat:   the model's name from /v1/models; Shift+Enter is a new line,
//           Enter sends; the answer grows token by token in the DOM (the
//           server slowed to one step per HERD_TEST_STEP_DELAY_MS); reload
//           finds the conversation; Stop cancels a long answer and the
//           server frees it (/metrics: running 0, one more cancellation);
//           New chat empties it; model output with <script> and
//           <img onerror> shows as text, rendered alone, streamed, and
//           from a stored conversation; 429 (Retry-After), 503 draining and
//           a cut stream are said plainly (made up by the test, then for
//           real: a server killed mid-answer, a server draining); 401 asks for the key and the key
//           is sent; a phone-sized screen does not scroll sideways.
//   status: the numbers move under a short load (running, tokens/s, TTFT),
//           model and build shown, charts drawn.
//   route:  herd route serves both pages in front of a replica; the chat
//           goes through its proxy; the status page lists the replica.
//   every page: no console error and no CSP violation.
// Screenshots: ARTIFACTS/*.png. Usage: node web_test.mjs HERD ARTIFACTS
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [herd, artifacts] = process.argv.slice(2);
if (!herd || !artifacts) {
  console.error('usage: node web_test.mjs HERD ARTIFACTS');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const DEADLINE = Date.now() + 200_000; // under CTest's 240 s
const failures = [];
let passed = 0;
function check(cond, what) {
  if (cond) passed++;
  else {
    failures.push(what);
    console.error('FAIL:', what);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(fn, ms, what) {
  const end = Math.min(Date.now() + ms, DEADLINE);
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(25);
  }
}

// ------------------------------------------------------------ processes

const procs = [];
async function start(args, env, pattern) {
  const dir = mkdtempSync(join(tmpdir(), 'herd-web-'));
  const log = join(dir, 'log');
  const { openSync } = await import('node:fs');
  const fd = openSync(log, 'w');
  const p = spawn(herd, args, { stdio: ['ignore', 'ignore', fd], env: { ...process.env, ...env } });
  procs.push(p);
  const port = await waitFor(async () => {
    if (p.exitCode !== null) throw new Error(args[0] + ' exited: ' + readFileSync(log, 'utf8'));
    const m = pattern.exec(readFileSync(log, 'utf8'));
    return m && Number(m[1]);
  }, 30_000, args[0] + ' to listen');
  const base = 'http://127.0.0.1:' + port;
  await waitFor(async () => (await fetch(base + '/readyz')).status === 200, 30_000, args[0] + ' to be ready');
  return { proc: p, base, log };
}
const serve = (args, env) => start(['serve', '--port', '0', '--threads', '1', '-q', ...args], env,
                                   /on http:\/\/127\.0\.0\.1:(\d+)/);
async function stopAll() {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
  const end = Date.now() + 15_000;
  for (const p of procs) {
    while (p.exitCode === null && p.signalCode === null && Date.now() < end) await sleep(20);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}

async function metrics(base) {
  const text = await (await fetch(base + '/metrics')).text();
  const out = {};
  for (const m of text.matchAll(/^(\w+(?:\{[^}]*\})?) (\S+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

// ------------------------------------------------------------ pages

let browser;
const consoleProblems = [];
async function newPage(opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 }, ...opts });
  const page = await ctx.newPage();
  page.on('console', (msg) => {
    const t = msg.text();
    // a refused fetch (401, 429, ...) and the killed server's cut stream are
    // logged by the browser itself; the test asks for those
    if (msg.type() === 'error' &&
        !/Failed to load resource: (the server responded with a status of (401|429|503)|net::ERR_INCOMPLETE_CHUNKED_ENCODING)/.test(t)) {
      consoleProblems.push(page.url() + ': ' + t);
    }
  });
  page.on('pageerror', (e) => consoleProblems.push(page.url() + ': ' + e.message));
  return page;
}
const assistantText = (page) => page.locator('.msg.assistant .body').last().textContent();

// Sends text and records, on every DOM change, the answer's length.
async function sendAndWatch(page, text) {
  await page.evaluate(() => {
    window.__lens = [];
    new MutationObserver(() => {
      const b = document.querySelectorAll('.msg.assistant .body');
      if (b.length) window.__lens.push(b[b.length - 1].textContent.length);
    }).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
  });
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}
const idle = (page) => waitFor(() => page.isVisible('#send'), 30_000, 'the answer to end');

const EVIL = 'Here: <script>window.__pwned=1</script> and <img src=x onerror="window.__pwned=2"> **bold**\n\n' +
             '```html\n<script>window.__pwned=3</script>\n```\n[x](javascript:window.__pwned=4)';
async function checkInert(page, where) {
  const r = await page.evaluate(() => {
    const last = [...document.querySelectorAll('.msg.assistant .body')].pop();
    return { text: last ? last.textContent : '', tags: document.querySelectorAll('#messages script, #messages img').length,
             links: [...document.querySelectorAll('#messages a')].map((a) => a.getAttribute('href')),
             pwned: window.__pwned, copy: last ? last.querySelectorAll('.codeblock button.copy').length : 0,
             bold: last ? last.querySelectorAll('strong').length : 0 };
  });
  check(r.text.includes('<script>window.__pwned=1</script>') && r.text.includes('<img src=x onerror='),
        where + ': the markup shows as text (' + r.text.slice(0, 120) + ')');
  check(r.tags === 0 && r.pwned === undefined && !r.links.some((h) => /^javascript:/i.test(h || '')),
        where + ': no script, img or javascript: link made, nothing ran (' + JSON.stringify(r) + ')');
  check(r.copy === 1 && r.bold === 1, where + ': the code block has a copy button, bold is bold');
}

function sse(chunks, done = true) {
  const ev = chunks.map((c) => 'data: ' + JSON.stringify({ object: 'chat.completion.chunk',
    choices: [{ index: 0, delta: { content: c }, finish_reason: null }] }) + '\n\n').join('');
  return ev + (done ? 'data: [DONE]\n\n' : '');
}

// ------------------------------------------------------------ the run

async function run() {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  // 15 ms per scheduler step: an answer takes long enough to watch and to stop
  const a = await serve([], { HERD_TEST_STEP_DELAY_MS: '15' });
  const models = await (await fetch(a.base + '/v1/models')).json();
  const modelId = models.data[0].id;

  // ---- chat: streaming, keys, reload
  let page = await newPage();
  const resp = await page.goto(a.base + '/');
  const csp = resp.headers()['content-security-policy'] || '';
  check(csp.includes("default-src 'self'") && !csp.includes('unsafe-inline'), 'chat page: CSP header (' + csp + ')');
  await waitFor(async () => (await page.textContent('#model')) === modelId, 10_000, 'the model name');
  check(true, 'chat page: the model name from /v1/models');
  await page.fill('#input', 'Once upon');
  await page.press('#input', 'Shift+Enter');
  await page.type('#input', 'a time');
  check((await page.inputValue('#input')) === 'Once upon\na time' && (await page.locator('.msg').count()) === 0,
        'Shift+Enter is a new line, nothing sent');
  await page.fill('#max-tokens', '60');
  await sendAndWatch(page, 'Once upon a time');
  await idle(page);
  const lens = await page.evaluate(() => window.__lens);
  const distinct = [...new Set(lens)].filter((n) => n > 0);
  const growing = distinct.every((n, i) => i === 0 || n > distinct[i - 1]);
  check(distinct.length >= 5 && growing, 'the answer grows token by token (' + distinct.slice(0, 20).join(',') + ')');
  const answer = await assistantText(page);
  check(answer.length > 20, 'an answer arrived (' + answer.slice(0, 60) + ')');
  check((await page.locator('.msg.user .body').textContent()) === 'Once upon a time', 'the question shown');
  await page.screenshot({ path: join(artifacts, 'chat.png'), fullPage: true });
  await page.reload();
  await waitFor(async () => (await page.locator('.msg').count()) === 2, 5_000, 'the stored conversation');
  check((await assistantText(page)) === answer, 'reload: the conversation is back from localStorage');
  check((await page.inputValue('#max-tokens')) === '60', 'reload: the settings are back');

  // ---- stop: the browser aborts, the server cancels and frees the sequence
  const before = await metrics(a.base);
  await page.fill('#max-tokens', '300'); // the context is 512: the first exchange and 300 fit
  // the tiny model often ends a story early: the page's request, sent on to
  // the real server, with ignore_eos added
  await page.route('**/v1/chat/completions', (route) => route.continue({
    postData: JSON.stringify({ ...JSON.parse(route.request().postData()), ignore_eos: true }) }));
  await sendAndWatch(page, 'Tell me a long story');
  await waitFor(async () => (await assistantText(page)).length > 5, 10_000, 'the long answer to begin');
  const running = (await metrics(a.base)).herd_requests_running;
  await page.click('#stop');
  await idle(page);
  await page.unroute('**/v1/chat/completions');
  check(running === 1, 'the long answer was running (' + running + ')');
  check((await page.locator('.msg.assistant .note').last().textContent()) === 'stopped', 'stop: the answer says stopped');
  const after = await waitFor(async () => {
    const m = await metrics(a.base);
    return m.herd_requests_running === 0 && m.herd_cancellations_total > before.herd_cancellations_total ? m : null;
  }, 5_000, 'the server to cancel').catch(() => null);
  check(after !== null, 'stop: the server cancelled the request and runs nothing');
  check(after && after.herd_kv_blocks_used === after.herd_prefix_cache_blocks, 'stop: its KV blocks are free');
  const stopped = await assistantText(page);
  await page.reload();
  await waitFor(async () => (await page.locator('.msg').count()) === 4, 5_000, 'four messages');
  check((await assistantText(page)) === stopped, 'reload: the stopped answer is kept');
  await page.click('#new-chat');
  check((await page.locator('.msg').count()) === 0 &&
        JSON.parse(await page.evaluate(() => localStorage.getItem('herd.chat.v1'))).messages.length === 0,
        'New chat empties the conversation');

  // ---- model output is text: the renderer alone, a streamed answer, a stored one
  const alone = await page.evaluate(async (evil) => {
    const { renderMarkdown } = await import('/web/markdown.js');
    const div = document.createElement('div');
    div.appendChild(renderMarkdown(evil));
    document.body.appendChild(div);
    await new Promise((r) => setTimeout(r, 100)); // an onerror would have fired
    const r = { text: div.textContent, tags: div.querySelectorAll('script,img').length, pwned: window.__pwned,
                code: div.querySelector('pre code') && div.querySelector('pre code').textContent };
    div.remove();
    return r;
  }, EVIL);
  check(alone.tags === 0 && alone.pwned === undefined && alone.text.includes('<img src=x onerror=') &&
        alone.code === '<script>window.__pwned=3</script>', 'renderMarkdown: markup as text (' + JSON.stringify(alone) + ')');
  await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200,
    headers: { 'Content-Type': 'text/event-stream' }, body: sse(EVIL.match(/[\s\S]{1,7}/g)) }));
  await page.fill('#input', 'say something nasty');
  await page.press('#input', 'Enter');
  await idle(page);
  await sleep(100);
  await checkInert(page, 'streamed answer');
  await page.unroute('**/v1/chat/completions');
  await page.evaluate((evil) => localStorage.setItem('herd.chat.v1', JSON.stringify({ messages: [
    { role: 'user', content: 'hi' }, { role: 'assistant', content: evil }] })), EVIL);
  await page.reload();
  await waitFor(async () => (await page.locator('.msg').count()) === 2, 5_000, 'the stored conversation');
  await sleep(100);
  await checkInert(page, 'stored answer');

  // ---- errors said plainly (answers made up by the test, the page's reading is what is tested)
  const refusals = [
    [{ status: 429, headers: { 'Retry-After': '7', 'Content-Type': 'application/json' },
       body: JSON.stringify({ error: { message: 'the queue is full', code: 'queue_full' } }) }, /429.*7 s/s, '429'],
    [{ status: 503, headers: { 'Content-Type': 'application/json' },
       body: JSON.stringify({ error: { message: 'draining', code: 'draining' } }) }, /draining \(503\)/, '503 draining'],
    [{ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: sse(['Once', ' upon'], false) },
     /stream was cut/, 'a cut stream'],
  ];
  for (const [answer, want, what] of refusals) {
    await page.route('**/v1/chat/completions', (route) => route.fulfill(answer));
    await page.fill('#input', 'hello');
    await page.press('#input', 'Enter');
    await idle(page);
    const err = await page.textContent('#error');
    check(await page.isVisible('#error') && want.test(err), what + ': said plainly (' + err + ')');
    await page.unroute('**/v1/chat/completions');
  }
  await page.context().close();

  // ---- a phone
  page = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await page.goto(a.base + '/');
  await waitFor(async () => (await page.textContent('#model')) === modelId, 10_000, 'the model name (phone)');
  await page.fill('#input', 'Once upon a time');
  await page.click('#send');
  await idle(page);
  const sideways = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  const box = await page.locator('#composer').boundingBox();
  check(sideways <= 0 && box && box.y + box.height <= 844 && box.width <= 390,
        'phone: no sideways scroll, the composer on screen (' + sideways + ', ' + JSON.stringify(box) + ')');
  await page.screenshot({ path: join(artifacts, 'chat-phone.png') });
  await page.context().close();

  // ---- the status page under a short load
  page = await newPage();
  await page.goto(a.base + '/status');
  await waitFor(async () => Number(await page.getAttribute('body', 'data-polls')) >= 2, 10_000, 'two polls');
  check((await page.textContent('#v-running')) === '0' && (await page.textContent('#v-tok-out')).startsWith('0'),
        'status: idle at first');
  check((await page.textContent('#v-model')).startsWith(modelId) && (await page.textContent('#v-build')).startsWith('herd '),
        'status: model and build');
  const load = [];
  for (let i = 0; i < 3; i++) {
    load.push(fetch(a.base + '/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: modelId, messages: [{ role: 'user', content: 'story ' + i }], max_tokens: 150,
                             ignore_eos: true }) })
      .then((r) => r.json()));
  }
  const seen = { running: 0, tokOut: 0 };
  const loadEnd = Date.now() + 15_000;
  let settled = false;
  Promise.all(load).then(() => { settled = true; });
  while (!settled && Date.now() < loadEnd) {
    seen.running = Math.max(seen.running, Number(await page.textContent('#v-running')) || 0);
    seen.tokOut = Math.max(seen.tokOut, parseFloat(await page.textContent('#v-tok-out')) || 0);
    await sleep(100);
  }
  await Promise.all(load);
  await sleep(1200);
  check(seen.running >= 1 && seen.tokOut > 0, 'status: running and tokens/s moved under load (' + JSON.stringify(seen) + ')');
  const ttft = await page.textContent('#v-ttft');
  check(/ms|s/.test(ttft) && !ttft.startsWith('–'), 'status: TTFT percentiles (' + ttft + ')');
  const pts = await page.getAttribute('#chart-0 polyline.s0', 'points');
  check(pts && pts.split(' ').length >= 3, 'status: the tokens/s chart is drawn');
  await page.screenshot({ path: join(artifacts, 'status.png'), fullPage: true });
  await page.context().close();

  // ---- 401: the page asks for the key and sends it
  const keyed = await serve(['--api-key', 'sekrit'], {});
  page = await newPage();
  await page.goto(keyed.base + '/');
  await waitFor(() => page.isVisible('#key-prompt'), 10_000, 'the key prompt');
  check(/401/.test(await page.textContent('#error')), 'no key: 401 said, the key asked for');
  await page.fill('#key-input', 'wrong');
  await page.click('#key-form button');
  await waitFor(async () => /refused/.test(await page.textContent('#error')), 5_000, 'the wrong key refused');
  check(await page.isVisible('#key-prompt'), 'a wrong key: asked again');
  await page.fill('#key-input', 'sekrit');
  await page.click('#key-form button');
  await waitFor(async () => (await page.textContent('#model')) === modelId, 10_000, 'the model with the key');
  check(!(await page.isVisible('#key-prompt')) && !(await page.isVisible('#error')), 'the right key: the prompt goes');
  await page.fill('#input', 'Once upon a time');
  await page.press('#input', 'Enter');
  await idle(page);
  check((await assistantText(page)).length > 0 && !(await page.isVisible('#error')), 'with the key: an answer');
  await page.context().close();

  // ---- herd route in front of the replica
  const r = await start(['route', '--port', '0', '-q', '--backend', a.base], {},
                        /routing \([a-z-]+\) on http:\/\/127\.0\.0\.1:(\d+)/);
  page = await newPage();
  const rresp = await page.goto(r.base + '/');
  check((rresp.headers()['content-security-policy'] || '').includes("connect-src 'self'"), 'route: the chat page, CSP');
  await waitFor(async () => (await page.textContent('#model')) === modelId, 10_000, 'the model through the router');
  const routedBefore = (await metrics(r.base))['herd_router_requests_total'] ?? null;
  await page.fill('#input', 'Once upon a time');
  await page.press('#input', 'Enter');
  await idle(page);
  check((await assistantText(page)).length > 0 && !(await page.isVisible('#error')), 'route: an answer through the proxy');
  const routed = await metrics(r.base);
  const total = Object.entries(routed).filter(([k]) => k.startsWith('herd_router_requests_total')).reduce((s, [, v]) => s + v, 0);
  check(total >= 2, 'route: the router forwarded the page\'s requests (' + total + ', was ' + routedBefore + ')');
  await page.goto(r.base + '/status');
  await waitFor(async () => (await page.locator('#replica-rows tr').count()) === 1, 10_000, 'the replica row');
  const row = await page.locator('#replica-rows tr').first().textContent();
  check((await page.getAttribute('body', 'data-kind')) === 'route' && row.includes(a.base.replace('http://', '')) &&
        row.includes('up'), 'route: the status page lists the replica, up (' + row + ')');
  await page.screenshot({ path: join(artifacts, 'status-route.png'), fullPage: true });
  await page.context().close();

  // ---- the real thing: a server killed mid-answer, a server draining
  const d = await serve([], { HERD_TEST_STEP_DELAY_MS: '15' });
  page = await newPage();
  await page.goto(d.base + '/');
  await waitFor(async () => (await page.textContent('#model')) === modelId, 10_000, 'the model (kill)');
  await page.route('**/v1/chat/completions', (route) => route.continue({
    postData: JSON.stringify({ ...JSON.parse(route.request().postData()), ignore_eos: true, max_tokens: 300 }) }));
  await sendAndWatch(page, 'Once upon a time');
  await waitFor(async () => (await assistantText(page)).length > 5, 10_000, 'the answer to begin (kill)');
  d.proc.kill('SIGKILL');
  await idle(page);
  const cut = await page.textContent('#error');
  check(/cut|connection failed/.test(cut) && (await page.locator('.msg.assistant .note').last().textContent()) === 'cut short',
        'a server killed mid-answer: the cut is said (' + cut + ')');
  await page.context().close();
  const e = await serve([], { HERD_TEST_STEP_DELAY_MS: '15' });
  page = await newPage();
  await page.goto(e.base + '/');
  await waitFor(async () => (await page.textContent('#model')) === modelId, 10_000, 'the model (drain)');
  const long = fetch(e.base + '/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: modelId, prompt: 'Once', max_tokens: 300, ignore_eos: true }) }).then((x) => x.status);
  await waitFor(async () => (await metrics(e.base)).herd_requests_running === 1, 5_000, 'the long request to run');
  e.proc.kill('SIGTERM');
  await waitFor(async () => (await fetch(e.base + '/readyz')).status === 503, 5_000, 'the drain');
  await page.fill('#input', 'hello');
  await page.press('#input', 'Enter');
  await idle(page);
  const drained = await page.textContent('#error');
  check(/draining \(503\)/.test(drained), 'a draining server: said plainly (' + drained + ')');
  check((await long) === 200, 'the drain let the running answer finish');
  await page.context().close();

  check(consoleProblems.length === 0, 'no console errors or CSP violations:\n  ' + consoleProblems.join('\n  '));
}

let rc = 0;
try {
  await run();
} catch (e) {
  console.error('FAIL:', e.stack || e);
  failures.push(String(e));
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
}
console.log(passed + ' passed, ' + failures.length + ' failed');
rc = failures.length ? 1 : 0;
process.exit(rc);
