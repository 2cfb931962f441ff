/**
 * NATS decentralized authentication on a real nats-server: the configuration `underlay creds nats-config` renders,
 * node and controller credentials as `underlay creds node|controller` issue them. Every refusal is checked twice:
 * the node's attempt fails with the server's permission violation (as nats.js reports it: a rejected request, a
 * closed subscription or an async error), and the same operation by someone allowed (the controller, or the node
 * on its own subjects) succeeds, so no case can pass because nothing happened. Last, the same over TLS with a
 * client certificate (`--nats-ca`, `--nats-cert`, `--nats-key`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager, type StreamInfo } from '@nats-io/jetstream';
import type { Msg, NatsConnection } from '@nats-io/transport-node';
import { connectNats, ensureNodeConsumer, initNatsKeys, nodeCreds, writePrivateFile } from '@underlay/adapters';
import { CLUSTER_CHAIN, EVENTS_STREAM, EVENTS_WILDCARD, chainSubject, eventSubject, hostChain, poolChain, nodeConsumerName, nodeInboxPrefix, nodeToken, rpcServeSubject, rpcSubject } from '@underlay/core';
import { makePki } from '../lab/pki';
import { asyncErrors, closedWith, expectViolation, requestError, startAuthNats, violationOf, type AuthNats } from '../lab/nats-auth';
import { isAlive } from '../lab/procfs';
import { waitFor } from '../lab/wait';

jest.setTimeout(60_000);

const enc = new TextEncoder();
const dec = new TextDecoder();

let dir: string;
let auth: AuthNats;
let ctl: NatsConnection;
let jsm: JetStreamManager;
const conns: NatsConnection[] = [];
/** Subjects the stand-in controller was asked on (which node a request reached it as). */
const served: string[] = [];

/** A node's connection, as the agent makes it: its creds file and its own inbox prefix. */
async function nodeConn(node: string, creds?: string): Promise<NatsConnection> {
  const nc = await connectNats(auth.nats.url, `test-${node}`, { creds: creds ?? (await auth.nodeCredsFile(node)), inboxPrefix: nodeInboxPrefix(node) });
  conns.push(nc);
  return nc;
}

const streamView = (i: StreamInfo) => ({ config: i.config, messages: i.state.messages, last_seq: i.state.last_seq });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-nats-auth-'));
  auth = await startAuthNats({ dir });
  ctl = await connectNats(auth.nats.url, 'test-controller', { creds: await auth.controllerCredsFile('c1') });
  conns.push(ctl);
  // A stand-in for the controllers: serves requestAddress for any node and answers with the node token it saw.
  ctl.subscribe(rpcServeSubject('requestAddress'), {
    queue: 'controllers',
    callback: (_e, m: Msg) => {
      served.push(m.subject);
      m.respond(enc.encode(JSON.stringify({ token: m.subject.split('.')[3] })));
    },
  });
  jsm = await jetstreamManager(ctl);
  await jsm.streams.add({ name: EVENTS_STREAM, subjects: [EVENTS_WILDCARD] });
  const js = jetstream(ctl);
  for (let i = 1; i <= 3; i++) await js.publish(eventSubject(CLUSTER_CHAIN, 'NodeRegistered'), enc.encode(JSON.stringify({ seq: i })));
}, 60_000);

