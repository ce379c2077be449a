// New job: template, base model, dataset(s), and a form generated from the template's JSON schema
// (defaults filled in, help texts from the descriptions); 422 field paths land beside their fields.
// "Show as command" gives the same job as `tuneforge jobs create …` and as a YAML spec.
import { get, post, upload } from '../api.js';
import { copyButton, field, h, fill, page, section } from '../dom.js';
import { fieldHelp, fieldLabel, t } from '../i18n.js';
import { clearMessages, errorText, problemText, showError } from '../messages.js';

// The spec sections the form shows (model, datasets, output and resume are asked for elsewhere).
const SECTIONS = [
  ['train', null],
  ['lora', null],
  ['data', ['max_len', 'val_fraction', 'packing', 'mask', 'truncation', 'chat_template']],
  // GRPO only; grpo.rewards (a list of rewards) goes in the extra box: grpo.rewards=[exact_match, {length: 24}]
  ['grpo', ['num_generations', 'beta', 'max_completion_length', 'temperature', 'use_vllm']],
  ['resources', ['gpus', 'strategy']],
];
// What a user sets first; the rest folds under "Advanced". A method's own keys (dpo_beta, …) join these.
const BASIC = ['train.learning_rate', 'train.epochs', 'train.max_steps', 'train.batch_size', 'train.grad_accum',
  'data.max_len', 'lora.r', 'lora.alpha', 'lora.dropout', 'grpo.num_generations', 'grpo.max_completion_length', 'grpo.beta'];
// The train keys of the preference methods and the methods that read them (dpo_beta is the beta of each of
// their losses: train/kto.py, orpo.py, simpo.py); any other `<method>_` key is that method's alone.
const METHOD_KEYS = {
  dpo_beta: ['dpo', 'kto', 'orpo', 'simpo'], kto_desirable_weight: ['kto'], kto_undesirable_weight: ['kto'],
  simpo_gamma: ['simpo'], cpo_alpha: ['simpo'],
};

function resolve(schema, node) {
  if (node && node.$ref) return resolve(schema, schema.$defs[node.$ref.split('/').pop()]);
  return node;
}

/** The JSON schema property reduced to {type, enum, nullable}. */
function kindOf(schema, prop) {
  const options = (prop.anyOf || [prop]).map((p) => resolve(schema, p));
  const nullable = options.some((o) => o.type === 'null');
  const real = options.filter((o) => o.type !== 'null');
  const enumValues = real.flatMap((o) => o.enum || (o.const !== undefined ? [o.const] : []));
  if (real.length === 1 && real[0].enum) return { type: 'enum', values: real[0].enum, nullable };
  if (real.some((o) => o.type === 'array')) return { type: 'list', values: enumValues, nullable };
  const type = real[0] ? real[0].type : 'string';
  return { type, nullable, min: real[0] && (real[0].minimum ?? real[0].exclusiveMinimum), max: real[0] && (real[0].maximum ?? real[0].exclusiveMaximum) };
}

/** An empty nullable field means "auto" or "off": the placeholder says what its help says. */
function emptyMeans(description) { return /off when empty/i.test(description || '') ? t('newjob.off') : t('newjob.auto'); }

function control(path, kind, value, description) {
  if (kind.type === 'boolean') return h('input', { type: 'checkbox', 'data-path': path, checked: !!value });
  if (kind.type === 'enum') {
    return h('select', { 'data-path': path }, kind.nullable ? h('option', { value: '' }, t('newjob.unset')) : null,
      kind.values.map((v) => h('option', { value: v, selected: v === value }, v)));
  }
  const text = value === null || value === undefined ? '' : Array.isArray(value) ? value.join(',') : String(value);
  if (kind.type === 'integer' || kind.type === 'number') {
    return h('input', { type: 'number', step: kind.type === 'integer' ? '1' : 'any', 'data-path': path, value: text,
      min: kind.min, max: kind.max, placeholder: kind.nullable ? emptyMeans(description) : null });
  }
  return h('input', { type: 'text', 'data-path': path, value: text, placeholder: kind.nullable ? emptyMeans(description) : null });
}

function readControl(el, kind) {
  if (kind.type === 'boolean') return el.checked;
  const raw = el.value.trim();
  if (raw === '') return null;
  if (kind.type === 'integer' || kind.type === 'number') return Number(raw);
  if (kind.type === 'list') return kind.values.includes(raw) ? raw : raw.split(',').map((s) => s.trim()).filter(Boolean);
  return raw;
}

