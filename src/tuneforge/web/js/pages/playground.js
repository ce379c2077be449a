// Playground: streaming chat through the gateway's /v1/chat/completions, with temperature, top_p and
// max tokens; side by side sends each message to two deployments.
import { get } from '../api.js';
import { field, h, fill, page, section } from '../dom.js';
import { t } from '../i18n.js';
import { errorText } from '../messages.js';
import { requestModel } from './deployment.js';

/** Reads an OpenAI chat stream (SSE over fetch: EventSource cannot POST) and calls onDelta per piece. */
export async function streamChat(body, onDelta, signal) {
  const res = await fetch('/v1/chat/completions', {
    method: 'POST', credentials: 'same-origin', signal,
    headers: { 'Content-Type': 'application/json', 'X-Requested-With': 'tuneforge-console' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try { const b = await res.json(); msg = (b.error && b.error.message) || b.detail || msg; } catch { /* not JSON */ }
    const err = new Error(msg); err.status = res.status; throw err;
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of chunk.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        const msg = JSON.parse(data);
        if (msg.error) throw new Error(msg.error.message || JSON.stringify(msg.error));
        const delta = msg.choices && msg.choices[0] && msg.choices[0].delta;
        if (delta && delta.content) onDelta(delta.content);
      }
    }
  }
}

function pane(deployments, selected, index) {
  const select = h('select', { 'data-testid': `deployment-${index}` }, deployments.map((d) => h('option', { value: d.name, selected: d.name === selected }, `${d.name} (${d.model})`)));
  const transcript = h('div', { class: 'transcript', translate: 'no', 'aria-live': 'polite', 'data-testid': `transcript-${index}` });
  const history = [];
  return {
    element: h('div', { class: 'pane' }, field('playground.deployment', select), transcript),
    select, transcript, history,
    reset() { history.length = 0; fill(transcript); },
    modelId() { return requestModel(deployments.find((x) => x.name === select.value) || { name: select.value }); },
    /** One turn on screen; `who` is the deployment that answered (kept with the message). */
    turn(role, text, who) {
      const out = h('div', { class: 'reply' }, text);
      const node = h('div', { class: `turn ${role}` }, h('span', { class: 'who' }, role === 'user' ? t('playground.you') : who), out);
      transcript.append(node);
      return { node, out };
    },
  };
}

export async function render({ params, kept }) {
  let deployments = [];
  try { deployments = (await get('/api/v1/deployments')).data.filter((d) => d.state === 'ready'); } catch (err) { if (err.status !== 404) throw err; }
  if (!deployments.length) {
    return page('playground.title', section('playground.chat', h('p', { class: 'muted' }, t('playground.none'), ' ', h('a', { href: '#/deployments' }, t('nav.deployments')))));
  }
  const k = kept || {};
  const a = k.a || params.get('a') || deployments[0].name;
  const b = k.b || params.get('b') || (deployments.find((d) => d.name !== a) || deployments[0]).name;
  const panes = [pane(deployments, a, 0), pane(deployments, b, 1)];
  const side = h('input', { type: 'checkbox', checked: k.side ?? params.has('b'), 'data-testid': 'side-by-side' });
  const temperature = h('input', { type: 'number', min: '0', max: '2', step: '0.1', value: k.temperature ?? '0.7' });
  const topP = h('input', { type: 'number', min: '0', max: '1', step: '0.05', value: k.topP ?? '1' });
  const maxTokens = h('input', { type: 'number', min: '1', max: '4096', value: k.maxTokens ?? '128' });
  const system = h('input', { type: 'text', placeholder: t('playground.system_placeholder'), value: k.system ?? '' });
  const message = h('textarea', { rows: '3', required: true });
  message.value = k.message ?? '';
  // The conversation drawn again from its history (a language switch re-renders the page from state).
  (k.histories || []).forEach((list, i) => list.forEach((m) => {
    panes[i].history.push(m);
    const { node } = panes[i].turn(m.role, m.content, m.who);
    node.dataset.done = 'true';
  }));
  const send = h('button', { type: 'submit', class: 'primary' }, t('playground.send'));
  const stop = h('button', { type: 'button', disabled: true }, t('playground.stop'));
  const clear = h('button', { type: 'button', onclick: () => panes.forEach((p) => p.reset()) }, t('playground.clear'));
  const panesBox = h('div', { class: 'panes' });
  let controller = null;
  const layout = () => { fill(panesBox, side.checked ? panes.map((p) => p.element) : panes[0].element); panesBox.classList.toggle('two', side.checked); };
  side.addEventListener('change', layout);
  layout();
  stop.addEventListener('click', () => controller && controller.abort());

  async function ask(p, text) {
    p.history.push({ role: 'user', content: text });
    p.turn('user', text);
    const who = p.select.value;
    const { node: turn, out } = p.turn('assistant', '', who);
    const messages = (system.value ? [{ role: 'system', content: system.value }, ...p.history] : [...p.history])
      .map((m) => ({ role: m.role, content: m.content }));
    let answer = '';
    try {
      await streamChat({ model: p.modelId(), messages, temperature: Number(temperature.value), top_p: Number(topP.value), max_tokens: Number(maxTokens.value) },
        (piece) => { answer += piece; out.textContent = answer; p.transcript.scrollTop = p.transcript.scrollHeight; }, controller.signal);
      turn.dataset.done = 'true';
    } catch (err) {
      if (err.name !== 'AbortError') turn.append(h('div', { class: 'message error inline' }, err.status === undefined && !err.message ? t('error.network') : errorText(err)));
      turn.dataset.done = 'error';
    }
    p.history.push({ role: 'assistant', content: answer, who });
  }

  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    const text = message.value.trim();
    if (!text) return;
    message.value = '';
    controller = new AbortController();
    send.disabled = true; stop.disabled = false;
    const targets = side.checked ? panes : [panes[0]];
    await Promise.all(targets.map((p) => ask(p, text)));
    send.disabled = false; stop.disabled = true;
    message.focus();
  } },
  field('playground.message', message, t('playground.message_help')),
  h('div', { class: 'actions' }, send, stop, clear));
  message.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
  const settings = h('div', { class: 'grid' },
    field('playground.side_by_side', side, t('playground.side_help')),
    field('playground.temperature', temperature), field('playground.top_p', topP), field('playground.max_tokens', maxTokens),
    field('playground.system', system));
  const keep = () => ({
    a: panes[0].select.value, b: panes[1].select.value, side: side.checked, temperature: temperature.value,
    topP: topP.value, maxTokens: maxTokens.value, system: system.value, message: message.value,
    histories: panes.map((p) => p.history.map((m) => ({ ...m }))),
  });
  return { element: page('playground.title', section('playground.settings', settings), panesBox, form), keep };
}
