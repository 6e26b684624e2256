// The chat page: a conversation streamed from /v1/chat/completions (SSE),
// kept in localStorage, rendered with markdown.js (DOM nodes only). Every
// request is same-origin: behind herd route it goes through the router.
import { renderInto } from './markdown.js';

const STORE = 'herd.chat.v1';
const KEY_STORE = 'herd.apiKey';
const $ = (id) => document.getElementById(id);

const ui = {
  model: $('model'), messages: $('messages'), input: $('input'), send: $('send'), stop: $('stop'),
  composer: $('composer'), newChat: $('new-chat'), error: $('error'), settings: $('settings'),
  system: $('system'), temperature: $('temperature'), topP: $('top-p'), maxTokens: $('max-tokens'),
  apiKey: $('api-key'), keyPrompt: $('key-prompt'), keyForm: $('key-form'), keyInput: $('key-input'),
};

let state = load();
let modelId = null;
let controller = null; // the running request's AbortController

function load() {
  const fresh = { messages: [], system: '', temperature: 0.7, top_p: 1, max_tokens: 256 };
  try {
    const s = JSON.parse(localStorage.getItem(STORE) || 'null');
    if (s && Array.isArray(s.messages)) {
      s.messages = s.messages.filter((m) => m && typeof m.content === 'string' &&
                                      (m.role === 'user' || m.role === 'assistant'));
      return Object.assign(fresh, s);
    }
  } catch (e) { /* a broken entry: start afresh */ }
  return fresh;
}

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(state));
  } catch (e) { /* full or disabled storage: the page still works */ }
}

function apiKey() { return localStorage.getItem(KEY_STORE) || ''; }

function headers(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  const k = apiKey();
  if (k) h.Authorization = 'Bearer ' + k;
  return h;
}

// ------------------------------------------------------------ errors

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function askForKey() {
  ui.keyPrompt.hidden = false;
  ui.keyInput.value = '';
  ui.keyInput.focus();
}

// The words for a refused request, from its status and OpenAI error body.
async function describeFailure(resp) {
  let code = '', message = '';
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || '';
      message = body.error.message || '';
    }
  } catch (e) { /* not JSON */ }
  switch (resp.status) {
    case 401:
      askForKey();
      return apiKey() ? 'The API key was refused (401): enter another one.'
                      : 'This server needs an API key (401): enter it below.';
    case 429: {
      const after = resp.headers.get('Retry-After');
      return 'The server is busy (429: its queue is full)' +
             (after ? '; try again in ' + after + ' s.' : '; try again shortly.') + (message ? '\n' + message : '');
    }
    case 503:
      if (code === 'draining') return 'The server is draining (503): it is shutting down or restarting. Try again in a moment.';
      if (code === 'loading') return 'The model is still loading (503). Try again in a moment.';
      return 'The server cannot answer now (503)' + (message ? ': ' + message : '.');
    default:
      return 'The request failed (' + resp.status + ')' + (message ? ': ' + message : '.');
  }
}

// ------------------------------------------------------------ rendering

function messageNode(m) {
  const div = document.createElement('div');
  div.className = 'msg ' + m.role;
  const role = document.createElement('div');
  role.className = 'role';
  role.textContent = m.role === 'user' ? 'You' : (modelId || 'assistant');
  const body = document.createElement('div');
  body.className = 'body';
  renderInto(body, m.content);
  div.append(role, body);
  if (m.note) {
    const note = document.createElement('div');
    note.className = 'note';
    note.textContent = m.note;
    div.appendChild(note);
  }
  return div;
}

function renderAll() {
  ui.messages.replaceChildren(...state.messages.map(messageNode));
  scrollDown();
}

function scrollDown() { ui.messages.scrollTop = ui.messages.scrollHeight; }

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.send.disabled = busy;
}

// ------------------------------------------------------------ the model

async function loadModel() {
  try {
    const resp = await fetch('/v1/models', { headers: headers(false) });
    if (!resp.ok) {
      if (resp.status === 401 || resp.status === 503) showError(await describeFailure(resp));
      ui.model.textContent = '(no model yet)';
      if (resp.status === 503) setTimeout(loadModel, 2000); // loading, or no replica yet: ask again
      return;
    }
    const body = await resp.json();
    modelId = body.data && body.data[0] ? body.data[0].id : null;
    ui.model.textContent = modelId || '(no model)';
    showError('');
    ui.keyPrompt.hidden = true;
  } catch (e) {
    ui.model.textContent = '(unreachable)';
    showError('Cannot reach the server: ' + e.message);
    setTimeout(loadModel, 2000);
  }
}

