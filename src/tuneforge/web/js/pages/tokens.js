// Tokens: the list (never a secret), create one (admin, or one deployment; with an expiry) whose secret
// is shown once, revoke. The API: /api/v1/tokens.
import { del, get, post } from '../api.js';
import { badge, copyButton, field, h, fill, page, section, table } from '../dom.js';
import { formatTime, t } from '../i18n.js';
import { showError, showInfo } from '../messages.js';

const EXPIRIES = ['', '1d', '7d', '30d', '90d'];

/** What a token may do, in words: admin, or one deployment (a link to it). */
function scopeText(scope) {
  if (!scope.startsWith('deployment:')) return t('tokens.scope_admin');
  const name = scope.slice('deployment:'.length);
  return h('span', {}, t('tokens.scope_deployment'), ' ', h('a', { href: `#/deployments/${encodeURIComponent(name)}` }, name));
}

function stateOf(tok) {
  if (tok.revoked_at) return 'revoked';
  if (tok.expires_at && tok.expires_at * 1000 < Date.now()) return 'expired';
  return 'active';
}

export async function render({ params, kept }) {
  const [tokens, deployments] = await Promise.all([get('/api/v1/tokens'), get('/api/v1/deployments')]);
  const list = h('div');
  const shown = h('div', { 'aria-live': 'polite' });
  let secret = (kept && kept.secret) || null; // shown once: a language switch must not lose it

  function showSecret() {
    if (!secret) return;
    fill(shown, h('p', { class: 'message info inline' }, t('tokens.once')),
      h('pre', { class: 'command', 'data-testid': 'new-token' }, secret.token), copyButton(() => secret.token),
      h('p', { class: 'muted' }, t('tokens.use_it')),
      h('pre', { class: 'command' }, `curl -H "Authorization: Bearer ${secret.token}" ${location.origin}/v1/models`));
  }

  function draw(data) {
    const rows = data.map((tok) => {
      const state = stateOf(tok);
      return h('tr', { 'data-token': tok.id },
        h('td', { translate: 'no' }, h('strong', {}, tok.name), h('div', { class: 'muted small' }, h('code', {}, tok.id))),
        h('td', {}, scopeText(tok.scope)),
        h('td', {}, badge(state)),
        h('td', {}, formatTime(tok.created_at)),
        h('td', {}, tok.expires_at ? formatTime(tok.expires_at) : t('tokens.never')),
        h('td', {}, state === 'active' ? h('button', { type: 'button', class: 'small danger', onclick: async () => {
          if (!window.confirm(t('tokens.confirm_revoke', { name: tok.name }))) return;
          try {
            await del(`/api/v1/tokens/${encodeURIComponent(tok.id)}`);
            showInfo(t('tokens.revoked', { name: tok.name }));
            await reload();
          } catch (err) { showError(err); }
        } }, t('tokens.revoke')) : null));
    });
    fill(list, table(['tokens.name', 'tokens.scope', 'tokens.state', 'tokens.created', 'tokens.expires', 'common.actions'], rows));
  }
  async function reload() { draw((await get('/api/v1/tokens')).data); }

  const name = h('input', { type: 'text', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9][A-Za-z0-9._-]*', value: (kept && kept.name) || '' });
  const wanted = (kept && kept.scope) || (params.get('deployment') ? `deployment:${params.get('deployment')}` : 'admin');
  const scope = h('select', {}, h('option', { value: 'admin' }, t('tokens.scope_admin')),
    deployments.data.map((d) => h('option', { value: `deployment:${d.name}`, selected: `deployment:${d.name}` === wanted }, `${t('tokens.scope_deployment')} ${d.name}`)));
  const expires = h('select', {}, EXPIRIES.map((e) => h('option', { value: e, selected: e === ((kept && kept.expires) ?? '30d') }, e ? t(`tokens.expires_${e}`) : t('tokens.never'))));
  const button = h('button', { type: 'submit', class: 'primary' }, t('tokens.create'));
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      const made = await post('/api/v1/tokens', { name: name.value, scope: scope.value, expires: expires.value || null });
      secret = { token: made.token, name: made.name };
      showSecret();
      name.value = '';
      await reload();
    } catch (err) { showError(err); } finally { button.disabled = false; }
  } },
  h('div', { class: 'grid' }, field('tokens.name', name, t('tokens.name_help')), field('tokens.scope', scope, t('tokens.scope_help')),
    field('tokens.expires', expires)),
  button, shown);
  draw(tokens.data);
  showSecret();
  const element = page('tokens.title', section('tokens.new', form), section('tokens.list', list));
  return { element, keep: () => ({ secret, name: name.value, scope: scope.value, expires: expires.value }) };
}
