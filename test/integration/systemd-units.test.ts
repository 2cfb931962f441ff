// The systemd units of deploy/systemd pass `systemd-analyze verify` with nothing said about them, and mean what
// deploy/systemd/README.md says: the agent before docker.service, wanted by it, restarted on failure; the env
// examples name only real flags and set the flags the Helm chart runs with (deploy/container-args.json).
//
// How verify is run, and why: `systemd-analyze verify` checks that ExecStart's executable exists, and the units
// run /usr/local/bin/underlay, which a test machine does not have (install.sh puts it there). So the test installs
// the units with `install.sh --root DIR --skip-cli` into a temporary root that holds a copy of this machine's
// /usr/lib/systemd/system (the units their dependencies name: sysinit.target, docker.service when installed, ...)
// and a stand-in executable at DIR/usr/local/bin/underlay, and runs `systemd-analyze verify --root=DIR --man=no
// --generators=no` on the unit names: the units are verified as installed, unchanged. systemd only *warns* about an
// unknown key or a bad value (exit code 0), so any output naming a unit fails the test; a broken copy is checked
// to fail (a misspelt key, a missing executable). Measured on systemd 252: 0.1 s per verify, 6 s for the file (most of it loading the CLI modules).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { agentFlags } from '../../cli/src/commands/agent';
import { controllerFlags } from '../../cli/src/commands/controller';
import { logFlags } from '../../cli/src/commands/run';
import { envName, type FlagSpec } from '../../cli/src/flags';
import { formatRunFailure, requireExecutable, run } from '../lab/run';

const ROOT = path.resolve(__dirname, '../..');
const SYSTEMD_DIR = path.join(ROOT, 'deploy/systemd');
const UNITS = ['underlay-agent.service', 'underlay-controller.service'];
const SYSTEM_UNITS = '/usr/lib/systemd/system';

let analyze: string;
let root: string;

/** Parses a unit file into `section.Key` → values (a key given twice keeps every value, in order). */
function parseUnit(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      section = m[1]!;
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq).trim()}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return out;
}

/** All space-separated words of a key's values. */
const words = (unit: Map<string, string[]>, key: string) => (unit.get(key) ?? []).flatMap((v) => v.split(/\s+/).filter(Boolean));

function readUnit(name: string): Map<string, string[]> {
  return parseUnit(fs.readFileSync(path.join(SYSTEMD_DIR, name), 'utf8'));
}

/** `systemd-analyze verify` in the temporary root; the output lines (stdout and stderr). */
async function verify(units: string[]): Promise<{ code: number | null; lines: string[] }> {
  const r = await run(analyze, ['verify', `--root=${root}`, '--man=no', '--generators=no', ...units], { timeoutMs: 30_000 });
  if (r.timedOut) throw new Error(formatRunFailure(r));
  return { code: r.code, lines: (r.stdout + r.stderr).split('\n').filter((l) => l.trim() !== '') };
}

