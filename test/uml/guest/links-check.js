#!/usr/bin/env node
/**
 * Guest-side link driver for the user-mode-linux tests: performs link operations with the COMPILED
 * product code (run `npx tsc -b` first) in the network namespace it runs in. A netlink socket acts
 * on the netns of its process, so the caller starts one driver per namespace:
 *
 *   ip netns exec NS node test/uml/guest/links-check.js            # serve: one JSON request per stdin line
 *   ip netns exec NS node test/uml/guest/links-check.js '<json>'   # one request (or an array), then exit
 *
 * Request:  {"id": 1, "op": "ensureParent", "networkId": "...", "options": {"parent": "eth1.20"}, "flags": {}}
 *           {"op": "removeCreatedParent", "name": "eth1.20"}
 *           {"op": "createEndpointLink", "spec": {"name", "parent", "type", "macvlanMode", "ipvlanMode", "ipvlanFlag", "mac"?}}
 *           {"op": "restore", "stateDir": "...", "networks": [NetworkRecord...], "endpoints": [EndpointRecord...]}
 *           {"op": "<LinkOps method>", "args": [...]}   getLink, getLinkByIndex, listLinks, createMacvlan, createIpvlan,
 *                                                       createVlan, createDummy, setUp, deleteLink
 * Response: {"id": 1, "ok": true, "value": ...} | {"id": 1, "ok": false, "error": {"name", "message", "code"}}
 *
 * Product modules: libs/adapters/dist/netlink (openLinkOps), services/node-agent/dist/driver/links.js
 * (ensureParent, removeCreatedParent, createEndpointLink), libs/core/dist/options.js (parseNetworkOptions).
 */
'use strict';
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '../../..');
const { openLinkOps } = require(path.join(REPO, 'libs/adapters/dist/netlink/index.js'));
const agentLinks = require(path.join(REPO, 'services/node-agent/dist/driver/links.js'));
const { parseNetworkOptions } = require(path.join(REPO, 'libs/core/dist/options.js'));
const { LocalStore } = require(path.join(REPO, 'services/node-agent/dist/driver/store.js'));
const { restore } = require(path.join(REPO, 'services/node-agent/dist/driver/restore.js'));

const LINK_OPS = ['getLink', 'getLinkByIndex', 'listLinks', 'createMacvlan', 'createIpvlan', 'createVlan', 'createDummy', 'setUp', 'deleteLink'];

const links = openLinkOps({ timeoutMs: 10_000 });

async function handle(req) {
  switch (req.op) {
    case 'ensureParent':
      return agentLinks.ensureParent(links, req.networkId, parseNetworkOptions(req.options || {}, req.flags || {}));
    case 'removeCreatedParent':
      await agentLinks.removeCreatedParent(links, req.name);
      return null;
    case 'createEndpointLink':
      await agentLinks.createEndpointLink(links, req.spec);
      return null;
    case 'restore': {
      // The agent's start-up reconciliation against a local store holding `networks` (NetworkRecord) and `endpoints`.
      const store = new LocalStore(req.stateDir);
      for (const n of req.networks || []) store.putNetwork(n);
      for (const e of req.endpoints || []) store.putEndpoint(e);
      const ctx = { node: 'uml', store, links, log: () => {} };
      return restore(ctx, async () => (await links.listLinks()).map((l) => l.name));
    }
    case 'parseNetworkOptions':
      return parseNetworkOptions(req.options || {}, req.flags || {});
    default:
      if (LINK_OPS.includes(req.op)) return (await links[req.op](...(req.args || []))) ?? null;
      throw new Error(`links-check: unknown op ${JSON.stringify(req.op)}`);
  }
}

async function answer(req) {
  try {
    return { id: req.id, ok: true, value: await handle(req) };
  } catch (e) {
    return { id: req.id, ok: false, error: { name: e && e.name, message: e && e.message, code: e && e.code } };
  }
}

async function main() {
  if (process.argv[2]) {
    const req = JSON.parse(process.argv[2]);
    const out = [];
    for (const r of Array.isArray(req) ? req : [req]) out.push(await answer(r));
    process.stdout.write(JSON.stringify(Array.isArray(req) ? out : out[0]) + '\n');
    links.close();
    return;
  }
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  // Sequential: one request at a time, in order.
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let req;
      try {
        req = JSON.parse(line);
      } catch (e) {
        process.stdout.write(JSON.stringify({ ok: false, error: { name: 'SyntaxError', message: e.message } }) + '\n');
        return;
      }
      process.stdout.write(JSON.stringify(await answer(req)) + '\n');
    });
  });
  rl.on('close', () => chain.then(() => links.close()));
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`links-check: ${e && e.stack}\n`);
  process.exit(1);
});
