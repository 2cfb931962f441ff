#!/usr/bin/env node
// The agent's route path on its own (ClusterView + RouteService on real rtnetlink), for a host whose agent
// build does not run it yet. Reads the host's networks from the agent's state directory (the same
// NetworkRecord files the agent writes), so it programs exactly what the agent would.
//
//   node test/uml/routes/harness.js NODE NATS_URL STATE_DIR RECONCILE_MS
//
// Runs inside the host's network namespace (nsenter --net). Logs to stdout; prints its counters on exit.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const [node, natsUrl, stateDir, reconcileText] = process.argv.slice(2);
if (!node || !natsUrl || !stateDir) {
  console.error('usage: harness.js NODE NATS_URL STATE_DIR [RECONCILE_MS]');
  process.exit(2);
}
const REPO = path.resolve(__dirname, '../../..');
const { connectNats, RpcClient } = require(path.join(REPO, 'libs/adapters/dist/index.js'));
const { ClusterView } = require(path.join(REPO, 'services/node-agent/dist/cluster-view.js'));
const { startRoutes } = require(path.join(REPO, 'services/node-agent/dist/routes/index.js'));
const { NetworkRecord } = require(path.join(REPO, 'services/node-agent/dist/driver/store.js'));

const log = (m) => process.stdout.write(`[${new Date().toISOString()}] routes-harness ${node}: ${m}\n`);

function localNetworks() {
  const dir = path.join(stateDir, 'networks');
  const out = [];
  let files = [];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return out;
  }
  for (const f of files) {
    try {
      out.push(NetworkRecord.parse(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))));
    } catch {
      // being written; next pass
    }
  }
  return out;
}

(async () => {
  const nc = await connectNats(natsUrl, `routes-harness-${node}`);
  const view = new ClusterView({ nc, rpc: new RpcClient(nc), logger: log });
  await view.start();
  const svc = await startRoutes({ node, view, localNetworks, reconcileMs: Number(reconcileText) || 2000, logger: log });
  // The agent calls sync() after CreateNetwork/DeleteNetwork; here the store is looked at twice a second.
  let last = '';
  const poll = setInterval(() => {
    const sig = JSON.stringify(localNetworks().map((n) => [n.id, n.parent, n.ipvlanMode, n.poolIds]));
    if (sig !== last) {
      last = sig;
      svc.sync();
    }
  }, 500);
  await view.ready();
  log(`ready at seq ${view.seq}`);
  const stop = async () => {
    clearInterval(poll);
    log(`stopping: ${JSON.stringify(svc.stats())}`);
    await svc.stop();
    await view.stop();
    await nc.drain().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
})().catch((e) => {
  log(`failed: ${e.stack || e}`);
  process.exit(1);
});
