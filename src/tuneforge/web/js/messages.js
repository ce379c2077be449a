// Every API error becomes a visible message (role=alert); a message can carry the full problem list.
import { h, fill } from './dom.js';
import { t } from './i18n.js';

const box = () => document.getElementById('messages');

export function errorText(err) {
  if (err && err.status === 0) return t('error.network');
  return err && err.message ? err.message : String(err);
}

/** A list item per problem: file:line, record, field, message (the API's dataset and 422 shapes). */
export function problemList(problems) {
  return h('ul', { class: 'problems' }, problems.map((p) => {
    const where = [];
    if (p.file) where.push(p.line ? `${p.file}:${p.line}` : p.file);
    else if (p.line) where.push(t('problem.line', { n: p.line }));
    if (p.record !== undefined && p.record !== null) where.push(t('problem.record', { n: p.record }));
    if (p.field) where.push(t('problem.field', { name: p.field }));
    if (p.loc) where.push(p.loc.join('.'));
    const msg = p.message || p.msg || '';
    return h('li', {}, where.length ? h('strong', {}, where.join(' · ')) : null, where.length ? ' — ' : '', msg,
      p.hint ? h('div', { class: 'hint' }, p.hint) : null);
  }));
}

export function showError(err, { problems = true } = {}) {
  const list = problems && err && err.problems && err.problems.length ? problemList(err.problems) : null;
  const node = h('div', { class: 'message error' },
    h('span', {}, errorText(err)), list,
    h('button', { type: 'button', class: 'small close', 'aria-label': t('common.dismiss'), onclick: () => node.remove() }, '×'));
  box().append(node);
  return node;
}

export function showInfo(text) {
  const node = h('div', { class: 'message info' }, text,
    h('button', { type: 'button', class: 'small close', 'aria-label': t('common.dismiss'), onclick: () => node.remove() }, '×'));
  box().append(node);
  setTimeout(() => node.remove(), 6000);
}

export function clearMessages() { fill(box()); }
