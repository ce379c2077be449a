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

async function predictions(id, box) {
  const { data } = await get(`/api/v1/evaluations/${encodeURIComponent(id)}/predictions?limit=20`);
  fill(box, table(['evals.prompt', 'evals.reference', 'evals.prediction'], data.map((p) => h('tr', {},
    h('td', {}, h('pre', { class: 'record' }, typeof p.prompt === 'string' ? p.prompt : JSON.stringify(p.prompt ?? p.messages ?? '', null, 1))),
    h('td', {}, h('pre', { class: 'record' }, p.reference ?? '')),
    h('td', {}, h('pre', { class: 'record' }, p.prediction ?? JSON.stringify(p.predictions ?? p, null, 1)))))));
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
      location.reload();
    } catch (err) { showError(err); }
  } }, h('div', { class: 'grid' }, field('evals.model', model), field('evals.dataset', dataset), field('evals.compare', compare, t('evals.compare_help')),
    field('evals.max_samples', samples), field('evals.max_new_tokens', tokens)), h('button', { type: 'submit', class: 'primary' }, t('evals.run')));
  const list = h('div', {}, evals.data.length ? evals.data.map((ev) => {
    const box = h('div');
    return h('article', { class: 'card' },
      h('h3', {}, `${ev.model} × ${ev.dataset} `, badge(ev.state)),
      h('p', { class: 'muted' }, `${ev.id} · `, h('a', { href: `#/jobs/${ev.job}` }, ev.job), ` · ${formatTime(ev.created_at)}`),
      metricsTable(ev.metrics),
      ev.state === 'succeeded' ? h('button', { type: 'button', class: 'small', onclick: () => predictions(ev.id, box).catch(showError) }, t('evals.show_predictions')) : null,
      box);
  }) : h('p', { class: 'muted' }, t('common.empty')));
  return page('evals.title', section('evals.new', form), section('evals.list', list));
}
