"""web/js/method_charts.js and chart.js under node with a stand-in DOM (no browser: a second or so): a
metrics file's hostile keys and values neither flood a chart nor stop the page drawing it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "src" / "tuneforge" / "web" / "js"

# The least of a DOM that chart.js and dom.js use; each element keeps its attributes and children.
SCRIPT = """
class Node {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.textContent = ''; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  append(...c) { this.children.push(...c); }
  replaceChildren(...c) { this.children = c; }
  addEventListener() {}
}
globalThis.Node = Node;
globalThis.document = {
  createElement: (t) => new Node(t), createElementNS: (_, t) => new Node(t),
  createTextNode: (s) => Object.assign(new Node('#text'), { textContent: s }),
};
const { methodCharts } = await import(process.argv[1] + '/method_charts.js');
const { lineChart } = await import(process.argv[1] + '/chart.js');
const charts = methodCharts();
const many = Object.fromEntries(Array.from({ length: 10000 }, (_, i) => [`rewards/f${i}/mean`, i]));
for (let step = 1; step <= 3; step += 1) {
  charts.add({ step, 'rewards/<img src=x onerror=alert(1)>/mean': 1e308, kl: null, reward: -1e308, ...many });
}
charts.draw();
const fig = charts.figures.find((f) => f.attrs['data-chart'] === 'reward_functions');
const legends = fig.children[0].children[1].children.filter((c) => c.attrs.class === 'legend');
const long = lineChart('loss', ['loss']);
for (let x = 0; x < 300000; x += 1) long.add('loss', x, Math.sin(x));
long.draw();
console.log(JSON.stringify({ legends: legends.map((l) => l.textContent) }));
"""


def test_ten_thousand_reward_keys_chart_a_few_and_a_long_run_draws():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is absent: the console's scripts are checked in the browser tests")
    done = subprocess.run([node, "--input-type=module", "-e", SCRIPT, str(JS)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    legends = json.loads(done.stdout)["legends"]
    # the total, then the first 8 functions; the HTML key is a legend's text, never markup
    assert len(legends) == 9 and legends[1] == "<img src=x onerror=alert(1)>", legends
