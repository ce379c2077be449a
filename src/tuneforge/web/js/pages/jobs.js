// Jobs: a page of 50 at a time (cursor pagination: the list stays fast with thousands of jobs), with
// state badges and progress bars; filter by state.
import { get } from '../api.js';
import { badge, field, h, fill, page, section, table } from '../dom.js';
import { formatNumber, formatTime, t } from '../i18n.js';

const STATES = ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];

export function progressBar(job) {
  const { step, max_steps: max } = job.progress || {};
  if (!max) return h('span', { class: 'muted' }, step ? `${step}` : '');
  return h('span', { class: 'progress' },
    h('progress', { max: String(max), value: String(step || 0), 'aria-label': t('jobs.progress') }), ` ${step || 0}/${max}`);
}

function row(j) {
  const loss = (j.latest_metrics || {}).loss;
  return h('tr', {},
    h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.id), j.name ? h('div', { class: 'muted' }, j.name) : null),
    h('td', {}, badge(j.state)),
    h('td', {}, t(`jobs.kind_${j.kind}`)),
    h('td', {}, (j.spec && (j.spec.model || (j.spec.models || []).map((m) => m.name).join(', '))) || ''),
    h('td', {}, progressBar(j)),
    h('td', { class: 'num' }, loss !== undefined ? formatNumber(loss) : ''),
    h('td', {}, formatTime(j.created_at)));
}

export async function render({ params, go }) {
  const state = params.get('state') || '';
  const before = params.get('before');
  const pageNo = Number(params.get('page') || 1);
  const q = new URLSearchParams({ limit: '50' });
  if (state) q.set('state', state);
  if (before) q.set('before', before);
  const jobs = await get(`/api/v1/jobs?${q}`);
  const filter = h('select', { onchange: (e) => go(`/jobs${e.target.value ? `?state=${e.target.value}` : ''}`) },
    STATES.map((s) => h('option', { value: s, selected: s === state }, s ? t(`state.${s}`) : t('jobs.all'))));
  const nav = h('nav', { class: 'pager', 'aria-label': t('jobs.pages') },
    pageNo > 1 ? h('button', { type: 'button', onclick: () => history.back() }, t('jobs.previous')) : null,
    h('span', {}, t('jobs.page', { n: pageNo })),
    jobs.next ? h('a', { class: 'button', href: `#/jobs?${new URLSearchParams({ ...(state ? { state } : {}), before: jobs.next, page: String(pageNo + 1) })}` }, t('jobs.next')) : null);
  return page('jobs.title',
    h('div', { class: 'toolbar' }, field('jobs.filter', filter), h('a', { class: 'button primary', href: '#/jobs/new' }, t('jobs.new'))),
    section('jobs.list', table(['jobs.id', 'jobs.state', 'jobs.kind', 'jobs.model', 'jobs.progress', 'jobs.loss', 'jobs.created'], jobs.data.map(row),
      { empty: h('span', {}, t('jobs.empty'), ' ', h('a', { href: '#/jobs/new' }, t('jobs.new'))) }), nav));
}
