// Loaded with NODE_OPTIONS=--require by npm run test:mutation (Stryker and its test-runner workers):
// @stryker-mutator/mocha-runner 10.0.0 requires mocha's internals as "mocha/lib/cli/run-helpers",
// "…/options" and "…/collect-files", which mocha 12 ships as .cjs files. This resolves those names
// to the .cjs files and changes nothing else; it can go once the runner names the files itself.
'use strict';
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
  try {
    return resolve.call(this, request, parent, ...rest);
  } catch (err) {
    if (/[/\\]mocha[/\\]lib[/\\]cli[/\\][\w-]+$/.test(request)) return resolve.call(this, `${request}.cjs`, parent, ...rest);
    throw err;
  }
};
