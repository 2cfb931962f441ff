'use strict';
/**
 * A tiny require hook so plain-node benchmarks can reuse the TypeScript test lab (test/lab, test/e2e/support)
 * without a build step of their own: `.ts` files are transpiled on load with TypeScript's transpileModule
 * (CommonJS, no type checking; the lab is type-checked by the jest projects and `tsconfig.test.json`).
 *
 * The lab imports siblings without an extension (`from './netlab'`), which Node's CommonJS resolver finds
 * once `.ts` is in require.extensions. A `./x.js` import of a file that only exists as `./x.ts` (nodenext
 * style) is mapped too. `@underlay/*` packages still resolve through node_modules to their compiled dist/.
 */
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');

let installed = false;

function install() {
  if (installed) return;
  installed = true;
  const ts = require('typescript');
  const compilerOptions = {
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    isolatedModules: true,
    inlineSourceMap: true,
    inlineSources: false,
  };
  require.extensions['.ts'] = function loadTs(module, filename) {
    const src = fs.readFileSync(filename, 'utf8');
    const out = ts.transpileModule(src, { compilerOptions, fileName: filename, reportDiagnostics: false });
    module._compile(out.outputText, filename);
  };
  // nodenext-style `./x.js` specifiers pointing at TypeScript sources: try `./x.ts` when `./x.js` is absent.
  const origResolve = Module._resolveFilename;
  Module._resolveFilename = function resolveTs(request, parent, ...rest) {
    try {
      return origResolve.call(this, request, parent, ...rest);
    } catch (e) {
      if (parent && parent.filename && parent.filename.endsWith('.ts') && /^\.{1,2}\/.*\.js$/.test(request)) {
        const candidate = path.resolve(path.dirname(parent.filename), request.slice(0, -3) + '.ts');
        if (fs.existsSync(candidate)) return candidate;
      }
      throw e;
    }
  };
  // Source positions of the .ts files in stack traces.
  if (typeof process.setSourceMapsEnabled === 'function') process.setSourceMapsEnabled(true);
}

module.exports = { install };
