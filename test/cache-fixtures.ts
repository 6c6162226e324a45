/**
 * Fixtures of the binary-cache tests: a small graph with every kind of
 * entry (directories, an empty one, executables, symlinks, files large
 * enough to be blobs of their own, two identical ones, a second output,
 * references), two stores, a signing key, and helpers to compare stores.
 */
import fs from "node:fs";
import path from "node:path";
import type { ExecutionContext } from "ava";
import { events, tempDir, ukb, writeRecipe, type RunResult } from "./helpers/ukb.js";
import { startNginx, type Server } from "./helpers/servers.js";

export { events, tempDir, ukb, writeRecipe };

/** The graph: `lib` (a tree), `app` (out + doc, refers to lib), `top` (refers to lib and app's doc). */
export function recipe(salt: string, bigBytes = 200_000): string {
  return `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "head", "tr", "mkdir", "ln", "cat", "chmod", "printf", "echo"]);
export const lib = derivation({
  name: "lib",
  builder: \`\${t}/bin/sh\`,
  env: { salt: ${JSON.stringify(salt)} },
  args: ["-c", \`set -e
    \${t}/bin/mkdir -p $out/share/empty $out/bin
    \${t}/bin/printf 'small %s\\\\n' "$salt" > $out/share/small.txt
    \${t}/bin/head -c ${bigBytes} /dev/zero | \${t}/bin/tr '\\\\\\\\0' a > $out/share/big.dat
    \${t}/bin/head -c ${bigBytes} /dev/zero | \${t}/bin/tr '\\\\\\\\0' a > $out/share/big-copy.dat
    \${t}/bin/head -c ${bigBytes + 1000} /dev/zero | \${t}/bin/tr '\\\\\\\\0' b > $out/bin/big-tool
    \${t}/bin/chmod +x $out/bin/big-tool
    \${t}/bin/printf '#!/bin/sh\\\\necho hi\\\\n' > $out/bin/tool
    \${t}/bin/chmod +x $out/bin/tool
    \${t}/bin/ln -s ../share/small.txt $out/bin/link\`],
});
export const app = derivation({
  name: "app",
  outputs: ["out", "doc"],
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`\${t}/bin/echo \${lib}/bin/tool > $out; \${t}/bin/echo docs > $doc\`],
});
export default derivation({
  name: "top",
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`\${t}/bin/cat \${app} > $out; \${t}/bin/echo \${app.output("doc")} >> $out\`],
});
`;
}

export interface Fixture {
  dir: string;
  recipe: string;
  storeA: string;
  storeB: string;
  keyFile: string;
  publicKey: string;
  /** Environment with no user config (a fresh XDG_CONFIG_HOME) and no cache variables. */
  env: NodeJS.ProcessEnv;
}

export async function fixture(t: ExecutionContext, salt: string): Promise<Fixture> {
  const dir = tempDir("ukb-cache-");
  const env: NodeJS.ProcessEnv = { XDG_CONFIG_HOME: path.join(dir, "config"), UKB_SUBSTITUTERS: undefined, UKB_TRUSTED_KEYS: undefined, UKB_STORE: undefined };
  const file = writeRecipe(dir, "graph.ts", recipe(salt));
  const keyFile = path.join(dir, "key.sec");
  const k = await ukb(["key", "generate", "--name", "test-cache-1", "--out", keyFile], { cwd: dir, env });
  t.is(k.code, 0, k.stderr);
  return { dir, recipe: file, storeA: path.join(dir, "A"), storeB: path.join(dir, "B"), keyFile, publicKey: k.stdout.trim(), env };
}

export function ok(t: ExecutionContext, r: RunResult, what: string): void {
  t.is(r.code, 0, `${what} failed:\n${r.stdout}\n${r.stderr}`);
}

/** Realises the fixture's default export into store A. */
export async function realiseA(t: ExecutionContext, f: Fixture): Promise<string> {
  const r = await ukb(["realise", f.recipe, "--store", f.storeA, "--no-out-link"], { cwd: f.dir, env: f.env });
  ok(t, r, "realise in A");
  return r.stdout.trim();
}

export interface TreeEntry {
  type: "file" | "dir" | "symlink";
  exec?: boolean;
  data?: string;
}

/** Every entry of a store path: type, executable bit, bytes or link target. */
export function tree(root: string, rel = ""): Record<string, TreeEntry> {
  const out: Record<string, TreeEntry> = {};
  const abs = path.join(root, rel);
  const st = fs.lstatSync(abs);
  if (st.isSymbolicLink()) out[rel] = { type: "symlink", data: fs.readlinkSync(abs) };
  else if (st.isFile()) out[rel] = { type: "file", exec: (st.mode & 0o100) !== 0, data: fs.readFileSync(abs).toString("base64") };
  else {
    out[rel] = { type: "dir" };
    for (const name of fs.readdirSync(abs).sort()) Object.assign(out, tree(root, rel ? `${rel}/${name}` : name));
  }
  return out;
}

/** Valid paths of a store (via its folder; the tests also run `ukb store verify`). */
export function storePaths(store: string): string[] {
  return fs.existsSync(path.join(store, "store")) ? fs.readdirSync(path.join(store, "store")).sort() : [];
}

/** Realises in store B from `cache`, checks nothing was built, every path is A's bit for bit, and B verifies. */
export async function substituteIntoB(t: ExecutionContext, f: Fixture, cache: string, extra: string[] = []): Promise<Array<Record<string, unknown>>> {
  const r = await ukb(["realise", f.recipe, "--store", f.storeB, "--no-out-link", "--json", "--substituters", cache, "--trusted-keys", f.publicKey, ...extra], { cwd: f.dir, env: f.env });
  ok(t, r, "realise in B");
  const ev = events(r.stderr);
  t.deepEqual(ev.filter((e) => e.type === "start").map((e) => e.name), [], "nothing is built in B");
  t.deepEqual(ev.filter((e) => e.type === "cache-warning"), []);
  t.true(ev.some((e) => e.type === "substituted" && e.name === "top"));
  const inB = storePaths(f.storeB);
  t.true(inB.length >= 3, `B holds ${inB.join(", ")}`);
  for (const base of inB) t.deepEqual(tree(path.join(f.storeB, "store", base)), tree(path.join(f.storeA, "store", base)), `${base} is bit-identical`);
  const v = await ukb(["store", "verify", "--store", f.storeB], { cwd: f.dir, env: f.env });
  ok(t, v, "store verify in B");
  t.regex(v.stdout, /all valid/);
  return ev;
}

export { freePort, type Server } from "./helpers/servers.js";

/** Debian's nginx on 127.0.0.1 with WebDAV PUT (http_dav_module) over a temp root: a static HTTP server any team has. */
export async function startNginxDav(dir: string): Promise<Server> {
  return startNginx(dir, "client_max_body_size 0;\n    dav_methods PUT DELETE MKCOL;\n    create_full_put_path on;\n    dav_access user:rw group:r all:r;");
}
