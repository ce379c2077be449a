// A job: live log (SSE; autoscroll that pauses when you scroll up), live loss and learning-rate charts
// (and the method's own: rewards, KL, … see method_charts.js), events timeline, checkpoints with
// "register as model", files, cancel / resume / retry.
import { follow, get, post } from '../api.js';
import { lineChart } from '../chart.js';
import { badge, field, h, fill, page, section, table } from '../dom.js';
import { formatBytes, formatNumber, formatTime, has, t } from '../i18n.js';
import { eventName, metricName } from '../names.js';
import { showError, showInfo } from '../messages.js';
import { methodCharts } from '../method_charts.js';
import { progressBar } from './jobs.js';

const MAX_LOG_CHARS = 400_000; // keep the page light on very long logs: the head is dropped

function logView() {
  const pre = h('pre', { class: 'log', tabindex: '0', 'aria-live': 'off', 'aria-label': t('job.log') });
  const status = h('span', { class: 'muted', 'aria-live': 'polite' });
  let stick = true;
  pre.addEventListener('scroll', () => { stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8; status.dataset.paused = String(!stick); });
  return {
    pre, status,
    clear() { pre.textContent = ''; },
    append(text) {
      pre.textContent += text;
      if (pre.textContent.length > MAX_LOG_CHARS) pre.textContent = pre.textContent.slice(-MAX_LOG_CHARS);
      if (stick) pre.scrollTop = pre.scrollHeight;
    },
  };
}

/** Only a web address is a link: a job's script writes its own events.jsonl, a `javascript:` URL included. */
function webUrl(text) {
  try { return ['http:', 'https:'].includes(new URL(text).protocol) ? text : null; } catch { return null; }
}

/** The run of each experiment tracker (train.report_to) the worker reported in a `tracker` event. */
function trackerRuns(trackers) {
  return [...trackers].flatMap(([tool, e]) => [
    h('dt', {}, t('job.tracker')),
    h('dd', { 'data-testid': `tracker-${tool}` }, webUrl(e.url)
      ? h('a', { href: e.url, target: '_blank', rel: 'noopener noreferrer' }, `${tool} ${e.run_id || ''}`.trim())
      : `${tool} ${e.run_id || ''} (${t('job.tracker_offline')})`),
  ]);
}

/** An event's fields beside its name: numbers and words inline, a nested object (the `finished` event's
 * metrics) as a small table rather than its JSON. */
function eventDetails(e) {
  const skip = new Set(['time', 'event', 'job']);
  const inline = [];
  const tables = [];
  const show = (v) => (typeof v === 'number' ? formatNumber(v) : Array.isArray(v) ? v.join(', ') : String(v));
  for (const [k, v] of Object.entries(e)) {
    if (skip.has(k)) continue;
    // a field the console has no words for: as the worker wrote it (key=value, as code)
    if (!has(`metric.${k}`) && !(v && typeof v === 'object' && !Array.isArray(v))) { inline.push(h('code', { class: 'field' }, `${k}=${show(v)}`)); continue; }
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      tables.push(h('table', { class: 'kv small' }, h('caption', {}, metricName(k)),
        h('tbody', {}, Object.entries(v).map(([mk, mv]) => h('tr', {}, h('th', { scope: 'row' }, has(`metric.${mk}`) ? metricName(mk) : h('code', {}, mk)),
          h('td', { class: 'num' }, typeof mv === 'number' ? formatNumber(mv) : Array.isArray(mv) ? mv.join(', ') : String(mv)))))));
    } else inline.push(`${metricName(k)}: ${show(v)}`);
  }
  return [h('span', { class: 'muted' }, inline.flatMap((x, i) => (i ? [' · ', x] : [x]))), ...tables];
}