/** The "extra arguments" box: one dotted `key=value` a line, the value read as YAML's scalars and lists are. */
export function extraOverrides(text) {
  const out = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
    const cut = line.indexOf('=');
    if (cut < 1) throw new Error(t('newjob.extra_bad', { line }));
    const raw = line.slice(cut + 1).trim();
    let value;
    try { value = JSON.parse(raw); } catch {
      value = /^\[.*\]$/.test(raw) ? raw.slice(1, -1).split(',').map((x) => x.trim()).filter(Boolean) : raw;
    }
    out[line.slice(0, cut).trim()] = value;
  }
  return out;
}

function same(a, b) { return JSON.stringify(a ?? null) === JSON.stringify(b ?? null); }

/** A YAML rendering of plain JSON data (enough for a spec). */
export function toYaml(value, indent = '') {
  const scalar = (v) => (v === null ? 'null' : typeof v === 'string' ? (/^[\w.@/:-]+$/.test(v) && !/^(true|false|null|yes|no|[\d.eE+-]+)$/i.test(v) ? v : JSON.stringify(v)) : String(v));
  if (Array.isArray(value)) {
    if (!value.length) return ' []';
    return value.map((v) => (v && typeof v === 'object' ? `\n${indent}-${toYaml(v, `${indent}  `).replace(/^\n\s*/, ' ')}` : `\n${indent}- ${scalar(v)}`)).join('');
  }
  if (value && typeof value === 'object') {
    return Object.entries(value).map(([k, v]) => (v && typeof v === 'object' ? `\n${indent}${k}:${toYaml(v, `${indent}  `)}` : `\n${indent}${k}: ${scalar(v)}`)).join('');
  }
  return ` ${scalar(value)}`;
}

function shellQuote(s) { return /^[\w.,@/:=+-]+$/.test(s) ? s : `'${String(s).replace(/'/g, "'\\''")}'`; }

/** argv from one line: whitespace-separated, with '…' and "…" quoting. */
export function splitArgs(line) {
  const out = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(line))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2] !== undefined ? m[2] : m[3]);
  return out;
}

function placeErrors(form, problems) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const unplaced = [];
  let first = null;
  for (const p of problems) {
    let loc = (p.loc || []).map(String);
    if (loc[0] === 'spec' || loc[0] === 'body') loc = loc.slice(1);
    if (loc[0] === 'overrides' && loc[1]) loc = loc[1].split('.');
    let key = loc.join('.');
    if (key.startsWith('data.train')) key = 'datasets';
    else if (key.startsWith('data.validation')) key = 'validation_dataset';
    else if (!form.querySelector(`[data-path="${CSS.escape(key)}"]`)) key = loc.slice(0, 2).join('.');
    const input = form.querySelector(`[data-path="${CSS.escape(key)}"]`);
    const slot = input && form.querySelector(`#${CSS.escape(input.id)}-error`);
    if (slot) {
      slot.textContent = problemText(p);
      input.setAttribute('aria-invalid', 'true');
      first = first || input;
    } else unplaced.push(p);
  }
  if (first) first.focus();
  return unplaced;
}

