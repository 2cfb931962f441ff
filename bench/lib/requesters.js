'use strict';
/**
 * Load generator for bench/ipam.js: closed-loop requesters that do what a node agent does
 * (requestPool, then requestAddress with a distinct MAC per request: MAC + node is the controller's
 * idempotency handle) over their own NATS connections.
 *
 * `createRequesters({ natsUrl, conns, connOpts, mode })` runs them either in this thread (`inline`,
 * sharing the event loop with an in-process controller) or in a worker thread (`worker`, so agent-side
 * work — building requests, parsing replies — does not queue in front of the controller's own work).
 * Connection i speaks for node `nodeName(i)`; `connOpts[i]` are its connectNats options (with
 * authentication: that node's creds, the NATS CA and its inbox prefix; plain data, so they pass to a
 * worker). Both return the same async interface: openPool(cidr), run(opts), close().
 */
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');

const MAC_OPTION = 'com.docker.network.endpoint.macaddress';
const nodeName = (i) => `bench-h${i}`;

/** The requesters themselves; used directly (inline) or inside the worker. */
async function localRequesters({ natsUrl, conns, connOpts = [] }) {
  const { RpcClient, connectNats } = require('@underlay/adapters');
  const { RequestPoolRes, RequestAddressRes } = require('@underlay/core');
  const ncs = [];
  try {
    for (let i = 0; i < conns; i++) ncs.push(await connectNats(natsUrl, `bench-agent-${i}`, connOpts[i] ?? {}));
  } catch (e) {
    await Promise.all(ncs.map((nc) => nc.close().catch(() => {})));
    throw e;
  }
  const rpc = ncs.map((nc, i) => new RpcClient(nc, nodeName(i)));

  let macCounter = 0;
  /** A distinct locally administered MAC per request. */
  const nextMac = () => {
    const n = macCounter++;
    const b = [2, 0xb0, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
    return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
  };

  return {
    /** Like the agent on each node: requestPool for the subnet (IPAM data only, never on any link). */
    async openPool(cidr) {
      let poolId;
      for (let i = 0; i < rpc.length; i++) {
        const r = await rpc[i].call('requestPool', { node: nodeName(i), space: 'underlay', pool: cidr, subPool: '', options: {}, v6: cidr.includes(':') }, RequestPoolRes);
        if (poolId !== undefined && r.poolId !== poolId) throw new Error(`requestPool gave two pool ids: ${poolId}, ${r.poolId}`);
        poolId = r.poolId;
      }
      return poolId;
    },

    /**
     * `requesters` closed loops (send, await the durable reply, record latency, repeat), spread
     * round-robin over the connections, until `durationMs` has passed or `maxRequests` were sent.
     * Returns latencies (ms) and the addresses acknowledged, in completion order.
     */
    async run({ poolId, requesters, durationMs, maxRequests }) {
      const lat = new Float64Array(maxRequests);
      const addresses = [];
      let done = 0;
      let issued = 0;
      let errors = 0;
      let firstError;
      const t0 = performance.now();
      const deadline = t0 + durationMs;
      const loop = async (r) => {
        const conn = r % rpc.length;
        const client = rpc[conn];
        const node = nodeName(conn);
        while (issued < maxRequests && performance.now() < deadline) {
          issued++;
          const req = { node, poolId, address: '', options: { [MAC_OPTION]: nextMac() } };
          const s = performance.now();
          try {
            const res = await client.call('requestAddress', req, RequestAddressRes);
            lat[done++] = performance.now() - s;
            addresses.push(res.address);
          } catch (e) {
            errors++;
            firstError ??= String(e && e.message ? e.message : e);
          }
        }
      };
      await Promise.all(Array.from({ length: requesters }, (_, r) => loop(r)));
      return { elapsedMs: performance.now() - t0, lat: lat.slice(0, done), addresses, errors, firstError };
    },

    async close() {
      await Promise.all(ncs.map((nc) => nc.close().catch(() => {})));
    },
  };
}

/** The same interface, with the requesters in a worker thread. */
async function workerRequesters(opts) {
  const worker = new Worker(__filename, { workerData: opts });
  let nextId = 0;
  const pending = new Map();
  let dead;
  const failAll = (err) => {
    dead = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (m) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error) p.reject(new Error(m.error));
    else p.resolve(m.result);
  });
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`requester worker exited (${code})`)));
  const call = (op, arg) =>
    dead
      ? Promise.reject(dead)
      : new Promise((resolve, reject) => {
          const id = nextId++;
          pending.set(id, { resolve, reject });
          worker.postMessage({ id, op, arg });
        });
  await call('ready');
  return {
    openPool: (cidr) => call('openPool', cidr),
    run: (o) => call('run', o),
    async close() {
      if (dead) return;
      await call('close').catch(() => {});
      await worker.terminate();
    },
  };
}

async function createRequesters({ natsUrl, conns, connOpts, mode = 'inline' }) {
  if (mode === 'worker') return workerRequesters({ natsUrl, conns, connOpts });
  if (mode !== 'inline') throw new Error(`unknown requester mode ${mode} (inline or worker)`);
  return localRequesters({ natsUrl, conns, connOpts });
}

if (!isMainThread && workerData && parentPort) {
  const ready = localRequesters(workerData);
  parentPort.on('message', async ({ id, op, arg }) => {
    try {
      const r = await ready;
      let result;
      if (op === 'openPool') result = await r.openPool(arg);
      else if (op === 'run') result = await r.run(arg);
      else if (op === 'close') result = await r.close();
      parentPort.postMessage({ id, result });
    } catch (e) {
      parentPort.postMessage({ id, error: String(e && e.stack ? e.stack : e) });
    }
  });
}

module.exports = { createRequesters, nodeName, workerFile: path.resolve(__filename) };
