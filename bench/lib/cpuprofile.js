#!/usr/bin/env node
'use strict';
/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): top functions by self time, and self time
 * per package/file group. Optionally only the samples between --from and --to seconds after the
 * profile started (e.g. the 64-requester phase).
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/ipam.js
 *   node bench/lib/cpuprofile.js /tmp/prof/CPU.*.cpuprofile [--top 30] [--from 12 --to 17]
 */
const fs = require('node:fs');

function summarise(profile, { fromS = 0, toS = Infinity } = {}) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let t = 0;
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0;
    t += dt;
    const s = t / 1e6;
    if (s < fromS || s > toS) continue;
    const id = profile.samples[i];
    // A sample's weight is the time until the next sample.
    const w = (profile.timeDeltas[i + 1] ?? dt) / 1000;
    self.set(id, (self.get(id) ?? 0) + w);
    total += w;
  }
  const byFn = new Map();
  const byGroup = new Map();
  for (const [id, ms] of self) {
    const cf = nodes.get(id).callFrame;
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName || '(anonymous)'} ${where}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + ms);
    const g = group(cf);
    byGroup.set(g, (byGroup.get(g) ?? 0) + ms);
  }
  const sort = (m) => [...m].sort((a, b) => b[1] - a[1]);
  return { totalMs: total, functions: sort(byFn), groups: sort(byGroup) };
}

function shortUrl(url) {
  return url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, '~/').replace(/^.*?\/(libs|services|cli|bench)\//, '$1/');
}

function group(cf) {
  const fn = cf.functionName;
  if (!cf.url) {
    if (fn === '(garbage collector)') return 'GC';
    if (fn === '(idle)') return 'idle';
    if (fn === '(program)') return 'program (native, not JS)';
    return `native ${fn || '(anonymous)'}`;
  }
  const u = cf.url.replace(/^file:\/\//, '');
  const m = u.match(/node_modules\/((@[^/]+\/)?[^/]+)\//);
  if (m && !/^@underlay\//.test(m[1])) return m[1];
  const w = u.match(/\/(libs\/[^/]+|services\/[^/]+|cli|bench)\//);
  if (w) return w[1];
  if (u.startsWith('node:')) return 'node core';
  return u;
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const opt = (name, d) => {
    const i = args.indexOf(name);
    if (i < 0) return d;
    const v = Number(args[i + 1]);
    args.splice(i, 2);
    return v;
  };
  const top = opt('--top', 25);
  const fromS = opt('--from', 0);
  const toS = opt('--to', Infinity);
  for (const file of args) {
    const s = summarise(JSON.parse(fs.readFileSync(file, 'utf8')), { fromS, toS });
    const pct = (ms) => `${((100 * ms) / s.totalMs).toFixed(1).padStart(5)}%`;
    console.log(`${file}: ${(s.totalMs / 1000).toFixed(1)} s sampled`);
    console.log('\nself time by group:');
    for (const [g, ms] of s.groups.slice(0, 20)) console.log(`  ${pct(ms)}  ${g}`);
    console.log(`\ntop ${top} functions by self time:`);
    for (const [f, ms] of s.functions.slice(0, top)) console.log(`  ${pct(ms)}  ${f}`);
  }
}

module.exports = { summarise };