afterAll(async () => {
  for (const nc of conns) await nc.close().catch(() => undefined);
  await auth?.stop();
  if (process.env.UNDERLAY_TEST_KEEP) process.stderr.write(`kept ${dir}\n`);
  else if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('NATS decentralized authentication', () => {
  it('refuses an anonymous connection, a forged user and a bad creds file; accepts issued credentials', async () => {
    const anon = await connectNats(auth.nats.url, 'anonymous').then(
      (nc) => (conns.push(nc), new Error('anonymous connection accepted')),
      (e: unknown) => e,
    );
    expect(String(anon)).toMatch(/authorization/i);
    // A user signed by another operator's account (a key store of its own) is refused too.
    const other = await initNatsKeys(path.join(dir, 'other'));
    const forged = path.join(dir, 'forged.creds');
    writePrivateFile(forged, await nodeCreds(other, 'h1'));
    const f = await connectNats(auth.nats.url, 'forged', { creds: forged }).then(
      (nc) => (conns.push(nc), new Error('forged user accepted')),
      (e: unknown) => e,
    );
    expect(String(f)).toMatch(/authorization/i);
    await expect(connectNats(auth.nats.url, 'nofile', { creds: path.join(dir, 'missing.creds') })).rejects.toThrow(
      `cannot read the NATS creds file ${path.join(dir, 'missing.creds')}: ENOENT`,
    );
    // Positive: the same server takes the issued node credentials.
    const h1 = await nodeConn('h1');
    await expect(h1.flush()).resolves.toBeUndefined();
  });

  it("lets a node publish requests on its own token only, never on another node's", async () => {
    const h1 = await nodeConn('h1');
    const own = await h1.request(rpcSubject('requestAddress', 'h1'), enc.encode('{}'), { timeout: 5_000 });
    expect(JSON.parse(dec.decode(own.data))).toEqual({ token: 'h1' });
    const before = served.length;
    expectViolation(await requestError(h1, rpcSubject('requestAddress', 'h2')), 'publish', rpcSubject('requestAddress', 'h2'));
    // The controller never saw a request as h2 ...
    await ctl.flush();
    expect(served.slice(before).filter((s) => s.includes('.h2.'))).toEqual([]);
    // ... though h2's subject does work for someone allowed to use it (the controller here).
    const asH2 = await ctl.request(rpcSubject('requestAddress', 'h2'), enc.encode('{}'), { timeout: 5_000 });
    expect(JSON.parse(dec.decode(asH2.data))).toEqual({ token: 'h2' });
    expect(served.filter((s) => s.includes('.h2.'))).toHaveLength(1);
  });

  it("does not let a node serve the controllers' subjects", async () => {
    const h1 = await nodeConn('h1');
    const sub = h1.subscribe(rpcServeSubject('requestAddress'), { queue: 'controllers' });
    expectViolation(await closedWith(sub), 'subscription', rpcServeSubject('requestAddress'));
    // Every request still reaches the real controllers, and none the node's subscription.
    for (let i = 0; i < 5; i++) {
      const r = await h1.request(rpcSubject('requestAddress', 'h1'), enc.encode('{}'), { timeout: 5_000 });
      expect(JSON.parse(dec.decode(r.data))).toEqual({ token: 'h1' });
    }
    expect(sub.getReceived()).toBe(0);
    // Positive: a controller may join the queue group.
    const c2 = await connectNats(auth.nats.url, 'c2', { creds: await auth.controllerCredsFile('c2') });
    conns.push(c2);
    const csub = c2.subscribe(rpcServeSubject('requestAddress'), { queue: 'controllers' });
    await c2.flush();
    expect(csub.isClosed()).toBe(false);
    csub.unsubscribe();
  });

  it('does not let a node publish events; the stream is unchanged', async () => {
    const h1 = await nodeConn('h1');
    const seen = asyncErrors(h1);
    const before = streamView(await jsm.streams.info(EVENTS_STREAM));
    const subject = eventSubject(poolChain('underlay/10.0.0.0/8'), 'AddressReleased');
    h1.publish(subject, enc.encode(JSON.stringify({ forged: true })));
    await waitFor(() => seen.length > 0, { timeoutMs: 5_000, what: 'the server to refuse the publish' });
    expectViolation(seen[0], 'publish', subject);
    // Through JetStream's publish (a request) it is refused the same way.
    expectViolation(await requestError(h1, subject, '{"forged":true}'), 'publish', subject);
    expect(streamView(await jsm.streams.info(EVENTS_STREAM))).toEqual(before);
    // Positive: the controller publishes into the stream.
    const ack = await jetstream(ctl).publish(subject, enc.encode('{}'));
    expect(ack.seq).toBe(before.last_seq + 1);
  });

  it('does not let a node delete, edit or read the stream; a controller can', async () => {
    const h1 = await nodeConn('h1');
    const before = streamView(await jsm.streams.info(EVENTS_STREAM));
    const del = `$JS.API.STREAM.DELETE.${EVENTS_STREAM}`;
    const upd = `$JS.API.STREAM.UPDATE.${EVENTS_STREAM}`;
    const get = `$JS.API.STREAM.MSG.GET.${EVENTS_STREAM}`;
    const purge = `$JS.API.STREAM.PURGE.${EVENTS_STREAM}`;
    const create = `$JS.API.CONSUMER.CREATE.${EVENTS_STREAM}`;
    expectViolation(await requestError(h1, del), 'publish', del);
    expectViolation(await requestError(h1, upd, JSON.stringify({ ...before.config, max_msgs: 1 })), 'publish', upd);
    expectViolation(await requestError(h1, get, JSON.stringify({ seq: 1 })), 'publish', get);
    expectViolation(await requestError(h1, purge), 'publish', purge);
    expectViolation(await requestError(h1, create, JSON.stringify({ stream_name: EVENTS_STREAM, config: { ack_policy: 'none' } })), 'publish', create);
    expect(streamView(await jsm.streams.info(EVENTS_STREAM))).toEqual(before);

    // Positive, with the controller's credentials and the same raw API subjects.
    const got = JSON.parse(dec.decode((await ctl.request(get, enc.encode(JSON.stringify({ seq: 1 })), { timeout: 5_000 })).data));
    expect(got.message.seq).toBe(1);
    const updated = JSON.parse(dec.decode((await ctl.request(upd, enc.encode(JSON.stringify({ ...before.config, description: 'edited' })), { timeout: 5_000 })).data));
    expect(updated.config.description).toBe('edited');
    const deleted = JSON.parse(dec.decode((await ctl.request(del, enc.encode(''), { timeout: 5_000 })).data));
    expect(deleted).toMatchObject({ success: true });
    await expect(jsm.streams.info(EVENTS_STREAM)).rejects.toThrow(/not found/i);
    // Put it back for the other cases.
    await jsm.streams.add({ name: EVENTS_STREAM, subjects: [EVENTS_WILDCARD] });
    for (let i = 1; i <= 3; i++) await jetstream(ctl).publish(eventSubject(CLUSTER_CHAIN, 'NodeRegistered'), enc.encode(JSON.stringify({ seq: i })));
  });

  it("reads events only through its own consumer, made by the controller", async () => {
    const h1 = await nodeConn('h1');
    await ensureNodeConsumer(ctl, 'h1', 0);
    await ensureNodeConsumer(ctl, 'h2', 0);
    const js = jetstream(h1);
    const mine = await js.consumers.get(EVENTS_STREAM, nodeConsumerName('h1'));
    const m = await mine.next({ expires: 5_000 });
    expect(m?.subject).toBe(eventSubject(CLUSTER_CHAIN, 'NodeRegistered'));
    const info = `$JS.API.CONSUMER.INFO.${EVENTS_STREAM}.${nodeConsumerName('h2')}`;
    expectViolation(await requestError(h1, info), 'publish', info);
    const next = `$JS.API.CONSUMER.MSG.NEXT.${EVENTS_STREAM}.${nodeConsumerName('h2')}`;
    const seen = asyncErrors(h1);
    h1.publish(next, enc.encode(JSON.stringify({ batch: 1, expires: 1_000_000_000 })), { reply: `${nodeInboxPrefix('h1')}.steal` });
    await waitFor(() => seen.length > 0, { timeoutMs: 5_000, what: 'the server to refuse the pull' });
    expectViolation(seen[0], 'publish', next);
    // Positive: h2's consumer still holds every message for h2, which reads it with its own credentials.
    const h2 = await nodeConn('h2');
    const theirs = await jetstream(h2).consumers.get(EVENTS_STREAM, nodeConsumerName('h2'));
    expect((await theirs.info()).config.ack_policy).toBe(AckPolicy.None);
    expect((await theirs.next({ expires: 5_000 }))?.seq).toBe(1);
  });

  it("does not let a node read another node's replies (inbox), nor use the shared _INBOX", async () => {
    const h1 = await nodeConn('h1');
    const spy = h1.subscribe(`${nodeInboxPrefix('h2')}.>`);
    expectViolation(await closedWith(spy), 'subscription', `${nodeInboxPrefix('h2')}.>`);
    const shared = h1.subscribe('_INBOX.>');
    expectViolation(await closedWith(shared), 'subscription', '_INBOX.>');
    // Positive: h2 gets its replies on its own prefix, and h1's refused subscription saw none of them.
    const h2 = await nodeConn('h2');
    const r = await h2.request(rpcSubject('requestAddress', 'h2'), enc.encode('{}'), { timeout: 5_000 });
    expect(r.subject.startsWith(`${nodeInboxPrefix('h2')}.`)).toBe(true);
    expect(spy.getReceived()).toBe(0);
    // A node connection without its inbox prefix cannot even receive its own replies.
    const bare = await connectNats(auth.nats.url, 'bare-h1', { creds: await auth.nodeCredsFile('h1') });
    conns.push(bare);
    const e = violationOf(await requestError(bare, rpcSubject('requestAddress', 'h1')));
    expect(e.operation).toBe('subscription');
    expect(e.subject).toMatch(/^_INBOX\./);
  });

  it("lets a node follow the cluster's, its own host's and the pools' event chains, not another host's", async () => {
    const h1 = await nodeConn('h1');
    const other = h1.subscribe(chainSubject(hostChain('h2')));
    expectViolation(await closedWith(other), 'subscription', chainSubject(hostChain('h2')));
    const h1b = await nodeConn('h1');
    const mine = [chainSubject(CLUSTER_CHAIN), chainSubject(hostChain('h1')), chainSubject(poolChain('underlay/10.0.0.0/8'))].map((s) => h1b.subscribe(s));
    await h1b.flush();
    const cluster = eventSubject(CLUSTER_CHAIN, 'NodeRegistered');
    ctl.publish(cluster, enc.encode('{}'));
    ctl.publish(eventSubject(hostChain('h1'), 'NetworkRecorded'), enc.encode('{}'));
    ctl.publish(eventSubject(poolChain('underlay/10.0.0.0/8'), 'AddressAllocated'), enc.encode('{}'));
    await ctl.flush();
    await waitFor(() => mine.every((m) => m.getReceived() === 1), { timeoutMs: 5_000, what: 'h1 to receive one event on each of its chains' });
    for (const m of mine) expect(m.isClosed()).toBe(false);
  });

  it('admits a node whose credentials were issued after the server started, without a restart', async () => {
    const pid = auth.nats.pid;
    const config = fs.readFileSync(auth.nats.configFile!, 'utf8');
    const late = await nodeConn('late-joiner');
    const r = await late.request(rpcSubject('requestAddress', 'late-joiner'), enc.encode('{}'), { timeout: 5_000 });
    expect(JSON.parse(dec.decode(r.data))).toEqual({ token: 'late-joiner' });
    // Its permissions are a node's: not another node's subjects.
    expectViolation(await requestError(late, rpcSubject('requestAddress', 'h1')), 'publish', rpcSubject('requestAddress', 'h1'));
    expect(auth.nats.pid).toBe(pid);
    expect(isAlive(pid)).toBe(true);
    expect(fs.readFileSync(auth.nats.configFile!, 'utf8')).toBe(config);
    // Issued from the same key store as `underlay creds node` would (not from the lab's helper).
    const file = path.join(dir, 'late2.creds');
    writePrivateFile(file, await nodeCreds(auth.keys, 'late2'));
    const late2 = await nodeConn('late2', file);
    await expect(late2.request(rpcSubject('requestAddress', 'late2'), enc.encode('{}'), { timeout: 5_000 })).resolves.toBeDefined();
  });

  it('gives a node named with a dot its token (h1.example -> h1~example) everywhere', async () => {
    const node = 'h1.example';
    expect(nodeToken(node)).toBe('h1~example');
    const nc = await nodeConn(node);
    const r = await nc.request(rpcSubject('requestAddress', node), enc.encode('{}'), { timeout: 5_000 });
    expect(rpcSubject('requestAddress', node)).toBe('underlay.rpc.v1.h1~example.ipam.requestAddress');
    expect(JSON.parse(dec.decode(r.data))).toEqual({ token: 'h1~example' });
    expect(r.subject.startsWith('_UL_INBOX.h1~example.')).toBe(true);
    await ensureNodeConsumer(ctl, node, 0);
    const c = await jetstream(nc).consumers.get(EVENTS_STREAM, 'agent-h1~example');
    expect((await c.next({ expires: 5_000 }))?.seq).toBe(1);
    // Not node h1's subjects, nor its inbox, though the names share a prefix.
    expectViolation(await requestError(nc, rpcSubject('requestAddress', 'h1')), 'publish', rpcSubject('requestAddress', 'h1'));
    expectViolation(await closedWith(nc.subscribe('_UL_INBOX.h1.>')), 'subscription', '_UL_INBOX.h1.>');
    // And h1 cannot speak as h1.example.
    const h1 = await nodeConn('h1');
    expectViolation(await requestError(h1, rpcSubject('requestAddress', node)), 'publish', rpcSubject('requestAddress', node));
  });

  it('connects over TLS with the CA, client certificate and key files (and not without them)', async () => {
    const tls = await tlsFiles(path.join(dir, 'tls'), ['127.0.0.1']);
    const tlsNats = await startAuthNats({
      dir: path.join(dir, 'tls-nats'),
      extraConfig: `tls {\n  cert_file: "${tls.serverCert}"\n  key_file: "${tls.serverKey}"\n  ca_file: "${tls.ca}"\n  verify: true\n}\n`,
    });
    try {
      const creds = await tlsNats.nodeCredsFile('h1');
      const opts = { creds, inboxPrefix: nodeInboxPrefix('h1') };
      const nc = await connectNats(tlsNats.nats.url, 'tls-h1', { ...opts, tls: { ca: tls.ca, cert: tls.clientCert, key: tls.clientKey } });
      conns.push(nc);
      expect(nc.info?.tls_required).toBe(true);
      await expect(nc.flush()).resolves.toBeUndefined();
      // (`verify: true`: the server requires a client certificate its CA signed, so the connection above sent one.)
      // Without the CA the server's certificate is not trusted.
      const noCa = await connectNats(tlsNats.nats.url, 'no-ca', opts).then((c) => (conns.push(c), 'connected'), (e: Error) => e.message);
      expect(noCa).toMatch(/unable to verify/);
      await expect(connectNats(tlsNats.nats.url, 'bad-file', { ...opts, tls: { ca: path.join(dir, 'nope.pem') } })).rejects.toThrow(
        `cannot read the NATS CA file ${path.join(dir, 'nope.pem')}: ENOENT`,
      );
    } finally {
      await tlsNats.stop();
    }
    // A certificate from the right CA that does not name 127.0.0.1 is refused too.
    const wrong = await tlsFiles(path.join(dir, 'tls-wrong'), ['127.0.0.2'], ['localhost']);
    const wrongNats = await startAuthNats({
      dir: path.join(dir, 'tls-wrong-nats'),
      extraConfig: `tls {\n  cert_file: "${wrong.serverCert}"\n  key_file: "${wrong.serverKey}"\n}\n`,
    });
    try {
      const creds = await wrongNats.nodeCredsFile('h1');
      const e = await connectNats(wrongNats.nats.url, 'wrong-name', { creds, tls: { ca: wrong.ca } }).then((c) => (conns.push(c), 'connected'), (x: Error) => x.message);
      expect(e).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list: 127\.0\.0\.2/);
    } finally {
      await wrongNats.stop();
    }
  });
});

/** A CA, a server certificate naming `ips`/`dns` and a client certificate (the lab's PKI). */
async function tlsFiles(tlsDir: string, ips: string[], dns: string[] = []) {
  const pki = await makePki(tlsDir);
  const server = await pki.issue('server', { cn: 'server', server: true, ips, dns });
  const client = await pki.issue('client', { cn: 'client', client: true });
  return { ca: pki.caFile, serverCert: server.certFile, serverKey: server.keyFile, clientCert: client.certFile, clientKey: client.keyFile };
}
