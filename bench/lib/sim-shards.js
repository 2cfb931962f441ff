'use strict';
/**
 * How the simulated agents of bench:routes and bench:scale are spread over processes: one per CPU (a real agent has a
 * host to itself; in one process 1,000 of them shared one thread while the machine's other core was mostly idle).
 * BENCH_SIM_PROCESSES sets the number (1: all in one process, as before 2026-12-07).
 */
const os = require('node:os');

/** [from, count] of each process: agents from..from+count-1, as even as can be. */
function simShards(agents, processes = Number(process.env.BENCH_SIM_PROCESSES) || os.availableParallelism()) {
  const n = Math.max(1, Math.min(agents, Math.floor(processes)));
  const out = [];
  for (let k = 0, from = 0; k < n; k++) {
    const count = Math.floor(agents / n) + (k < agents % n ? 1 : 0);
    out.push([from, count]);
    from += count;
  }
  return out;
}

module.exports = { simShards };
