// The charts of a training method's own metrics, beside loss and learning rate: the rewards and margin of
// the preference methods (DPO, KTO, ORPO, SimPO) and a reward model's scores, their accuracy, KL, GRPO's
// reward per function, and GRPO's completion length. A chart is shown from its first point on, so a job
// that logs none of these (SFT, pretraining) shows none of them.
//
// Names are TRL's, as metrics.jsonl has them (rewards/chosen, rewards/exact_match/mean). A command job's
// TensorBoard tags come with '_' for '/' (jobs/tbmetrics.py: train/rewards/chosen → rewards_chosen), so
// names are matched in that form and a script running TRL's trainers gets the same charts.
import { lineChart } from './chart.js';
import { h } from './dom.js';
import { has, t } from './i18n.js';
import { metricName } from './names.js';

const GROUPS = [
  ['rewards', ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'mean_reward', 'margin']],
  ['accuracy', ['rewards/accuracies', 'accuracy']],
  ['kl', ['kl']],
  ['reward_functions', ['reward']], // the total; rewards/<function>/mean are added as they come
  ['length', ['completions/mean_length', 'completions/min_length', 'completions/max_length']],
];
const REWARD_FUNCTION = /^rewards_(.+)_mean$/; // GRPO: rewards/<function>/mean
// A spec names a few reward functions; a metrics file with thousands of such keys (a script's own logging)
// would draw a legend no chart holds and a path each: the first few are charted (as `jobs metrics` shows).
const MAX_FUNCTIONS = 8;
const plain = (key) => key.replaceAll('/', '_');

/** A GRPO reward function's metric name (train/rewards.py: the reward type, then _2, _3 … when it repeats)
 * in the user's language; a name the console does not know (a script's own function) as it is. */
function rewardFunctionLabel(name) {
  const [, type, n] = name.match(/^(.*?)(?:_(\d+))?$/);
  if (!has(`reward.${type}`)) return { label: name, code: true };
  return { label: n ? `${t(`reward.${type}`)} ${n}` : t(`reward.${type}`), code: false };
}

/** The charts (hidden until their first point): `figures` to place, `add(row)` per metrics row, `draw()`. */
export function methodCharts() {
  const byKey = new Map(); // plain metric name → [group, series name]
  const groups = GROUPS.map(([id, names]) => {
    const title = t(`job.chart_${id}`);
    const chart = lineChart(title, names, { labels: names.map(metricName) });
    const group = { chart, figure: h('figure', { hidden: true, 'data-chart': id }, chart.element, h('figcaption', {}, title)), points: 0, functions: 0 };
    for (const name of names) byKey.set(plain(name), [group, name]);
    return group;
  });
  const perFunction = groups[GROUPS.findIndex(([id]) => id === 'reward_functions')];
  return {
    figures: groups.map((g) => g.figure),
    add(row) {
      for (const [key, value] of Object.entries(row)) {
        if (typeof value !== 'number') continue;
        const k = plain(key);
        let found = byKey.get(k);
        const fn = !found && perFunction.functions < MAX_FUNCTIONS && k.match(REWARD_FUNCTION);
        if (fn) {
          const { label, code } = rewardFunctionLabel(fn[1]);
          perFunction.chart.addSeries(key, label, { code });
          perFunction.functions += 1;
          found = [perFunction, key];
          byKey.set(k, found);
        }
        if (!found) continue;
        const [group, name] = found;
        const before = group.chart.count(name);
        group.chart.add(name, row.step, value);
        group.points += group.chart.count(name) - before;
      }
    },
    draw() {
      for (const g of groups) {
        if (!g.points) continue;
        g.figure.hidden = false;
        g.chart.draw();
      }
    },
  };
}
