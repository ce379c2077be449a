// Deployments: create one from a model (adapters too), the list with state, URL and request counts.
import { get, post } from '../api.js';
import { badge, field, h, page, section, table } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';
import { showError } from '../messages.js';

export async function render({ params, go }) {
  const [deps, models] = await Promise.all([get('/api/v1/deployments'), get('/api/v1/models')]);
  const model = h('select', { required: true },
    h('optgroup', { label: t('models.registered') }, models.registered.map((r) => h('option', { value: r.ref, selected: r.ref === params.get('model') }, r.ref))),
    h('optgroup', { label: t('models.base') }, models.data.map((m) => h('option', { value: m.name, selected: m.name === params.get('model') }, m.name))));
  const name = h('input', { type: 'text', pattern: '[a-z0-9][a-z0-9-]*', placeholder: t('deployments.name_auto') });
  const adapters = h('input', { type: 'text', placeholder: 'alias=model-ref,…' });
  const engine = h('select', {}, ['auto', 'transformers', 'vllm'].map((e) => h('option', { value: e }, e)));
  const replicas = h('input', { type: 'number', min: '1', value: '1' });
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    const body = { model: model.value, engine: engine.value, replicas: Number(replicas.value) || 1 };
    if (name.value) body.name = name.value;
    if (adapters.value.trim()) body.adapters = Object.fromEntries(adapters.value.split(',').map((p) => p.trim().split('=')).filter((p) => p.length === 2));
    try { const d = await post('/api/v1/deployments', body); go(`/deployments/${encodeURIComponent(d.name)}`); } catch (err) { showError(err); }
  } }, h('div', { class: 'grid' }, field('deployments.model', model), field('deployments.name', name, t('deployments.name_help')),
    field('deployments.adapters', adapters, t('deployments.adapters_help')), field('deployments.engine', engine), field('deployments.replicas', replicas)),
  h('button', { type: 'submit', class: 'primary' }, t('deployments.create')));
  const rows = deps.data.map((d) => h('tr', {},
    h('td', {}, h('a', { href: `#/deployments/${encodeURIComponent(d.name)}` }, d.name)),
    h('td', {}, badge(d.state)),
    h('td', {}, h('code', {}, d.model)),
    h('td', {}, `${d.replicas_ready ?? 0}/${d.replicas}`),
    h('td', { class: 'num' }, formatNumber(d.requests ?? 0)),
    h('td', {}, h('code', {}, (d.endpoints || {}).openai || '')),
    h('td', {}, formatTime(d.created_at))));
  return page('deployments.title', section('deployments.new', form),
    section('deployments.list', table(['deployments.name', 'deployments.state', 'deployments.model', 'deployments.replicas', 'deployments.requests', 'deployments.url', 'deployments.created'], rows)));
}
