// Deployments: create one from a model (adapters too), the list with state, URL and request counts.
import { get, post } from '../api.js';
import { badge, field, fill, h, page, section, table } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';
import { showError } from '../messages.js';

export async function render({ params, go }) {
  const [deps, models] = await Promise.all([get('/api/v1/deployments'), get('/api/v1/models')]);
  const model = h('select', { required: true },
    h('optgroup', { label: t('models.registered') }, models.registered.map((r) => h('option', { value: r.ref, selected: r.ref === params.get('model') }, r.ref))),
    h('optgroup', { label: t('models.base') }, models.data.map((m) => h('option', { value: m.name, selected: m.name === params.get('model') }, m.name))));
  const name = h('input', { type: 'text', pattern: '[a-z0-9][a-z0-9-]*', placeholder: t('deployments.name_auto') });
  const adapters = h('input', { type: 'text', placeholder: t('deployments.adapters_placeholder') });
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
  const row = (d) => h('tr', {},
    h('td', {}, h('a', { href: `#/deployments/${encodeURIComponent(d.name)}` }, d.name)),
    h('td', {}, badge(d.state)),
    h('td', {}, h('code', {}, d.model)),
    h('td', {}, `${d.replicas_ready ?? 0}/${d.replicas}`),
    h('td', { class: 'num' }, formatNumber(d.requests ?? 0)),
    h('td', {}, h('code', {}, (d.endpoints || {}).openai || '')),
    h('td', {}, formatTime(d.created_at)));
  const list = h('div');
  let timer = null;
  let gone = false;
  const draw = (data) => {
    fill(list, table(['deployments.name', 'deployments.state', 'deployments.model', 'deployments.replicas', 'deployments.requests', 'deployments.url', 'deployments.created'],
      data.map(row), { empty: t('deployments.empty') }));
    // A deployment settling (starting, or ready with replicas still coming) is followed until it is done:
    // the list said "starting" while its page said ready.
    clearTimeout(timer);
    if (!gone && data.some((d) => d.state === 'starting' || (d.state === 'ready' && (d.replicas_ready ?? 0) !== d.replicas))) {
      timer = setTimeout(async () => { try { draw((await get('/api/v1/deployments')).data); } catch (err) { showError(err); } }, 1500);
    }
  };
  draw(deps.data);
  const noModel = !models.registered.length && !models.data.length;
  const element = page('deployments.title',
    noModel ? h('div', { class: 'message info inline first-steps' }, t('deployments.no_model'), ' ', h('a', { href: '#/models' }, t('nav.models'))) : null,
    noModel ? null : section('deployments.new', form),
    section('deployments.list', list));
  return { element, cleanup: () => { gone = true; clearTimeout(timer); } };
}
