// A dataset: stats (with the token-length histogram), preview with the trained-on tokens highlighted,
// files to download, delete.
import { del, get } from '../api.js';
import { histogram } from '../chart.js';
import { badge, h, fill, page, section, table } from '../dom.js';
import { formatBytes, formatNumber, formatTime, t } from '../i18n.js';
import { roleName } from '../names.js';
import { problemList, showError, showInfo } from '../messages.js';

const KEYS = ['count', 'min', 'median', 'p95', 'max'];


/** Chat turns as the playground shows them: who, then what they said. */
function turns(messages) {
  return (messages || []).map((m) => h('div', { class: `turn ${m.role === 'user' ? 'user' : 'assistant'}` },
    h('span', { class: 'who' }, roleName(m.role)), h('div', {}, typeof m.content === 'string' ? m.content : JSON.stringify(m.content))));
}

/** One canonical record (chat, preference pair or raw text) in the conversation view, never its JSON. */
export function recordView(r, n) {
  const parts = [];
  if (Array.isArray(r.messages)) parts.push(...turns(r.messages));
  if (Array.isArray(r.prompt)) parts.push(...turns(r.prompt));
  for (const key of ['chosen', 'rejected']) {
    if (Array.isArray(r[key])) parts.push(h('div', { class: `pair ${key}` }, h('strong', {}, t(`dataset.${key}`)), turns(r[key])));
  }
  if (typeof r.text === 'string') parts.push(h('div', { class: 'turn assistant' }, h('span', { class: 'who' }, t('dataset.text')), h('div', {}, r.text)));
  if (!parts.length) parts.push(h('pre', { class: 'record' }, JSON.stringify(r, null, 1))); // a shape this view does not know
  return h('article', { class: 'record-view', translate: 'no', 'aria-label': t('dataset.record_n', { n }) }, h('span', { class: 'muted small' }, t('dataset.record_n', { n })), parts);
}

function statsView(ds) {
  const stats = ds.token_stats || ds.stats || {};
  const unit = stats.unit === 'tokens' ? t('dataset.tokens') : t('dataset.characters');
  const rows = Object.entries(stats.per_role || {}).map(([role, s]) => h('tr', {}, h('th', { scope: 'row' }, roleName(role)),
    KEYS.map((k) => h('td', { class: 'num' }, formatNumber(s[k])))));
  if (stats.sequence) rows.push(h('tr', {}, h('th', { scope: 'row' }, t('dataset.sequence')), KEYS.map((k) => h('td', { class: 'num' }, formatNumber(stats.sequence[k])))));
  const parts = [
    h('dl', { class: 'facts' },
      h('dt', {}, t('datasets.format')), h('dd', {}, h('code', {}, ds.format || '')),
      h('dt', {}, t('dataset.kind')), h('dd', {}, h('code', {}, ds.kind || '')),
      h('dt', {}, t('datasets.records')), h('dd', { 'data-testid': 'records' }, formatNumber(ds.records)),
      h('dt', {}, t('datasets.size')), h('dd', {}, formatBytes(ds.bytes)),
      h('dt', {}, t('datasets.created')), h('dd', {}, formatTime(ds.created_at)),
      stats.trained_tokens !== undefined ? [h('dt', {}, t('dataset.trained_tokens')), h('dd', {}, formatNumber(stats.trained_tokens))] : null,
      stats.over_max_len !== undefined ? [h('dt', {}, t('dataset.over_max_len', { n: stats.max_len })), h('dd', {}, formatNumber(stats.over_max_len))] : null,
      ds.tokenizer ? [h('dt', {}, t('dataset.tokenizer')), h('dd', {}, ds.tokenizer)] : null),
    h('h3', {}, t('dataset.lengths', { unit })),
    table(['dataset.role', 'dataset.count', 'dataset.min', 'dataset.median', 'dataset.p95', 'dataset.max'], rows),
  ];
  if (stats.histogram && stats.histogram.counts.length) {
    parts.push(h('h3', {}, t('dataset.histogram')), h('figure', { class: 'histogram' }, histogram(t('dataset.histogram'), stats.histogram, t('dataset.tokens'), t('dataset.records_axis'))));
  } else if (!ds.token_stats) {
    parts.push(h('p', { class: 'muted', 'data-testid': 'token-pending' }, t('dataset.tokens_pending')));
  }
  if (ds.warnings && ds.warnings.length) {
    // each warning said from its code and params (data/problem_codes.py) in the user's language
    parts.push(h('h3', {}, t('dataset.warnings')), problemList(ds.warnings.map((w) => (typeof w === 'string' ? { message: w } : w))));
  }
  return parts;
}

