/**
 * The controller's HTTP API against what a client may try (real controllers, etcd and NATS; the compiled
 * CLI): HTTPS with a CA made here by openssl (the CLI with --cacert, and its message without); named tokens
 * as the actors of events, X-Underlay-User not trusted; token files private (0644 refused, 0600 whatever
 * the umask, for the controller and the CLI); the plugin socket 0600; bodies over the limit refused before
 * they are read (declared and chunked); slow headers, slow bodies and idle connections cut by their
 * timeouts; the connection limit; follow streams capped in number and duration, and a follower that reads
 * nothing dropped. Each limit is set small on a controller of its own (standbys: they serve reads).
 */
// Time bounds: the configured timeout plus slack scaled by this machine's factor (test/lab/budget.ts).
import { labFactor } from '../lab/budget';
import { makePki } from '../lab/pki';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Controller, writeTokenFile, type ControllerConfigInput } from '@underlay/controller';
import { createPluginServer, listenOnSocket } from '@underlay/node-agent';
import { NetworkCreateResponse, NodeList, type ClusterEvent } from '@underlay/core';
import { spawnCollecting, startEnv, windowed, type Env } from './support';
import { CLI, ensureBuilt } from '../e2e/support/cluster';
import { waitFor } from '../lab/wait';

jest.setTimeout(180_000);

const run = promisify(execFile);
const ALICE = 'alice-token-0123456789abcdef';
const BOB = 'bob-token-0123456789abcdefgh';

let env: Env;
let leader: Controller;
let base: string;
let tokenFile: string;
let tlsDir: string;

const portOf = (c: Controller) => c.httpAddress!.port;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(method: string, urlPath: string, token: string, body?: unknown, headers: Record<string, string> = {}, to = base) {
  const res = await fetch(`${to}${urlPath}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text, json: text ? (JSON.parse(text) as any) : undefined };
}

/** A standby controller of its own (same etcd and NATS, same tokens) with `extra` settings. */
async function standby(name: string, extra: Partial<ControllerConfigInput> = {}): Promise<Controller> {
  const logger = process.env.UNDERLAY_TEST_LOG ? (m: string) => process.stderr.write(`${new Date().toISOString()} ${name}: ${m}\n`) : undefined;
  const c = new Controller({ etcd: [env.etcd.url], nats: env.nats.url, listen: '127.0.0.1:0', name, apiTokenFile: tokenFile, ...extra }, logger);
  env.controllers.push(c);
  await c.start();
  return c;
}

/** Writes `text` to a new file in the test directory with `mode` (chmod: whatever the umask). */
function fileWith(name: string, text: string, mode: number): string {
  const f = path.join(env.dir, name);
  fs.writeFileSync(f, text);
  fs.chmodSync(f, mode);
  return f;
}

/** A raw TCP client: what it sent and got, and when the server closed. */
function raw(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  const io = { socket, data: '', closed: false, closedAt: 0, connected: new Promise<void>((r) => socket.once('connect', () => r())) };
  socket.on('data', (d) => (io.data += d.toString('latin1')));
  socket.on('error', () => {});
  socket.on('close', () => {
    io.closed = true;
    io.closedAt = Date.now();
  });
  return io;
}

/** Runs the compiled CLI with only the given UNDERLAY_* variables. */
async function cli(args: string[], extra: Record<string, string> = {}) {
  const e: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('UNDERLAY_')) e[k] = v;
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...e, ...extra }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const x = err as { code?: number; stdout?: string; stderr?: string };
    return { code: x.code ?? null, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

/** A CA and a certificate for 127.0.0.1 and localhost signed by it, made with the openssl CLI (argument arrays only). */
/** A CA and a server certificate for 127.0.0.1 and localhost (the lab's PKI), as server.pem/server.key and ca.pem. */
async function makeCertificates(dir: string): Promise<void> {
  const pki = await makePki(dir);
  const server = await pki.issue('server-issued', { cn: '127.0.0.1', server: true, ips: ['127.0.0.1'], dns: ['localhost'] });
  fs.copyFileSync(pki.caFile, path.join(dir, 'ca.pem'));
  fs.copyFileSync(server.certFile, path.join(dir, 'server.pem'));
  fs.copyFileSync(server.keyFile, path.join(dir, 'server.key'));
}

beforeAll(async () => {
  await ensureBuilt();
  env = await startEnv();
  tokenFile = fileWith('tokens', `# who may use the API\nalice ${ALICE}\n\nbob   ${BOB}\n`, 0o600);
  leader = await env.controller({ apiTokenFile: tokenFile, eventsFollowStallMs: 1_000 });
  base = `http://127.0.0.1:${portOf(leader)}`;
  tlsDir = path.join(env.dir, 'tls');
  await makeCertificates(tlsDir);
}, 180_000);

