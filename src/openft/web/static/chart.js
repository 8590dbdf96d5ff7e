// A small SVG line chart for training curves: one x axis (step), several series, a legend, and a point per value.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 260;
const MARGIN = { top: 30, right: 16, bottom: 40, left: 56 };

function s(tag, attrs = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

/** About `count` round tick values covering [low, high]; whole numbers only with `integer` (steps). */
export function niceTicks(low, high, count = 5, integer = false) {
  if (low === high) {
    const pad = Math.abs(low) * 0.1 || 1;
    low -= pad;
    high += pad;
  }
  const rough = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= rough);
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let tick = Math.floor(low / step) * step; tick <= high + step * 1e-9; tick += step) {
    ticks.push(Number(tick.toPrecision(12)));
  }
  if (ticks[ticks.length - 1] < high) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

/** A tick label with as many decimals as the tick spacing needs (10.62, 10.64, … rather than 10.6, 10.6, …). */
function tickLabel(value, ticks) {
  const spacing = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  let decimals = 0;
  while (decimals < 8 && Math.abs(Math.round(spacing * 10 ** decimals) - spacing * 10 ** decimals) > 1e-6) decimals++;
  return value.toFixed(decimals);
}

function valueLabel(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
}

/**
 * series: [{name, color, points: [{x, y}]}]. Returns an <svg> whose `data-points` is the number of points drawn,
 * so a reader (or a test) can tell that the chart grew.
 */
export function lineChart({ id, title, series, xLabel = "step", yLabel = "" }) {
  const drawn = series.filter((line) => line.points.length > 0);
  const all = drawn.flatMap((line) => line.points);
  const svg = s("svg", {
    id,
    class: "chart",
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": title,
    "data-points": String(all.length),
  });
  svg.append(s("title", {}, title));
  if (all.length === 0) {
    svg.append(s("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "chart-empty" },
      "No metrics yet: the chart fills in as training reports steps."));
    return svg;
  }
  const xs = niceTicks(Math.min(...all.map((p) => p.x)), Math.max(...all.map((p) => p.x)), 6, true);
  const ys = niceTicks(Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y)), 5);
  const [x0, x1, y0, y1] = [xs[0], xs[xs.length - 1], ys[0], ys[ys.length - 1]];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x) => MARGIN.left + ((x - x0) / (x1 - x0 || 1)) * plotW;
  const py = (y) => MARGIN.top + plotH - ((y - y0) / (y1 - y0 || 1)) * plotH;

  const grid = s("g", { class: "chart-grid" });
  for (const tick of ys) {
    grid.append(s("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: py(tick), y2: py(tick) }));
    grid.append(s("text", { x: MARGIN.left - 6, y: py(tick) + 4, "text-anchor": "end" }, tickLabel(tick, ys)));
  }
  for (const tick of xs) {
    grid.append(s("text", { x: px(tick), y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, tickLabel(tick, xs)));
  }
  grid.append(s("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "axis-label" },
    xLabel));
  if (yLabel) {
    grid.append(s("text", { x: 12, y: MARGIN.top + plotH / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 12 ${MARGIN.top + plotH / 2})` }, yLabel));
  }
  svg.append(grid);

  drawn.forEach((line, index) => {
    const group = s("g", { class: "series", "data-series": line.name, "data-points": String(line.points.length) });
    const path = line.points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" ");
    group.append(s("polyline", { points: path, fill: "none", stroke: line.color, "stroke-width": 2 }));
    // Dots only where they stay readable; a long run is a line.
    const radius = line.points.length > 80 ? 1.5 : 3;
    for (const point of line.points) {
      const dot = s("circle", { class: "point", cx: px(point.x), cy: py(point.y), r: radius, fill: line.color });
      dot.append(s("title", {}, `${line.name}, step ${point.x}: ${valueLabel(point.y)}`));
      group.append(dot);
    }
    const legendX = MARGIN.left + 8 + index * 150;
    group.append(s("rect", { x: legendX, y: MARGIN.top - 20, width: 12, height: 4, fill: line.color }));
    group.append(s("text", { x: legendX + 16, y: MARGIN.top - 14, class: "legend" }, line.name));
    svg.append(group);
  });
  return svg;
}
