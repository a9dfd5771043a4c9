// Small pieces of the view: making elements, formatting numbers and times,
// the events/s chart. Values from the server always go in as text.

const SVG = 'http://www.w3.org/2000/svg';

/** An element: h('div.cell.lag', {title: '...'}, child, 'text', ...). */
export function h(spec, attributes = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(' ');
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else if (value !== false && value != null) el.setAttribute(name, value);
  }
  el.append(...children.filter((c) => c != null));
  return el;
}

/** Set an element's text only when it changed (keeps selections and screen readers calm). */
export function text(el, value) {
  const s = String(value ?? '');
  if (el.textContent !== s) el.textContent = s;
}

/** Show or hide an element. */
export function show(el, visible) {
  if (el.hidden === visible) el.hidden = !visible;
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** A count of events: 1,234,567. */
export const count = (n) => (n == null ? '—' : integer.format(n));

/** A rate: 0, 4.5, 523, 12.3K. */
export function rate(n) {
  if (n == null) return '—';
  if (n >= 10000) return compact.format(n);
  return n < 10 ? decimal.format(n) : integer.format(n);
}

/** A duration in seconds: 0.4 s, 12 s, 3 min 20 s, 2 h 5 min. */
export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  if (seconds < 10) return `${decimal.format(seconds)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h${m % 60 ? ` ${m % 60} min` : ''}`;
}

/** A time as the reader's clock shows it (with the day when not today). */
export function when(rfc3339) {
  const t = new Date(rfc3339);
  if (Number.isNaN(t.getTime())) return rfc3339 ?? '';
  const clock = t.toLocaleTimeString();
  return t.toDateString() === new Date().toDateString() ? clock : `${t.toLocaleDateString()} ${clock}`;
}

const built = new WeakMap();

/**
 * Rebuild `el`'s children with `build()` only when `key` changed since the
 * last call: text a reader is selecting survives the polls.
 */
export function keyed(el, key, build) {
  if (built.get(el) === key) return;
  built.set(el, key);
  el.replaceChildren(...build());
}

/** The file name of a path. */
export const basename = (path) => String(path).split(/[\\/]/).pop();

/**
 * A small live chart of events/s, one sample a poll: the newest on the
 * right, scaled to the peak (in the chart's title). Until `size` samples
 * have come, the first `least` spread over the width.
 */
export class Sparkline {
  constructor(size = 120, least = 20) {
    Object.assign(this, { size, least, samples: [] });
    const svg = (tag, attributes) => {
      const el = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, v);
      return el;
    };
    this.el = svg('svg', { class: 'spark', viewBox: '0 0 100 30', preserveAspectRatio: 'none', role: 'img' });
    this.title = svg('title', {});
    this.area = svg('path', { class: 'area' });
    this.line = svg('path', { class: 'line', 'vector-effect': 'non-scaling-stroke' });
    const base = svg('path', { class: 'base', d: 'M0,29.5H100', 'vector-effect': 'non-scaling-stroke' });
    this.el.append(this.title, base, this.area, this.line);
  }

  /** Forget the samples (after a gap in polling). */
  clear() {
    this.samples = [];
  }

  /** Add a sample and redraw. */
  push(value) {
    this.samples.push(Number.isFinite(value) ? value : 0);
    if (this.samples.length > this.size) this.samples.shift();
    const n = this.samples.length;
    const peak = Math.max(...this.samples);
    const top = peak > 0 ? peak : 1;
    const step = 100 / (Math.max(n, this.least) - 1);
    const x = (i) => (100 - (n - 1 - i) * step).toFixed(2);
    const points = this.samples.map((v, i) => `${x(i)},${(29 - (v / top) * 27).toFixed(1)}`);
    const line = `M${points.join('L')}`;
    this.line.setAttribute('d', line);
    this.area.setAttribute('d', `${line}L100,30L${x(0)},30Z`);
    this.title.textContent = `events/s, the last ${duration(n)}: peak ${rate(peak)}, now ${rate(value)}`;
    this.el.setAttribute('aria-label', this.title.textContent);
  }
}
