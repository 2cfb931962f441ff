'use strict';
/**
 * Plugin-call tracing for bench/docker-run.js (BENCH_DOCKER_RUN_TRACE=1): a timing proxy on the plugin
 * socket. Before dockerd first talks to the plugin, the agent's `<pluginDir>/underlay.sock` is renamed to
 * `<pluginDir>/underlay.agent` (no `.sock` suffix, so dockerd never takes it for a plugin) and this process
 * listens on `underlay.sock`, forwarding each POST to the agent and recording method, start and end
 * (performance.now() ms). The proxy adds well under a millisecond per call; the timed numbers of a traced
 * run are still reported but are not the benchmark's result.
 */
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { performance } = require('node:perf_hooks');

/**
 * @param {string} pluginDir the dockerd's plugins dir (the agent's socket is `<pluginDir>/underlay.sock`)
 * @returns {Promise<{ calls: {method: string, start: number, end: number, status: number, err?: string}[], close(): Promise<void> }>}
 */
async function startPluginProxy(pluginDir, name = 'underlay') {
  const front = path.join(pluginDir, `${name}.sock`);
  const back = path.join(pluginDir, `${name}.agent`);
  fs.renameSync(front, back);
  const calls = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    const start = performance.now();
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const up = http.request(
        { socketPath: back, path: req.url, method: req.method, headers: { ...req.headers, host: 'plugin' }, agent },
        (ures) => {
          const out = [];
          ures.on('data', (c) => out.push(c));
          ures.on('end', () => {
            const text = Buffer.concat(out);
            const rec = { method: (req.url || '').replace(/^\//, ''), start, end: performance.now(), status: ures.statusCode };
            try {
              const j = JSON.parse(text.toString('utf8') || '{}');
              if (j && (j.Err || j.Error)) rec.err = j.Err || j.Error;
            } catch {
              /* not JSON */
            }
            calls.push(rec);
            res.writeHead(ures.statusCode || 502, { 'content-type': ures.headers['content-type'] || 'application/json', 'content-length': text.length });
            res.end(text);
          });
        },
      );
      up.on('error', (e) => {
        calls.push({ method: (req.url || '').replace(/^\//, ''), start, end: performance.now(), status: 502, err: e.message });
        res.writeHead(502);
        res.end(JSON.stringify({ Err: `bench proxy: ${e.message}` }));
      });
      up.end(body);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(front, resolve);
  });
  return {
    calls,
    async close() {
      await new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
      agent.destroy();
      try {
        fs.rmSync(front, { force: true });
        fs.renameSync(back, front);
      } catch {
        /* lab already gone */
      }
    },
  };
}

module.exports = { startPluginProxy };
