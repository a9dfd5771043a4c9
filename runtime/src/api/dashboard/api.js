// Talking to reel: one request function for every call the page makes, and
// what the server offers, read from its own openapi.json.

/** A refused or failed request, with reel's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * What every request carries. A signed-in browser's token travels in reel's
 * HttpOnly session cookie (ADR 33), which the page cannot read; reel refuses
 * a cookie-signed request that changes state unless it has this header,
 * which another site's page cannot add.
 */
function credentials() {
  return { 'x-reel-csrf': '1' };
}

/** A request to reel: the JSON answer, or an ApiError with reel's message. */
export async function request(method, path, body) {
  const init = { method, cache: 'no-store', headers: { accept: 'application/json', ...credentials() } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'unreachable', `reel does not answer at ${location.host}`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): its text is the message.
  }
  if (!response.ok) {
    const error = json && json.error;
    if (response.status === 401) throw new ApiError(401, 'unauthorized', 'reel asks for a sign-in');
    if (response.status === 403) throw new ApiError(403, 'forbidden', error?.message ?? 'not allowed with this sign-in');
    throw new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? (text || response.statusText));
  }
  return json;
}

export const get = (path) => request('GET', path);

/** Trade a token for reel's session cookie; the token's name, or an ApiError. */
export const signIn = (token) => request('POST', '/session', { token });
export const post = (path, body) => request('POST', path, body);

/**
 * The kinds of module the page lists. Each has a list route answering an
 * array of statuses shaped like a projection's (name, version, state,
 * position, head, lag, ...), and its controls under `{base}/{name}/`. A kind
 * shows once the server's openapi.json has its list route.
 */
export const KINDS = [
  { kind: 'projection', base: '/projections' },
  { kind: 'reactor', base: '/reactors' },
  { kind: 'decider', base: '/deciders' },
  { kind: 'sink', base: '/sinks' },
];

/** Operations a module may offer, as route templates under its kind's base. */
const OPERATIONS = {
  pause: 'POST {base}/{name}/pause',
  resume: 'POST {base}/{name}/resume',
  rebuild: 'POST {base}/{name}/rebuild',
  deadLetters: 'GET {base}/{name}/dead-letters',
  retry: 'POST {base}/{name}/dead-letters/{position}/retry',
  // From the first-hour issue (20): skip the event a stopped module halted
  // at, discard a dead letter. The buttons show once the server has them.
  skip: 'POST {base}/{name}/skip/{position}',
  discard: 'DELETE {base}/{name}/dead-letters/{position}',
};

/** What the server serves: `METHOD /path/{param}` strings, or null if unknown. */
export async function offered() {
  try {
    const doc = await get('/openapi.json');
    const routes = new Set();
    for (const [path, operations] of Object.entries(doc.paths ?? {})) {
      for (const method of Object.keys(operations)) routes.add(`${method.toUpperCase()} ${path}`);
    }
    return routes;
  } catch {
    return null;
  }
}

/** The kinds this server has (projections at least). */
export function kindsOf(routes) {
  return KINDS.filter((k) => k.kind === 'projection' || routes?.has(`GET ${k.base}`));
}

/**
 * The operations of a kind this server offers: name -> a function of the
 * module (and position) giving [method, path]. Without openapi.json, the
 * projection routes every reel has.
 */
export function operationsOf(kind, routes) {
  const found = {};
  for (const [name, template] of Object.entries(OPERATIONS)) {
    const route = template.replaceAll('{base}', kind.base);
    const known = routes ? routes.has(route) : !['skip', 'discard'].includes(name);
    if (!known) continue;
    const [method, path] = route.split(' ');
    found[name] = (module, position) => [
      method,
      path.replace('{name}', encodeURIComponent(module)).replace('{position}', String(position)),
    ];
  }
  return found;
}
