// A tiny element builder: h('button', {class: 'x', onclick: fn}, t('key'), child, …).
import { t, translate } from './i18n.js';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled field: label text from a message key; `input` is the control (given an id here). */
let ids = 0;
export function field(labelKey, input, helpText) {
  if (!input.id) input.id = `f${++ids}`;
  const help = helpText ? h('small', { class: 'help', id: `${input.id}-help` }, helpText) : null;
  if (help) input.setAttribute('aria-describedby', help.id);
  const error = h('small', { class: 'field-error', id: `${input.id}-error`, role: 'alert' });
  const label = labelKey instanceof Node ? labelKey : labelKey.startsWith('!') ? labelKey.slice(1) : t(labelKey);
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, help, error);
}

export function badge(state) {
  return h('span', { class: `badge state-${state}` }, t(`state.${state}`));
}

/** A table; a column whose cells are numbers (td.num) gets a right-aligned header over them. `empty`: what
 * to say (and link to) when there are no rows. */
export function table(headKeys, rows, { caption, empty } = {}) {
  const heads = headKeys.map((k) => h('th', { scope: 'col' }, t(k)));
  if (rows.length) [...rows[0].children].forEach((cell, i) => { if (cell.classList.contains('num') && heads[i]) heads[i].classList.add('num'); });
  return h('table', {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, heads)),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headKeys.length, class: 'empty' }, empty || t('common.empty')))));
}

export function section(titleKey, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, t(titleKey)), ...children);
}

/** Page heading; `view` gets focus after navigation, screen readers hear the title. */
export function page(titleKey, ...children) {
  const node = h('div', { class: 'page' }, h('h1', {}, typeof titleKey === 'string' ? t(titleKey) : titleKey), ...children);
  translate(node);
  return node;
}

export function copyButton(getText) {
  return h('button', {
    type: 'button', class: 'small',
    onclick: async (e) => {
      try { await navigator.clipboard.writeText(getText()); e.target.textContent = t('common.copied'); }
      catch { e.target.textContent = t('common.copy_failed'); }
    },
  }, t('common.copy'));
}