export async function render({ args, go }) {
  const id = args[0];
  const enc = encodeURIComponent(id);
  let job = await get(`/api/v1/jobs/${enc}`);
  const stops = [];
  const head = h('div');
  const actions = h('div', { class: 'actions' });
  const log = logView();
  const lossChart = lineChart(t('job.loss_chart'), ['loss', 'eval_loss'], { labels: [metricName('loss'), metricName('eval_loss')], empty: t('job.chart_waiting') });
  const lrChart = lineChart(t('job.lr_chart'), ['lr'], { labels: [metricName('lr')], empty: t('job.chart_waiting') });
  const methodChart = methodCharts();
  const evalJob = job.kind === 'eval'; // an evaluation's job: no training curves, nothing to register
  const nextSteps = h('div', { class: 'actions next-steps', 'data-testid': 'next-steps' });
  const timeline = h('ol', { class: 'timeline' });
  const checkpoints = h('div');
  const files = h('div');
  const streamState = h('span', { class: 'stream-state muted', 'aria-live': 'polite' });
  const summary = h('dl', { class: 'facts' });
  const trackers = new Map(); // tool → its latest `tracker` event

  function renderHead() {
    const m = job.latest_metrics || {};
    fill(head, badge(job.state), ' ', progressBar(job));
    fill(summary,
      h('dt', {}, t('jobs.kind')), h('dd', {}, t(`jobs.kind_${job.kind}`)),
      job.kind === 'command'
        ? [h('dt', {}, t('job.command')), h('dd', {}, h('code', {}, ((job.spec && job.spec.command) || []).join(' ')))]
        : [h('dt', {}, t('jobs.model')), h('dd', {}, (job.spec && job.spec.model) || '')],
      h('dt', {}, t('job.attempt')), h('dd', {}, `${job.attempt} (${t(`newjob.restart_${String(job.restart_policy).replace('-', '_')}`)}, ${t('newjob.max_retries')} ${job.max_retries})`),
      h('dt', {}, t('jobs.created')), h('dd', {}, formatTime(job.created_at)),
      h('dt', {}, t('job.started')), h('dd', {}, formatTime(job.started_at)),
      h('dt', {}, t('job.finished')), h('dd', {}, formatTime(job.finished_at)),
      m.loss !== undefined ? [h('dt', {}, t('jobs.loss')), h('dd', { 'data-testid': 'latest-loss' }, formatNumber(m.loss))] : null,
      trackerRuns(trackers));
    if (job.error) summary.append(h('dt', {}, t('job.error')), h('dd', {}, h('div', { class: 'message error inline' }, job.error.message, job.error.log_tail ? h('pre', { class: 'log small' }, job.error.log_tail) : null)));
    const act = (key, path, cls, then) => h('button', { type: 'button', class: cls, onclick: async () => {
      try { const r = await post(`/api/v1/jobs/${enc}/${path}`); showInfo(t(`job.${key}_done`)); then(r); } catch (err) { showError(err); }
    } }, t(`job.${key}`));
    const active = job.state === 'queued' || job.state === 'running';
    fill(actions,
      active ? act('cancel', 'cancel', 'danger', refresh) : null,
      !active && job.kind === 'train' && job.state !== 'succeeded' ? act('resume', 'resume', '', () => go(`/jobs/${id}?r=${Date.now()}`)) : null,
      !active ? act('retry', 'retry', '', (r) => go(`/jobs/${r.id}`)) : null);
  }

  async function refresh() {
    try { job = await get(`/api/v1/jobs/${enc}`); renderHead(); } catch (err) { showError(err); }
  }

  function renderFiles(fl) {
    // Files at the top level are listed; each folder (checkpoints/step-N, final, …) folds into a details.
    const link = (f) => h('li', {},
      h('a', { href: `/api/v1/jobs/${enc}/files/${f.path.split('/').map(encodeURIComponent).join('/')}`, download: '' }, f.path),
      ' ', h('span', { class: 'muted' }, formatBytes(f.bytes)));
    const groups = new Map();
    for (const f of fl.data) {
      const parts = f.path.split('/');
      const key = parts.length > 1 ? parts.slice(0, parts[0] === 'checkpoints' && parts.length > 2 ? 2 : 1).join('/') : '';
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(f);
    }
    fill(files, [...groups].map(([key, list]) => (key
      ? h('details', {}, h('summary', {}, `${key}/ `, h('span', { class: 'muted' }, `${list.length} · ${formatBytes(list.reduce((n, f) => n + f.bytes, 0))}`)), h('ul', { class: 'plain files' }, list.map(link)))
      : h('ul', { class: 'plain files' }, list.map(link)))));
  }

  async function loadFolder() {
    const [ck, fl] = await Promise.all([get(`/api/v1/jobs/${enc}/checkpoints`), get(`/api/v1/jobs/${enc}/files`)]);
    if (evalJob) {
      // An evaluation's job: its results are on the Evaluations page; there is no model to register.
      fill(checkpoints, h('p', {}, t('job.eval_results'), ' ', h('a', { href: '#/evaluations' }, t('nav.evaluations'))));
      renderFiles(fl);
      return;
    }
    const base = String((job.spec && job.spec.model) || 'model').split('/').filter(Boolean).pop() || 'model';
    const regName = h('input', { type: 'text', value: `${base}-ft`.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, ''), required: true });
    const register = async (checkpoint, extra = {}) => {
      try {
        const r = await post('/api/v1/models/register', { job: id, name: regName.value, checkpoint, ...extra });
        showInfo(t('job.registered', { ref: r.ref }));
        showNextSteps(r.ref);
      } catch (err) { showError(err); }
    };
    if (job.kind === 'command') {
      // A script's output has no "final": register a folder it wrote (an HF model, or an adapter on a base).
      const mounted = (job.spec && job.spec.models) || [];
      regName.value = (job.name || 'model').replace(/[^A-Za-z0-9._:-]/g, '-');
      const regPath = h('input', { type: 'text', value: 'output', required: true, placeholder: 'output/checkpoint-3000' });
      const regBase = h('input', { type: 'text', value: mounted.length ? mounted[0].name : '' });
      fill(checkpoints,
        field('job.register_name', regName, t('job.register_help')),
        field('job.register_path', regPath, t('job.register_path_help')),
        field('job.register_base', regBase, t('job.register_base_help')),
        h('p', {}, h('button', { type: 'button', class: 'primary', onclick: () => register(null, { path: regPath.value, base: regBase.value || null }) }, t('job.register_folder'))));
      renderFiles(fl);
      return;
    }
    const best = job.best_checkpoint && job.best_checkpoint.checkpoint; // train.select's pick (best.json)
    const rows = ck.data.map((c) => h('tr', {}, h('td', {}, c.name, c.name === best ? [' ', h('strong', { 'data-testid': 'best' }, t('job.best', { metric: job.best_checkpoint.metric }))] : null), h('td', { class: 'num' }, formatNumber(c.step)),
      h('td', { class: 'num' }, formatNumber(c.train_loss)), h('td', { class: 'num' }, formatNumber(c.eval_loss)),
      h('td', {}, h('button', { type: 'button', class: 'small', onclick: () => register(c.name) }, t('job.register')))));
    regName.id = 'register-name';
    fill(checkpoints,
      field('job.register_name', regName, t('job.register_help')),
      job.state === 'succeeded' ? h('p', {}, h('button', { type: 'button', class: 'primary', onclick: () => register('final') }, t('job.register_final'))) : null,
      table(['job.checkpoint', 'job.step', 'job.train_loss', 'job.eval_loss', 'common.actions'], rows));
    renderFiles(fl);
  }

  /** Where to go from a finished job: evaluate, deploy or export its registered model (register first). */
  function showNextSteps(ref) {
    if (job.kind === 'eval' || job.state !== 'succeeded') { fill(nextSteps); return; }
    const q = ref ? encodeURIComponent(ref) : null;
    fill(nextSteps, h('strong', {}, t('job.next')),
      ref ? h('span', { class: 'muted' }, h('code', {}, ref)) : h('a', { class: 'button primary', href: '#register' }, t('job.next_register')),
      ref ? [h('a', { class: 'button primary', href: `#/evaluations?model=${q}` }, t('job.next_evaluate')),
        h('a', { class: 'button', href: `#/deployments?model=${q}` }, t('job.next_deploy')),
        h('a', { class: 'button', href: `#/models?export=${q}` }, t('job.next_export'))] : null);
    const target = nextSteps.querySelector('a[href="#register"]');
    if (target) target.addEventListener('click', (e) => { e.preventDefault(); const el = document.getElementById('register-name'); if (el) { el.scrollIntoView({ block: 'center' }); el.focus(); } });
  }
  async function registeredRef() {
    try {
      const models = await get('/api/v1/models');
      const mine = models.registered.filter((r) => r.job === id);
      return mine.length ? mine[mine.length - 1].ref : null;
    } catch { return null; }
  }

  renderHead();
  // Charts are redrawn at most once per animation frame, however many points one message brings.
  let pending = false;
  const redraw = () => { if (pending) return; pending = true; requestAnimationFrame(() => { pending = false; lossChart.draw(); lrChart.draw(); methodChart.draw(); }); };
  const onState = (s) => { streamState.textContent = t(`job.stream_${s}`); };
  // A job of several workers: its main output (rank 0, worker.log) or one rank's own logs/rank-N.txt.
  let stopLog = null;
  const followLog = (rank) => {
    if (stopLog) stopLog();
    log.clear();
    const query = rank === '' ? '' : `?rank=${encodeURIComponent(rank)}`;
    stopLog = follow(`/api/v1/jobs/${enc}/logs${query}`, 'log', { onItems: (text) => log.append(text), onState });
  };
  followLog('');
  stops.push(() => stopLog && stopLog());
  const rankPicker = job.workers > 1
    ? h('label', {}, t('job.rank'), ' ', h('select', { 'data-testid': 'rank-picker', onchange: (e) => followLog(e.target.value) },
      h('option', { value: '' }, t('job.rank_main')),
      ...Array.from({ length: job.workers }, (_, r) => h('option', { value: String(r) }, `rank ${r}`))))
    : null;
  stops.push(follow(`/api/v1/jobs/${enc}/metrics`, 'metrics', {
    onItems: (rows) => {
      for (const r of rows) {
        if (r.step === undefined) continue;
        if ('loss' in r) lossChart.add('loss', r.step, r.loss);
        if ('eval_loss' in r) lossChart.add('eval_loss', r.step, r.eval_loss);
        if ('lr' in r || 'learning_rate' in r) lrChart.add('lr', r.step, r.lr ?? r.learning_rate);
        methodChart.add(r);
      }
      redraw();
    },
  }));
  stops.push(follow(`/api/v1/jobs/${enc}/events`, 'events', {
    onItems: (items) => {
      for (const e of items) {
        if (e.event === 'tracker' && typeof e.tool === 'string') trackers.set(e.tool, e);
        timeline.append(h('li', {}, h('time', {}, formatTime(e.time)), ' ', h('strong', {}, eventName(e.event)), ' ', eventDetails(e)));
      }
      refresh();
      if (items.some((e) => /checkpoint|finished|succeeded|failed|done/.test(e.event))) loadFolder().catch(showError);
    },
    onEnd: () => { refresh().then(async () => { loadFolder().catch(showError); showNextSteps(await registeredRef()); }); },
  }));
  const poll = setInterval(() => { if (job.state === 'running' || job.state === 'queued') refresh(); }, 3000);
  await loadFolder().catch(showError);
  if (job.state === 'succeeded') showNextSteps(await registeredRef());
  lossChart.draw(); lrChart.draw(); // "waiting for the first metrics" until they come
  const element = page(h('span', {}, id, job.name ? ` — ${job.name}` : ''),
    h('div', { class: 'toolbar' }, head, actions),
    nextSteps,
    h('div', { class: 'columns' },
      section('job.summary', summary),
      evalJob
        ? null
        : section('job.charts', h('figure', {}, lossChart.element, h('figcaption', {}, t('job.loss_chart'))), h('figure', {}, lrChart.element, h('figcaption', {}, t('job.lr_chart'))), methodChart.figures)),
    section('job.log', h('div', { class: 'log-head' }, rankPicker, streamState, log.status), log.pre),
    h('div', { class: 'columns' }, section('job.events', timeline), section('job.checkpoints', checkpoints)),
    section('job.files', files));
  return { element, cleanup: () => { stops.forEach((s) => s()); clearInterval(poll); } };
}
