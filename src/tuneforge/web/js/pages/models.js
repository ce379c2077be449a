// Models: base models in the store, registered fine-tunes with their lineage (base → job → model),
// pull the default model, import one from a path on the server, export one (GGUF + Ollama Modelfile, or
// merged weights registered as a new version: LLaMA-Factory's Export tab); all show their live progress.
import { del, get, post } from '../api.js';
import { field, h, fill, page, section, table } from '../dom.js';
import { formatBytes, formatNumber, formatTime, t } from '../i18n.js';
import { showError, showInfo } from '../messages.js';

function baseRow(m) {
  const files = Object.keys(m.files || {});
  return h('tr', {},
    h('td', {}, h('strong', {}, m.name)),
    h('td', {}, h('code', {}, m.kind || '')),
    h('td', {}, h('code', {}, m.architecture || '')),
    h('td', { class: 'num' }, m.parameters ? `${(m.parameters / 1e6).toFixed(1)}M` : ''),
    h('td', { class: 'num' }, formatNumber(m.context_length)),
    h('td', {}, h('code', {}, m.source || '')),
    h('td', {}, files.length ? h('details', {}, h('summary', {}, t('models.n_files', { n: files.length })), h('ul', { class: 'plain small' }, files.map((f) => h('li', {}, h('code', {}, f))))) : ''),
    h('td', {}, h('div', { class: 'actions' },
      h('a', { class: 'button small', href: `#/deployments?model=${encodeURIComponent(m.name)}` }, t('models.deploy')),
      h('a', { class: 'button small', href: `#/evaluations?model=${encodeURIComponent(m.name)}` }, t('models.evaluate')))));
}

function registeredRow(r, reload) {
  const q = encodeURIComponent(r.ref);
  const lin = r.lineage || {};
  const metrics = lin.metrics || {};
  const loss = metrics.eval_loss ?? metrics.loss ?? metrics.train_loss;
  return h('tr', {},
    h('td', {}, h('strong', {}, r.ref)),
    h('td', {}, h('span', { class: 'lineage' },
      h('code', {}, r.base_model), ' → ', h('a', { href: `#/jobs/${encodeURIComponent(r.job)}` }, r.job),
      ' (', h('code', {}, r.checkpoint), ') → ', h('code', {}, r.ref))),
    h('td', {}, (lin.datasets || []).join(', ')),
    h('td', {}, h('code', {}, [lin.method, lin.finetuning].filter(Boolean).join(' · '))),
    h('td', { class: 'num' }, loss !== undefined ? formatNumber(loss) : ''),
    h('td', {}, formatTime(r.created_at)),
    h('td', {}, h('div', { class: 'actions' },
      h('a', { class: 'button small', href: `#/evaluations?model=${q}` }, t('models.evaluate')),
      h('a', { class: 'button small', href: `#/deployments?model=${q}` }, t('models.deploy')),
      h('a', { class: 'button small', href: `#/models?export=${q}` }, t('models.export')),
      h('button', { type: 'button', class: 'small danger', onclick: async () => {
        if (!window.confirm(t('models.confirm_delete', { ref: r.ref }))) return;
        try { await del(`/api/v1/models/registered/${q}`); showInfo(t('models.deleted', { ref: r.ref })); await reload(); } catch (err) { showError(err); }
      } }, t('common.delete')))));
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

const pullPath = (p) => `/api/v1/models/pulls/${encodeURIComponent(p.id)}`;

/**
 * A form whose submit starts a background operation (a pull/import with `wait: false`, an export), then
 * polls `poll(op)` until it ends: a bar (indeterminate while the stage has no total) and the stage text.
 * `done` gets the finished operation.
 */
function pullForm(children, start, done, poll = pullPath) {
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
        p = await get(poll(p));
      }
      if (p.state === 'failed') throw new Error(p.error || t('models.failed'));
      await done(p);
    } catch (err) { showError(err); } finally { bar.hidden = true; button.disabled = false; status.textContent = ''; }
  } }, ...children, bar, status);
}

const exportsPath = (name) => `/api/v1/models/${encodeURIComponent(name)}/exports`;