async function commandForm(datasets, models) {
  const name = h('input', { type: 'text', 'data-path': 'name', required: true });
  const command = h('input', { type: 'text', 'data-path': 'command', required: true, placeholder: 'python train.py --steps 20' });
  const code = h('input', { type: 'file', accept: '.zip', 'data-path': 'code' });
  const dsSel = h('select', { 'data-path': 'datasets' }, h('option', { value: '' }, t('newjob.none')), datasets.map((d) => h('option', { value: d.id }, `${d.name} (${d.id})`)));
  const dsPath = h('input', { type: 'text', value: 'data', 'data-path': 'datasets.0.path' });
  const modelSel = h('select', { 'data-path': 'models' }, h('option', { value: '' }, t('newjob.none')), models.map((m) => h('option', { value: m.name }, m.name)));
  const modelPath = h('input', { type: 'text', value: 'base', 'data-path': 'models.0.path' });
  const env = h('textarea', { rows: '3', 'data-path': 'env', placeholder: 'EPOCHS=1' });
  const gpus = h('input', { type: 'number', min: '0', value: '0', 'data-path': 'gpus' });
  const limit = h('input', { type: 'number', min: '1', 'data-path': 'time_limit_s' });
  const restart = h('select', { 'data-path': 'restart_policy' }, h('option', { value: 'never' }, t('newjob.restart_never')), h('option', { value: 'on-failure' }, t('newjob.restart_on_failure')));
  const retries = h('input', { type: 'number', min: '0', max: '20', value: '0', 'data-path': 'max_retries' });
  const preview = h('pre', { class: 'command', hidden: true });
  const body = () => {
    const b = { kind: 'command', name: name.value, command: splitArgs(command.value), gpus: Number(gpus.value || 0),
      restart_policy: restart.value, max_retries: Number(retries.value || 0) };
    if (dsSel.value) b.datasets = [{ name: dsSel.value, path: dsPath.value }];
    if (modelSel.value) b.models = [{ name: modelSel.value, path: modelPath.value }];
    const envs = Object.fromEntries(env.value.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => [l.split('=')[0], l.split('=').slice(1).join('=')]));
    if (Object.keys(envs).length) b.env = envs;
    if (limit.value) b.time_limit_s = Number(limit.value);
    return b;
  };
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    try {
      const b = body();
      if (code.files.length) {
        const fd = new FormData();
        fd.append('file', code.files[0]);
        b.code = (await upload('/api/v1/jobs/code', fd, () => {})).id;
      }
      const job = await post('/api/v1/jobs', b);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      const rest = placeErrors(form, err.problems || []);
      if (rest.length || !(err.problems || []).length) showError({ ...err, message: errorText(err), problems: rest });
    }
  } },
  h('div', { class: 'grid' }, field('newjob.job_name', name), field('newjob.command', command, t('newjob.command_help')),
    field('newjob.code', code, t('newjob.code_help')), field('newjob.env', env, t('newjob.env_help')),
    field('newjob.mount_dataset', dsSel), field('newjob.mount_dataset_path', dsPath),
    field('newjob.mount_model', modelSel), field('newjob.mount_model_path', modelPath),
    field('newjob.gpus', gpus), field('newjob.time_limit', limit), field('newjob.restart', restart), field('newjob.max_retries', retries)),
  h('div', { class: 'actions' },
    h('button', { type: 'button', onclick: () => { preview.hidden = false; preview.textContent = `curl -X POST $TUNEFORGE_URL/api/v1/jobs \\\n  -H "Authorization: Bearer $TUNEFORGE_TOKEN" -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body())}'`; } }, t('newjob.show_command')),
    h('button', { type: 'submit', class: 'primary' }, t('newjob.start'))),
  preview);
  return form;
}

