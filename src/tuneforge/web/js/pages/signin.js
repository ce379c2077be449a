// Sign in with a token: the server answers with an HttpOnly session cookie (the page never keeps it).
import { post } from '../api.js';
import { field, h, page } from '../dom.js';
import { t } from '../i18n.js';
import { showError } from '../messages.js';

export async function render({ params, go, setSignedIn }) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, spellcheck: 'false' });
  const form = h('form', { class: 'card narrow', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await post('/api/v1/session', { token: input.value });
      setSignedIn(true);
      go(params.get('next') || '/');
    } catch (err) {
      showError(err);
      input.focus();
    }
  } },
  h('p', {}, t('signin.intro')),
  field('signin.token', input, t('signin.token_help')),
  h('button', { type: 'submit', class: 'primary' }, t('signin.submit')));
  return page('signin.title', form);
}
