#!/usr/bin/env node
// The ukb command. It runs the compiled CLI (dist/), built by `npm install`
// (the `prepare` script) or `npm run build`: the CLI never loads TypeScript
// tooling unless a recipe has to be evaluated.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("ukb: error: ukb is not compiled yet\n  hint: npm run build\n");
  process.exit(2);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
