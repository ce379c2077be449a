// Models: base models in the store, registered fine-tunes with their lineage (base → job → model),
// pull the default model, import one from a path on the server; both show their live progress.
import { get, post } from '../api.js';
import { field, h, fill, page, section, table } from '../dom.js';
import { formatBytes, formatNumber, formatTime, t } from '../i18n.js';
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

const BYTE_STAGES = new Set(['download', 'extract', 'read']);
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** "downloading 12.0 MiB / 90.1 MiB" from a pull's stage and done/total (bytes or a count). */
function stageText(p) {
  if (!p.stage) return t('models.starting');
  const label = t(`models.stage.${p.stage}`);
  if (!p.total) return label;
  const fmt = BYTE_STAGES.has(p.stage) ? formatBytes : (n) => String(Math.round(n));
  return `${label} ${fmt(p.done || 0)} / ${fmt(p.total)}`;
}

/**
 * A form whose submit starts a pull/import with `wait: false`, then polls its progress until it ends:
 * a bar (indeterminate while the stage has no total) and the stage text. Resolves to the model record.
 */
function pullForm(children, start, done) {
  const bar = h('progress', { hidden: true, 'aria-label': t('models.working') });
  const status = h('small', { class: 'help pull-status', role: 'status', 'aria-live': 'polite' });
  const button = children.find((c) => c.tagName === 'BUTTON');
  function show(p) {
    if (p.total) { bar.max = p.total; bar.value = p.done || 0; } else bar.removeAttribute('value');
    status.textContent = stageText(p);
  }
  return h('form', { onsubmit: async (e) => {
    e.preventDefault();
    bar.hidden = false; button.disabled = true; status.textContent = t('models.starting');
    bar.removeAttribute('value');
    try {
      let p = await post(...start());
      while (p.state === 'running') {
        show(p);
        await sleep(700);
        if (!bar.isConnected) return; // the page was left: stop polling (the pull goes on)
        p = await get(`/api/v1/models/pulls/${encodeURIComponent(p.id)}`);
      }
      if (p.state === 'failed') throw new Error(p.error || t('models.failed'));
      await done(p.model || {});
    } catch (err) { showError(err); } finally { bar.hidden = true; button.disabled = false; status.textContent = ''; }
  } }, ...children, bar, status);
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
  const pull = pullForm([field('models.pull_name', pullName, t('models.pull_help')), h('button', { type: 'submit' }, t('models.pull'))],
    () => ['/api/v1/models/pull', { name: pullName.value, wait: false }],
    async (info) => { showInfo(t('models.pulled', { name: info.name || pullName.value })); await load(); });
  const path = h('input', { type: 'text', required: true, placeholder: '/srv/models/my-model' });
  const importName = h('input', { type: 'text' });
  const imp = pullForm([field('models.import_path', path, t('models.import_help')), field('models.import_name', importName), h('button', { type: 'submit' }, t('models.import'))],
    () => ['/api/v1/models/import', { path: path.value, name: importName.value || null, wait: false }],
    async (info) => { showInfo(t('models.imported', { name: info.name || path.value })); await load(); });
  return page('models.title', body, h('div', { class: 'columns' }, section('models.pull_title', pull), section('models.import_title', imp)));
}