/** The export form: model, format, quantization, register → progress → download links. */
function exportForm(choices, reload) {
  const format = h('select', {},
    h('option', { value: 'gguf' }, t('models.export_gguf')), h('option', { value: 'merged' }, t('models.export_merged')));
  const quant = h('select', {}, ['f16', 'q8_0', 'q4_0'].map((q) => h('option', { value: q }, q)));
  const register = h('input', { type: 'checkbox', disabled: true });
  format.addEventListener('change', () => {
    quant.disabled = format.value !== 'gguf';
    register.disabled = format.value !== 'merged';
  });
  const links = h('ul', { class: 'plain export-files' });
  const form = pullForm([
    field('models.ref', choices), field('models.export_format', format), field('models.export_quant', quant),
    field('models.export_register', register, t('models.export_register_help')),
    h('button', { type: 'submit' }, t('models.export'))],
  () => {
    fill(links);
    const [name, version] = choices.value.split('@');
    const gguf = format.value === 'gguf';
    return [exportsPath(name), {
      format: format.value, quant: gguf ? quant.value : null, version: version ? Number(version) : null,
      register_version: !gguf && register.checked,
    }];
  },
  async (p) => {
    const base = `${exportsPath(p.model.split('@')[0])}/${encodeURIComponent(p.id)}/download?file=`;
    fill(links, p.files.map((f) => h('li', {},
      h('a', { href: base + encodeURIComponent(f.path), download: f.path.split('/').pop() }, f.path),
      ` (${formatBytes(f.bytes)})`)));
    showInfo(p.registered ? t('models.exported_registered', { ref: p.registered }) : t('models.exported', { name: p.model }));
    if (p.registered) await reload();
  },
  (p) => `${exportsPath(p.model.split('@')[0])}/${encodeURIComponent(p.id)}`);
  form.append(links);
  return form;
}

export async function render({ params }) {
  const body = h('div');
  const choices = h('select', { required: true });
  let wanted = params.get('export'); // "Export" from a job or a model's row: that model, preselected
  async function load() {
    const models = await get('/api/v1/models');
    const chosen = wanted || choices.value;
    wanted = null;
    fill(choices, [...models.registered.map((r) => r.ref), ...models.data.map((m) => m.name)]
      .map((n) => h('option', { value: n, selected: n === chosen }, n)));
    const noBase = h('span', {}, t('models.empty_base'));
    const noTuned = h('span', {}, t('models.empty_registered'), ' ', h('a', { href: '#/jobs/new' }, t('jobs.new')));
    fill(body,
      section('models.base', table(['models.name', 'models.kind', 'models.architecture', 'models.parameters', 'models.context', 'models.source', 'models.files', 'common.actions'], models.data.map(baseRow), { empty: noBase })),
      section('models.registered', table(['models.ref', 'models.lineage', 'models.datasets', 'models.method', 'models.loss', 'models.created', 'common.actions'], models.registered.map((r) => registeredRow(r, load)), { empty: noTuned })));
  }
  const exporting = params.has('export');
  await load();
  const pullName = h('input', { type: 'text', value: 'smollm2-135m-instruct', required: true });
  const pull = pullForm([field('models.pull_name', pullName, t('models.pull_help')), h('button', { type: 'submit' }, t('models.pull'))],
    () => ['/api/v1/models/pull', { name: pullName.value, wait: false }],
    async (p) => { showInfo(t('models.pulled', { name: p.model?.name || pullName.value })); await load(); });
  const path = h('input', { type: 'text', required: true, placeholder: '/srv/models/my-model' });
  const importName = h('input', { type: 'text' });
  const imp = pullForm([field('models.import_path', path, t('models.import_help')), field('models.import_name', importName), h('button', { type: 'submit' }, t('models.import'))],
    () => ['/api/v1/models/import', { path: path.value, name: importName.value || null, wait: false }],
    async (p) => { showInfo(t('models.imported', { name: p.model?.name || path.value })); await load(); });
  const exportCard = section('models.export_title', exportForm(choices, load));
  exportCard.id = 'export';
  const element = page('models.title', body, h('div', { class: 'columns' }, section('models.pull_title', pull), section('models.import_title', imp)), exportCard);
  // Came to export one model: its form in view (after the router's scroll to the top).
  if (exporting) setTimeout(() => { exportCard.scrollIntoView({ block: 'start' }); choices.focus({ preventScroll: true }); }, 0);
  return element;
}
