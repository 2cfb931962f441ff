'use strict';
/**
 * How fast this machine is against the one the issues' figures were taken on, so a figure can be read against its
 * target: the median of three `node -e 0` starts, over that reference machine's (test/uml/budgets.json's
 * calibration.hostNodeStartMs, the figure the user-mode-linux suites calibrate their budgets with). The development VM
 * (2 vCPU, shared) has measured 50 ms on 2026-12-04 and 100-140 ms on 2026-12-07: the same code then ran bench:ipam at
 * about half the rate. Observation only: no figure is scaled by it.
 */
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');

const BUDGETS = path.join(__dirname, '..', '..', 'test', 'uml', 'budgets.json');

function machineSpeed() {
  const runs = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    runs.push(performance.now() - t0);
  }
  const nodeStartMs = runs.sort((a, b) => a - b)[1];
  let referenceMs;
  try {
    referenceMs = JSON.parse(fs.readFileSync(BUDGETS, 'utf8')).calibration.hostNodeStartMs;
  } catch {
    referenceMs = undefined;
  }
  const factor = referenceMs ? nodeStartMs / referenceMs : NaN;
  return {
    nodeStartMs,
    referenceMs,
    factor,
    line:
      `machine: node -e 0 starts in ${Math.round(nodeStartMs)} ms here` +
      (referenceMs
        ? `, ${referenceMs} ms on the reference machine (test/uml/budgets.json): ${factor >= 1 ? `${factor.toFixed(1)}x slower` : `${(1 / factor).toFixed(1)}x faster`}`
        : ''),
  };
}

module.exports = { machineSpeed };
