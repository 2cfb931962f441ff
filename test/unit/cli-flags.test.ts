/**
 * The CLI's flag layers and config file: flags > UNDERLAY_* > config file > defaults; the file's sections
 * and keys (unknown ones refused naming the file and key; a missing --config is an error, a missing default
 * file is none); and every default the help shows is the one the schema applies.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ControllerConfig } from '@underlay/controller';
import { AgentConfig } from '@underlay/node-agent';
import { LogOptions } from '@underlay/adapters';
import { resolveFlags, UsageError, type FlagSpec } from '../../cli/src/flags';
import { configPath, loadConfigSection, parseConfig } from '../../cli/src/config-file';
import { SECTIONS } from '../../cli/src/main';
import { controllerFlags } from '../../cli/src/specs/controller';
import { agentFlags } from '../../cli/src/specs/agent';
import { logFlags } from '../../cli/src/specs/log';
import type { z } from 'zod';

const specs: FlagSpec[] = [
  { key: 'etcd', flag: 'etcd', list: true, help: '' },
  { key: 'name', flag: 'name', help: '' },
  { key: 'compact', flag: 'etcd-compact', boolean: true, help: '' },
  { key: 'label', flag: 'label', repeat: true, help: '' },
];

describe('layers', () => {
  it('flags win over the environment, which wins over the file', () => {
    const file = { path: 'f', values: { name: 'from-file', etcd: ['http://file:2379'], compact: true, label: ['a=1'] } };
    const env = { UNDERLAY_NAME: 'from-env', UNDERLAY_ETCD_COMPACT: 'false', UNDERLAY_LABEL: 'b=2,c=3' };
    const r = resolveFlags(specs, { name: 'from-flag' }, env, file);
    expect(r.values).toEqual({ name: 'from-flag', etcd: ['http://file:2379'], compact: false, label: ['b=2', 'c=3'] });
    expect(r.sources).toEqual({ name: 'flag', etcd: 'file', compact: 'env', label: 'env' });
    // Repeated flags replace what the environment said.
    expect(resolveFlags(specs, { label: ['x=1'] }, env, file).values.label).toEqual(['x=1']);
    // Nothing anywhere: left out, so the schema's default applies.
    expect(resolveFlags(specs, {}, {}, undefined).values).toEqual({});
    // An empty variable is unset.
    expect(resolveFlags(specs, {}, { UNDERLAY_NAME: '' }, file).values.name).toBe('from-file');
  });
});

describe('config file', () => {
  it('reads sections of flag names, typed as the flags take them', () => {
    const text = 'controller:\n  etcd: [http://e1:2379, http://e2:2379]\n  nats: nats://n:4222\n  lease-ttl: 5\n  etcd-compact: false\n  log-level: debug\nagent:\n  parent-map: eth0=ens3,eth1=ens4\nclient:\n  controller: http://c:7410\n';
    const c = parseConfig(text, '/x.yaml', SECTIONS);
    expect(c.controller).toEqual({ etcd: ['http://e1:2379', 'http://e2:2379'], nats: ['nats://n:4222'], leaseTtlSeconds: '5', etcdCompact: false, logLevel: 'debug' });
    expect(c.agent).toEqual({ parentMap: ['eth0=ens3', 'eth1=ens4'] });
    expect(c.client).toEqual({ controller: 'http://c:7410' });
  });

  it('refuses unknown sections and keys, naming the file and the key', () => {
    expect(() => parseConfig('controller:\n  etcd-endpoints: x\n', '/etc/u.yaml', SECTIONS)).toThrow(/^\/etc\/u\.yaml: unknown key "etcd-endpoints" in section controller; keys: etcd, nats/);
    expect(() => parseConfig('controler:\n  etcd: x\n', '/etc/u.yaml', SECTIONS)).toThrow('/etc/u.yaml: unknown section "controler"');
    expect(() => parseConfig('creds:\n  force: true\n', '/etc/u.yaml', SECTIONS)).toThrow('unknown key "force" in section creds');
    expect(() => parseConfig('agent:\n  routes: maybe\n', '/u', SECTIONS)).toThrow('/u: agent.routes: must be true or false');
    expect(() => parseConfig('agent: [1]\n', '/u', SECTIONS)).toThrow(UsageError);
    expect(() => parseConfig('a: [', '/u', SECTIONS)).toThrow(/^\/u: not YAML/);
  });

  it('every service flag is a key of its section', () => {
    for (const f of [...controllerFlags, ...logFlags]) expect(parseConfig(`controller:\n  ${f.flag}: ${f.boolean ? 'true' : '"1"'}\n`, '/u', SECTIONS).controller).toHaveProperty(f.key);
    for (const f of [...agentFlags, ...logFlags]) expect(parseConfig(`agent:\n  ${f.flag}: ${f.boolean ? 'true' : '"1"'}\n`, '/u', SECTIONS).agent).toHaveProperty(f.key);
  });

  it('a missing default file is no file; a missing named file is an error', () => {
    expect(configPath(undefined, {})).toEqual({ path: '/etc/underlay/config.yaml', named: false });
    expect(configPath(undefined, { UNDERLAY_CONFIG: '/e.yaml' })).toEqual({ path: '/e.yaml', named: true });
    expect(configPath('/f.yaml', { UNDERLAY_CONFIG: '/e.yaml' })).toEqual({ path: '/f.yaml', named: true });
    expect(loadConfigSection({ path: '/nonexistent/u.yaml', named: false }, SECTIONS, 'client')).toBeUndefined();
    expect(() => loadConfigSection({ path: '/nonexistent/u.yaml', named: true }, SECTIONS, 'client')).toThrow('--config (or UNDERLAY_CONFIG): cannot read /nonexistent/u.yaml: ENOENT');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-cfg-'));
    const f = path.join(dir, 'c.yaml');
    fs.writeFileSync(f, 'client:\n  token-file: /t\n');
    expect(loadConfigSection({ path: f, named: true }, SECTIONS, 'client')).toEqual({ path: f, values: { tokenFile: '/t' } });
    fs.rmSync(dir, { recursive: true });
  });
});

describe('defaults shown in the help are the ones applied', () => {
  const check = (flags: FlagSpec[], schema: z.ZodObject) => {
    for (const f of flags) {
      const field = (schema.shape as Record<string, z.ZodType>)[f.key];
      if (!field) continue;
      const applied = field.safeParse(undefined);
      const value = applied.success ? applied.data : undefined;
      const shown = f.default;
      expect({ flag: f.flag, shown: shown === undefined ? undefined : String(shown) }).toEqual({
        flag: f.flag,
        shown: value === undefined || (Array.isArray(value) && !value.length) || (typeof value === 'object' && !Array.isArray(value) && !Object.keys(value as object).length) || value === false ? (shown === undefined ? undefined : String(shown)) : String(value),
      });
      if (shown !== undefined) expect({ flag: f.flag, applied: String(value) }).toEqual({ flag: f.flag, applied: String(shown) });
    }
  };
  it('controller', () => check(controllerFlags, ControllerConfig as unknown as z.ZodObject));
  it('agent', () => check(agentFlags, AgentConfig));
  it('log', () => check(logFlags, LogOptions));
  it('etcd and nats show no default (they are required)', () => {
    expect(controllerFlags.find((f) => f.flag === 'etcd')!.default).toBeUndefined();
    expect(controllerFlags.find((f) => f.flag === 'nats')!.default).toBeUndefined();
  });
});
