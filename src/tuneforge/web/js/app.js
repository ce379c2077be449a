// The console's shell: language, sign-in state and a hash router (#/jobs/ID …) over the page modules.
import { del, get, whenUnauthorized } from './api.js';
import { preferredLanguage, setLanguage, translate } from './i18n.js';
import { clearMessages, showError } from './messages.js';

const routes = [
  [/^\/signin$/, () => import('./pages/signin.js')],
  [/^\/$/, () => import('./pages/home.js')],
  [/^\/datasets$/, () => import('./pages/datasets.js')],
  [/^\/datasets\/([^/]+)$/, () => import('./pages/dataset.js')],
  [/^\/models$/, () => import('./pages/models.js')],
  [/^\/jobs\/new$/, () => import('./pages/newjob.js')],
  [/^\/jobs$/, () => import('./pages/jobs.js')],
  [/^\/jobs\/([^/]+)$/, () => import('./pages/job.js')],
  [/^\/evaluations$/, () => import('./pages/evaluations.js')],
  [/^\/deployments$/, () => import('./pages/deployments.js')],
  [/^\/deployments\/([^/]+)$/, () => import('./pages/deployment.js')],
  [/^\/playground$/, () => import('./pages/playground.js')],
  [/^\/tokens$/, () => import('./pages/tokens.js')],
];

let signedIn = false;
let cleanup = null;
let keep = null; // the page's state getter: a language switch re-renders the page with it

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, params: new URLSearchParams(query) };
}

export function go(path) { location.hash = `#${path}`; }

/** Draws the page of the current hash. `kept` is the state the same page had (a language switch): the
 * page is drawn again from it, in the new language, with nothing the user typed or was shown lost. */
async function render(kept = null) {
  const { path, params } = parse();
  if (!signedIn && path !== '/signin') return go(`/signin?next=${encodeURIComponent(path)}`);
  if (cleanup) { cleanup(); cleanup = null; }
  keep = null;
  clearMessages();
  document.querySelector('header.top').hidden = !signedIn;
  for (const a of document.querySelectorAll('header nav a')) {
    const target = a.getAttribute('href').slice(1);
    const here = target === '/' ? path === '/' : path === target || path.startsWith(`${target}/`);
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const view = document.getElementById('view');
  for (const [re, load] of routes) {
    const m = path.match(re);
    if (!m) continue;
    try {
      const mod = await load();
      const started = performance.now();
      const node = await mod.render({ args: m.slice(1).map(decodeURIComponent), params, go, setSignedIn, kept });
      if (parse().path !== path) return; // navigated away meanwhile
      view.replaceChildren(node.element || node);
      cleanup = node.cleanup || null;
      keep = node.keep || null;
      view.dataset.renderMs = String(Math.round(performance.now() - started));
      view.dataset.route = path; // which page is on screen (the tests wait for it)
      translate(view);
      view.focus({ preventScroll: true });
      // A new page starts at its top (the browser kept the last page's offset: a job opened 700 px down
      // in its log); the same page in another language stays where the user was.
      window.scrollTo(0, kept ? kept.scrollY || 0 : 0);
    } catch (err) {
      view.replaceChildren();
      showError(err);
    }
    return;
  }
  go('/');
}

// Handed to the pages (the sign-in page sets it) rather than exported: a page importing the shell
// would be an import cycle (the shell loads the pages).
function setSignedIn(value) { signedIn = value; }

async function start() {
  await setLanguage(preferredLanguage());
  const select = document.getElementById('lang');
  select.value = preferredLanguage();
  select.addEventListener('change', async () => {
    const state = { ...(keep ? keep() : {}), scrollY: window.scrollY };
    await setLanguage(select.value);
    render(state);
  });
  document.getElementById('signout').addEventListener('click', async () => {
    try { await del('/api/v1/session'); } catch (err) { showError(err); }
    signedIn = false;
    go('/signin');
  });
  whenUnauthorized(() => { if (signedIn) { signedIn = false; go(`/signin?next=${encodeURIComponent(parse().path)}`); } });
  try { await get('/api/v1/session'); signedIn = true; } catch { signedIn = false; }
  window.addEventListener('hashchange', () => render());
  render();
}

start();
