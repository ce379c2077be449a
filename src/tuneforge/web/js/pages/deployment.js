// One deployment: state, URL, prefilled curl examples, a deployment token shown once, scale, stop/start/delete.
import { del, get, patch, post } from '../api.js';
import { badge, copyButton, h, fill, page, section } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';
import { eventName } from '../names.js';
import { showError, showInfo } from '../messages.js';
import { eventMessage, promotionSection } from './promotion.js';

/** The OpenAI `model` for a deployment: its adapter's id when it serves one (the fine-tune), else its
 * name (the gateway routes by deployment name). */
export function requestModel(d) {
  return d.adapters && d.adapters.length && d.default_model_id ? d.default_model_id : d.name;
}

export function curlExamples(d, token = '$TOKEN') {
  const e = d.endpoints || {};
  const auth = `-H "Authorization: Bearer ${token}"`;
  const model = requestModel(d);
  return [
    ['deployment.curl_openai', `curl ${e.openai}/chat/completions ${auth} \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 64 })}'`],
    ['deployment.curl_infer', `curl ${e.infer} ${auth} \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify({ inputs: [{ name: 'text_input', shape: [1], datatype: 'BYTES', data: ['Hello!'] }] })}'`],
    ['deployment.curl_generate', `curl ${e.generate} ${auth} \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify({ text_input: 'Hello!', parameters: { max_tokens: 64 } })}'`],
  ];
}

export async function render({ args, go, kept }) {
  const name = args[0];
  const enc = encodeURIComponent(name);
  const head = h('div');
  const facts = h('dl', { class: 'facts' });
  const examples = h('div');
  const events = h('ol', { class: 'timeline' });
  const tokenBox = h('div', { 'aria-live': 'polite' });
  const promotion = h('div');
  let dep = null;
  let typedReplicas = null; // what the user is typing survives the page's refreshes while it scales
  let timer = null;
  let shownToken = (kept && kept.token) || null; // shown once: a language switch must not lose it
  async function load() {
    clearTimeout(timer); // one poll at a time, whoever asked for this load (a button or the poll)
    dep = await get(`/api/v1/deployments/${enc}`);
    // fn() === false: nothing was done (a delete not confirmed), so no "done" message. The buttons are
    // disabled while the request runs: a stop waits for the workers to exit.
    const act = (key, fn) => h('button', { type: 'button', class: key === 'delete' ? 'danger' : '', onclick: async (e) => {
      e.currentTarget.disabled = true;
      try { if ((await fn()) !== false) showInfo(t(`deployment.${key}_done`)); } catch (err) { showError(err); }
    } }, t(`deployment.${key}`));
    fill(head, badge(dep.state), ' ',
      dep.state !== 'stopped' ? act('stop', async () => { await post(`/api/v1/deployments/${enc}/stop`); await load(); }) : act('start', async () => { await post(`/api/v1/deployments/${enc}/start`); await load(); }),
      ' ', act('delete', async () => {
        if (!window.confirm(t('deployment.confirm_delete', { name }))) { await load(); return false; }
        await del(`/api/v1/deployments/${enc}`);
        // The list's render clears the messages: say "Deleted." once it is on screen.
        window.addEventListener('hashchange', () => showInfo(t('deployment.delete_done')), { once: true });
        go('/deployments');
        return false;
      }),
      ' ', dep.state === 'ready' ? h('a', { class: 'button primary', href: `#/playground?a=${enc}` }, t('deployment.try')) : null);
    fill(facts,
      h('dt', {}, t('deployments.model')), h('dd', {}, h('code', {}, dep.model), dep.base_model && dep.base_model !== dep.model ? ` (${dep.base_model})` : ''),
      h('dt', {}, t('deployment.model_id')), h('dd', {}, h('code', {}, requestModel(dep))),
      dep.adapters && dep.adapters.length ? [h('dt', {}, t('deployments.adapters')), h('dd', {}, dep.adapters.join(', '))] : null,
      h('dt', {}, t('deployments.engine')), h('dd', {}, dep.engine),
      h('dt', {}, t('deployments.replicas')), h('dd', {}, `${dep.replicas_ready ?? 0}/${dep.replicas} `, scaleForm()),
      h('dt', {}, t('deployments.requests')), h('dd', {}, formatNumber(dep.requests ?? 0)),
      h('dt', {}, t('deployments.url')), h('dd', {}, h('code', {}, (dep.endpoints || {}).openai || '')),
      h('dt', {}, t('deployments.created')), h('dd', {}, formatTime(dep.created_at)),
      dep.last_error ? [h('dt', {}, t('job.error')), h('dd', {}, h('div', { class: 'message error inline' }, dep.last_error))] : null);
    fill(examples, curlExamples(dep, shownToken || '$TOKEN').map(([key, text]) => h('div', {}, h('h3', {}, t(key)), h('pre', { class: 'command' }, text), copyButton(() => text))));
    try {
      const ev = await get(`/api/v1/deployments/${enc}/events`);
      // The event's name and message in the user's words (its code and params, platform/event_codes.py); an
      // event stored before codes existed keeps the server's English, marked as not the console's text.
      fill(events, ev.data.map((e) => {
        const message = eventMessage(e.code, e.params, e.message);
        return h('li', {}, h('time', {}, formatTime(e.time)), ' ', h('strong', {}, eventName(e.event)), ' ',
          h('span', e.code ? { class: 'muted' } : { class: 'muted', translate: 'no' }, message));
      }));
    } catch (err) { showError(err); }
    fill(promotion, promotionSection(dep, enc, load));
    const promoting = ['evaluating', 'canary'].includes((dep.rollout || {}).stage); // the gate decides, the canary starts
    const settling = promoting || dep.state === 'starting' || (dep.state === 'ready' && (dep.replicas_ready ?? 0) !== dep.replicas);
    if (settling) timer = setTimeout(() => load().catch(showError), 1500);
  }
  function scaleForm() {
    const count = h('input', { type: 'number', min: '1', max: '16', value: typedReplicas ?? String(dep.replicas), 'aria-label': t('deployments.replicas'), oninput: () => { typedReplicas = count.value; } });
    return h('form', { class: 'inline', onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await patch(`/api/v1/deployments/${enc}`, { replicas: Number(count.value) });
        showInfo(t('deployment.scale_done', { n: count.value }));
        typedReplicas = null;
        clearTimeout(timer);
        await load();
      } catch (err) { showError(err); }
    } }, count, ' ', h('button', { type: 'submit' }, t('deployment.scale')));
  }
  await load();
  const showToken = (secret) => fill(tokenBox, h('p', { class: 'message info inline' }, t('deployment.token_once')),
    h('pre', { class: 'command', 'data-testid': 'token' }, secret), copyButton(() => secret));
  if (shownToken) showToken(shownToken);
  const makeToken = h('button', { type: 'button', onclick: async () => {
    try {
      const tok = await post('/api/v1/tokens', { name: `console-${name}`, scope: `deployment:${name}` });
      shownToken = tok.token;
      showToken(tok.token);
      await load();
    } catch (err) { showError(err); }
  } }, t('deployment.make_token'));
  const element = page(h('span', {}, name), head,
    h('div', { class: 'columns' }, section('deployment.details', facts), section('deployment.events', events)),
    promotion,
    section('deployment.token', h('p', { class: 'muted' }, t('deployment.token_help')), makeToken, tokenBox),
    section('deployment.examples', examples));
  return { element, cleanup: () => clearTimeout(timer), keep: () => ({ token: shownToken }) };
}
