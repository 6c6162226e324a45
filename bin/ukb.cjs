#!/usr/bin/env node
// The ukb command. It runs the compiled CLI — one CommonJS bundle,
// dist/bundle/ukb.cjs, built by `npm install` (the `prepare` script) or
// `npm run build` — so that a no-op realise reads one file, never starts
// Node's ES module loader and never loads the TypeScript tool chain.
//
// The bundle is compiled with a V8 code cache kept beside it (what Node 22's
// module.enableCompileCache does, which Node 20 lacks): compiling 350 KB of
// JavaScript is a tenth of a no-op realise here. A cache V8 rejects (another
// Node) is rewritten; a folder that is not writable just goes without.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const Module = require("node:module");

const bundle = path.join(__dirname, "../dist/bundle/ukb.cjs");
let settled = false;
const run = (main) =>
  main(process.argv.slice(2)).then((code) => {
    settled = true;
    process.exitCode = code;
  });
// Node exits when nothing is left to wait for, even with the command unfinished (a promise no
// event will ever settle): that is a bug in ukb, and must not look like success.
process.on("exit", (code) => {
  if (!settled && code === 0) {
    process.stderr.write("ukb: internal error: the command stopped before finishing (nothing left to wait for)\n");
    process.exitCode = 70;
  }
});

/**
 * FNV-1a of a string, in hex. Hand-written, not node:crypto: crypto brings
 * Node's streams with it, ~10 ms of a 150 ms no-op (measured with --cpu-prof
 * and process.moduleLoadList).
 */
function fnv1a(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

function loadBundle() {
  // Named by Node's version and the bundle's size and time (V8 checks only a source's length), and
  // by the bundle's path: a cache keeps the file name of the script it was made from, which stack
  // frames then show, and ukb tells its own frames from a recipe's by that name. A copy of ukb
  // that keeps times (cp -a, a container's COPY) must not show the old place.
  const st = fs.statSync(bundle);
  const cacheFile = `${bundle}.${process.version}-${st.size}-${Math.round(st.mtimeMs)}-${fnv1a(bundle)}.v8cache`;
  let cachedData;
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {
    // first run with this Node
  }
  // No importModuleDynamically: the bundle never calls import() (a callback given here is lost
  // when V8 compiles from a cache; src/recipe/load.ts imports through src/recipe/import-esm.cjs).
  const script = new vm.Script(Module.wrap(fs.readFileSync(bundle, "utf8")), { filename: bundle, cachedData });
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, Module.createRequire(bundle), mod, bundle, path.dirname(bundle));
  if (!cachedData || script.cachedDataRejected) {
    // Right after loading: the same code whatever the first run does (a full build would cache
    // twice as much, which every later no-op would read and deserialise).
    const tmp = `${cacheFile}.${process.pid}`;
    try {
      fs.writeFileSync(tmp, script.createCachedData());
      fs.renameSync(tmp, cacheFile);
    } catch {
      fs.rmSync(tmp, { force: true });
    }
  }
  return mod.exports;
}

if (fs.existsSync(bundle)) {
  run(loadBundle().main);
} else if (fs.existsSync(path.join(__dirname, "../dist/cli/main.js"))) {
  import("../dist/cli/main.js").then((m) => run(m.main));
} else {
  process.stderr.write("ukb: error: ukb is not compiled yet\n  hint: npm run build\n");
  process.exitCode = 2;
}
