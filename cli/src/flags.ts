/**
 * Flag parsing: `--name value`, `--name=value`, boolean `--name`, and UNDERLAY_NAME environment
 * variables (flags win). Values are validated by each command's zod schema; a bad value is refused
 * with a message naming the flag and what is allowed.
 */
import type { z } from 'zod';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface FlagSpec {
  /** camelCase key in the config object. */
  key: string;
  /** kebab-case flag name without dashes. */
  flag: string;
  boolean?: boolean;
  list?: boolean;
  help: string;
}

export const envName = (flag: string) => `UNDERLAY_${flag.toUpperCase().replace(/-/g, '_')}`;

export function parseFlags(argv: string[], specs: FlagSpec[], env: NodeJS.ProcessEnv = process.env): { values: Record<string, unknown>; rest: string[] } {
  const byFlag = new Map(specs.map((s) => [s.flag, s]));
  const values: Record<string, unknown> = {};
  for (const s of specs) {
    const e = env[envName(s.flag)];
    if (e !== undefined && e !== '') values[s.key] = s.boolean ? e !== '0' && e !== 'false' : s.list ? e.split(',') : e;
  }
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      rest.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const spec = byFlag.get(name);
    if (!spec) throw new UsageError(`unknown flag --${name}; allowed: ${specs.map((s) => `--${s.flag}`).join(', ')}`);
    let v: string | undefined = eq < 0 ? undefined : a.slice(eq + 1);
    if (spec.boolean) {
      values[spec.key] = v === undefined ? true : v !== 'false' && v !== '0';
      continue;
    }
    if (v === undefined) {
      v = argv[++i];
      if (v === undefined) throw new UsageError(`flag --${name} needs a value`);
    }
    values[spec.key] = spec.list ? v.split(',') : v;
  }
  return { values, rest };
}

export function validate<S extends z.ZodType>(schema: S, values: Record<string, unknown>, specs: FlagSpec[]): z.infer<S> {
  const r = schema.safeParse(values);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const key = String(issue.path[0] ?? '');
  const spec = specs.find((s) => s.key === key);
  const flag = spec ? `--${spec.flag} (or ${envName(spec.flag)})` : key;
  const msg = issue.code === 'invalid_type' && issue.message.includes('undefined') ? 'is required' : issue.message;
  throw new UsageError(`${flag}: ${msg}`);
}

export function helpFor(specs: FlagSpec[]): string {
  return specs.map((s) => `  --${s.flag}${s.boolean ? '' : ' VALUE'}`.padEnd(28) + s.help).join('\n');
}
