/**
 * The NATS key store and the credentials it issues, without a server: file modes whatever the umask, refusal to
 * overwrite (and --force), the messages for a missing or damaged store, node and controller permissions exactly as
 * the design says, standard .creds files signed by the account's signing key, and the nats-server configuration.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decode, parseCreds, type User } from '@nats-io/jwt';
import {
  NatsKeysError,
  controllerCreds,
  ensureNatsKeys,
  initNatsKeys,
  loadNatsKeys,
  natsServerConfig,
  nodeCreds,
  writePrivateFile,
} from '@underlay/adapters';

const enc = new TextEncoder();
let dir: string;

// Each key store written fsyncs a dozen files: a test writes up to four (3.7 s measured alone on 2 idle cores, 17 s
// with the rest of the suite and other work on the machine), so the budget is 60 s rather than Jest's 5 s.
jest.setTimeout(60_000);

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-creds-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const mode = (p: string) => fs.statSync(p).mode & 0o777;

describe('NATS key store', () => {
  it('keeps keys in <state-dir>/nats, folder 0700 and files 0600, even with umask 000', async () => {
    const old = process.umask(0o000);
    try {
      // A folder that already exists with a loose mode is tightened too.
      fs.mkdirSync(path.join(dir, 'nats'), { mode: 0o777 });
      fs.chmodSync(path.join(dir, 'nats'), 0o777);
      const keys = await initNatsKeys(dir);
      expect(keys.dir).toBe(path.join(dir, 'nats'));
      expect(mode(keys.dir)).toBe(0o700);
      const files = fs.readdirSync(keys.dir).sort();
      expect(files).toEqual(['account-signing.nk', 'account.jwt', 'account.nk', 'operator.jwt', 'operator.nk', 'system.jwt', 'system.nk']);
      for (const f of files) expect([f, mode(path.join(keys.dir, f))]).toEqual([f, 0o600]);
      // writePrivateFile corrects the mode of a file that was there before.
      const out = path.join(dir, 'h1.creds');
      fs.writeFileSync(out, 'old', { mode: 0o666 });
      fs.chmodSync(out, 0o666);
      writePrivateFile(out, await nodeCreds(keys, 'h1'));
      expect(mode(out)).toBe(0o600);
      expect(fs.readFileSync(out, 'utf8')).toContain('BEGIN NATS USER JWT');
    } finally {
      process.umask(old);
    }
  });

  it('refuses to overwrite existing keys unless forced; loads what init made', async () => {
    const first = await initNatsKeys(dir);
    await expect(initNatsKeys(dir)).rejects.toThrow(/NATS keys already exist in .*nats .*add --force/);
    expect(loadNatsKeys(dir).operator.getPublicKey()).toBe(first.operator.getPublicKey());
    const second = await initNatsKeys(dir, { force: true });
    expect(second.operator.getPublicKey()).not.toBe(first.operator.getPublicKey());
    expect(loadNatsKeys(dir).account.getPublicKey()).toBe(second.account.getPublicKey());
    // ensureNatsKeys keeps an existing store.
    expect((await ensureNatsKeys(dir)).created).toBe(false);
    expect((await ensureNatsKeys(path.join(dir, 'fresh'))).created).toBe(true);
  });

  it('says which command to run when there are no keys, or the store is damaged', async () => {
    expect(() => loadNatsKeys(dir)).toThrow(`no NATS keys in ${path.join(dir, 'nats')}; run \`underlay creds init --state-dir ${dir}\` first`);
    try {
      loadNatsKeys(dir);
    } catch (e) {
      expect(e).toBeInstanceOf(NatsKeysError);
      expect((e as NatsKeysError).reason).toBe('missing');
      expect((e as NatsKeysError).code).toBe('not-found');
    }
    await initNatsKeys(dir);
    fs.rmSync(path.join(dir, 'nats', 'account-signing.nk'));
    expect(() => loadNatsKeys(dir)).toThrow(/incomplete \(missing account-signing.nk\); run `underlay creds init --state-dir .* --force`/);
    await expect(ensureNatsKeys(dir)).rejects.toThrow(/incomplete/);
    await initNatsKeys(dir, { force: true });
    // An account JWT from another key store does not belong to these keys.
    const other = await initNatsKeys(path.join(dir, 'other'));
    fs.writeFileSync(path.join(dir, 'nats', 'account.jwt'), other.accountJwt);
    expect(() => loadNatsKeys(dir)).toThrow(/account.jwt does not belong to the keys/);
    fs.writeFileSync(path.join(dir, 'nats', 'operator.nk'), 'not a seed');
    expect(() => loadNatsKeys(dir)).toThrow(/operator.nk: not an nkey seed/);
  });
});

describe('credentials', () => {
  it('gives a node exactly its own request subjects, consumer API, inbox and event chains', async () => {
    const keys = await initNatsKeys(dir);
    const creds = await parseCreds(enc.encode(await nodeCreds(keys, 'h1.example')));
    expect(creds.uc.nats.pub).toEqual({
      allow: [
        'underlay.rpc.v1.h1~example.>',
        '$JS.API.CONSUMER.INFO.UNDERLAY_EVENTS.agent-h1~example',
        '$JS.API.CONSUMER.MSG.NEXT.UNDERLAY_EVENTS.agent-h1~example',
      ],
    });
    expect(creds.uc.nats.sub).toEqual({ allow: ['_UL_INBOX.h1~example.>', 'underlay.events.c.*', 'underlay.events.h.h1~2eexample.*', 'underlay.events.p.>'] });
    expect(creds.uc.name).toBe('node:h1.example');
    // Signed by the account's signing key on behalf of the account (so new users need nothing on the server).
    expect(creds.uc.iss).toBe(keys.signing.getPublicKey());
    expect(creds.uc.nats.issuer_account).toBe(keys.account.getPublicKey());
    expect(creds.key).toMatch(/^SU[A-Z2-7]{56}$/);
    const account = decode<{ signing_keys: string[]; limits: Record<string, unknown> }>(keys.accountJwt);
    expect(account.nats.signing_keys).toEqual([keys.signing.getPublicKey()]);
    expect(account.nats.limits).toMatchObject({ conn: -1, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 });
  });

  it('gives a controller pub and sub > and refuses bad names', async () => {
    const keys = await initNatsKeys(dir);
    const c = await parseCreds(enc.encode(await controllerCreds(keys, 'c1')));
    const u = c.uc.nats as Partial<User>;
    expect({ pub: u.pub, sub: u.sub }).toEqual({ pub: { allow: ['>'] }, sub: { allow: ['>'] } });
    await expect(nodeCreds(keys, 'h1 evil')).rejects.toThrow(/node name "h1 evil": a node name is/);
    await expect(nodeCreds(keys, 'h1~x')).rejects.toThrow(NatsKeysError);
    await expect(controllerCreds(keys, '>')).rejects.toThrow(/controller name/);
  });

  it('renders the nats-server configuration: operator, system account, MEMORY resolver, both accounts preloaded', async () => {
    const keys = await initNatsKeys(dir);
    const conf = natsServerConfig(keys);
    expect(conf).toContain(`operator: "${keys.operatorJwt}"`);
    expect(conf).toContain(`system_account: ${keys.system.getPublicKey()}`);
    expect(conf).toMatch(/^resolver: MEMORY$/m);
    expect(conf).toContain(`${keys.account.getPublicKey()}: "${keys.accountJwt}"`);
    expect(conf).toContain(`${keys.system.getPublicKey()}: "${keys.systemJwt}"`);
    expect(decode<{ system_account: string }>(keys.operatorJwt).nats.system_account).toBe(keys.system.getPublicKey());
  });
});
