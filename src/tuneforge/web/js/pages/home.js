// Home: template cards with "start with this", running jobs, ready deployments.
import { get } from '../api.js';
import { badge, h, page, section } from '../dom.js';
import { t } from '../i18n.js';
import { progressBar } from './jobs.js';

/** The first steps of the whole flow, each done or a link to do it: an empty store says where to begin. */
function firstSteps(models, datasets, jobs, deployments) {
  const steps = [
    ['pull', models.data.length > 0, '#/models'],
    ['upload', datasets.data.length > 0, '#/datasets'],
    ['train', jobs.data.length > 0, '#/jobs/new'],
    ['deploy', deployments.data.length > 0, '#/deployments'],
  ];
  if (steps.every(([, done]) => done)) return null;
  return section('home.first_steps', h('ol', { class: 'first-steps', 'data-testid': 'first-steps' }, steps.map(([key, done, href]) => h('li', {},
    done ? h('span', { class: 'muted' }, '✓ ', t(`home.step_${key}`)) : h('a', { href }, t(`home.step_${key}`)),
    ' ', h('span', { class: 'muted' }, t(`home.step_${key}_help`))))));
}

export async function render() {
  const [templates, running, queued, deployments, models, datasets, anyJob] = await Promise.all([
    get('/api/v1/templates'),
    get('/api/v1/jobs?state=running&limit=20'),
    get('/api/v1/jobs?state=queued&limit=20'),
    get('/api/v1/deployments').catch(() => ({ data: [] })), // absent before the deployments API exists
    get('/api/v1/models'),
    get('/api/v1/datasets?state=ready'),
    get('/api/v1/jobs?limit=1'),
  ]);
  // "Start with this" leads to the form only when it can be filled; else to what is missing first.
  const startHref = (tpl) => (!models.data.length ? '#/models' : !datasets.data.length ? '#/datasets' : `#/jobs/new?template=${encodeURIComponent(tpl.name)}`);
  const cards = h('div', { class: 'cards' }, templates.data.map((tpl) => h('article', { class: 'card template' },
    h('h3', {}, tpl.name),
    h('p', {}, t(`template.${tpl.name}`) === `template.${tpl.name}` ? tpl.description : t(`template.${tpl.name}`)),
    h('p', { class: 'muted' }, h('code', {}, `${tpl.method} · ${tpl.finetuning}`), ` · ${t('home.lr')} `, h('code', {}, String(tpl.default_learning_rate))),
    h('a', { class: 'button primary', href: startHref(tpl) }, t('home.start')))));
  const jobs = [...running.data, ...queued.data];
  const jobList = jobs.length
    ? h('ul', { class: 'plain' }, jobs.map((j) => h('li', {}, h('a', { href: `#/jobs/${j.id}` }, j.id), ' ', badge(j.state), ' ', progressBar(j))))
    : h('p', { class: 'muted' }, t('home.no_running'), ' ', h('a', { href: '#/jobs/new' }, t('jobs.new')));
  const ready = deployments.data.filter((d) => d.state === 'ready');
  const depList = ready.length
    ? h('ul', { class: 'plain' }, ready.map((d) => h('li', {}, h('a', { href: `#/deployments/${encodeURIComponent(d.name)}` }, d.name), ' ', badge(d.state), ' ', h('code', {}, d.model))))
    : h('p', { class: 'muted' }, t('home.no_deployments'), ' ', h('a', { href: '#/deployments' }, t('deployments.new')));
  return page('home.title',
    firstSteps(models, datasets, anyJob, deployments),
    section('home.templates', cards),
    h('div', { class: 'columns' }, section('home.running', jobList), section('home.deployments', depList)));
}
