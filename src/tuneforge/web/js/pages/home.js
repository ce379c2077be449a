// Home: template cards with "start with this", running jobs, ready deployments.
import { get } from '../api.js';
import { badge, h, page, section } from '../dom.js';
import { t } from '../i18n.js';
import { progressBar } from './jobs.js';

export async function render() {
  const [templates, running, queued, deployments] = await Promise.all([
    get('/api/v1/templates'),
    get('/api/v1/jobs?state=running&limit=20'),
    get('/api/v1/jobs?state=queued&limit=20'),
    get('/api/v1/deployments').catch(() => ({ data: [] })), // absent before the deployments API exists
  ]);
  const cards = h('div', { class: 'cards' }, templates.data.map((tpl) => h('article', { class: 'card template' },
    h('h3', {}, tpl.name),
    h('p', {}, t(`template.${tpl.name}`) === `template.${tpl.name}` ? tpl.description : t(`template.${tpl.name}`)),
    h('p', { class: 'muted' }, `${tpl.method} · ${tpl.finetuning} · lr ${tpl.default_learning_rate}`),
    h('a', { class: 'button primary', href: `#/jobs/new?template=${encodeURIComponent(tpl.name)}` }, t('home.start')))));
  const jobs = [...running.data, ...queued.data];
  const jobList = jobs.length
    ? h('ul', { class: 'plain' }, jobs.map((j) => h('li', {}, h('a', { href: `#/jobs/${j.id}` }, j.id), ' ', badge(j.state), ' ', progressBar(j))))
    : h('p', { class: 'muted' }, t('home.no_running'));
  const ready = deployments.data.filter((d) => d.state === 'ready');
  const depList = ready.length
    ? h('ul', { class: 'plain' }, ready.map((d) => h('li', {}, h('a', { href: `#/deployments/${encodeURIComponent(d.name)}` }, d.name), ' ', badge(d.state), ' ', h('code', {}, d.model))))
    : h('p', { class: 'muted' }, t('home.no_deployments'));
  return page('home.title',
    section('home.templates', cards),
    h('div', { class: 'columns' }, section('home.running', jobList), section('home.deployments', depList)));
}
