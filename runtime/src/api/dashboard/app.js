// The dashboard: polls reel's status routes once a second (ADR 36) and keeps
// the page in step: a summary, a card per module, the modules folder.

import { get, request, offered, kindsOf, operationsOf, signIn } from './api.js';
import { h, text, show, keyed, count, rate, basename, Sparkline } from './view.js';
import { ModuleCard } from './module.js';

/** Milliseconds between polls (and the chart's time step). */
const EVERY = 1000;
/** After a failed poll, wait longer, up to this. */
const BACKOFF_MAX = 10000;

const $ = (id) => document.getElementById(id);
const cards = new Map();
let kinds = [];
let routes = null;
let timer = null;
let running = false;
let again = false;
let failures = 0;
let hiddenAt = null;
const total = new Sparkline();

const app = {
  get,
  /** Run an operation; say how it went; look again at once. */
  async perform(label, [method, path]) {
    try {
      await request(method, path);
      toast(`Asked to ${label}.`, 'ok');
    } catch (error) {
      toast(`Could not ${label}: ${error.message}`, 'error');
    }
    refresh();
  },
};

/** A short message in the corner (read out by screen readers). */
function toast(message, tone) {
  const close = h('button.close', { type: 'button', 'aria-label': 'dismiss' }, '×');
  const el = h(`div.toast.${tone}`, {}, h('p', {}, message), close);
  close.addEventListener('click', () => el.remove());
  $('toasts').append(el);
  setTimeout(() => el.remove(), tone === 'error' ? 15000 : 5000);
}

/** Poll now (or right after the poll in flight). */
async function refresh() {
  clearTimeout(timer);
  if (running) {
    again = true;
    return;
  }
  running = true;
  try {
    await poll();
    failures = 0;
  } catch (error) {
    failures += 1;
    connection('down', error.status === 401 ? 'sign-in needed' : `reconnecting: ${error.message}`);
    if (error.status === 401) {
      askToSignIn();
      running = false;
      return;
    }
  }
  running = false;
  if (again) {
    again = false;
    refresh();
  } else if (!document.hidden) {
    timer = setTimeout(refresh, Math.min(BACKOFF_MAX, EVERY * 2 ** failures));
  }
}

async function poll() {
  const [health, files, ...lists] = await Promise.allSettled([get('/healthz'), get('/modules'), ...kinds.map((k) => get(k.base))]);
  if (health.status === 'rejected' && lists.every((l) => l.status === 'rejected')) throw health.reason;
  const failed = lists.map((l, i) => (l.status === 'rejected' ? `${kinds[i].base}: ${l.reason.message}` : null)).filter(Boolean);
  const modules = lists.flatMap((l, i) => (l.status === 'fulfilled' ? l.value.map((info) => [kinds[i], info]) : []));
  renderModules(modules);
  renderSummary(health.status === 'fulfilled' ? health.value.head : null, modules, files.status === 'fulfilled' ? files.value : []);
  if (files.status === 'fulfilled') renderFolder(files.value);
  else failed.push(`/modules: ${files.reason.message}`);
  show($('problems'), failed.length > 0);
  text($('problems'), failed.length ? `Some of the status could not be read. ${failed.join('; ')}` : '');
  connection('live', `updated ${new Date().toLocaleTimeString()}`);
}

function connection(state, message) {
  document.body.dataset.connection = state;
  text($('live-state'), state === 'live' ? 'live' : 'offline');
  text($('live-note'), message);
}

function renderModules(modules) {
  const list = $('modules');
  const wanted = [];
  for (const [kind, info] of modules) {
    const key = `${kind.kind}/${info.name}`;
    let card = cards.get(key);
    if (!card) {
      card = new ModuleCard(kind, info.name, operationsOf(kind, routes), app);
      cards.set(key, card);
    }
    card.update(info);
    wanted.push(card.el);
  }
  for (const [key, card] of cards) {
    if (!wanted.includes(card.el)) {
      card.el.remove();
      cards.delete(key);
    }
  }
  // Reorder only when the order changed: moving a node would drop its focus.
  if (wanted.some((el, i) => list.children[i] !== el)) list.replaceChildren(...wanted);
  show($('empty'), wanted.length === 0);
  text($('module-count'), wanted.length ? `(${wanted.length})` : '');
}