export async function render({ params, kept }) {
  const [templates, models, datasets] = await Promise.all([get('/api/v1/templates'), get('/api/v1/models'), get('/api/v1/datasets?state=ready')]);
  const names = templates.data.map((x) => x.name);
  const kindSel = h('select', { 'data-path': 'kind' }, h('option', { value: 'train' }, t('newjob.kind_train')), h('option', { value: 'command' }, t('newjob.kind_command')));
  const templateSel = h('select', { 'data-path': 'template' }, names.map((n) => h('option', { value: n, selected: n === params.get('template') }, n)));
  const modelSel = h('select', { 'data-path': 'model', required: true }, models.data.map((m) => h('option', { value: m.name }, m.name)));
  const dsBoxes = h('fieldset', { class: 'checks', 'data-path': 'datasets', tabindex: '-1', id: 'datasets-field' },
    h('legend', {}, t('newjob.datasets')),
    datasets.data.length ? datasets.data.map((d) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: d.id, checked: d.id === params.get('dataset') || datasets.data.length === 1 }), ` ${d.name} `, h('span', { class: 'muted' }, `${d.id} · ${d.records}`)))
      : h('p', { class: 'muted' }, h('a', { href: '#/datasets' }, t('newjob.upload_first'))),
    h('small', { class: 'field-error', id: 'datasets-field-error', role: 'alert' }));
  const valSel = h('select', { 'data-path': 'validation_dataset' }, h('option', { value: '' }, t('newjob.none')), datasets.data.map((d) => h('option', { value: d.id }, d.name)));
  const restart = h('select', { 'data-path': 'restart_policy' }, h('option', { value: 'never' }, t('newjob.restart_never')), h('option', { value: 'on-failure' }, t('newjob.restart_on_failure')));
  const retries = h('input', { type: 'number', min: '0', max: '20', value: '0', 'data-path': 'max_retries' });
  const priority = h('input', { type: 'number', min: '-1000', max: '1000', value: '0', 'data-path': 'priority' });
  const basicBox = h('div', { class: 'grid' });
  const advancedBox = h('div');
  const extra = h('textarea', { rows: '3', 'data-path': 'extra', spellcheck: 'false', placeholder: 'train.neftune_alpha=5\nlora.target_modules=[q_proj,v_proj]' });
  const advanced = h('details', { class: 'advanced' }, h('summary', {}, t('newjob.advanced')), advancedBox,
    h('div', { class: 'card' }, field('newjob.extra', extra, t('newjob.extra_help'))));
  const preview = h('div', { class: 'as-command', hidden: true });
  let controls = [];
  let current = null;

  function build() {
    current = templates.data.find((x) => x.name === templateSel.value);
    const schema = current.schema;
    const methods = (resolve(schema, schema.properties.method) || {}).enum || [];
    // Another method's keys (dpo_beta on SFT) are not this template's: not shown; this method's are basic.
    const mine = (key) => (METHOD_KEYS[key] || []).includes(current.method) || key.startsWith(`${current.method}_`);
    const foreign = (key) => !mine(key) && (key in METHOD_KEYS || methods.some((m) => key.startsWith(`${m}_`)));
    controls = [];
    const basic = [];
    const cards = SECTIONS.map(([sec, only]) => {
      if ((sec === 'lora' && current.finetuning === 'full') || (sec === 'grpo' && current.method !== 'grpo')) return null;
      const node = resolve(schema, schema.properties[sec]);
      const keys = (only || Object.keys(node.properties)).filter((key) => node.properties[key] && !foreign(key)
        && !(current.method === 'pretrain' && sec === 'data' && key === 'mask'));
      const inputs = keys.flatMap((key) => {
        const prop = node.properties[key];
        const kind = kindOf(schema, prop);
        const path = `${sec}.${key}`;
        const fallback = sec === 'train' && key === 'learning_rate' ? current.default_learning_rate : undefined;
        const value = (current.defaults[sec] || {})[key] ?? fallback ?? prop.default;
        const el = control(path, kind, value, prop.description);
        controls.push({ path, kind, el, initial: readControl(el, kind) });
        const help = [fieldHelp(path, prop.description), value !== undefined && value !== null ? t('newjob.default', { v: Array.isArray(value) ? value.join(',') : value }) : null].filter(Boolean).join(' ');
        const label = h('span', {}, fieldLabel(path), ' ', h('code', { class: 'key' }, key));
        const one = field(label, el, help);
        if (BASIC.includes(path) || (sec === 'train' && mine(key))) { basic.push(one); return []; }
        return [one];
      });
      return inputs.length ? h('fieldset', { class: 'card' }, h('legend', {}, t(`newjob.section_${sec}`)), h('div', { class: 'grid' }, inputs)) : null;
    });
    fill(basicBox, basic);
    fill(advancedBox, cards);
  }

  /** What the user has typed or picked, by field: kept across a language switch (the page is drawn again). */
  function values() {
    const out = {};
    for (const el of holder.querySelectorAll('[data-path]')) {
      if (el.type === 'file' || el.tagName === 'FIELDSET') continue;
      out[el.dataset.path] = el.type === 'checkbox' ? el.checked : el.value;
    }
    out._train_datasets = [...dsBoxes.querySelectorAll('input:checked')].map((i) => i.value);
    return out;
  }
  function restore(saved) {
    for (const el of holder.querySelectorAll('[data-path]')) {
      const v = saved[el.dataset.path];
      if (v === undefined || el.type === 'file' || el.tagName === 'FIELDSET') continue;
      if (el.type === 'checkbox') el.checked = v; else el.value = v;
    }
    for (const box of dsBoxes.querySelectorAll('input[type=checkbox]')) box.checked = (saved._train_datasets || []).includes(box.value);
  }

  function request() {
    const overrides = {};
    const resources = {};
    for (const c of controls) {
      const v = readControl(c.el, c.kind);
      if (c.path.startsWith('resources.')) { if (!same(v, c.initial)) resources[c.path.split('.')[1]] = v; continue; }
      if (!same(v, c.initial)) overrides[c.path] = v;
    }
    Object.assign(overrides, extraOverrides(extra.value));
    const body = {
      template: templateSel.value, model: modelSel.value,
      datasets: [...dsBoxes.querySelectorAll('input:checked')].map((i) => i.value),
      overrides, restart_policy: restart.value, max_retries: Number(retries.value || 0), priority: Number(priority.value || 0),
    };
    if (valSel.value) body.validation_dataset = valSel.value;
    if (Object.keys(resources).length) body.resources = resources;
    return body;
  }

  function showCommand() {
    const b = request();
    const args = ['tuneforge', 'jobs', 'create', '--template', b.template, '--model', b.model, ...b.datasets.flatMap((d) => ['--dataset', d])];
    if (b.validation_dataset) args.push('--validation', b.validation_dataset);
    for (const [k, v] of Object.entries(b.overrides)) args.push('--set', `${k}=${Array.isArray(v) ? `[${v.join(',')}]` : v ?? 'null'}`);
    if (b.resources && b.resources.gpus !== undefined) args.push('--gpus', String(b.resources.gpus));
    if (b.restart_policy !== 'never') args.push('--restart', b.restart_policy, '--max-retries', String(b.max_retries));
    if (b.priority) args.push('--priority', String(b.priority));
    // One flag a line: a long command wraps between flags, never inside one.
    const command = args.map(shellQuote).join(' ').replace(/ (--[a-z])/g, ' \\\n  $1');
    const spec = { template: b.template, model: b.model, data: { train: b.datasets.map((path) => ({ path })) } };
    if (b.validation_dataset) spec.data.validation = { path: b.validation_dataset };
    for (const [k, v] of Object.entries(b.overrides)) {
      const parts = k.split('.');
      let node = spec;
      for (const p of parts.slice(0, -1)) node = node[p] = node[p] || {};
      node[parts.at(-1)] = v;
    }
    if (b.resources) spec.resources = b.resources;
    const yaml = toYaml(spec).replace(/^\n/, '');
    preview.hidden = false;
    fill(preview,
      h('h3', {}, t('newjob.as_command')), h('pre', { class: 'command', 'data-testid': 'cli' }, command), copyButton(() => command),
      h('h3', {}, t('newjob.as_yaml')), h('pre', { class: 'command', 'data-testid': 'yaml' }, yaml), copyButton(() => yaml),
      h('p', { class: 'muted' }, t('newjob.yaml_help')));
  }

  templateSel.addEventListener('change', build);
  if (kept && kept.values && kept.values.template) templateSel.value = kept.values.template;
  build();
  const trainForm = h('form', { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    clearMessages();
    try {
      const job = await post('/api/v1/jobs', request());
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      const rest = placeErrors(trainForm, err.problems || []);
      if (rest.length || !(err.problems || []).length) showError({ status: err.status, message: errorText(err), problems: rest });
      else showError({ status: err.status, message: t('newjob.fix_fields') }, { problems: false });
    }
  } },
  section('newjob.basics', h('div', { class: 'grid' },
    field('newjob.template', templateSel, t('newjob.template_help')),
    field('newjob.model', modelSel, t('newjob.model_help')),
    dsBoxes,
    field('newjob.validation', valSel, t('newjob.validation_help')))),
  section('newjob.main', basicBox),
  advanced,
  section('newjob.policy', h('div', { class: 'grid' },
    field('newjob.restart', restart, t('newjob.restart_help')),
    field('newjob.max_retries', retries),
    field('newjob.priority', priority, t('newjob.priority_help')))),
  h('div', { class: 'actions' },
    h('button', { type: 'button', onclick: () => { try { showCommand(); } catch (err) { showError(err); } } }, t('newjob.show_command')),
    h('button', { type: 'submit', class: 'primary' }, t('newjob.start'))),
  preview);
  const holder = h('div', {}, trainForm);
  const showKind = async () => {
    if (kindSel.value === 'command') fill(holder, section('newjob.command_title', await commandForm(datasets.data, models.data)));
    else fill(holder, trainForm);
  };
  kindSel.addEventListener('change', showKind);
  if (kept && kept.values) {
    kindSel.value = kept.values.kind || 'train';
    await showKind();
    restore(kept.values);
    advanced.open = !!kept.advanced;
  }
  // Nothing to train yet: say what comes first, with links (the form alone said "required").
  const missing = [
    models.data.length ? null : h('li', {}, h('a', { href: '#/models' }, t('newjob.need_model'))),
    datasets.data.length ? null : h('li', {}, h('a', { href: '#/datasets' }, t('newjob.need_dataset'))),
  ].filter(Boolean);
  const first = missing.length ? h('div', { class: 'message info inline', 'data-testid': 'first-steps' }, h('p', {}, t('newjob.first_steps')), h('ol', {}, missing)) : null;
  const element = page('newjob.title', first, h('div', { class: 'card' }, field('newjob.kind', kindSel, t('newjob.kind_help'))), holder);
  return { element, keep: () => ({ values: { ...values(), kind: kindSel.value }, advanced: advanced.open }) };
}
