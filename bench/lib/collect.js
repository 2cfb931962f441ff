'use strict';
/** Collecting the benchmarks' control messages over NATS (bench/routes.js, bench/scale.js). */
const sc = { decode: (b) => JSON.parse(Buffer.from(b).toString()) };

/** Waits for `n` messages on `subject`, or throws after `ms`. */
function collect(nc, subject, n, ms, onMsg) {
  return new Promise((resolve, reject) => {
    const got = [];
    const sub = nc.subscribe(subject);
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`only ${got.length} of ${n} ${subject} messages within ${ms} ms`));
    }, ms);
    (async () => {
      for await (const m of sub) {
        const o = sc.decode(m.data);
        got.push(o);
        onMsg?.(o);
        if (got.length >= n) {
          clearTimeout(timer);
          sub.unsubscribe();
          resolve(got);
          return;
        }
      }
    })();
  });
}

module.exports = { collect };
