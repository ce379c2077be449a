// Evaluations: run one (model × dataset, compare with base), the metrics table, predictions beside
// references.
import { get, post } from '../api.js';
import { badge, field, h, fill, page, section, table } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';
import { showError } from '../messages.js';
import { metricName, roleName } from '../names.js';

// Lower is better for these; higher for the rest (ROUGE, BLEU, accuracy). Counts and times have no side.
const LOWER_BETTER = /loss|perplexity|ppl/i;
const NO_SIDE = /^(samples|n|count|seconds|time|.*_s)$/i;

/** The evaluation's metrics, a row per model: the evaluated model under the name it was asked by (the
 * worker calls it by its folder), the base model's row marked, and ▲/▼ where it beats or trails the base. */
function metricsTable(ev) {
  const metrics = ev.metrics;
  if (!metrics) return h('p', { class: 'muted' }, t('evals.no_metrics'));
  const entries = Array.isArray(metrics) ? metrics.map((m) => [m.model || m.label, m]) : Object.entries(metrics);
  const values = (m) => m.metrics || m;
  const keys = [...new Set(entries.flatMap(([, m]) => Object.keys(values(m)).filter((k) => typeof values(m)[k] === 'number')))];
  const base = entries.find(([name]) => name.endsWith(' (base)'));
  const label = (name) => (name.endsWith(' (base)') ? t('evals.base_row', { name: name.slice(0, -7) }) : ev.model || name);
  const cue = (name, k, v) => {
    if (!base || name === base[0] || NO_SIDE.test(k) || typeof values(base[1])[k] !== 'number') return null;
    const b = values(base[1])[k];
    if (v === b) return null;
    return (LOWER_BETTER.test(k) ? v < b : v > b) ? 'better' : 'worse';
  };
  return h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('evals.model')), keys.map((k) => h('th', { scope: 'col', class: 'num' }, metricName(k))))),
    h('tbody', {}, entries.map(([name, m]) => h('tr', {}, h('th', { scope: 'row', 'data-key': name }, label(name)), keys.map((k) => {
      const side = cue(name, k, values(m)[k]);
      return h('td', { class: side ? `num ${side}` : 'num', title: side ? t(`evals.${side}`) : null, 'data-key': k }, formatNumber(values(m)[k]));
    })))));
}

/** A prompt as the model saw it: one "role: content" line per message (the API stores the messages). */
function promptText(p) {
  const prompt = p.prompt ?? p.messages ?? '';
  if (typeof prompt === 'string') return prompt;
  return Array.isArray(prompt) ? prompt.map((m) => `${roleName(m.role)}: ${m.content}`).join('\n') : JSON.stringify(prompt, null, 1);
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

export async function render({ params }) {
  const [evals, models, datasets, allDatasets] = await Promise.all([get('/api/v1/evaluations'), get('/api/v1/models'),
    get('/api/v1/datasets?state=ready'), get('/api/v1/datasets')]);
  const wanted = params.get('model');
  const model = h('select', { required: true },
    h('optgroup', { label: t('models.registered') }, models.registered.map((r) => h('option', { value: r.ref, selected: r.ref === wanted }, r.ref))),
    h('optgroup', { label: t('models.base') }, models.data.map((m) => h('option', { value: m.name, selected: m.name === wanted }, m.name))));
  const dataset = h('select', { required: true }, datasets.data.map((d) => h('option', { value: d.id }, `${d.name} (${d.id})`)));
  const datasetName = new Map(allDatasets.data.map((d) => [d.id, d.name]));
  const compare = h('input', { type: 'checkbox', checked: true });
  const samples = h('input', { type: 'number', min: '1', value: '20' });
  const tokens = h('input', { type: 'number', min: '1', max: '4096', value: '64' });
  const runButton = h('button', { type: 'submit', class: 'primary' }, t('evals.run'));
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    runButton.disabled = true; // one click, one evaluation: enabled again when it has ended
    try {
      mine = (await post('/api/v1/evaluations', { model: model.value, dataset: dataset.value, compare_base: compare.checked,
        max_samples: Number(samples.value) || null, max_new_tokens: Number(tokens.value) || 64 })).id;
      await refresh();
    } catch (err) { mine = null; runButton.disabled = false; showError(err); }
  } }, h('div', { class: 'grid' }, field('evals.model', model), field('evals.dataset', dataset), field('evals.compare', compare, t('evals.compare_help')),
    field('evals.max_samples', samples), field('evals.max_new_tokens', tokens)), runButton);
  // Nothing to evaluate yet: say what comes first (empty selects only got the browser's "select an item").
  const missing = [
    models.registered.length || models.data.length ? null : h('li', {}, h('a', { href: '#/models' }, t('evals.need_model'))),
    datasets.data.length ? null : h('li', {}, h('a', { href: '#/datasets' }, t('evals.need_dataset'))),
  ].filter(Boolean);
  const newCard = missing.length
    ? h('div', { class: 'message info inline first-steps', 'data-testid': 'first-steps' }, h('p', {}, t('evals.first_steps')), h('ol', {}, missing))
    : form;
  const list = h('div');
  const running = (ev) => ev.state === 'queued' || ev.state === 'running';
  const boxes = new Map(); // predictions already shown stay open across refreshes
  let mine = null; // the evaluation this page started: Run stays disabled while it runs
  let timer = null;
  let gone = false;
  function show(data) {
    fill(list, data.length ? data.map((ev) => {
      const box = boxes.get(ev.id) || h('div');
      return h('article', { class: 'card', 'data-eval': ev.id },
        h('h3', {}, `${ev.model} × ${datasetName.get(ev.dataset) || ev.dataset} `, badge(ev.state)),
        h('p', { class: 'muted' }, `${ev.id} · `, h('a', { href: `#/jobs/${ev.job}` }, ev.job), ` · ${formatTime(ev.created_at)}`),
        ev.error ? h('div', { class: 'message error inline' }, ev.error.message || String(ev.error)) : null,
        metricsTable(ev),
        ev.state === 'succeeded' ? h('button', { type: 'button', class: 'small', onclick: () => { boxes.set(ev.id, box); predictions(ev.id, box).catch(showError); } }, t('evals.show_predictions')) : null,
        box);
    }) : h('p', { class: 'muted' }, t('evals.empty')));
    runButton.disabled = !!mine && data.some((ev) => ev.id === mine && running(ev));
    // While one is queued or running the list follows it until it ends (no reload needed).
    clearTimeout(timer);
    if (data.some(running) && !gone) timer = setTimeout(() => refresh().catch(showError), 1500);
  }
  async function refresh() { show((await get('/api/v1/evaluations')).data); }
  show(evals.data);
  const element = page('evals.title', section('evals.new', newCard), section('evals.list', list));
  return { element, cleanup: () => { gone = true; clearTimeout(timer); } };
}
