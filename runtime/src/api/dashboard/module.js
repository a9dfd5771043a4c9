// One module's card: its row of figures, its errors, a running rebuild,
// and its details (code, subscriptions, dead letters). Built once, then
// updated in place on every poll, so open details and focus survive.

import { h, text, show, keyed, count, rate, duration, when, basename, Sparkline } from './view.js';

/** What a state means for a person, beside the state's name. */
function stateNote(info) {
  switch (info.state) {
    case 'running':
      return info.lag > 0 ? 'catching up' : 'caught up';
    case 'stopped':
      return info.stopped_at != null ? `at event ${count(info.stopped_at)}` : 'at a poison event';
    case 'retrying':
      return info.last_error ? `attempt ${info.last_error.attempts}` : 'retrying';
    case 'paused':
      return 'until resumed';
    case 'unloaded':
      return 'module file removed';
    case 'standby':
      return 'another reel runs it';
    case 'fenced':
      return 'another reel took over';
    default:
      return '';
  }
}

/** JSON, indented (a payload may come as JSON text or as JSON). */
function pretty(json) {
  if (typeof json !== 'string') return JSON.stringify(json, null, 2);
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}

/** A button that asks once more before it acts. */
function confirmButton(label, confirmLabel, action) {
  let timer = null;
  const button = h('button.act', { type: 'button' }, label);
  const reset = () => {
    clearTimeout(timer);
    button.classList.remove('confirm');
    text(button, label);
  };
  button.addEventListener('click', () => {
    if (!button.classList.contains('confirm')) {
      button.classList.add('confirm');
      text(button, confirmLabel);
      timer = setTimeout(reset, 5000);
      return;
    }
    reset();
    action();
  });
  button.addEventListener('blur', reset);
  return button;
}

/** A labelled figure of the row; the label shows on narrow screens. */
function cell(name, label, ...content) {
  return h(`div.cell.${name}`, {}, h('span.label', {}, label), ...content);
}