function previewView(preview) {
  const masked = preview.masked || [];
  const out = [];
  if (masked.length) {
    out.push(h('p', { class: 'muted' }, t('dataset.masked_help')));
    masked.forEach((pieces, i) => out.push(h('pre', { class: 'masked', 'aria-label': t('dataset.record_n', { n: i + 1 }) },
      pieces.map((p) => (p.trained ? h('mark', { title: t('dataset.trained') }, p.text) : h('span', {}, p.text))))));
  }
  out.push(h('h3', {}, t('dataset.records_title')));
  out.push(h('div', { class: 'records' }, preview.data.map((r, i) => recordView(r, i + 1))));
  return out;
}

export async function render({ args, go }) {
  const id = args[0];
  const statsBox = h('div');
  const previewBox = h('div');
  const filesBox = h('div');
  let timer = null;
  let stopped = false;
  const title = h('span', {}, id);
  const state = h('span');
  async function load(tries = 0) {
    const ds = await get(`/api/v1/datasets/${encodeURIComponent(id)}`);
    fill(title, ds.name);
    fill(state, badge(ds.state));
    if (ds.state === 'validating') { timer = setTimeout(() => load(tries + 1).catch(showError), 1000); return; }
    if (ds.state === 'invalid') { fill(statsBox, h('div', { class: 'message error inline' }, h('strong', {}, t('upload.invalid')), problemList(ds.problems))); return; }
    if (ds.id !== id) { go(`/datasets/${encodeURIComponent(ds.id)}`); return; }
    fill(statsBox, statsView(ds));
    const [preview, files] = await Promise.all([get(`/api/v1/datasets/${encodeURIComponent(ds.id)}/preview?n=5`), get(`/api/v1/datasets/${encodeURIComponent(ds.id)}/files`)]);
    fill(previewBox, previewView(preview));
    fill(filesBox, h('ul', { class: 'plain' }, files.data.map((f) => h('li', {},
      h('a', { href: `/api/v1/datasets/${encodeURIComponent(ds.id)}/files/${f.path.split('/').map(encodeURIComponent).join('/')}`, download: '' }, f.path),
      ' ', h('span', { class: 'muted' }, formatBytes(f.bytes ?? f.size))))));
    // Token statistics come from a worker after the upload: look again for a while.
    if (!ds.token_stats && tries < 60 && !stopped) timer = setTimeout(() => load(tries + 1).catch(showError), 2000);
  }
  await load();
  const remove = h('button', { type: 'button', class: 'danger', onclick: async () => {
    if (!window.confirm(t('dataset.confirm_delete', { id }))) return;
    try { await del(`/api/v1/datasets/${encodeURIComponent(id)}`); showInfo(t('dataset.deleted', { id })); go('/datasets'); } catch (err) { showError(err); }
  } }, t('common.delete'));
  const heading = h('span', {}, title, ' ', state);
  const element = page(heading,
    h('p', {}, h('a', { href: '#/datasets' }, t('common.back')), ' ', remove,
      ' ', h('a', { class: 'button', href: `#/jobs/new?dataset=${encodeURIComponent(id)}` }, t('dataset.train_on'))),
    section('dataset.stats', statsBox), section('dataset.preview', previewBox), section('dataset.files', filesBox));
  return { element, cleanup: () => { stopped = true; clearTimeout(timer); } };
}