beforeAll(async () => {
  analyze = requireExecutable('systemd-analyze', 'install the Debian package systemd');
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-systemd-'));
  fs.mkdirSync(path.join(root, 'usr/lib/systemd'), { recursive: true });
  fs.cpSync(SYSTEM_UNITS, path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  const inst = await run('bash', [path.join(SYSTEMD_DIR, 'install.sh'), '--root', root, '--skip-cli', 'agent', 'controller'], { timeoutMs: 30_000 });
  if (inst.code !== 0) throw new Error(formatRunFailure(inst));
  fs.mkdirSync(path.join(root, 'usr/local/bin'), { recursive: true });
  fs.writeFileSync(path.join(root, 'usr/local/bin/underlay'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
});

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('systemd-analyze verify', () => {
  test('install.sh put the units, the env files (0600) and the folders in place', () => {
    for (const u of UNITS) expect(fs.readFileSync(path.join(root, 'etc/systemd/system', u), 'utf8')).toBe(fs.readFileSync(path.join(SYSTEMD_DIR, u), 'utf8'));
    for (const c of ['agent', 'controller']) {
      const st = fs.statSync(path.join(root, `etc/underlay/${c}.env`));
      expect((st.mode & 0o777).toString(8)).toBe('600');
    }
    expect((fs.statSync(path.join(root, 'etc/underlay/api')).mode & 0o777).toString(8)).toBe('700');
  });

  test('both units verify with no warning', async () => {
    const r = await verify(UNITS);
    expect({ code: r.code, lines: r.lines }).toEqual({ code: 0, lines: [] });
  });

  test('a misspelt key or a bad value fails (systemd only warns: the output is what fails)', async () => {
    const unit = path.join(root, 'etc/systemd/system/underlay-broken.service');
    const text = fs.readFileSync(path.join(SYSTEMD_DIR, 'underlay-agent.service'), 'utf8');
    try {
      fs.writeFileSync(unit, text.replace(/^Restart=/m, 'Restrt=').replace(/^RestartSec=.*$/m, 'RestartSec=two'));
      const r = await verify(['underlay-broken.service']);
      expect(r.lines.join('\n')).toMatch(/Unknown key 'Restrt'/);
      expect(r.lines.join('\n')).toMatch(/Failed to parse sec value.*two/);
    } finally {
      fs.rmSync(unit, { force: true });
    }
  });

  test('a missing executable fails (why the test root has a stand-in /usr/local/bin/underlay)', async () => {
    const stub = path.join(root, 'usr/local/bin/underlay');
    fs.renameSync(stub, `${stub}.away`);
    try {
      const r = await verify(['underlay-agent.service']);
      expect(r.code).not.toBe(0);
      expect(r.lines.join('\n')).toMatch(/\/usr\/local\/bin\/underlay is not executable/);
    } finally {
      fs.renameSync(`${stub}.away`, stub);
    }
  });
});

describe('what the units say', () => {
  test('the agent starts before docker.service, is wanted by it and by multi-user.target, after network-online.target, restarts', () => {
    const u = readUnit('underlay-agent.service');
    expect(words(u, 'Unit.Before')).toContain('docker.service');
    expect(words(u, 'Install.WantedBy')).toEqual(expect.arrayContaining(['docker.service', 'multi-user.target']));
    expect(words(u, 'Unit.After')).toContain('network-online.target');
    expect(words(u, 'Unit.Wants')).toContain('network-online.target');
    expect(words(u, 'Unit.After')).not.toContain('docker.service');
    expect(['always', 'on-failure']).toContain(u.get('Service.Restart')?.[0]);
    expect(u.get('Service.EnvironmentFile')).toEqual(['-/etc/underlay/agent.env']);
    expect(u.get('Service.ExecStart')).toEqual(['/usr/local/bin/underlay agent']);
  });

  test('the controller runs as user underlay, restarts on failure, reads controller.env', () => {
    const u = readUnit('underlay-controller.service');
    expect(u.get('Service.User')).toEqual(['underlay']);
    expect(u.get('Service.Restart')).toEqual(['on-failure']);
    expect(u.get('Service.EnvironmentFile')).toEqual(['-/etc/underlay/controller.env']);
    expect(u.get('Service.ExecStart')).toEqual(['/usr/local/bin/underlay controller']);
    expect(words(u, 'Install.WantedBy')).toEqual(['multi-user.target']);
  });
});

describe('env examples', () => {
  const args = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/container-args.json'), 'utf8')) as Record<'agent' | 'controller', string[]>;
  const cases: [component: 'agent' | 'controller', flags: FlagSpec[]][] = [
    ['agent', agentFlags],
    ['controller', controllerFlags],
  ];

  /** `UNDERLAY_X=…` lines: [name, set (not commented out)]. */
  function envLines(component: string): [string, boolean][] {
    const text = fs.readFileSync(path.join(SYSTEMD_DIR, `${component}.env.example`), 'utf8');
    return [...text.matchAll(/^(#?)(UNDERLAY_[A-Z0-9_]+)=/gm)].map((m) => [m[2]!, m[1] === '']);
  }

  test.each(cases)('%s.env.example names only flags of the command', (component, flags) => {
    const known = new Set([...flags, ...logFlags].map((f) => envName(f.flag)));
    const unknown = envLines(component).map(([n]) => n).filter((n) => !known.has(n));
    expect(unknown).toEqual([]);
  });

  test.each(cases)('%s.env.example sets exactly the flags of deploy/container-args.json', (component) => {
    const flags = args[component].filter((a) => a.startsWith('--')).map((f) => envName(f.slice(2)));
    const set = envLines(component).filter(([, on]) => on).map(([n]) => n);
    expect(set).toEqual(flags);
  });
});
