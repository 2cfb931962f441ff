/** `underlay` is installable with `npm install -g` and runnable from there. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run, runOk } from '../lab';
import { ROOT, ensureBuilt } from './support/cluster';

jest.setTimeout(180_000);

it('installs globally with npm install -g and prints its usage', async () => {
  await ensureBuilt();
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-global-'));
  try {
    await runOk('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', ROOT], { timeoutMs: 120_000 });
    const bin = path.join(prefix, 'bin', 'underlay');
    const help = await runOk(bin, ['--help']);
    expect(help).toContain('Usage: underlay [--config FILE] COMMAND');
    expect(await runOk(bin, ['agent', '--help'])).toContain('--plugin-dir');
    const bad = await run(bin, ['agent', '--node', 'h1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--nats (or UNDERLAY_NATS): is required');
  } finally {
    fs.rmSync(prefix, { recursive: true, force: true });
  }
});
