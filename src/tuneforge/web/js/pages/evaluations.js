// Evaluations: run one (model × dataset, compare with base), the metrics table, predictions beside
// references.
import { get, post } from '../api.js';
import { badge, field, h, fill, page, section, table } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';
import { showError } from '../messages.js';

function metricsTable(metrics) {
  if (!metrics) return h('p', { class: 'muted' }, t('evals.no_metrics'));
  const entries = Array.isArray(metrics) ? metrics.map((m) => [m.model || m.label, m]) : Object.entries(metrics);
  const keys = [...new Set(entries.flatMap(([, m]) => Object.keys(m.metrics || m).filter((k) => typeof (m.metrics || m)[k] === 'number')))];
  return h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('evals.model')), keys.map((k) => h('th', { scope: 'col' }, k)))),
    h('tbody', {}, entries.map(([name, m]) => h('tr', {}, h('th', { scope: 'row' }, name), keys.map((k) => h('td', { class: 'num' }, formatNumber((m.metrics || m)[k])))))));
}

/** A prompt as the model saw it: one "role: content" line per message (the API stores the messages). */
function promptText(p) {
  const prompt = p.prompt ?? p.messages ?? '';
  if (typeof prompt === 'string') return prompt;
  return Array.isArray(prompt) ? prompt.map((m) => `${m.role}: ${m.content}`).join('\n') : JSON.stringify(prompt, null, 1);
}

async function predictions(id, box) {
  const { data } = await get(`/api/v1/evaluations/${encodeURIComponent(id)}/predictions?limit=20`);
  const withBase = data.some((p) => 'prediction_base' in p);
  fill(box, table(['evals.prompt', 'evals.reference', 'evals.prediction', 'evals.prediction_base'].slice(0, withBase ? 4 : 3), data.map((p) => h('tr', {},
    h('td', {}, h('pre', { class: 'record' }, promptText(p))),
    h('td', {}, h('pre', { class: 'record' }, p.reference ?? '')),
    h('td', {}, h('pre', { class: 'record' }, p.prediction ?? JSON.stringify(p.predictions ?? p, null, 1))),
    withBase ? h('td', {}, h('pre', { class: 'record' }, p.prediction_base ?? '')) : null))));
}

export async function render() {
  const [evals, models, datasets] = await Promise.all([get('/api/v1/evaluations'), get('/api/v1/models'), get('/api/v1/datasets?state=ready')]);
  const model = h('select', { required: true },
    h('optgroup', { label: t('models.registered') }, models.registered.map((r) => h('option', { value: r.ref }, r.ref))),
    h('optgroup', { label: t('models.base') }, models.data.map((m) => h('option', { value: m.name }, m.name))));
  const dataset = h('select', { required: true }, datasets.data.map((d) => h('option', { value: d.id }, `${d.name} (${d.id})`)));
  const compare = h('input', { type: 'checkbox', checked: true });
  const samples = h('input', { type: 'number', min: '1', value: '20' });
  const tokens = h('input', { type: 'number', min: '1', max: '4096', value: '64' });
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    try {
      await post('/api/v1/evaluations', { model: model.value, dataset: dataset.value, compare_base: compare.checked,
        max_samples: Number(samples.value) || null, max_new_tokens: Number(tokens.value) || 64 });
      await refresh();
    } catch (err) { showError(err); }
  } }, h('div', { class: 'grid' }, field('evals.model', model), field('evals.dataset', dataset), field('evals.compare', compare, t('evals.compare_help')),
    field('evals.max_samples', samples), field('evals.max_new_tokens', tokens)), h('button', { type: 'submit', class: 'primary' }, t('evals.run')));
  const list = h('div');
  const running = (ev) => ev.state === 'queued' || ev.state === 'running';
  const boxes = new Map(); // predictions already shown stay open across refreshes
  let timer = null;
  let gone = false;
  function show(data) {
    fill(list, data.length ? data.map((ev) => {
      const box = boxes.get(ev.id) || h('div');
      return h('article', { class: 'card', 'data-eval': ev.id },
        h('h3', {}, `${ev.model} × ${ev.dataset} `, badge(ev.state)),
        h('p', { class: 'muted' }, `${ev.id} · `, h('a', { href: `#/jobs/${ev.job}` }, ev.job), ` · ${formatTime(ev.created_at)}`),
        ev.error ? h('div', { class: 'message error inline' }, ev.error.message || String(ev.error)) : null,
        metricsTable(ev.metrics),
        ev.state === 'succeeded' ? h('button', { type: 'button', class: 'small', onclick: () => { boxes.set(ev.id, box); predictions(ev.id, box).catch(showError); } }, t('evals.show_predictions')) : null,
        box);
    }) : h('p', { class: 'muted' }, t('common.empty')));
    // While one is queued or running the list follows it until it ends (no reload needed).
    clearTimeout(timer);
    if (data.some(running) && !gone) timer = setTimeout(() => refresh().catch(showError), 1500);
  }
  async function refresh() { show((await get('/api/v1/evaluations')).data); }
  show(evals.data);
  const element = page('evals.title', section('evals.new', form), section('evals.list', list));
  return { element, cleanup: () => { gone = true; clearTimeout(timer); } };
}
