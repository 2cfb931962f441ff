/**
 * `underlay creds` (the compiled CLI) end to end: init (refuses to overwrite, --force), node/controller/nats-config
 * before init (the message says what to run), exit codes, --out files 0600 under umask 000, and the files it prints
 * working together: nats-server started with `creds nats-config` admits `creds node` and `creds controller`
 * credentials issued after it started, and refuses an anonymous client.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectNats } from '@underlay/adapters';
import { nodeInboxPrefix, rpcServeSubject, rpcSubject } from '@underlay/core';
import { CLI, ensureBuilt } from '../e2e/support/cluster';
import { startNats, type NatsService } from '../lab/services';

jest.setTimeout(120_000);

let dir: string;
let nats: NatsService | undefined;

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  await ensureBuilt();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-creds-cli-'));
}, 180_000);
afterAll(async () => {
  await nats?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('underlay creds', () => {
  it('says to run creds init first, and exits 2 on usage errors', async () => {
    const state = path.join(dir, 'empty');
    for (const args of [['node', 'h1'], ['controller', 'c1'], ['nats-config']]) {
      const r = await cli(['creds', ...args, '--state-dir', state]);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 1, stdout: '' });
      expect(r.stderr).toBe(`underlay creds: no NATS keys in ${path.join(state, 'nats')}; run \`underlay creds init --state-dir ${state}\` first\n`);
    }
    expect((await cli(['creds'])).code).toBe(2);
    expect((await cli(['creds', '--help'])).stdout).toContain('node [options] [NAME]');
    expect((await cli(['creds', 'bogus', '--state-dir', state])).code).toBe(2);
    const noName = await cli(['creds', 'node', '--state-dir', state]);
    expect(noName).toMatchObject({ code: 2, stderr: expect.stringContaining('creds node needs a NAME') });
  });

  it('inits once (0600 files, 0700 folder under umask 000), refuses to overwrite, replaces with --force', async () => {
    const state = path.join(dir, 's1');
    const old = process.umask(0o000);
    try {
      const r = await cli(['creds', 'init', '--state-dir', state]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`NATS keys written to ${path.join(state, 'nats')}`);
      expect(fs.statSync(path.join(state, 'nats')).mode & 0o777).toBe(0o700);
      for (const f of fs.readdirSync(path.join(state, 'nats'))) expect([f, fs.statSync(path.join(state, 'nats', f)).mode & 0o777]).toEqual([f, 0o600]);
      const seed = fs.readFileSync(path.join(state, 'nats', 'operator.nk'), 'utf8');
      const again = await cli(['creds', 'init', '--state-dir', state]);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain('NATS keys already exist');
      expect(again.stderr).toContain('--force');
      expect(fs.readFileSync(path.join(state, 'nats', 'operator.nk'), 'utf8')).toBe(seed);
      expect((await cli(['creds', 'init', '--state-dir', state, '--force'])).code).toBe(0);
      expect(fs.readFileSync(path.join(state, 'nats', 'operator.nk'), 'utf8')).not.toBe(seed);
      const out = path.join(dir, 'h1.creds');
      const w = await cli(['creds', 'node', 'h1', '--state-dir', state, '--out', out]);
      expect(w).toMatchObject({ code: 0, stdout: '' });
      expect(fs.statSync(out).mode & 0o777).toBe(0o600);
      expect(fs.readFileSync(out, 'utf8')).toMatch(/^-----BEGIN NATS USER JWT-----\n[\s\S]*-----BEGIN USER NKEY SEED-----\nSU/);
    } finally {
      process.umask(old);
    }
  });

  it("issues files nats-server takes: its config from creds nats-config, then node and controller creds", async () => {
    const state = path.join(dir, 's2');
    // UNDERLAY_STATE_DIR works as for every other flag.
    expect((await cli(['creds', 'init'], { UNDERLAY_STATE_DIR: state })).code).toBe(0);
    const conf = await cli(['creds', 'nats-config', '--state-dir', state]);
    expect(conf.code).toBe(0);
    nats = await startNats({ dir, config: conf.stdout });
    const anon = await connectNats(nats.url, 'anon').then((nc) => (void nc.close(), 'connected'), (e: unknown) => String(e));
    expect(anon).toMatch(/authorization/i);
    // Issued after nats-server started.
    const ctlFile = path.join(dir, 'c1.creds');
    const nodeFile = path.join(dir, 'n1.creds');
    expect((await cli(['creds', 'controller', 'c1', '--state-dir', state, '--out', ctlFile])).code).toBe(0);
    const printed = await cli(['creds', 'node', 'n1.example', '--state-dir', state]);
    expect(printed.code).toBe(0);
    fs.writeFileSync(nodeFile, printed.stdout, { mode: 0o600 });
    const ctl = await connectNats(nats.url, 'c1', { creds: ctlFile });
    const node = await connectNats(nats.url, 'n1', { creds: nodeFile, inboxPrefix: nodeInboxPrefix('n1.example') });
    try {
      ctl.subscribe(rpcServeSubject('nodeReport'), { callback: (_e, m) => void m.respond(new TextEncoder().encode(m.subject)) });
      await ctl.flush();
      const r = await node.request(rpcSubject('nodeReport', 'n1.example'), undefined, { timeout: 5_000 });
      expect(new TextDecoder().decode(r.data)).toBe('underlay.rpc.v1.n1~example.node.report');
      await expect(node.request(rpcSubject('nodeReport', 'n2'), undefined, { timeout: 5_000 })).rejects.toThrow(/permissions violation/i);
    } finally {
      await node.close();
      await ctl.close();
    }
  });
});
