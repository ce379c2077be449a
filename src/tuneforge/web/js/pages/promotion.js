// A deployment page's promotion card: the current promotion (stage, canary share, the scores that decided
// the gate) with confirm and rollback, and a form to promote a registered model (evaluated first).
import { post } from '../api.js';
import { field, h, section } from '../dom.js';
import { formatNumber, t } from '../i18n.js';
import { localized, showError, showInfo } from '../messages.js';

// The params of a promotion's codes that are numbers (both scores, the canary's percent): said as the
// console says numbers. Other events' numbers (ports, pids) are shown as they are.
const NUMBER_PARAMS = ['candidate', 'live', 'percent'];

/** A deployment event's (or a promotion's decision's) message in the user's language: its `code` and
 * `params` (platform/event_codes.py), else the server's English. */
export function eventMessage(code, params, english) {
  const said = { ...(params || {}) };
  for (const key of NUMBER_PARAMS) if (typeof said[key] === 'number') said[key] = formatNumber(said[key]);
  return localized('deployment_event', code, said, english || '');
}

function scores(ro) {
  const s = ro.scores || {};
  return Object.entries(s).map(([side, m]) => h('div', {}, h('strong', {}, t(`promotion.${side}`)), ' ',
    Object.entries(m).filter(([k]) => k !== 'samples').map(([k, v]) => `${k}=${formatNumber(v)}`).join(', ')));
}

/** Why the promotion stands where it does: a failure's reason, else the gate's decision. One kept before
 * codes existed is the server's English, marked as not the console's text. */
function decision(ro) {
  const [code, params, english] = ro.stage === 'failed' && ro.reason
    ? [ro.reason_code, ro.reason_params, ro.reason] : [ro.decision_code, ro.decision_params, ro.decision];
  if (!english) return null;
  return [h('dt', {}, t('promotion.decision')), h('dd', { 'data-testid': 'decision' },
    h('span', code ? {} : { translate: 'no' }, eventMessage(code, params, english)), scores(ro))];
}

/** `reload()` redraws the page; the card asks for it after every action. */
export function promotionSection(dep, enc, reload) {
  const ro = dep.rollout || {};
  const act = (key, path) => h('button', { type: 'button', onclick: async (e) => {
    e.currentTarget.disabled = true;
    try { await post(path); showInfo(t(`promotion.${key}_done`)); await reload(); } catch (err) { showError(err); }
  } }, t(`promotion.${key}`));
  const status = ro.stage ? h('dl', { class: 'facts', 'data-testid': 'promotion' },
    h('dt', {}, t('promotion.model')), h('dd', {}, h('code', {}, ro.model || '')),
    h('dt', {}, t('promotion.stage')), h('dd', {}, t(`promotion.stage_${ro.stage}`),
      ro.stage === 'canary' ? ` (${Math.round((ro.share || 0) * 100)}%)` : ''),
    decision(ro)) : null;
  const model = h('input', { required: true, maxlength: '500', placeholder: 'name@2' });
  const dataset = h('input', { required: true, maxlength: '200' });
  const share = h('input', { type: 'number', min: '1', max: '100', value: '10' });
  const gate = h('input', { maxlength: '100', placeholder: 'eval_loss<=2.5' });
  const form = h('form', { onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await post(`/api/v1/deployments/${enc}/promote`, { model: model.value, dataset: dataset.value,
        canary_percent: Number(share.value), gate: gate.value || null });
      showInfo(t('promotion.started'));
      await reload();
    } catch (err) { showError(err); }
  } }, field('promotion.model', model), field('promotion.dataset', dataset), field('promotion.share', share),
  field('promotion.gate', gate, t('promotion.gate_help')), h('button', { type: 'submit', class: 'primary' }, t('promotion.promote')));
  const busy = ro.stage === 'evaluating' || ro.stage === 'canary';
  return section('promotion.title', status,
    ro.stage === 'canary' ? act('confirm', `/api/v1/deployments/${enc}/promote/confirm`) : null, ' ',
    busy || ro.previous ? act('rollback', `/api/v1/deployments/${enc}/rollback`) : null,
    busy || ['candidate', 'previous'].includes(ro.stage) ? null : form);
}
