// Small SVG charts drawn by the console itself (no library): a line chart that grows as points
// arrive, and a histogram.
const NS = 'http://www.w3.org/2000/svg';
const W = 560;
const H = 220;
// The legend has a band of its own above the plot (it covered the first points inside it).
const PAD = { left: 52, right: 12, top: 28, bottom: 28 };
const COLOURS = 6; // series-0 … series-5 in style.css

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function tickLabel(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1000 || a < 0.01 ? v.toExponential(1) : Number(v.toPrecision(3)).toString();
}

/**
 * A line chart of several named series: `add(name, x, y)` then `draw()` (batched by the caller).
 * `title` is the accessible name; the legend shows each series' colour with its label (`labels`, in the
 * user's language); `empty` is said until the first point comes. `addSeries` declares one more series
 * once it is known (a GRPO job's reward functions come with its metrics); a `code` label is a name as the
 * spec spells it, shown as it is (translate="no").
 */
export function lineChart(title, seriesNames, { labels = seriesNames, empty = '' } = {}) {
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart' });
  const label = svg('title', {}, title);
  root.append(label);
  const series = new Map();
  const layer = svg('g');
  root.append(layer);
  const chart = {
    element: root,
    addSeries(name, label = name, { code = false } = {}) {
      if (!series.has(name)) series.set(name, { points: [], cls: `series-${series.size % COLOURS}`, label, code });
    },
    add(name, x, y) {
      if (typeof y === 'number' && Number.isFinite(y)) series.get(name).points.push([x, y]);
    },
    count(name) { return series.get(name).points.length; },
    setTitle(text) { label.textContent = text; },
    draw() {
      layer.replaceChildren();
      const all = [...series.values()].flatMap((s) => s.points);
      if (!all.length) {
        if (empty) layer.append(svg('text', { x: W / 2, y: H / 2, class: 'tick empty', 'text-anchor': 'middle' }, empty));
        return;
      }
      // a loop, not Math.min(...all): spread arguments past ~100,000 points throw RangeError (a long job)
      let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
      for (const [x, y] of all) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      if (x0 === x1) x1 = x0 + 1;
      if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
      const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
      const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
      for (let i = 0; i <= 4; i += 1) {
        const y = y0 + ((y1 - y0) * i) / 4;
        layer.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y), class: 'grid' }));
        layer.append(svg('text', { x: PAD.left - 6, y: sy(y) + 4, class: 'tick', 'text-anchor': 'end' }, tickLabel(y)));
      }
      for (const x of [x0, (x0 + x1) / 2, x1]) {
        layer.append(svg('text', { x: sx(x), y: H - 8, class: 'tick', 'text-anchor': 'middle' }, tickLabel(Math.round(x))));
      }
      let legendX = PAD.left + 8;
      for (const [name, s] of series) {
        if (!s.points.length) continue;
        const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
        layer.append(svg('path', { d, class: `line ${s.cls}`, 'data-series': name, 'data-points': s.points.length }));
        if (s.points.length === 1) {
          const [x, y] = s.points[0];
          layer.append(svg('circle', { cx: sx(x), cy: sy(y), r: 3, class: `dot ${s.cls}` }));
        }
        layer.append(svg('rect', { x: legendX, y: 6, width: 10, height: 10, class: `swatch ${s.cls}` }));
        const text = svg('text', { x: legendX + 14, y: 15, class: 'legend', 'data-series': name, translate: s.code ? 'no' : null }, s.label);
        layer.append(text);
        legendX += 24 + [...s.label].reduce((n, c) => n + (c.charCodeAt(0) > 0x2e80 ? 12 : 7), 0);
      }
    },
  };
  seriesNames.forEach((n, i) => chart.addSeries(n, labels[i] ?? n));
  return chart;
}

/** A histogram from `{edges, counts}` (edges one longer than counts); `yLabel` names the bars' unit. */
export function histogram(title, { edges, counts }, xLabel, yLabel = '') {
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart histogram' });
  root.append(svg('title', {}, title));
  if (!counts || !counts.length) return root;
  const max = Math.max(...counts);
  const bw = (W - PAD.left - PAD.right) / counts.length;
  counts.forEach((c, i) => {
    const hgt = max ? (c / max) * (H - PAD.top - PAD.bottom) : 0;
    const bar = svg('rect', { x: PAD.left + i * bw + 1, y: H - PAD.bottom - hgt, width: Math.max(1, bw - 2), height: hgt, class: 'bar' });
    bar.append(svg('title', {}, `${edges[i]}–${edges[i + 1] - 1}: ${c}`));
    root.append(bar);
  });
  for (let i = 0; i <= 2; i += 1) {
    const y = (max * i) / 2;
    const py = H - PAD.bottom - (i / 2) * (H - PAD.top - PAD.bottom);
    root.append(svg('text', { x: PAD.left - 6, y: py + 4, class: 'tick', 'text-anchor': 'end' }, tickLabel(Math.round(y))));
  }
  const last = edges.length - 1;
  for (const i of [0, Math.floor(last / 2), last]) {
    root.append(svg('text', { x: PAD.left + i * bw, y: H - 8, class: 'tick', 'text-anchor': 'middle' }, String(edges[i])));
  }
  root.append(svg('text', { x: W - PAD.right, y: PAD.top - 10, class: 'tick', 'text-anchor': 'end' }, xLabel));
  if (yLabel) root.append(svg('text', { x: 4, y: PAD.top - 10, class: 'tick axis-y' }, yLabel));
  return root;
}
