// The REST API of the control plane, as the console speaks it: same-origin fetch with the session
// cookie, the anti-CSRF header on every call, and every error turned into an ApiError with a message.

export class ApiError extends Error {
  /** `code` and `params` (the control plane's) let the console say the error in the user's language. */
  constructor(status, message, problems = [], code = null, params = {}) {
    super(message);
    this.status = status;
    this.problems = problems;
    this.code = code;
    this.params = params || {};
  }
}

/** The ApiError of an answer's JSON body (null when it had none). */
function fromBody(status, statusText, body) {
  const detail = body && (body.detail ?? body.error?.message);
  const message = typeof detail === 'string' ? detail : `HTTP ${status} ${statusText || ''}`.trim();
  return new ApiError(status, message, (body && body.problems) || [], body && body.code, body && body.params);
}

const HEADERS = { 'X-Requested-With': 'tuneforge-console' };
let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  return fromBody(res.status, res.statusText, body);
}

export async function request(method, path, body, { raw = false, signal } = {}) {
  const init = { method, headers: { ...HEADERS }, credentials: 'same-origin', signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network');
  }
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401 && !path.endsWith('/session')) onUnauthorized();
    throw err;
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body) => request('POST', path, body ?? {});
export const del = (path) => request('DELETE', path);
export const patch = (path, body) => request('PATCH', path, body ?? {});

/** Multipart upload with progress (fetch has no upload progress; XMLHttpRequest does). */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('X-Requested-With', HEADERS['X-Requested-With']);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, 'network'));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      if (xhr.status === 401) onUnauthorized();
      reject(fromBody(xhr.status, '', body));
    };
    xhr.send(form);
  });
}

/**
 * Follows a Server-Sent-Events route of a job (logs, metrics, events) from a byte offset. Each message
 * carries `next_offset`; a lost connection reconnects from the last one after a pause, so nothing is
 * read twice or lost. Returns a function that stops following.
 */
export function follow(path, event, { onItems, onEnd, onState }) {
  let offset = 0;
  let source = null;
  let stopped = false;
  let timer = null;
  let delay = 500;
  const open = () => {
    if (stopped) return;
    const sep = path.includes('?') ? '&' : '?';
    source = new EventSource(`${path}${sep}follow=true&offset=${offset}`);
    source.addEventListener('open', () => { delay = 500; onState && onState('live'); });
    source.addEventListener(event, (e) => {
      const msg = JSON.parse(e.data);
      offset = msg.next_offset;
      onItems(msg.data);
    });
    source.addEventListener('end', (e) => {
      const msg = JSON.parse(e.data);
      source.close();
      stopped = true;
      onState && onState('ended');
      onEnd && onEnd(msg.state);
    });
    source.onerror = () => {
      // EventSource would retry by itself, but from the original offset: reconnect ourselves.
      source.close();
      if (stopped) return;
      onState && onState('retrying');
      timer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 8000);
    };
  };
  open();
  return () => { stopped = true; clearTimeout(timer); if (source) source.close(); };
}
