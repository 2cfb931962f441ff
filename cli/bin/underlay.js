#!/usr/bin/env node
'use strict';
require('../dist/main.js')
  .main(process.argv.slice(2))
  .then((code) => process.exit(code), (err) => {
    process.stderr.write(`underlay: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
