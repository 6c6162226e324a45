// Compiles the native launcher, dist/bin/ukb (src/client/ukb.c), which
// bin/ukb runs when it is there: it answers a no-op realise through the
// store's `ukb server` without starting Node. Without a C compiler there is
// no launcher, and bin/ukb runs the Node CLI directly: nothing else changes.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const out = path.join(root, "dist/bin/ukb");
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.rmSync(out, { force: true });
const cc = process.env.CC || "cc";
const compile = (extra) => spawnSync(cc, ["-O2", "-Wall", "-Wextra", "-Werror", ...extra, "-o", `${out}.tmp`, path.join(root, "src/client/ukb.c")], { stdio: extra.length ? "ignore" : "inherit" });
// Static where the C library allows it: it starts faster (no dynamic loader) and still runs where
// the loader it was built against is missing.
let r = compile(["-static"]);
if (r.status !== 0) r = compile([]);
if (r.status === 0) fs.renameSync(`${out}.tmp`, out);
else {
  fs.rmSync(`${out}.tmp`, { force: true });
  console.warn(`ukb: note: no native launcher (${cc} ${r.error ? `not found: ${r.error.message}` : `failed with status ${r.status}`}); bin/ukb runs the Node CLI for every command`);
}
