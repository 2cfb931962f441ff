'use strict';
/**
 * Figures of the benchmarks: nearest-rank percentiles, a summary of samples, and a plain-text table that prints
 * them side by side (bench/routes.js, bench/scale.js).
 */

/** Nearest-rank percentile of an ascending array (`p` in 0..1); NaN for none. */
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** n, p50, p90, p99, min and max of `xs` (any order). */
function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), min: s[0], max: s[s.length - 1] };
}

/** One decimal, or n/a. */
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');

/** Columns right-aligned under their headers. */
function table(header, rows) {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => c.padStart(w[i])).join(' | ');
  return [line(header), w.map((n) => '-'.repeat(n)).join('-|-'), ...rows.map(line)].join('\n');
}

module.exports = { percentile, stats, f1, table };
