/** Output for people: docker-like aligned tables and "3 seconds ago". */

/** Columns padded to their widest cell, three spaces apart, header in capitals; no trailing spaces. */
export function table(headers: string[], rows: (string | number | undefined)[][]): string {
  const cells = [headers.map((h) => h.toUpperCase()), ...rows.map((r) => headers.map((_, i) => cell(r[i])))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => [...r[i]!].length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(widths[i]! - [...c].length))).join('   ').trimEnd()).join('\n') + '\n';
}

/** Empty values show as "-"; runs of spaces inside a value are folded so columns stay parseable. */
function cell(v: string | number | undefined): string {
  if (v === undefined || v === '') return '-';
  return String(v).replace(/\s+/g, ' ');
}

/** "just now", "42 seconds ago", "3 minutes ago", "2 hours ago", "5 days ago", like docker ps. */
export function ago(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 1) return 'just now';
  const unit = (n: number, u: string) => `${n} ${u}${n === 1 ? '' : 's'} ago`;
  if (s < 60) return unit(s, 'second');
  if (s < 3600) return unit(Math.floor(s / 60), 'minute');
  if (s < 86_400) return unit(Math.floor(s / 3600), 'hour');
  return unit(Math.floor(s / 86_400), 'day');
}

export const since = (iso: string | undefined, nowMs = Date.now()): string | undefined => {
  if (!iso) return undefined;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? ago(nowMs - t) : iso;
};
