'use strict';
/** The compiled packages a bench drives (`npx tsc -b` first); exits with a clear text when they are not built. */
const path = require('node:path');

const ROOT = path.resolve(__dirname, '../..');

function loadProduct(bench) {
  try {
    return {
      adapters: require('@underlay/adapters'),
      core: require('@underlay/core'),
      view: require(path.join(ROOT, 'services/node-agent/dist/cluster-view.js')),
      routes: require(path.join(ROOT, 'services/node-agent/dist/routes/index.js')),
    };
  } catch (e) {
    console.error(`${bench}: cannot load the compiled packages (${e.message}); run \`npx tsc -b\` first`);
    process.exit(1);
  }
}

module.exports = { loadProduct };
