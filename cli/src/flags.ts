/**
 * The CLI's flags as data: each command declares its FlagSpecs once, and from them come its commander
 * options (program.ts), its UNDERLAY_* environment variables, its config-file keys (config-file.ts), its
 * help and its shell completion. Argument syntax (`--name value`, `--name=value`, `-o value`, help,
 * sub-commands) is commander's; what stays here is the layering commander has no model for:
 * flags > UNDERLAY_* environment > config file > defaults, with repeated flags replacing (not adding to)
 * what the environment or the file said, comma lists, and `0`/`false` meaning false in the environment.
 * The values are then validated by each command's zod schema; a bad one is refused naming the flag.
 */
import { UnderlayError } from '@underlay/core';
import type { z } from 'zod';

/** A command line (or config file) the CLI refuses (exit code 2); code `invalid-argument`. */
export class UsageError extends UnderlayError {
  constructor(message: string) {
    super('invalid-argument', message);
    this.name = 'UsageError';
  }
}

export interface FlagSpec {
  /** camelCase key in the config object. */
  key: string;
  /** kebab-case flag name without dashes; also its key in the config file. */
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
  /**
   * The value the command uses when the flag is not set anywhere, exactly as its schema applies it (shown in
   * the help; test/unit/cli-flags.test.ts checks each against the schema). Absent: none, or one computed at run time
   * (the help then says how).
   */
  default?: string | number | boolean;
  /** Read from UNDERLAY_<FLAG> and the config file (default true). Off for per-run flags (output format, filters). */
  layered?: boolean;
  /** Not a config-file key (`--force`, `--out`: per run only), though still an UNDERLAY_* variable. */
  notInFile?: boolean;
}

export const envName = (flag: string) => `UNDERLAY_${flag.toUpperCase().replace(/-/g, '_')}`;

/** Where a value came from, strongest first. */
export type Source = 'flag' | 'env' | 'file';

export interface ResolvedFlags {
  values: Record<string, unknown>;
  /** Each set key's source. */
  sources: Record<string, Source>;
  /** Non-flag arguments, in order. */
  rest: string[];
}

/** A config file's values for one command (config-file.ts): keys are FlagSpec keys, already typed. */
export interface FileLayer {
  path: string;
  values: Record<string, unknown>;
}

const layered = (s: FlagSpec) => s.layered !== false;

/** An UNDERLAY_* variable's value as the flag would give it; empty means unset. */
export function envValue(s: FlagSpec, raw: string | undefined): unknown {
  if (raw === undefined || raw === '') return undefined;
  if (s.boolean) return raw !== '0' && raw !== 'false';
  return s.list || s.repeat ? raw.split(',') : raw;
}

/** Flags over environment over file; unset keys are left out (the schema's defaults apply). */
export function resolveFlags(specs: FlagSpec[], fromFlags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env, file?: FileLayer, rest: string[] = []): ResolvedFlags {
  const values: Record<string, unknown> = {};
  const sources: Record<string, Source> = {};
  for (const s of specs) {
    const layers: [Source, unknown][] = [['flag', fromFlags[s.key]]];
    if (layered(s)) layers.push(['env', envValue(s, env[envName(s.flag)])], ['file', s.notInFile ? undefined : file?.values[s.key]]);
    const hit = layers.find(([, v]) => v !== undefined);
    if (hit) {
      values[s.key] = hit[1];
      sources[s.key] = hit[0];
    }
  }
  return { values, sources, rest };
}

/** How a flag is named in messages: `--etcd (or UNDERLAY_ETCD)`. */
export function flagName(spec: FlagSpec): string {
  return layered(spec) ? `--${spec.flag} (or ${envName(spec.flag)})` : `--${spec.flag}`;
}

export function validate<S extends z.ZodType>(schema: S, values: Record<string, unknown>, specs: FlagSpec[]): z.infer<S> {
  const r = schema.safeParse(values);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const key = String(issue.path[0] ?? '');
  const spec = specs.find((s) => s.key === key);
  const flag = spec ? flagName(spec) : key;
  const msg = issue.code === 'invalid_type' && issue.message.includes('undefined') ? 'is required' : issue.message;
  throw new UsageError(`${flag}: ${msg}`);
}
