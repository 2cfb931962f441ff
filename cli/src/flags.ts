/**
 * Flag parsing: `--name value`, `--name=value`, boolean `--name`, and UNDERLAY_NAME environment
 * variables (flags win). Values are validated by each command's zod schema; a bad value is refused
 * with a message naming the flag and what is allowed.
 *
 * Why not node:util `parseArgs`: it would replace only the split of `--name=value` / `-o value` (about
 * fifteen lines of the loop below), while everything around it stays ours, and its semantics differ where
 * the CLI's users (and the cli tests) already rely on ours:
 * - defaults from UNDERLAY_* variables, with `fromFlags` telling which keys came from the command line,
 *   and repeated flags (`--label a=1 --label b=2`) replacing what the environment said rather than adding to it;
 * - comma lists (`--etcd a,b`, `--subnet x,y`), also inside repeated flags;
 * - `--nats-auth=false` / `--follow=0` for booleans: strict parseArgs refuses a value on a boolean option;
 * - error texts that name the flag and list the allowed ones (`unknown flag --bogus; allowed: ...`,
 *   `flag --subnet needs a value`): strict parseArgs throws its own texts with only an error code, so keeping
 *   ours would mean matching its messages, and non-strict mode needs the same checks written here anyway;
 * - `-o=KEY=VALUE` is `KEY=VALUE` here but `=KEY=VALUE` for parseArgs, and `-fx` (a boolean with a value
 *   attached) would be split into `-f -x`.
 * With `tokens: true` the loop would stay about as long as it is; so the parser stays hand-written.
 */
import { UnderlayError } from '@underlay/core';
import type { z } from 'zod';

/** A command line the CLI refuses (exit code 2); code `invalid-argument`. */
export class UsageError extends UnderlayError {
  constructor(message: string) {
    super('invalid-argument', message);
    this.name = 'UsageError';
  }
}

export interface FlagSpec {
  /** camelCase key in the config object. */
  key: string;
  /** kebab-case flag name without dashes. */
  flag: string;
  /** One-letter alias (`-o`). */
  short?: string;
  boolean?: boolean;
  /** Comma-separated values (`--etcd a,b`). */
  list?: boolean;
  /** May be given several times; the values add up (`--label a=1 --label b=2`). With `list`, each may also be a comma list. */
  repeat?: boolean;
  /** Shown instead of VALUE in the help. */
  value?: string;
  help: string;
}

export const envName = (flag: string) => `UNDERLAY_${flag.toUpperCase().replace(/-/g, '_')}`;

export interface ParsedFlags {
  values: Record<string, unknown>;
  /** Arguments that are not flags (subcommands, names), in order. */
  rest: string[];
  /** Keys given as flags (the others came from UNDERLAY_* variables). */
  fromFlags: Set<string>;
  /** --help or -h was given. */
  help: boolean;
}

export function parseFlags(argv: string[], specs: FlagSpec[], env: NodeJS.ProcessEnv = process.env): ParsedFlags {
  const byFlag = new Map(specs.map((s) => [s.flag, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const values: Record<string, unknown> = {};
  const fromFlags = new Set<string>();
  for (const s of specs) {
    const e = env[envName(s.flag)];
    if (e !== undefined && e !== '') values[s.key] = s.boolean ? e !== '0' && e !== 'false' : s.list || s.repeat ? e.split(',') : e;
  }
  const rest: string[] = [];
  let help = false;
  const allowed = () => specs.map((s) => `--${s.flag}${s.short ? ` (-${s.short})` : ''}`).join(', ');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i + 1));
      break;
    }
    if (a === '--help' || a === '-h') {
      help = true;
      continue;
    }
    let spec: FlagSpec | undefined;
    let name: string;
    let v: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = `--${a.slice(2, eq < 0 ? undefined : eq)}`;
      spec = byFlag.get(name.slice(2));
      v = eq < 0 ? undefined : a.slice(eq + 1);
    } else if (/^-[A-Za-z]/.test(a)) {
      name = a.slice(0, 2);
      spec = byShort.get(a[1]!);
      v = a.length > 2 ? a.slice(a[2] === '=' ? 3 : 2) : undefined;
    } else {
      rest.push(a);
      continue;
    }
    if (!spec) throw new UsageError(`unknown flag ${name}; allowed: ${allowed()}`);
    if (spec.boolean) {
      values[spec.key] = v === undefined ? true : v !== 'false' && v !== '0';
      fromFlags.add(spec.key);
      continue;
    }
    if (v === undefined) {
      v = argv[++i];
      if (v === undefined) throw new UsageError(`flag ${name} needs a value`);
    }
    const parts = spec.list ? v.split(',') : [v];
    if (spec.repeat) {
      // Flags replace what the environment said; repeated flags add up.
      const before = fromFlags.has(spec.key) ? (values[spec.key] as string[]) : [];
      values[spec.key] = [...before, ...parts];
    } else {
      values[spec.key] = spec.list ? parts : v;
    }
    fromFlags.add(spec.key);
  }
  return { values, rest, fromFlags, help };
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
  return specs
    .map((s) => {
      const head = `  ${s.short ? `-${s.short}, ` : ''}--${s.flag}${s.boolean ? '' : ` ${s.value ?? 'VALUE'}`}`;
      return head.length >= 30 ? `${head}\n${' '.repeat(30)}${s.help}` : head.padEnd(30) + s.help;
    })
    .join('\n');
}