// ------------------------------------------------------------ sending

// Splits SSE text into events; returns the rest (an incomplete event).
function takeEvents(buf, onData) {
  const parts = buf.split(/\r\n\r\n|\n\n|\r\r/);
  const rest = parts.pop();
  for (const ev of parts) {
    const data = ev.split(/\r\n|\n|\r/).filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
    if (data) onData(data);
  }
  return rest;
}

async function send() {
  const text = ui.input.value.replace(/\s+$/, '');
  if (!text.trim() || controller) return;
  if (!modelId) await loadModel(); // requests must name the model
  if (controller) return; // another send began meanwhile
  showError('');
  ui.input.value = '';
  state.messages.push({ role: 'user', content: text });
  const reply = { role: 'assistant', content: '' };
  state.messages.push(reply);
  save();
  renderAll();
  const node = ui.messages.lastElementChild;
  const body = node.querySelector('.body');
  const messages = state.messages.slice(0, -1).map((m) => ({ role: m.role, content: m.content }));
  if (state.system.trim()) messages.unshift({ role: 'system', content: state.system });
  const req = { messages, stream: true, temperature: num(state.temperature, 0.7), top_p: num(state.top_p, 1),
                max_tokens: Math.max(1, Math.round(num(state.max_tokens, 256))) };
  if (modelId) req.model = modelId;
  controller = new AbortController();
  setBusy(true);
  let done = false, failed = false;
  try {
    const resp = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(true),
                                                         body: JSON.stringify(req), signal: controller.signal });
    if (!resp.ok) {
      showError(await describeFailure(resp));
      failed = true;
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf = takeEvents(buf + decoder.decode(value, { stream: true }), (data) => {
        if (data === '[DONE]') {
          done = true;
          return;
        }
        let chunk;
        try { chunk = JSON.parse(data); } catch (e) { return; }
        if (chunk.error) {
          showError('The server ended the answer with an error: ' + (chunk.error.message || 'unknown'));
          failed = true;
          return;
        }
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) return;
        if (choice.delta && typeof choice.delta.content === 'string') reply.content += choice.delta.content;
        if (choice.finish_reason === 'length') reply.note = 'stopped at max tokens';
      });
      renderInto(body, reply.content);
      scrollDown();
      save();
    }
    if (!done && !failed) {
      showError('The stream was cut before the answer ended (the connection dropped or the server went away).');
      reply.note = 'cut short';
    }
  } catch (e) {
    if (e.name === 'AbortError') {
      reply.note = 'stopped';
    } else {
      showError('The connection failed: ' + e.message);
      reply.note = 'cut short';
    }
  } finally {
    controller = null;
    setBusy(false);
    // a refused request leaves no empty answer behind; its question stays
    if (failed && !reply.content) state.messages.pop();
    save();
    renderAll();
    ui.input.focus();
  }
}

function num(v, dflt) {
  const n = parseFloat(v);
  return Number.isFinite(n) ? n : dflt;
}

function stop() {
  // aborting the fetch closes the connection: herd serve cancels the
  // request and frees its sequence when it sees the disconnect
  if (controller) controller.abort();
}

function newChat() {
  stop();
  state.messages = [];
  save();
  renderAll();
  showError('');
  ui.input.focus();
}

// ------------------------------------------------------------ wiring

function bindSetting(input, key) {
  input.value = state[key];
  input.addEventListener('input', () => {
    state[key] = input.value;
    save();
  });
}

bindSetting(ui.system, 'system');
bindSetting(ui.temperature, 'temperature');
bindSetting(ui.topP, 'top_p');
bindSetting(ui.maxTokens, 'max_tokens');
ui.apiKey.value = apiKey();
ui.apiKey.addEventListener('change', () => {
  localStorage.setItem(KEY_STORE, ui.apiKey.value.trim());
  loadModel();
});
ui.keyForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const k = ui.keyInput.value.trim();
  if (!k) return;
  localStorage.setItem(KEY_STORE, k);
  ui.apiKey.value = k;
  ui.keyPrompt.hidden = true;
  showError('');
  loadModel();
});
ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});
ui.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener('click', stop);
ui.newChat.addEventListener('click', newChat);
if (window.matchMedia('(min-width: 701px)').matches) ui.settings.open = true;
renderAll();
loadModel();
ui.input.focus();
