/**
 * The image's HEALTHCHECK: GET /healthz of the service this container runs (`underlay controller` or
 * `underlay agent`, PID 1), on the address of its --listen flag (or UNDERLAY_LISTEN), else the service's default
 * (controller 127.0.0.1:7410, agent 127.0.0.1:7411). A wildcard address (0.0.0.0, ::) is asked on loopback.
 * Healthy when it answers 200; an agent with --listen off has no endpoint and counts as healthy.
 * Plain Node, no dependencies: it runs in the image as is.
 */
'use strict';
const fs = require('node:fs');
const http = require('node:http');

function argv() {
  try {
    return fs.readFileSync('/proc/1/cmdline', 'utf8').split('\0').filter(Boolean);
  } catch {
    return process.argv.slice(2);
  }
}

function listenOf(args) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--listen') return args[i + 1] ?? '';
    if (args[i].startsWith('--listen=')) return args[i].slice('--listen='.length);
  }
  if (process.env.UNDERLAY_LISTEN !== undefined) return process.env.UNDERLAY_LISTEN;
  return args.includes('controller') ? '127.0.0.1:7410' : '127.0.0.1:7411';
}

const listen = listenOf(argv());
if (listen === '' || listen === 'off') process.exit(0);
const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(listen);
if (!m) {
  process.stderr.write(`healthcheck: cannot read --listen ${listen}\n`);
  process.exit(1);
}
let host = m[1] || '127.0.0.1';
if (host === '0.0.0.0') host = '127.0.0.1';
if (host === '::') host = '::1';
const req = http.get({ host, port: Number(m[2]), path: '/healthz', timeout: 2500 }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => req.destroy(new Error('timed out')));
req.on('error', (e) => {
  process.stderr.write(`healthcheck: ${e.message}\n`);
  process.exit(1);
});