afterAll(async () => {
  await env?.close();
});

describe('HTTPS (--tls-cert, --tls-key) and the CLI (--cacert)', () => {
  let httpsUrl: string;
  beforeAll(async () => {
    const c = await standby('tls', { tlsCert: path.join(tlsDir, 'server.pem'), tlsKey: path.join(tlsDir, 'server.key') });
    httpsUrl = `https://127.0.0.1:${portOf(c)}`;
  });

  it('serves the API over TLS: the CLI trusts the CA given with --cacert or UNDERLAY_CACERT', async () => {
    const ca = path.join(tlsDir, 'ca.pem');
    const r = await cli(['node', 'ls', '--json', '--controller', httpsUrl, '--token', ALICE, '--cacert', ca]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(NodeList.parse(JSON.parse(r.stdout)).nodes).toEqual(expect.any(Array));
    const viaEnv = await cli(['events'], { UNDERLAY_CONTROLLER: httpsUrl, UNDERLAY_TOKEN: BOB, UNDERLAY_CACERT: ca });
    expect(viaEnv.code).toBe(0);
    // Nothing answers plain HTTP on that port.
    const plain = await cli(['node', 'ls', '--controller', httpsUrl.replace('https:', 'http:'), '--token', ALICE]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/if it serves HTTPS \(--tls-cert\), use https:\/\//);
  });

  it('says in one line that the certificate cannot be verified without --cacert, and what to do', async () => {
    const r = await cli(['node', 'ls', '--controller', httpsUrl, '--token', ALICE]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      new RegExp(`^underlay: cannot verify the TLS certificate of the controller at ${httpsUrl.replace(/[.:/]/g, '\\$&')} \\(UNABLE_TO_VERIFY_LEAF_SIGNATURE: [^)]+\\); trust its CA with --cacert FILE or UNDERLAY_CACERT\\n$`),
    );
    const missing = await cli(['node', 'ls', '--controller', httpsUrl, '--token', ALICE, '--cacert', path.join(tlsDir, 'nope.pem')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`--cacert (or UNDERLAY_CACERT): cannot read ${path.join(tlsDir, 'nope.pem')}: ENOENT`);
  });

  it('refuses --tls-cert without --tls-key, and files it cannot use, with a clear message', async () => {
    const cfg = { etcd: [env.etcd.url], nats: env.nats.url, listen: '127.0.0.1:0', apiTokenFile: tokenFile };
    expect(() => new Controller({ ...cfg, tlsCert: path.join(tlsDir, 'server.pem') })).toThrow(/HTTPS needs both --tls-cert and --tls-key/);
    const c = new Controller({ ...cfg, name: 'badtls', tlsCert: path.join(tlsDir, 'ca.pem'), tlsKey: path.join(tlsDir, 'server.key') });
    env.controllers.push(c);
    await expect(c.start()).rejects.toThrow(/--tls-cert .*ca\.pem and --tls-key .*server\.key cannot be used together/);
  });
});

describe('named API tokens', () => {
  const events = async () => (await call('GET', '/v1/events?since=0&limit=10000', ALICE)).json.events as ClusterEvent[];

  it('records the name of the token used as the actor, and ignores X-Underlay-User', async () => {
    const def = { subnets: [{ subnet: '198.18.40.0/24' }], options: { parent: 'eth1' } };
    const a = await call('POST', '/v1/networks', ALICE, { name: 'by-alice', ...def }, { 'x-underlay-user': 'mallory' });
    expect(a.status).toBe(201);
    expect(NetworkCreateResponse.parse(a.json).network.created.actor).toBe('user:alice');
    expect((await call('DELETE', '/v1/networks/by-alice', BOB, undefined, { 'x-underlay-user': 'mallory' })).status).toBe(204);
    const mine = (await events()).filter((e) => JSON.stringify(e.data).includes('by-alice'));
    expect(mine.map((e) => [e.type, e.actor])).toEqual([
      ['ClusterNetworkCreated', 'user:alice'],
      ['ClusterNetworkRemoved', 'user:bob'],
    ]);
    expect(JSON.stringify(await events())).not.toContain('mallory');
  });

  it('the CLI sends the token of a one-line "NAME TOKEN" file; a bare-token file is the token named api', async () => {
    const bobFile = fileWith('bob-token', `bob ${BOB}\n`, 0o600);
    const r = await cli(['network', 'create', 'by-bob', '--subnet', '198.18.41.0/24', '-o', 'parent=eth1', '--json'], { UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN_FILE: bobFile });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout).network.created.actor).toBe('user:bob');
    // The older format, on a controller of its own: one bare token, named api.
    const bare = fileWith('bare-token', 'bare-token-0123456789abcdef\n', 0o600);
    const c = await standby('bare', { apiTokenFile: bare });
    const s = await call('GET', '/v1/nodes', 'bare-token-0123456789abcdef', undefined, {}, `http://127.0.0.1:${portOf(c)}`);
    expect(s.status).toBe(200);
    expect((await call('GET', '/v1/nodes', ALICE, undefined, {}, `http://127.0.0.1:${portOf(c)}`)).status).toBe(401);
    // Several tokens in the CLI's file: it cannot choose.
    const both = await cli(['node', 'ls', '--token-file', tokenFile, '--controller', base]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain(`--token-file: ${tokenFile} holds 2 tokens (alice, bob); give the CLI a file with one`);
  });

  it('refuses a malformed token file, naming the line', () => {
    const cfg = { etcd: [env.etcd.url], nats: env.nats.url };
    const bad = fileWith('bad-tokens', `alice ${ALICE}\nbob short\n`, 0o600);
    expect(() => new Controller({ ...cfg, apiTokenFile: bad })).toThrow(`${bad} line 2: the token of bob must be 16 to 512 printable characters without spaces`);
    const dup = fileWith('dup-tokens', `alice ${ALICE}\nalice ${BOB}\n`, 0o600);
    expect(() => new Controller({ ...cfg, apiTokenFile: dup })).toThrow(`${dup} line 2: the name alice appears twice`);
  });
});

describe('token files and the plugin socket are private', () => {
  it('refuses a token file group or others may read (controller and CLI), saying chmod 600', async () => {
    const open = fileWith('open-tokens', `alice ${ALICE}\n`, 0o644);
    expect(() => new Controller({ etcd: [env.etcd.url], nats: env.nats.url, apiTokenFile: open })).toThrow(
      `${open} may be read or written by group or others (mode 0644); a token file must be private: chmod 600 ${open}`,
    );
    const writable = fileWith('writable-tokens', `alice ${ALICE}\n`, 0o620);
    expect(() => new Controller({ etcd: [env.etcd.url], nats: env.nats.url, apiTokenFile: writable })).toThrow(/chmod 600/);
    const r = await cli(['node', 'ls', '--token-file', open, '--controller', base]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--token-file: ${open} may be read or written by group or others (mode 0644); a token file must be private: chmod 600 ${open}`);
    const viaEnv = await cli(['node', 'ls'], { UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN_FILE: open });
    expect(viaEnv.code).toBe(2);
    expect(viaEnv.stderr).toContain('chmod 600');
  });

  it('makes a missing token file mode 0600 under umask 000; writing over a 0666 file leaves it 0600; refuses an open empty one', () => {
    const made = path.join(env.dir, 'made-token');
    const over = fileWith('over-token', 'old\n', 0o666);
    const old = process.umask(0);
    let c: Controller | undefined;
    try {
      c = new Controller({ etcd: [env.etcd.url], nats: env.nats.url, apiTokenFile: made });
      // What the controller and `underlay up` write with, over a file left wide open.
      writeTokenFile(over, [{ name: 'carol', token: 'carol-token-0123456789abcdef' }]);
    } finally {
      process.umask(old);
      c?.log.close();
    }
    for (const f of [made, over]) expect({ f, mode: (fs.statSync(f).mode & 0o777).toString(8) }).toEqual({ f, mode: '600' });
    expect(fs.readFileSync(made, 'utf8')).toMatch(/^api \S{32}$/m);
    expect(c!.apiToken).toBe(/^api (\S+)$/m.exec(fs.readFileSync(made, 'utf8'))![1]);
    expect(fs.readFileSync(over, 'utf8')).toMatch(/^carol carol-token-0123456789abcdef$/m);
    // An empty file group or others may write is not filled in (it is refused like any open token file).
    const empty = fileWith('empty-token', '', 0o666);
    expect(() => new Controller({ etcd: [env.etcd.url], nats: env.nats.url, apiTokenFile: empty })).toThrow(`chmod 600 ${empty}`);
    expect(fs.readFileSync(empty, 'utf8')).toBe('');
  });

  it('makes the Docker plugin socket mode 0600 under umask 000', async () => {
    const dir = fs.mkdtempSync(path.join(env.dir, 'plugins-'));
    const server = createPluginServer({}, () => {});
    const old = process.umask(0);
    let sock: string;
    try {
      sock = await listenOnSocket(server, dir);
    } finally {
      process.umask(old);
    }
    try {
      expect((fs.statSync(sock).mode & 0o777).toString(8)).toBe('600');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe('request bodies over the limit are refused before they are read', () => {
  const post = (headers: string) => `POST /v1/networks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ALICE}\r\nContent-Type: application/json\r\n${headers}\r\n`;

  it('answers 413 to a declared Content-Length over the limit at once, with only the headers sent', async () => {
    for (const length of [100 * 1024 * 1024, 2 * 1024 * 1024]) {
      const c = raw(portOf(leader));
      await c.connected;
      const t0 = Date.now();
      c.socket.write(post(`Content-Length: ${length}\r\n`));
      await waitFor(() => c.data.includes('\r\n\r\n{') && c.data.trimEnd().endsWith('}'), { what: `the answer to Content-Length ${length}`, timeoutMs: 5_000, intervalMs: 20 });
      expect(Date.now() - t0).toBeLessThan(2_000 * labFactor());
      expect(c.data).toMatch(/^HTTP\/1\.1 413 /);
      expect(c.data.toLowerCase()).toContain('connection: close');
      expect(c.data).toContain('"code":"payload-too-large"');
      // The connection is closed after a short drain, although the client never sent the body.
      await waitFor(() => c.closed, { what: 'the close after the 413', timeoutMs: 5_000, intervalMs: 50 });
      c.socket.destroy();
    }
  });

  it('cuts a chunked body off as soon as it passes the limit', async () => {
    const c = raw(portOf(leader));
    await c.connected;
    c.socket.write(post('Transfer-Encoding: chunked\r\n'));
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    // 1.5 MiB at most, never the final chunk: the answer must come before the body ends.
    while (!c.data && sent < 1.5 * 1024 * 1024) {
      c.socket.write(`${chunk.length.toString(16)}\r\n`);
      c.socket.write(chunk);
      c.socket.write('\r\n');
      sent += chunk.length;
      await sleep(5);
    }
    await waitFor(() => c.data.includes('payload-too-large'), { what: 'the 413 while the body is still coming', timeoutMs: 5_000, intervalMs: 20 });
    expect(c.data).toMatch(/^HTTP\/1\.1 413 /);
    await waitFor(() => c.closed, { what: 'the close after the 413', timeoutMs: 5_000, intervalMs: 50 });
    c.socket.destroy();
    // The API is still there.
    expect((await call('GET', '/v1/nodes', ALICE)).status).toBe(200);
  });
});

describe('slow and idle clients are cut by the timeouts', () => {
  let port: number;
  beforeAll(async () => {
    port = portOf(await standby('slow', { httpHeadersTimeoutMs: 1_000, httpRequestTimeoutMs: 2_000, httpIdleTimeoutMs: 500 }));
  });

  it('closes a connection whose headers trickle in (slowloris) after the headers timeout', async () => {
    const c = raw(port);
    await c.connected;
    const t0 = Date.now();
    c.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    // One header byte every 200 ms for up to 10 s.
    for (let i = 0; i < 50 && !c.closed; i++) {
      c.socket.write(i % 2 ? 'a' : 'X-');
      await sleep(200);
    }
    expect(c.closed).toBe(true);
    expect(c.closedAt - t0).toBeLessThan(1_000 + 2_000 * labFactor()); // the 1 s headers timeout, checked every 250 ms
    expect(c.data).toMatch(/^(HTTP\/1\.1 408 |$)/);
  });

  it('closes a connection whose body trickles in after the request timeout', async () => {
    const c = raw(port);
    await c.connected;
    const t0 = Date.now();
    c.socket.write(`POST /v1/networks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ALICE}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`);
    for (let i = 0; i < 50 && !c.closed; i++) {
      c.socket.write(' ');
      await sleep(200);
    }
    expect(c.closed).toBe(true);
    expect(c.closedAt - t0).toBeLessThan(2_000 + 2_000 * labFactor()); // the 2 s request timeout
  });

  it('closes a kept-alive connection after the idle timeout', async () => {
    const c = raw(port);
    await c.connected;
    c.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => c.data.includes('"ok":true'), { what: 'the health answer', timeoutMs: 5_000, intervalMs: 20 });
    const t0 = Date.now();
    await waitFor(() => c.closed, { what: 'the idle close', timeoutMs: 4_000, intervalMs: 20 });
    expect(Date.now() - t0).toBeLessThan(500 + 1_000 * labFactor()); // the 0.5 s idle timeout
  });
});

describe('the connection limit', () => {
  it('closes connections over --http-max-connections at once, and serves again when one goes', async () => {
    const port = portOf(await standby('conns', { httpMaxConnections: 3 }));
    const held = [raw(port), raw(port), raw(port)];
    // Each makes one request and keeps its connection (keep-alive): all three are counted.
    for (const c of held) {
      await c.connected;
      c.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => c.data.includes('"ok":true'), { what: 'a held connection\'s answer', timeoutMs: 5_000, intervalMs: 20 });
    }
    const extra = raw(port);
    extra.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => extra.closed, { what: 'the fourth connection to be closed', timeoutMs: 3_000, intervalMs: 20 });
    expect(extra.data).toBe('');
    held[0]!.socket.destroy();
    await waitFor(
      async () => {
        const c = raw(port);
        c.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        await waitFor(() => c.closed, { what: 'an answer or a close', timeoutMs: 3_000, intervalMs: 20 });
        return c.data.includes('"ok":true');
      },
      { what: 'a connection to be served once one of the three went', timeoutMs: 5_000, intervalMs: 100 },
    );
    for (const c of held) c.socket.destroy();
  });
});

describe('events --follow streams', () => {
  const open = (port: number) => {
    const ac = new AbortController();
    const got = fetch(`http://127.0.0.1:${port}/v1/events?since=0&follow=true`, { headers: { authorization: `Bearer ${ALICE}` }, signal: ac.signal });
    return { ac, got };
  };

  it('answers 503 over --events-follow-max streams, and serves again when one closes', async () => {
    const port = portOf(await standby('followcap', { eventsFollowMax: 2 }));
    const a = open(port);
    const b = open(port);
    expect((await a.got).status).toBe(200);
    expect((await b.got).status).toBe(200);
    const third = await fetch(`http://127.0.0.1:${port}/v1/events?since=0&follow=true`, { headers: { authorization: `Bearer ${ALICE}` } });
    expect(third.status).toBe(503);
    expect(third.headers.get('retry-after')).toBe('5');
    expect((await third.json()).error).toEqual({ code: 'unavailable', message: 'too many event streams are open on this controller (at most 2, --events-follow-max); try again later' });
    // Pages are not streams: still served.
    expect((await call('GET', '/v1/events?since=0&limit=1', ALICE, undefined, {}, `http://127.0.0.1:${port}`)).status).toBe(200);
    a.ac.abort();
    await waitFor(
      async () => {
        const c = open(port);
        const r = await c.got;
        c.ac.abort();
        return r.status === 200;
      },
      { what: 'a stream to be served once one closed', timeoutMs: 5_000, intervalMs: 100 },
    );
    b.ac.abort();
  });

  it('ends a stream after --events-follow-max-ms; the CLI opens it again and misses nothing', async () => {
    const port = portOf(await standby('followtime', { eventsFollowMaxMs: 1_500 }));
    const t0 = Date.now();
    const res = await fetch(`http://127.0.0.1:${port}/v1/events?since=0&follow=true`, { headers: { authorization: `Bearer ${ALICE}` } });
    expect(res.status).toBe(200);
    await res.text(); // ends when the controller ends the stream
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(1_400);
    expect(took).toBeLessThan(1_500 + 3_500 * labFactor());

    // At least one event before the CLI starts, so its first stream prints something.
    expect((await call('POST', '/v1/networks', BOB, { name: 'before-reopen', subnets: [{ subnet: '198.18.243.0/24' }], options: { parent: 'eth1' } })).status).toBe(201);
    const e: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('UNDERLAY_')) e[k] = v;
    const f = spawnCollecting(process.execPath, [CLI, 'events', '--follow', '--json'], { ...e, UNDERLAY_CONTROLLER: `http://127.0.0.1:${port}`, UNDERLAY_TOKEN: ALICE });
    try {
      // The first stream is open once the CLI printed the log; the controller ends each stream 1.5 s after it began
      // (shown above), so 3.5 s later at least two streams have ended and been reopened.
      await waitFor(() => f.out.length > 0, { what: 'the CLI to print the log from its first stream', timeoutMs: 15_000 });
      await sleep(3_500);
      expect((await call('POST', '/v1/networks', BOB, { name: 'after-reopen', subnets: [{ subnet: '198.18.42.0/24' }], options: { parent: 'eth1' } })).status).toBe(201);
      await waitFor(() => f.out.includes('after-reopen'), { what: 'the event after the streams were reopened', timeoutMs: 10_000 });
      const seqs = f.out.trimEnd().split('\n').map((l) => (JSON.parse(l) as ClusterEvent).seq);
      // Every event of the log, once, in order: nothing lost or repeated across the reopenings.
      const log = (await call('GET', '/v1/events?since=0&limit=10000', ALICE, undefined, {}, `http://127.0.0.1:${port}`)).json as { events: ClusterEvent[] };
      expect(seqs).toEqual(log.events.map((ev) => ev.seq));
      expect(f.err).toBe('');
    } finally {
      f.child.kill('SIGKILL');
    }
  });
});

describe('a handler error never escapes', () => {
  it('answers 500 with the message and keeps serving', async () => {
    const c = await standby('boom');
    const spy = jest.spyOn(c.log, 'readAll').mockRejectedValueOnce(new Error('etcd said no'));
    try {
      const r = await call('GET', '/v1/events?since=0', ALICE, undefined, {}, `http://127.0.0.1:${portOf(c)}`);
      expect(r.status).toBe(500);
      expect(r.json.error).toEqual({ code: 'internal', message: 'etcd said no' });
    } finally {
      spy.mockRestore();
    }
    expect((await call('GET', '/v1/events?since=0&limit=1', ALICE, undefined, {}, `http://127.0.0.1:${portOf(c)}`)).status).toBe(200);
    // A malformed request line is a 400 from the server itself, and the server stays up.
    const bad = raw(portOf(c));
    bad.socket.write('GET /\x01 HTTP/1.1\r\n\r\n');
    await waitFor(() => bad.closed, { what: 'the bad request to be closed', timeoutMs: 3_000, intervalMs: 20 });
    expect((await call('GET', '/v1/nodes', ALICE, undefined, {}, `http://127.0.0.1:${portOf(c)}`)).status).toBe(200);
  });
});

// Last: it fills the log with a backlog larger than the socket buffers, and stops the standbys first (they
// follow the log in ranges of 5,000 events, too large a gRPC answer for this log).
describe('a follower that reads nothing', () => {
  it('is dropped once the socket buffers are full and it took nothing for --events-follow-stall-ms', async () => {
    for (const c of env.controllers) if (c !== leader) await c.stop();
    // About 8 MB of events (the kernel buffers about 4 MB of a loopback connection), 32 KB each.
    const labels = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`l${i}`, 'x'.repeat(4000)]));
    const count = 250;
    await windowed(count, 16, async (i) => {
      const r = await call('POST', '/v1/networks', ALICE, { name: `bulk-${i}`, subnets: [{ subnet: `10.${i >> 8}.${i & 255}.0/24` }], options: { parent: 'eth1' }, labels });
      if (r.status !== 201) throw new Error(`bulk-${i}: ${r.status} ${r.text}`);
    });
    const stalled = raw(portOf(leader));
    await stalled.connected;
    stalled.socket.write(`GET /v1/events?since=0&follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ALICE}\r\n\r\n`);
    await waitFor(() => stalled.data.includes('200 OK'), { what: 'the stream to start', timeoutMs: 5_000, intervalMs: 20 });
    stalled.socket.pause(); // reads nothing more
    await sleep(5_000);
    // Now it reads what the kernel kept for it: the stream ends there (the controller dropped it), long
    // before the log's end. A stream that was waiting for it instead would go on to the end and stay open.
    stalled.socket.resume();
    await waitFor(() => stalled.closed, { what: 'the dropped stream to end', timeoutMs: 20_000, intervalMs: 50 });
    const lines = stalled.data.split('\n').filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(100);
    expect(lines.length).toBeLessThan(count);
    // The controller goes on serving.
    expect((await call('GET', '/v1/events?since=0&limit=1', ALICE)).status).toBe(200);
  });
});
