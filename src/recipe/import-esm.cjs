// Node's own import(), from a file Node compiles itself. The CLI bundle runs
// from a V8 code cache (bin/ukb.cjs), and an import() compiled from a cache
// has no module loader to call on Node 20; the recipe loader imports through
// this instead.
"use strict";
module.exports = (specifier) => import(specifier);
