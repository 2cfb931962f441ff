/**
 * The managed plugin's entrypoint (deploy/plugin/config.json): `underlay agent` with its flags taken from the
 * plugin's settable environment, as `docker plugin set underlay/underlay:VERSION NODE=h1 NATS_URL=nats://…` sets it:
 *
 *   NODE          this host's node name (required unless UNDERLAY_NODE is set)
 *   NATS_URL      NATS URL (required unless UNDERLAY_NATS is set)
 *   NATS_CREDS    the node's credentials in the plugin (default /etc/underlay/nats/node.creds, used when it exists)
 *   DRIVER_NAME   the name Docker knows the plugin by (deploy/plugin/build.sh sets it to the name it creates)
 *   LOG_LEVEL     debug, info, warn or error
 *
 * More agent flags: the plugin's args (`docker plugin set underlay/underlay:VERSION args="--bgp-asn 65001"`).
 * Every UNDERLAY_* variable works as for `underlay agent`. Plain Node, no dependencies: it runs in the image as is.
 */
'use strict';
const fs = require('node:fs');

const env = process.env;
const args = ['agent'];
const flag = (name, value) => {
  if (value !== undefined && value !== '') args.push(`--${name}`, value);
};
flag('node', env.NODE);
flag('nats', env.NATS_URL);
const creds = env.NATS_CREDS || '/etc/underlay/nats/node.creds';
if (!env.UNDERLAY_NATS_CREDS && fs.existsSync(creds)) flag('nats-creds', creds);
flag('driver-name', env.DRIVER_NAME);
flag('log-level', env.LOG_LEVEL);
// The plugin's socket directory and the Docker socket are where config.json puts them.
args.push(...process.argv.slice(2));
if (!env.NODE && !env.UNDERLAY_NODE) {
  process.stderr.write('underlay plugin: set NODE (docker plugin set underlay/underlay:VERSION NODE=<this host>)\n');
  process.exit(2);
}
if (!env.NATS_URL && !env.UNDERLAY_NATS) {
  process.stderr.write('underlay plugin: set NATS_URL (docker plugin set underlay/underlay:VERSION NATS_URL=nats://…)\n');
  process.exit(2);
}
require(require('node:path').join(__dirname, 'cli/dist/main.js'))
  .main(args)
  .then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`underlay: ${err && err.stack ? err.stack : err}\n`);
      process.exit(1);
    },
  );
