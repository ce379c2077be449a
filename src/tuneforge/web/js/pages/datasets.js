// Datasets: the list and an upload (drag-and-drop of files or a zip) with format, column map and
// a progress bar; an invalid upload shows every problem the API found.
import { get, upload } from '../api.js';
import { badge, field, h, fill, page, section, table } from '../dom.js';
import { formatBytes, formatNumber, formatTime, t } from '../i18n.js';
import { errorText, problemList, showInfo } from '../messages.js';

const FORMATS = ['auto', 'alpaca', 'sharegpt', 'conversations', 'openai', 'prompt_completion', 'preference', 'kto', 'mapped', 'text'];

export function datasetRow(d) {
  return h('tr', {},
    h('td', {}, h('a', { href: `#/datasets/${encodeURIComponent(d.id)}` }, d.name)),
    h('td', {}, badge(d.state)),
    h('td', {}, h('code', {}, d.format || '')),
    h('td', { class: 'num' }, formatNumber(d.records)),
    h('td', { class: 'num' }, formatBytes(d.bytes)),
    h('td', {}, formatTime(d.created_at)));
}

function uploadCard(onDone) {
  let files = [];
  const input = h('input', { type: 'file', multiple: true, accept: '.json,.jsonl,.csv,.parquet,.zip,.txt,.tsv' });
  const chosen = h('p', { class: 'muted', 'aria-live': 'polite' }, t('upload.none'));
  const setFiles = (list) => {
    files = [...list];
    chosen.textContent = files.length ? files.map((f) => `${f.name} (${formatBytes(f.size)})`).join(', ') : t('upload.none');
  };
  input.addEventListener('change', () => setFiles(input.files));
  const zone = h('div', { class: 'dropzone', tabindex: '0', role: 'button', 'aria-describedby': 'drop-help',
    onclick: () => input.click(),
    onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); input.click(); } },
    ondragover: (e) => { e.preventDefault(); zone.classList.add('over'); },
    ondragleave: () => zone.classList.remove('over'),
    ondrop: (e) => { e.preventDefault(); zone.classList.remove('over'); setFiles(e.dataTransfer.files); },
  }, h('span', { id: 'drop-help' }, t('upload.drop')));
  const name = h('input', { type: 'text', name: 'name', autocomplete: 'off' });
  const format = h('select', { name: 'format', class: 'code' }, FORMATS.map((f) => h('option', { value: f }, f === 'auto' ? t('upload.auto') : f)));
  const map = h('input', { type: 'text', name: 'map', placeholder: 'prompt=question,response=answer', autocomplete: 'off' });
  const bar = h('progress', { max: '1', value: '0', hidden: true, 'aria-label': t('upload.progress') });
  const result = h('div', { class: 'upload-result', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'primary' }, t('upload.submit'));
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    fill(result);
    if (!files.length) { fill(result, h('p', { class: 'error-text' }, t('upload.pick_first'))); return; }
    const body = new FormData();
    for (const f of files) body.append('files', f, f.name);
    if (name.value) body.append('name', name.value);
    if (format.value !== 'auto') body.append('format', format.value);
    if (map.value) body.append('map', map.value);
    bar.hidden = false; bar.value = 0; button.disabled = true;
    try {
      const ds = await upload('/api/v1/datasets', body, (p) => { bar.value = p; });
      bar.value = 1;
      showInfo(t('upload.stored', { name: ds.name, n: ds.records }));
      onDone(ds);
    } catch (err) {
      fill(result, h('div', { class: 'message error inline' },
        h('p', {}, h('strong', {}, t('upload.invalid')), ' ', errorText(err)),
        err.problems && err.problems.length ? problemList(err.problems) : null));
    } finally { button.disabled = false; }
  } },
  zone, input, chosen,
  h('div', { class: 'row' },
    field('upload.name', name, t('upload.name_help')),
    field('upload.format', format, t('upload.format_help')),
    field('upload.map', map, t('upload.map_help'))),
  bar, button, result);
  input.id = 'upload-files';
  input.className = 'visually-hidden';
  const label = h('label', { for: 'upload-files', class: 'visually-hidden' }, t('upload.files'));
  form.prepend(label);
  return section('upload.title', form);
}

export async function render({ go }) {
  const { data } = await get('/api/v1/datasets');
  const list = table(['datasets.name', 'datasets.state', 'datasets.format', 'datasets.records', 'datasets.size', 'datasets.created'],
    data.map(datasetRow), { empty: t('datasets.empty') });
  return page('datasets.title',
    uploadCard((ds) => go(`/datasets/${encodeURIComponent(ds.id)}`)),
    section('datasets.list', list));
}
