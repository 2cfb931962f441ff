/**
 * How list commands print, as docker and kubectl do: a table by default, `-o wide` with more columns,
 * `-o json` (the API's answer as it came), `-o yaml` (the same, as YAML), `-q` the names (ids) alone,
 * one a line, for scripts (`underlay network rm $(underlay network ls -q)`). `--json` is `-o json`.
 */
import { stringify as toYaml } from 'yaml';
import { z } from 'zod';
import { UsageError, type FlagSpec, type ResolvedFlags } from './flags.js';

export const OUTPUT_FORMATS = ['json', 'yaml', 'wide'] as const;

export const outputFlags: FlagSpec[] = [
  { key: 'output', flag: 'output', short: 'o', value: 'json|yaml|wide', help: 'print JSON, YAML, or a wider table (default: a table)', layered: false },
  { key: 'quiet', flag: 'quiet', short: 'q', boolean: true, help: 'print only the names, one a line', layered: false },
  { key: 'json', flag: 'json', boolean: true, help: 'the same as -o json', layered: false },
];

/** `-o` and `--json` for a command that prints one answer (inspect, create, version): no table to widen, no names. */
export const answerFlags: FlagSpec[] = [
  { key: 'output', flag: 'output', short: 'o', value: 'json|yaml', help: 'print JSON or YAML (default: text)', layered: false },
  { key: 'json', flag: 'json', boolean: true, help: 'the same as -o json', layered: false },
];

export type Output = 'table' | (typeof OUTPUT_FORMATS)[number] | 'quiet';

const Format = z.enum(OUTPUT_FORMATS);

/** The format the flags ask for; `-q` with `-o` is refused. */
export function outputOf(p: ResolvedFlags, allowed: readonly Output[] = ['table', 'json', 'yaml', 'wide', 'quiet']): Output {
  const v = p.values;
  let out: Output = 'table';
  if (v.output !== undefined) {
    const r = Format.safeParse(v.output);
    if (!r.success) throw new UsageError(`--output (-o): must be one of ${allowed.filter((f) => f !== 'table' && f !== 'quiet').join(', ')} (got ${JSON.stringify(v.output)})`);
    out = r.data;
  }
  if (v.json === true) {
    if (out !== 'table' && out !== 'json') throw new UsageError(`--json and -o ${out} ask for different formats`);
    out = 'json';
  }
  if (v.quiet === true) {
    if (out !== 'table') throw new UsageError(`-q prints names only; it does not go with -o ${out}`);
    out = 'quiet';
  }
  if (!allowed.includes(out)) throw new UsageError(`--output (-o): must be one of ${allowed.filter((f) => f !== 'table' && f !== 'quiet').join(', ')} (got ${JSON.stringify(out)})`);
  return out;
}

/** The API's answer as JSON or YAML; false for the other formats (the command prints its text). */
export function printStructured(out: Output, raw: unknown): boolean {
  if (out === 'json') process.stdout.write(`${JSON.stringify(raw, null, 2)}\n`);
  else if (out === 'yaml') process.stdout.write(toYaml(raw));
  else return false;
  return true;
}

/** A list in the chosen format: `table(wide)` for the tables, `names` for -q. */
export function printList(out: Output, raw: unknown, view: { table: (wide: boolean) => string; names: () => (string | undefined)[] }): void {
  if (printStructured(out, raw)) return;
  if (out === 'quiet') {
    process.stdout.write(view.names().filter((n): n is string => !!n).map((n) => `${n}\n`).join(''));
    return;
  }
  process.stdout.write(view.table(out === 'wide'));
}
