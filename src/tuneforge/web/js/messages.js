// Every API error becomes a visible message (role=alert); a message can carry the full problem list.
import { h, fill } from './dom.js';
import { has, lang, t } from './i18n.js';

const box = () => document.getElementById('messages');

/** The server's English text, or its `code` said in the user's language (PREFIX.CODE with its params). */
export function localized(prefix, code, params, english) {
  if (lang === 'en' || !code || !has(`${prefix}.${code}`)) return english;
  return t(`${prefix}.${code}`, { ...(params || {}), detail: english });
}

export function errorText(err) {
  if (err && err.status === 0) return t('error.network');
  const english = err && err.message ? err.message : String(err);
  return err ? localized('error', err.code, err.params, english) : english;
}

// Params whose values come from a fixed set of names (a JSON type, Python's JSON decoder's reasons): said
// in the user's words where the message files know them.
const NAMED_PARAMS = { got: 'json_type', reason: 'json_error' };

/** One problem's message in the user's language: pydantic's `type` (greater_than, missing, …) or a data
 * check's `code` (data/problem_codes.py), with its params. */
export function problemText(p) {
  const params = { ...(p.params || {}) };
  for (const [key, prefix] of Object.entries(NAMED_PARAMS)) {
    if (typeof params[key] === 'string' && has(`${prefix}.${params[key]}`)) params[key] = t(`${prefix}.${params[key]}`);
  }
  return consoleWords(localized('problem', p.type || p.code, params, p.message || p.msg || ''));
}

/** A message with its `backticked` parts (a command to type) as code. */
function withCode(text) {
  return text.split('`').map((part, i) => (i % 2 ? h('code', {}, part) : part));
}

/** The data checks speak the CLI's options (--map, --format); the console's upload form has fields. */
function consoleWords(text) {
  return text.replace(/--map\b/g, `“${t('upload.map')}”`).replace(/--format\b/g, `“${t('upload.format')}”`);
}

/** A list item per problem: file:line, record, field, message (the API's dataset and 422 shapes). */
export function problemList(problems) {
  return h('ul', { class: 'problems' }, problems.map((p) => {
    const where = [];
    if (p.file) where.push(p.line ? `${p.file}:${p.line}` : p.file);
    else if (p.line) where.push(t('problem.line', { n: p.line }));
    if (Number.isInteger(p.record)) where.push(t('problem.record', { n: p.record })); // from 1, as lines are
    if (p.field) where.push(t('problem.field', { name: p.field }));
    if (p.loc) where.push(p.loc.join('.'));
    const msg = problemText(p);
    // A problem without a code (stored before codes existed) is the server's English: not the console's text.
    return h('li', p.code || p.type ? {} : { translate: 'no' }, where.length ? h('strong', {}, where.join(' · ')) : null, where.length ? ' — ' : '', withCode(msg),
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
