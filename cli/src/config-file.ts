/**
 * The config file: `/etc/underlay/config.yaml`, or the one `--config PATH` or UNDERLAY_CONFIG names. One
 * section per command, its keys the command's flag names without `--`:
 *
 *   client:     { controller: https://ctl:7410, token-file: ~/.underlay-token, cacert: /etc/underlay/ca.pem }
 *   controller: { etcd: [http://e1:2379, http://e2:2379], nats: nats://n1:4222, log-level: debug }
 *   agent:      { node: h1, nats: nats://n1:4222, routes: false }
 *   up:         { state-dir: /srv/underlay }
 *   creds:      { state-dir: /srv/underlay }
 *
 * Flags win over UNDERLAY_* variables, which win over the file (flags.ts). A missing default file is no
 * file; a missing file that was named is an error, and so is an unknown section or key (naming the file
 * and the key), so a typo never goes unnoticed. Values: strings, numbers, booleans, lists (a YAML list or
 * a comma string) as the flag takes them.
 */
import * as fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { UsageError, type FileLayer, type FlagSpec } from './flags.js';

export const DEFAULT_CONFIG_FILE = '/etc/underlay/config.yaml';
export const CONFIG_ENV = 'UNDERLAY_CONFIG';

/** A section's keys: the flags of its command. */
export type Sections = Record<string, FlagSpec[]>;

const Scalar = z.union([z.string(), z.number(), z.boolean()]);
const Value = z.union([Scalar, z.array(Scalar)]);
const FileShape = z.record(z.string(), z.record(z.string(), Value).nullable());

/** The file to read: --config, else UNDERLAY_CONFIG, else the default (which may be missing). */
export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): { path: string; named: boolean } {
  const named = flag ?? (env[CONFIG_ENV] || undefined);
  return named ? { path: named, named: true } : { path: DEFAULT_CONFIG_FILE, named: false };
}

/** One value as the flag would give it (lists as string arrays, booleans as booleans, the rest as strings). */
function typed(file: string, where: string, spec: FlagSpec, v: z.infer<typeof Value>): unknown {
  const bad = (what: string) => new UsageError(`${file}: ${where}: ${what}`);
  if (spec.boolean) {
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === 'false') return v === 'true';
    throw bad('must be true or false');
  }
  if (Array.isArray(v)) {
    if (!spec.list && !spec.repeat) throw bad('takes one value, not a list');
    return v.map(String);
  }
  if (typeof v === 'boolean') throw bad('must be a value, not true or false');
  return spec.list || spec.repeat ? String(v).split(',') : String(v);
}

/** Every section of a config file's text, checked against `sections`; keys become FlagSpec keys. */
export function parseConfig(text: string, file: string, sections: Sections): Record<string, Record<string, unknown>> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new UsageError(`${file}: not YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  const r = FileShape.safeParse(doc);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new UsageError(`${file}: ${i.path.length ? i.path.join('.') : 'the file'}: must be sections (${Object.keys(sections).join(', ')}) of KEY: VALUE`);
  }
  const out: Record<string, Record<string, unknown>> = {};
  for (const [section, keys] of Object.entries(r.data)) {
    const specs = sections[section];
    if (!specs) throw new UsageError(`${file}: unknown section "${section}"; sections: ${Object.keys(sections).join(', ')}`);
    const allowed = specs.filter((s) => s.layered !== false && !s.notInFile);
    const values: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(keys ?? {})) {
      const spec = allowed.find((s) => s.flag === key);
      if (!spec) throw new UsageError(`${file}: unknown key "${key}" in section ${section}; keys: ${allowed.map((s) => s.flag).join(', ')}`);
      values[spec.key] = typed(file, `${section}.${key}`, spec, v);
    }
    out[section] = values;
  }
  return out;
}

/** The config file's values for one section, or undefined when there is no file (the default one missing). */
export function loadConfigSection(where: { path: string; named: boolean }, sections: Sections, section: string): FileLayer | undefined {
  let text: string;
  try {
    text = fs.readFileSync(where.path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!where.named && code === 'ENOENT') return undefined;
    throw new UsageError(`--config (or ${CONFIG_ENV}): cannot read ${where.path}: ${code ?? (e as Error).message}`);
  }
  return { path: where.path, values: parseConfig(text, where.path, sections)[section] ?? {} };
}
