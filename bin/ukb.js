#!/usr/bin/env node
// The ukb command. It runs the compiled CLI — one bundle with a chunk per
// command (dist/bundle/), built by `npm install` (the `prepare` script) or
// `npm run build` — so that a no-op realise loads a handful of files and
// never the TypeScript tool chain.
import { existsSync } from "node:fs";

const bundle = new URL("../dist/bundle/main.js", import.meta.url);
const entry = existsSync(bundle) ? bundle : new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("ukb: error: ukb is not compiled yet\n  hint: npm run build\n");
  process.exit(2);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
