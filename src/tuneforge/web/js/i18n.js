// Messages live in i18n/en.json and i18n/zh.json; the markup holds only their keys.

let messages = {};
let fallback = {};
let fields = {}; // JobSpec field path → {en, zh, zh_help}: the form's labels and Chinese help texts
export let lang = 'en';

export async function setLanguage(code) {
  const load = async (c) => (await fetch(`/i18n/${c}.json`)).json();
  if (!Object.keys(fallback).length) [fallback, fields] = await Promise.all([load('en'), load('fields')]);
  messages = code === 'en' ? fallback : await load(code);
  lang = code;
  localStorage.setItem('tuneforge.lang', code);
  document.documentElement.lang = code === 'zh' ? 'zh-CN' : 'en';
  translate(document);
}

export function preferredLanguage() {
  const saved = localStorage.getItem('tuneforge.lang');
  if (saved) return saved;
  return (navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

/** The message for `key` with {name} placeholders filled. */
export function t(key, vars = {}) {
  const text = messages[key] ?? fallback[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}

/** Whether the current language (or English) has a message for `key`. */
export function has(key) { return key in messages || key in fallback; }

/** A JobSpec field's label (`train.learning_rate` → "Learning rate" / "学习率"); the key when unknown. */
export function fieldLabel(path) {
  const f = fields[path] || fields[path.replace(/\.\d+\./, '.')];
  return (f && (f[lang] || f.en)) || path.split('.').pop();
}

/** A JobSpec field's help: the schema's description in English (its one source), the table's in Chinese. */
export function fieldHelp(path, description) {
  const f = fields[path];
  return lang === 'en' || !f ? description : f[`${lang}_help`] || description;
}

/** Fills data-i18n (text), data-i18n-placeholder, data-i18n-aria-label and data-i18n-title. */
export function translate(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll('[data-i18n-aria-label]')) el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel));
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
}

export function formatNumber(n, digits = 4) {
  if (n === null || n === undefined || n === '') return '';
  if (typeof n !== 'number') return String(n);
  if (Number.isInteger(n)) return n.toLocaleString(lang === 'zh' ? 'zh-CN' : 'en');
  return Math.abs(n) < 1e-3 && n !== 0 ? n.toExponential(2) : n.toPrecision(digits);
}

export function formatTime(seconds) {
  if (!seconds) return '';
  const ms = typeof seconds === 'number' ? seconds * 1000 : Date.parse(seconds);
  return new Date(ms).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en', { dateStyle: 'short', timeStyle: 'medium' });
}

export function formatBytes(n) {
  if (!n && n !== 0) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
