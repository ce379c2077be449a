// Models: base models in the store, registered fine-tunes with their lineage (base → job → model),
// pull the default model, import one from a path on the server.
import { get, post } from '../api.js';
import { field, h, fill, page, section, table } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';
import { showError, showInfo } from '../messages.js';

function baseRow(m) {
  const files = Object.keys(m.files || {});
  return h('tr', {},
    h('td', {}, h('strong', {}, m.name)),
    h('td', {}, m.kind || ''),
    h('td', {}, m.architecture || ''),
    h('td', { class: 'num' }, m.parameters ? `${(m.parameters / 1e6).toFixed(1)}M` : ''),
    h('td', { class: 'num' }, formatNumber(m.context_length)),
    h('td', {}, m.source || ''),
    h('td', {}, files.length ? h('details', {}, h('summary', {}, t('models.n_files', { n: files.length })), h('ul', { class: 'plain small' }, files.map((f) => h('li', {}, h('code', {}, f))))) : ''),
    h('td', {}, h('a', { class: 'button small', href: `#/deployments?model=${encodeURIComponent(m.name)}` }, t('models.deploy'))));
}

function registeredRow(r) {
  const lin = r.lineage || {};
  const metrics = lin.metrics || {};
  const loss = metrics.eval_loss ?? metrics.loss ?? metrics.train_loss;
  return h('tr', {},
    h('td', {}, h('strong', {}, r.ref)),
    h('td', {}, h('span', { class: 'lineage' },
      h('code', {}, r.base_model), ' → ', h('a', { href: `#/jobs/${encodeURIComponent(r.job)}` }, r.job),
      ` (${r.checkpoint})`, ' → ', h('code', {}, r.ref))),
    h('td', {}, (lin.datasets || []).join(', ')),
    h('td', {}, [lin.method, lin.finetuning].filter(Boolean).join(' · ')),
    h('td', { class: 'num' }, loss !== undefined ? formatNumber(loss) : ''),
    h('td', {}, formatTime(r.created_at)),
    h('td', {}, h('a', { class: 'button small', href: `#/deployments?model=${encodeURIComponent(r.ref)}` }, t('models.deploy'))));
}

/** A form whose submit runs `action()` with a busy indicator (the API answers when the work is done). */
function busyForm(children, action) {
  const bar = h('progress', { hidden: true, 'aria-label': t('models.working') });
  const button = children.find((c) => c.tagName === 'BUTTON');
  return h('form', { onsubmit: async (e) => {
    e.preventDefault();
    bar.hidden = false; button.disabled = true;
    try { await action(); } catch (err) { showError(err); } finally { bar.hidden = true; button.disabled = false; }
  } }, ...children, bar);
}

export async function render() {
  const body = h('div');
  async function load() {
    const models = await get('/api/v1/models');
    fill(body,
      section('models.base', table(['models.name', 'models.kind', 'models.architecture', 'models.parameters', 'models.context', 'models.source', 'models.files', 'common.actions'], models.data.map(baseRow))),
      section('models.registered', table(['models.ref', 'models.lineage', 'models.datasets', 'models.method', 'models.loss', 'models.created', 'common.actions'], models.registered.map(registeredRow))));
  }
  await load();
  const pullName = h('input', { type: 'text', value: 'smollm2-135m-instruct', required: true });
  const pull = busyForm([field('models.pull_name', pullName, t('models.pull_help')), h('button', { type: 'submit' }, t('models.pull'))], async () => {
    const info = await post('/api/v1/models/pull', { name: pullName.value });
    showInfo(t('models.pulled', { name: info.name || pullName.value }));
    await load();
  });
  const path = h('input', { type: 'text', required: true, placeholder: '/srv/models/my-model' });
  const importName = h('input', { type: 'text' });
  const imp = busyForm([field('models.import_path', path, t('models.import_help')), field('models.import_name', importName), h('button', { type: 'submit' }, t('models.import'))], async () => {
    const info = await post('/api/v1/models/import', { path: path.value, name: importName.value || null });
    showInfo(t('models.imported', { name: info.name || path.value }));
    await load();
  });
  return page('models.title', body, h('div', { class: 'columns' }, section('models.pull_title', pull), section('models.import_title', imp)));
}