export class ModuleCard {
  /**
   * @param kind   the kind ({kind, base})
   * @param name   the module's name
   * @param ops    operations the server offers for this kind (api.operationsOf)
   * @param app    {perform(label, [method, path]): runs an operation and tells the
   *               reader how it went; get(path)}
   */
  constructor(kind, name, ops, app) {
    Object.assign(this, { kind, name, ops, app, info: null });
    const id = `m-${kind.kind}-${name}`.replace(/[^A-Za-z0-9_-]/g, '_');

    this.toggle = h('button.toggle', { type: 'button', 'aria-expanded': 'false', 'aria-controls': `${id}-details` },
      h('span.chevron', { 'aria-hidden': 'true' }), h('span.title', { id: `${id}-name` }, name));
    this.meta = h('span.meta');
    this.badge = h('span.badge', { 'data-field': 'state' });
    this.note = h('span.sub');
    this.position = h('b', { 'data-field': 'position' });
    this.head = h('span', { 'data-field': 'head' });
    this.fill = h('span.fill');
    this.lag = h('span.value', { 'data-field': 'lag' });
    this.lagNote = h('span.sub');
    this.rate = h('span.value', { 'data-field': 'rate' });
    this.chart = new Sparkline();
    this.dead = h('button.count', { type: 'button', 'data-field': 'dead-letters' });
    this.dead.addEventListener('click', () => this.open(true, true));

    this.buttons = {
      pause: h('button.act', { type: 'button', 'data-action': 'pause' }, 'Pause'),
      resume: h('button.act', { type: 'button', 'data-action': 'resume' }, 'Resume'),
      skip: confirmButton('Skip event', 'Confirm skip', () => this.run('skip', this.info.stopped_at)),
      rebuild: confirmButton('Rebuild', 'Confirm rebuild', () => this.run('rebuild')),
    };
    this.buttons.pause.addEventListener('click', () => this.run('pause'));
    this.buttons.resume.addEventListener('click', () => this.run('resume'));
    this.buttons.skip.dataset.action = 'skip';
    this.buttons.rebuild.dataset.action = 'rebuild';
    for (const [op, button] of Object.entries(this.buttons)) {
      button.setAttribute('aria-describedby', `${id}-name`);
      if (!ops[op]) button.hidden = true;
    }

    this.error = h('div.notice.error', { hidden: true });
    this.moduleError = h('div.notice.warn', { hidden: true });
    this.blocked = h('div.notice.info', { hidden: true });
    this.rebuildTitle = h('p.title');
    this.rebuildFill = h('span.fill');
    this.rebuildBar = h('span.bar.big', { role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, this.rebuildFill);
    this.rebuildFigures = h('span.figures', { 'data-field': 'rebuild' });
    this.rebuildError = h('div.notice.error', { hidden: true });
    this.rebuild = h('div.rebuild', { hidden: true }, this.rebuildTitle,
      h('div.progress-line', {}, this.rebuildBar, this.rebuildFigures), this.rebuildError);
    this.facts = h('dl.facts');
    this.applied = h('dd');
    this.letterList = h('ol.letters');
    this.lettersBox = h('section.dead-letters', { hidden: true }, h('h4', {}, 'Dead letters'), this.letterList);
    this.details = h('div.details', { id: `${id}-details`, hidden: true }, this.facts, this.lettersBox);
    this.toggle.addEventListener('click', () => this.open(this.details.hidden));

    this.el = h('article.module', { 'data-module': name, 'data-kind': kind.kind, id },
      h('div.row', {},
        h('div.cell.name', {}, this.toggle, this.meta),
        h('div.cell.state', {}, this.badge, this.note),
        cell('progress', 'position / head', h('span.value', {}, this.position, ' / ', this.head),
          h('span.bar', { 'aria-hidden': 'true' }, this.fill)),
        cell('lag', 'lag', this.lag, this.lagNote),
        cell('rate', 'events/s', this.rate, this.chart.el),
        cell('dead', 'dead letters', this.dead),
        h('div.cell.actions', {}, ...Object.values(this.buttons))),
      this.error, this.moduleError, this.blocked, this.rebuild, this.details);
  }

  /** Show or hide the details (and scroll to the dead letters). */
  open(open, toLetters = false) {
    show(this.details, open);
    this.toggle.setAttribute('aria-expanded', String(open));
    this.el.classList.toggle('open', open);
    if (open) {
      this.loadLetters();
      if (toLetters) this.lettersBox.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    }
  }

  async run(op, position) {
    const buttons = Object.values(this.buttons);
    buttons.forEach((b) => (b.disabled = true));
    const what = op === 'skip' ? `skip event ${count(position)} of` : op;
    await this.app.perform(`${what} ${this.name}`, this.ops[op](this.name, position));
    buttons.forEach((b) => (b.disabled = false));
  }

  /** Take a new status. */
  update(info) {
    const previous = this.info;
    this.info = info;
    this.el.dataset.state = info.state;
    text(this.meta, [this.kind.kind, info.version != null ? `v${info.version}` : null].filter(Boolean).join(' · '));
    text(this.badge, info.state);
    this.badge.className = `badge state-${info.state}`;
    text(this.note, stateNote(info));

    text(this.position, count(info.position));
    text(this.head, count(info.head));
    const done = info.head > 0 ? Math.min(1, info.position / info.head) : 1;
    this.fill.style.width = `${(done * 100).toFixed(1)}%`;

    text(this.lag, count(info.lag));
    text(this.lagNote, info.lag > 0 ? `${duration(info.lag_seconds)} behind` : '');
    this.lag.parentElement.classList.toggle('behind', info.lag > 0);

    text(this.rate, rate(info.events_per_second));
    this.chart.push(info.events_per_second ?? 0);

    const letters = info.dead_letters ?? 0;
    text(this.dead, count(letters));
    this.dead.disabled = letters === 0 || !this.ops.deadLetters;
    this.dead.setAttribute('aria-label', `${count(letters)} dead letters of ${this.name}, show them`);

    const s = info.state;
    show(this.buttons.pause, !!this.ops.pause && ['running', 'retrying', 'starting'].includes(s));
    show(this.buttons.resume, !!this.ops.resume && ['paused', 'stopped'].includes(s));
    text(this.buttons.resume, s === 'stopped' ? 'Retry' : 'Resume');
    this.buttons.resume.title = s === 'stopped' ? 'apply the event it stopped at again' : '';
    show(this.buttons.skip, !!this.ops.skip && s === 'stopped' && info.stopped_at != null);
    if (!this.buttons.skip.classList.contains('confirm')) {
      text(this.buttons.skip, `Skip event ${count(info.stopped_at)}`);
    }
    show(this.buttons.rebuild, !!this.ops.rebuild && s !== 'unloaded');
    this.buttons.rebuild.disabled = !!info.rebuild;
    this.buttons.rebuild.title = info.rebuild ? 'a rebuild is running' : 'rebuild from the first event; reads switch when it has caught up';

    this.renderError(this.error, 'Last error', info.last_error);
    show(this.moduleError, !!info.module_error);
    keyed(this.moduleError, info.module_error, () => [
      h('p.title', {}, 'Its newest module file was refused; it keeps running the code it had'),
      h('pre', {}, info.module_error ?? '')]);
    this.renderBlocked(info.blocked_by);
    this.renderRebuild(info.rebuild, info.head);
    this.renderFacts(info);
    if (!this.details.hidden && previous && previous.dead_letters !== info.dead_letters) this.loadLetters();
  }

  renderError(box, title, error) {
    show(box, !!error);
    if (!error) return;
    const where = [
      error.position != null ? `event ${count(error.position)}` : null,
      error.attempts > 1 ? `${error.attempts} attempts` : null,
      error.at ? when(error.at) : null,
    ].filter(Boolean).join(' · ');
    keyed(box, `${title}\n${where}\n${error.message}`, () => [
      h('p.title', {}, title, where ? h('span.where', {}, ` · ${where}`) : null),
      h('pre', { 'data-field': 'error' }, error.message)]);
  }

  renderBlocked(cause) {
    show(this.blocked, !!cause);
    if (!cause) return;
    const who = [cause.user, cause.application].filter(Boolean).join(', ');
    const title = `Held back by transaction ${cause.xid} (pid ${cause.pid}${who ? `, ${who}` : ''}, ${cause.state ?? 'open'}`
      + ` for ${duration(cause.seconds)}): events committed after it began wait until it ends`;
    keyed(this.blocked, `${title}\n${cause.query}`, () => [h('p.title', {}, title), cause.query ? h('pre', {}, cause.query) : null]);
  }

  renderRebuild(rebuild, head) {
    show(this.rebuild, !!rebuild);
    if (!rebuild) return;
    text(this.rebuildTitle, rebuild.version === this.info.version
      ? `Rebuilding from the first event into ${rebuild.namespace}: reads switch to it when it has caught up`
      : `Rebuilding v${rebuild.version} beside v${this.info.version}: reads switch to it when it has caught up`);
    const done = head > 0 ? Math.min(1, rebuild.position / head) : 1;
    this.rebuildFill.style.width = `${(done * 100).toFixed(1)}%`;
    this.rebuildBar.setAttribute('aria-valuenow', String(Math.floor(done * 100)));
    const eta = rebuild.eta_seconds != null ? `about ${duration(rebuild.eta_seconds)} left` : 'estimating the time left';
    text(this.rebuildFigures,
      `${Math.floor(done * 100)} % · ${count(rebuild.lag)} events left · ${rate(rebuild.events_per_second)}/s · ${eta}`);
    this.renderError(this.rebuildError, `The rebuild (${rebuild.state})`, rebuild.last_error);
  }

  renderFacts(info) {
    const m = info.module;
    const facts = [
      ['namespace', info.namespace],
      ['module file', m ? (m.file ? basename(m.file) : 'built into reel') : 'none loaded'],
      ['sha-256', m?.hash ? `${m.hash.slice(0, 16)}…` : null],
      ['size', m?.size != null ? `${count(Math.round(m.size / 1024))} KiB` : null],
      ['event types', m ? (m.event_types.length ? m.event_types.join(', ') : 'all') : null],
      ['stream prefixes', m ? (m.stream_prefixes.length ? m.stream_prefixes.join(', ') : 'all') : null],
      ['on poison events', m?.on_error === 'skip' ? 'skip to dead letters' : m?.on_error === 'stop' ? 'stop' : m?.on_error],
    ].filter(([, v]) => v != null);
    keyed(this.facts, JSON.stringify(facts), () => [
      ...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]), h('dt', {}, 'events applied'), this.applied]);
    text(this.applied, info.events_applied != null ? `${count(info.events_applied)} since reel started` : '—');
  }

  async loadLetters() {
    if (!this.ops.deadLetters || !this.info?.dead_letters) {
      show(this.lettersBox, false);
      return;
    }
    const [, path] = this.ops.deadLetters(this.name);
    let letters;
    try {
      letters = await this.app.get(`${path}?limit=100`);
    } catch (error) {
      this.letterList.replaceChildren(h('li.failed', {}, `Could not read them: ${error.message}`));
      show(this.lettersBox, true);
      return;
    }
    this.letterList.replaceChildren(...letters.map((letter) => this.letter(letter)));
    show(this.lettersBox, true);
  }

  letter(l) {
    const buttons = [];
    if (this.ops.retry) {
      const retry = h('button.act', { type: 'button', 'data-action': 'retry' }, 'Retry');
      retry.addEventListener('click', async () => {
        retry.disabled = true;
        await this.app.perform(`retry event ${count(l.position)} of ${this.name}`, this.ops.retry(this.name, l.position));
        retry.disabled = false;
        this.loadLetters();
      });
      buttons.push(retry);
    }
    if (this.ops.discard) {
      const discard = confirmButton('Discard', 'Confirm discard', async () => {
        await this.app.perform(`discard event ${count(l.position)} of ${this.name}`, this.ops.discard(this.name, l.position));
        this.loadLetters();
      });
      discard.dataset.action = 'discard';
      buttons.push(discard);
    }
    return h('li', { 'data-position': String(l.position) },
      h('p.title', {}, `event ${count(l.position)} · ${l.event_type} · ${l.stream_id} v${l.version}`,
        h('span.where', {}, ` · failed ${when(l.failed_at)}`)),
      h('pre', {}, l.error),
      h('details', {}, h('summary', {}, 'payload and metadata'),
        h('pre', { 'data-field': 'data' }, pretty(l.data)), h('pre', { 'data-field': 'metadata' }, pretty(l.metadata))),
      buttons.length ? h('div.letter-actions', {}, ...buttons) : null);
  }
}