const NEEDS_CARE = ['stopped', 'retrying', 'fenced'];

function renderSummary(head, modules, files) {
  const infos = modules.map(([, info]) => info);
  text($('head'), count(head ?? infos[0]?.head));
  const states = {};
  for (const info of infos) states[info.state] = (states[info.state] ?? 0) + 1;
  text($('state-count'), count(infos.length));
  text($('state-note'), Object.entries(states).map(([s, n]) => `${n} ${s}`).join(' · ') || 'none deployed');
  const applied = infos.reduce((sum, i) => sum + (i.events_per_second ?? 0) + (i.rebuild?.events_per_second ?? 0), 0);
  text($('applied'), rate(applied));
  total.push(applied);
  const care = infos.filter((i) => NEEDS_CARE.includes(i.state) || i.last_error || i.module_error || i.dead_letters > 0
    || i.rebuild?.last_error).map((i) => i.name);
  const refused = files.filter((f) => f.error).length;
  const problems = care.length + refused;
  text($('care'), problems ? count(problems) : 'none');
  text($('care-note'), [care.join(', '), refused ? `${refused} refused file${refused > 1 ? 's' : ''}` : ''].filter(Boolean).join(' · ')
    || 'no errors, no dead letters');
  $('care-tile').classList.toggle('alert', problems > 0);
}

function renderFolder(files) {
  const dirs = new Set(files.map((f) => f.path.slice(0, f.path.length - basename(f.path).length)));
  text($('folder-path'), dirs.size === 1 ? [...dirs][0] : '');
  show($('folder-empty'), files.length === 0);
  show($('files'), files.length > 0);
  keyed($('files'), JSON.stringify(files), () => files.map((f) => {
    const status = f.compiling
      ? [h('span.badge.state-rebuilding', {}, 'compiling'), f.provides ? h('span.sub', {}, ` · ${f.provides} runs meanwhile`) : '']
      : f.error
      ? [h('span.badge.state-stopped', {}, 'refused'), h('pre', { 'data-field': 'refusal' }, f.error)]
      : [h('span.badge.state-running', {}, f.kind ?? 'loaded'), ' ', h('span.provides', {}, `${f.provides}`),
        h('span.sub', {}, f.cached ? ' · from the compile cache' : f.compile_ms != null ? ` · compiled in ${count(f.compile_ms)} ms` : '')];
    return h('li', { 'data-file': basename(f.path) }, h('code.file', { title: f.path }, basename(f.path)),
      h('div.became', {}, ...status));
  }));
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    hiddenAt = Date.now();
    clearTimeout(timer);
    return;
  }
  // The charts' time axis is one poll a sample: after a pause, start afresh.
  if (hiddenAt && Date.now() - hiddenAt > 5 * EVERY) {
    for (const card of cards.values()) card.chart.clear();
    total.clear();
  }
  hiddenAt = null;
  refresh();
});

/** Show the sign-in form; polling waits for it. */
function askToSignIn() {
  clearTimeout(timer);
  show($('sign-in'), true);
  $('token').focus();
}

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    const { token } = await signIn($('token').value);
    $('token').value = '';
    text($('sign-in-error'), '');
    show($('sign-in'), false);
    toast(`Signed in as ${token}.`, 'ok');
    await begin();
  } catch (error) {
    text($('sign-in-error'), error.status === 401 ? 'reel does not accept this token.' : error.message);
  }
});

async function start() {
  text($('server'), location.host);
  $('total-chart').replaceWith(total.el);
  total.el.id = 'total-chart';
  const session = await get('/session').catch(() => null);
  if (session?.authentication && !session.token) {
    connection('down', 'sign-in needed');
    askToSignIn();
    return;
  }
  await begin();
}

async function begin() {
  routes = await offered();
  kinds = kindsOf(routes);
  await refresh();
}

start();
