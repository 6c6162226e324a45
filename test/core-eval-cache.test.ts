/**
 * The eval cache (a no-op realise reads the graph from the store instead of
 * evaluating the recipe; the ukb server answers from it too) must notice
 * every change that would change the evaluation: in a local() tree (a new
 * file, a mode, a symlink), in a package the recipe requires, and in what
 * hostTools finds on PATH. Each case compares with a fresh evaluation.
 */
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import Database from "better-sqlite3";
import { HELLO, ROOT, events, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

/** The output path of a realise, with the cache and without: they must agree. */
async function bothWays(dir: string, recipe: string): Promise<{ cached: string; fresh: string }> {
  const cached = await ukb(["realise", recipe, "--no-out-link"], { cwd: dir });
  const fresh = await ukb(["realise", recipe, "--no-out-link", "--no-eval-cache"], { cwd: dir });
  return { cached: `${cached.code} ${cached.stdout}${cached.stderr.split("\n").filter((l) => l.startsWith("ukb: error")).join("\n")}`, fresh: `${fresh.code} ${fresh.stdout}${fresh.stderr.split("\n").filter((l) => l.startsWith("ukb: error")).join("\n")}` };
}

test("a local() tree: an added file, a changed mode, a repointed symlink", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "src"));
  fs.writeFileSync(path.join(dir, "src/a"), "a\n");
  fs.symlinkSync("a", path.join(dir, "src/link"));
  writeRecipe(dir, "l.ts", `import { local } from "ukb";\nexport default local("./src");\n`);
  const seen = new Set<string>();
  for (const change of [
    () => {},
    () => fs.writeFileSync(path.join(dir, "src/b"), "b\n"),
    () => fs.chmodSync(path.join(dir, "src/a"), 0o755),
    () => {
      fs.rmSync(path.join(dir, "src/link"));
      fs.symlinkSync("b", path.join(dir, "src/link"));
    },
  ]) {
    change();
    const { cached, fresh } = await bothWays(dir, "l.ts");
    t.is(cached, fresh);
    t.false(seen.has(cached), "a change did not change the tree's identity");
    seen.add(cached);
  }
});

test("a package the recipe requires from node_modules", async (t) => {
  const dir = tempDir();
  const lib = path.join(dir, "node_modules/mylib");
  fs.mkdirSync(lib, { recursive: true });
  fs.writeFileSync(path.join(lib, "package.json"), `{"name":"mylib","main":"index.js"}`);
  const write = (word: string) =>
    fs.writeFileSync(path.join(lib, "index.js"), `const { derivation, hostTools } = require("ukb");\nconst t = hostTools(["sh"]);\nexports.make = () => derivation({ name: "lib", builder: \`\${t}/bin/sh\`, args: ["-c", "echo ${word} > $out"] });\n`);
  write("one");
  writeRecipe(dir, "r.ts", `import { make } from "mylib";\nexport default make();\n`);
  const first = await bothWays(dir, "r.ts");
  t.is(first.cached, first.fresh);
  write("two");
  const second = await bothWays(dir, "r.ts");
  t.is(second.cached, second.fresh);
  t.not(second.cached, first.cached);
});

test("what decides which file an import finds: a symlinked folder retargeted, a file made that now wins (x.js over x.ts, d.ts over d/index.ts), a package's main, a nearer node_modules", async (t) => {
  const dir = tempDir();
  const word = (file: string, w: string) => {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), `export const word = "${w}";\n`);
  };
  word("v1/x.ts", "v1");
  word("v2/x.ts", "v2");
  fs.symlinkSync("v1", path.join(dir, "lib"));
  word("y.ts", "y-ts");
  word("d/index.ts", "d-index");
  const pkg = path.join(dir, "node_modules/pkg");
  fs.mkdirSync(pkg, { recursive: true });
  fs.writeFileSync(path.join(pkg, "package.json"), `{"name":"pkg","main":"a.js"}`);
  fs.writeFileSync(path.join(pkg, "a.js"), `exports.word = "pkg-a";\n`);
  fs.writeFileSync(path.join(pkg, "b.js"), `exports.word = "pkg-b";\n`);
  fs.mkdirSync(path.join(dir, "sub"));
  writeRecipe(
    dir,
    "sub/r.ts",
    `import { derivation, hostTools } from "ukb";\nimport { word as x } from "../lib/x.ts";\nimport { word as y } from "../y.js";\nimport { word as d } from "../d";\nimport { word as p } from "pkg";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "w", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${x} \${y} \${d} \${p} > $out\`] });\n`,
  );
  const seen = new Set<string>();
  for (const [what, change] of [
    ["nothing", () => {}],
    ["lib retargeted", () => (fs.rmSync(path.join(dir, "lib")), fs.symlinkSync("v2", path.join(dir, "lib")))],
    ["y.js made", () => fs.writeFileSync(path.join(dir, "y.js"), `export const word = "y-js";\n`)],
    ["d.ts made", () => word("d.ts", "d-ts")],
    ["pkg's main", () => fs.writeFileSync(path.join(pkg, "package.json"), `{"name":"pkg","main":"b.js"}`)],
    ["a nearer pkg", () => (fs.mkdirSync(path.join(dir, "sub/node_modules/pkg"), { recursive: true }), fs.writeFileSync(path.join(dir, "sub/node_modules/pkg/index.js"), `exports.word = "near";\n`))],
  ] as const) {
    change();
    const { cached, fresh } = await bothWays(dir, "sub/r.ts");
    t.is(cached, fresh, what);
    t.false(seen.has(cached), `${what}: no new evaluation`);
    seen.add(cached);
  }
});

test("a recipe may not change ukb's working folder, and what it reads from a descriptor it did not open (stdin) is read on every run", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "sub"));
  writeRecipe(dir, "cd.ts", `import { derivation, hostTools } from "ukb";\n\nprocess.chdir("sub");\nexport default derivation({ name: "c", builder: \`\${hostTools(["sh"])}/bin/sh\` });\n`);
  const cd = await ukb(["realise", "cd.ts"], { cwd: dir });
  t.is(cd.code, 2, cd.stderr);
  t.regex(cd.stderr, /^ukb: error: cd\.ts:3: called process\.chdir\("sub"\) while being evaluated/m);
  t.false(fs.existsSync(path.join(dir, "sub/result")));
  writeRecipe(dir, "stdin.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nconst w = fs.readFileSync(0, "utf8").trim();\nexport default derivation({ name: "s", builder: \`\${hostTools(["sh"])}/bin/sh\`, args: ["-c", \`echo \${w} > $out\`] });\n`);
  const piped = (w: string) => execFileSync("sh", ["-c", `echo ${w} | "$0" "$@"`, process.execPath, path.join(ROOT, "bin/ukb.cjs"), "realise", "stdin.ts", "--no-out-link"], { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  const foo = piped("foo");
  const bar = piped("bar");
  t.not(foo, bar);
  t.is(fs.readFileSync(bar, "utf8"), "bar\n");
});

test("local() in a folder whose name holds '(', ')' or ':' is the recipe's folder's, wherever ukb runs", async (t) => {
  const dir = tempDir();
  const project = path.join(dir, "my (project): v2");
  fs.mkdirSync(path.join(project, "www"), { recursive: true });
  fs.writeFileSync(path.join(project, "www/index.html"), "A\n");
  fs.mkdirSync(path.join(dir, "www"));
  fs.writeFileSync(path.join(dir, "www/index.html"), "B\n");
  writeRecipe(project, "site.ts", `import { local } from "ukb";\nexport default local("./www");\n`);
  for (const cwd of [project, dir]) {
    const r = await ukb(["realise", path.join(project, "site.ts"), "--no-out-link", "--store", path.join(dir, "store")], { cwd });
    t.is(r.code, 0, r.stderr);
    t.is(fs.readFileSync(path.join(r.stdout.trim(), "index.html"), "utf8"), "A\n", `from ${cwd}`);
  }
});

test("hostTools: a program that appears earlier on the PATH it searches", async (t) => {
  const dir = tempDir();
  const early = path.join(dir, "early");
  fs.mkdirSync(early);
  writeRecipe(dir, "h.ts", `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh"], { path: ${JSON.stringify(`${early}:/usr/bin:/bin`)} });\nexport default derivation({ name: "h", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`);
  const first = await bothWays(dir, "h.ts");
  t.regex(first.cached, /^0 /);
  // Now the recipe would find this one (outside the folders builds can see: an error, not the old graph).
  fs.symlinkSync("/bin/sh", path.join(early, "sh"));
  const second = await bothWays(dir, "h.ts");
  t.is(second.cached, second.fresh);
  t.regex(second.cached, /^2 .*hostTools: 'sh' is .*early\/sh/s);
});

test("hostTools: another program installed in a folder it searches first, or pyenv's lock file in its shims, evaluates nothing again", async (t) => {
  const dir = tempDir();
  const early = path.join(dir, "early");
  fs.mkdirSync(early);
  writeRecipe(dir, "h.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nfs.appendFileSync("evaluations", "x");\nconst t = hostTools(["sh"], { path: ${JSON.stringify(`${early}:/usr/bin:/bin`)} });\nexport default derivation({ name: "h", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`);
  const realise = async () => {
    const r = await ukb(["realise", "h.ts", "--no-out-link"], { cwd: dir });
    t.is(r.code, 0, r.stderr);
  };
  await realise();
  fs.writeFileSync(path.join(early, "make"), "#!/bin/sh\n", { mode: 0o755 });
  fs.writeFileSync(path.join(early, ".pyenv-shim"), "");
  await realise();
  t.is(fs.readFileSync(path.join(dir, "evaluations"), "utf8"), "x", "evaluated again");
  // A file named sh that is no program is not found; made one, it is (the test above: an error).
  fs.writeFileSync(path.join(early, "sh"), "");
  await realise();
  t.is(fs.readFileSync(path.join(dir, "evaluations"), "utf8"), "xx", "a new file named sh, not looked at");
});

test("a file touched but not changed is hashed once: the same result, and its stamp renewed", async (t) => {
  const dir = tempDir();
  const recipe = writeRecipe(dir, "hello.ts", HELLO);
  const first = await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  const later = new Date(Date.now() + 60_000);
  fs.utimesSync(recipe, later, later);
  const again = await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: dir });
  t.is(again.stdout, first.stdout);
  const { default: Database } = await import("better-sqlite3");
  const db = new Database(path.join(dir, "cache", "ukb.sqlite"), { readonly: true });
  try {
    const rows = db.prepare("SELECT key, value FROM eval_cache").all() as Array<{ key: string; value: string }>;
    const entry = rows.find((r) => r.key.startsWith(recipe) && !r.key.endsWith("\0graph"));
    const stamp = (JSON.parse(entry!.value) as { deps: Array<{ path: string; mtimeMs: number }> }).deps.find((d) => d.path === recipe);
    t.is(stamp!.mtimeMs, fs.statSync(recipe).mtimeMs);
  } finally {
    db.close();
  }
});

test("a file rewritten in place with the same size and its old mtime put back (cp -p, tar, touch -r) is still a change: its inode's change time says so", async (t) => {
  const dir = tempDir();
  const data = path.join(dir, "word.txt");
  fs.writeFileSync(data, "one");
  const recipe = writeRecipe(dir, "word.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nconst word = fs.readFileSync(new URL("./word.txt", import.meta.url), "utf8");\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "word", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${word} > $out\`] });\n`);
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const realise = async () => {
    const r = await ukb(["realise", "word.ts", "--no-out-link"], { cwd: dir });
    t.is(r.code, 0, r.stderr);
    return fs.readFileSync(r.stdout.trim(), "utf8").trim();
  };
  // Whole seconds: a time put back is then exactly the one stamped.
  for (const file of [data, recipe]) fs.utimesSync(file, 1e9, 1e9);
  t.is(await realise(), "one");
  fs.writeFileSync(path.join(dir, "WORD.TXT"), "three");
  for (const [file, before, after, expected] of [[data, "one", "two", "two"], [recipe, "word.txt", "WORD.TXT", "three"]] as const) {
    const { mtimeMs, size, ino } = fs.statSync(file);
    fs.writeFileSync(file, fs.readFileSync(file, "utf8").replace(before, after));
    fs.utimesSync(file, 1e9, 1e9);
    t.like(fs.statSync(file), { mtimeMs, size, ino }, "the stat ukb stamped, but for the change time");
    t.is(await realise(), expected, `${path.basename(file)} rewritten: the cached evaluation is stale`);
  }
});

test("a tsconfig.json extending a package's config through its \"exports\": a change of the file exports points at is seen", async (t) => {
  const dir = tempDir();
  const write = (f: string, text: string) => (fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true }), fs.writeFileSync(path.join(dir, f), text));
  for (const word of ["a", "b"]) write(`${word}.ts`, `export const word = "${word}";\n`);
  write("node_modules/cfgpkg/package.json", JSON.stringify({ name: "cfgpkg", exports: { "./base": "./configs/base.json" } }));
  write("node_modules/cfgpkg/configs/base.json", JSON.stringify({ compilerOptions: { paths: { "@word": ["../../../a.ts"] } } }));
  write("tsconfig.json", JSON.stringify({ extends: "cfgpkg/base" }));
  writeRecipe(dir, "w.ts", `import { derivation, hostTools } from "ukb";\nimport { word } from "@word";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "w", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${word} > $out\`] });\n`);
  const realise = async (noCache = false) => {
    const r = await ukb(["realise", "w.ts", "--no-out-link", ...(noCache ? ["--no-eval-cache"] : [])], { cwd: dir });
    t.is(r.code, 0, r.stderr);
    return fs.readFileSync(r.stdout.trim(), "utf8").trim();
  };
  t.is(await realise(), "a");
  write("node_modules/cfgpkg/configs/base.json", JSON.stringify({ compilerOptions: { paths: { "@word": ["../../../b.ts"] } } }));
  t.is(await realise(), "b", "the cached evaluation is stale");
  t.is(await realise(true), "b");
  // The package's own name mapped by conditions alone ("default", no "." key).
  write("node_modules/cfg2/package.json", JSON.stringify({ name: "cfg2", exports: { default: "./configs/base.json" } }));
  write("node_modules/cfg2/configs/base.json", JSON.stringify({ compilerOptions: { paths: { "@word": ["../../../a.ts"] } } }));
  write("tsconfig.json", JSON.stringify({ extends: "cfg2" }));
  t.is(await realise(), "a");
  write("node_modules/cfg2/configs/base.json", JSON.stringify({ compilerOptions: { paths: { "@word": ["../../../b.ts"] } } }));
  t.is(await realise(), "b", "conditions of the package's name: the cached evaluation is stale");
  t.is(await realise(true), "b");
});

test("two shells with different PATHs (an editor's, a terminal's) each keep their evaluation: switching between them evaluates nothing again", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "sh.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nfs.appendFileSync("evaluations", "x");\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "sh", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`);
  const paths = [process.env.PATH!, `/usr/bin:/bin:${process.env.PATH}`];
  for (const PATH of [...paths, ...paths]) {
    const r = await ukb(["realise", "sh.ts", "--no-out-link"], { cwd: dir, env: { PATH } });
    t.is(r.code, 0, r.stderr);
  }
  t.is(fs.readFileSync(path.join(dir, "evaluations"), "utf8"), "xx");
});

test("what the recipe's code reads of the host: an environment variable, a file, a folder, a file that is not there yet", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "host.ts",
    `import { derivation, hostTools } from "ukb";
import fs from "node:fs";
import { readdirSync } from "node:fs";
// Each evaluation leaves a mark (a write: not a dependency), so the test can count them.
fs.appendFileSync("evaluations", "x");
const t = hostTools(["sh"]);
const words = [process.env.VERSION ?? "unset", fs.readFileSync("version.txt", "utf8").trim(), readdirSync("parts").sort().join("+"), fs.existsSync("flag") ? "flag" : "noflag"];
export default derivation({ name: "host", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${words.join(" ")} > $out\`] });
`,
  );
  fs.writeFileSync(path.join(dir, "version.txt"), "1\n");
  fs.mkdirSync(path.join(dir, "parts"));
  fs.writeFileSync(path.join(dir, "parts/a"), "");
  const evaluations = () => fs.readFileSync(path.join(dir, "evaluations"), "utf8").length;
  const realise = async (env: Record<string, string> = {}) => {
    const r = await ukb(["realise", "host.ts", "--no-out-link"], { cwd: dir, env: { ...process.env, ...env } });
    t.is(r.code, 0, r.stderr);
    return fs.readFileSync(r.stdout.trim(), "utf8").trim();
  };
  t.is(await realise({ VERSION: "1" }), "1 1 a noflag");
  t.is(await realise({ VERSION: "1", UNRELATED: "changed" }), "1 1 a noflag");
  t.is(evaluations(), 1, "a variable the recipe does not read changes nothing");
  t.is(await realise({ VERSION: "2" }), "2 1 a noflag");
  fs.writeFileSync(path.join(dir, "version.txt"), "2\n");
  t.is(await realise({ VERSION: "2" }), "2 2 a noflag");
  fs.writeFileSync(path.join(dir, "parts/b"), "");
  t.is(await realise({ VERSION: "2" }), "2 2 a+b noflag");
  fs.writeFileSync(path.join(dir, "flag"), "");
  t.is(await realise({ VERSION: "2" }), "2 2 a+b flag");
  t.is(evaluations(), 5);
  t.is(await realise({ VERSION: "2" }), "2 2 a+b flag");
  t.is(evaluations(), 5, "nothing changed: the cached evaluation");
});

test("reads made by Node or by ukb on the recipe's behalf do not count: console.log, esbuild, hostTools, a date that is not now", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "quiet.ts",
    `import { derivation, hostTools } from "ukb";
import fs from "node:fs";
fs.appendFileSync("evaluations", "x");
console.log("evaluating", { colours: true }, new Date(0).toISOString(), Date.UTC(2020, 1));
const t = hostTools(["sh"]);
export default derivation({ name: "quiet", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });
`,
  );
  const first = await ukb(["realise", "quiet.ts", "--no-out-link"], { cwd: dir, env: { ...process.env, UNRELATED: "1", FORCE_COLOR: "1" } });
  t.is(first.code, 0, first.stderr);
  const second = await ukb(["realise", "quiet.ts", "--no-out-link"], { cwd: dir, env: { ...process.env, UNRELATED: "2", FORCE_COLOR: "0" } });
  t.is(second.code, 0, second.stderr);
  t.is(fs.readFileSync(path.join(dir, "evaluations"), "utf8"), "x", "evaluated once");
  t.false(second.stderr.includes("note:"), second.stderr);
  // The modules ukb required for the recipe (blake3, to hash sh) are ukb's, not the recipe's files.
  const db = new Database(path.join(dir, "cache/ukb.sqlite"), { readonly: true });
  const entries = (db.prepare("SELECT value FROM eval_cache").all() as { value: string }[]).map((r) => JSON.parse(r.value) as { deps?: { path: string }[] });
  db.close();
  const deps = entries.flatMap((e) => e.deps ?? []).map((d) => d.path);
  t.true(deps.includes(path.join(dir, "quiet.ts")));
  // (Paths in the folders of PATH are hostTools' searches: npm's node_modules/.bin is one under npx.)
  const onPath = new Set((process.env.PATH ?? "").split(":"));
  t.deepEqual(deps.filter((p) => p.startsWith(ROOT + path.sep) && !onPath.has(p) && !onPath.has(path.dirname(p))), []);
});

// Each case: what the recipe does, and the line it does it on (the third of the recipe).
const volatileCases: [string, string, string][] = [
  ["a child process", `execSync("echo 1")`, "runs a child process (execSync)"],
  ["a child process through promisify", `await promisify(execFile)("/bin/echo", ["1"])`, "runs a child process (execFile)"],
  ["fetch", `await fetch("http://127.0.0.1:9/").catch(() => undefined)`, "uses the network (fetch)"],
  ["http.get", `await new Promise((done) => http.get("http://127.0.0.1:9/", done).on("error", done))`, "uses the network (a socket's connect)"],
  ["the clock", `Date.now()`, "reads the clock (Date.now)"],
  ["the clock through new Date()", `new Date().getFullYear()`, "reads the clock (new Date())"],
  ["chance", `Math.random()`, "draws a random number (Math.random)"],
  ["web crypto", `crypto.randomUUID()`, "draws random bytes (crypto.randomUUID)"],
  ["the host's figures", `os.cpus().length`, "asks the host (os.cpus)"],
  ["randomBytes by its other name", `(crypto as any).pseudoRandomBytes(4)`, "draws random bytes (crypto.pseudoRandomBytes)"],
  ["a key pair", `crypto.generateKeyPairSync("ed25519")`, "draws random bytes (crypto.generateKeyPairSync)"],
  ["today's date through Intl", `new Intl.DateTimeFormat("en-CA").format()`, "reads the clock (Intl.DateTimeFormat format())"],
  ["a Date made from a date's constructor", `new (new Date(0).constructor as DateConstructor)()`, "reads the clock (new Date())"],
  ["a worker thread", `await new Promise((done) => new Worker("process.exit(0)", { eval: true }).on("exit", done))`, "starts a worker thread (its reads are not seen)"],
  ["a resolver", `await new dns.promises.Resolver().resolve4("localhost").catch(() => undefined)`, "uses the network (dns.resolve4)"],
  ["a /proc file", `fs.readFileSync("/proc/uptime", "utf8")`, "reads /proc/uptime"],
  ["a child process after chance", `Math.random() + execSync("true").length`, "runs a child process (execSync)"],
  ["a monotonic clock", `performance.now()`, "reads the clock (performance.now)"],
  ["a high-resolution clock", `process.hrtime.bigint()`, "reads the clock (process.hrtime.bigint)"],
  ["the process's start", `performance.timeOrigin`, "reads the clock (performance.timeOrigin)"],
  ["the process's id", `process.pid`, "asks the host (process.pid)"],
  ["the process's uptime", `process.uptime()`, "asks the host (process.uptime)"],
  ["ukb's command line", `process.argv.includes("--debug")`, "reads ukb's command line (process.argv)"],
  // A copy of one ukb depends on (test setup below): this process has not loaded it.
  ["a native addon", `createRequire(import.meta.url)("./addon.node")`, "loads a native addon (what it reads is not seen)"],
  // ukb's store has it loaded: Node's module cache gives it again, and never calls process.dlopen.
  ["a native addon ukb has loaded", `createRequire(import.meta.url)(${JSON.stringify(path.join(ROOT, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"))})`, "loads a native addon (what it reads is not seen)"],
];

test("what no stamp can check (a child process, the network, the clock, chance, the host's figures) is evaluated on every run, and the user is told where", async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  fs.copyFileSync(path.join(ROOT, "node_modules/@c4312/blake3-native/build/Release/blake3.node"), path.join(dir, "addon.node"));
  const header = `import { derivation, hostTools } from "ukb";\nimport { createRequire } from "node:module"; import { execSync, execFile } from "node:child_process"; import { promisify } from "node:util"; import http from "node:http"; import os from "node:os"; import fs from "node:fs"; import crypto from "node:crypto"; import dns from "node:dns"; import { Worker } from "node:worker_threads";\n`;
  for (const [label, code, what] of volatileCases) {
    const name = `${label.replace(/\W+/g, "-")}.ts`;
    const marks = `${name}.evaluations`;
    // The value read goes nowhere: the graph is the same, and still it cannot be known without evaluating.
    writeRecipe(dir, name, `${header}const value = ${code};\nfs.appendFileSync("${marks}", "x");\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "v", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`);
    for (const run of [1, 2]) {
      const r = await ukb(["realise", name, "--no-out-link"], { cwd: dir });
      t.is(r.code, 0, r.stderr);
      t.true(r.stderr.includes(`ukb: note: ${name} is evaluated on every run, not cached: it ${what} at ${name}:3`), `${label}, run ${run}: ${r.stderr}`);
    }
    t.is(fs.readFileSync(path.join(dir, marks), "utf8"), "xx", `${label}: evaluated on each run`);
  }
  const json = await ukb(["realise", "chance.ts", "--no-out-link", "--json"], { cwd: dir });
  t.like(events(json.stderr).find((e) => e.type === "note"), { message: "chance.ts is evaluated on every run, not cached: it draws a random number (Math.random) at chance.ts:3" });
});

test("the working folder: a relative path the recipe reads, process.cwd()", async (t) => {
  const dir = tempDir();
  for (const sub of ["one", "two"]) {
    fs.mkdirSync(path.join(dir, sub));
    fs.writeFileSync(path.join(dir, sub, "word.txt"), sub);
  }
  const store = path.join(dir, "store");
  writeRecipe(dir, "rel.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nconst word = fs.readFileSync("word.txt", "utf8");\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "rel", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${word} > $out\`] });\n`);
  writeRecipe(dir, "cwd.ts", `import { derivation, hostTools } from "ukb";\nimport path from "node:path";\nconst here = path.basename(process.cwd());\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "cwd", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${here} > $out\`] });\n`);
  for (const recipe of ["rel.ts", "cwd.ts"]) {
    for (const sub of ["one", "two", "one"]) {
      const r = await ukb(["realise", path.join(dir, recipe), "--no-out-link", "--store", store], { cwd: path.join(dir, sub) });
      t.is(r.code, 0, r.stderr);
      t.is(fs.readFileSync(r.stdout.trim(), "utf8").trim(), sub, `${recipe} realised in ${sub}`);
    }
  }
});

test("an install elsewhere, copied with its times kept and with ukb's dependencies hoisted beside it: their reads and ukb's own are still not the recipe's", async (t) => {
  // A V8 code cache beside the bundle, as any run leaves it: it keeps the file name of the script it
  // was made from, and a copy that keeps times (cp -a, a container's COPY) would find it.
  await ukb([]);
  const project = tempDir();
  const installed = path.join(project, "node_modules/ukb");
  fs.mkdirSync(installed, { recursive: true });
  for (const part of ["package.json", "bin", "dist", "src"]) execFileSync("cp", ["-a", path.join(ROOT, part), installed]);
  t.true(fs.readdirSync(path.join(installed, "dist/bundle")).some((f) => f.endsWith(".v8cache")), "no code cache was copied");
  // What npm does: ukb's dependencies in the project's node_modules, none in ukb's own (hard links where the filesystem allows).
  for (const dep of fs.readdirSync(path.join(ROOT, "node_modules"))) {
    const from = path.join(ROOT, "node_modules", dep);
    try {
      execFileSync("cp", ["-al", from, path.join(project, "node_modules")], { stdio: "ignore" });
    } catch {
      execFileSync("cp", ["-a", from, path.join(project, "node_modules")]);
    }
  }
  writeRecipe(project, "r.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nfs.appendFileSync("evaluations", "x");\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "h", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${process.env.VERSION ?? "none"} > $out\`] });\n`);
  writeRecipe(project, "bad.ts", `import { derivation } from "ukb";\n\nexport default derivation({ builder: "/bin/sh" } as never);\n`);
  const run = (args: string[], env: NodeJS.ProcessEnv) => ukb(args, { cwd: project, env, command: process.execPath });
  const realise = (env: NodeJS.ProcessEnv) => run([path.join(installed, "bin/ukb.cjs"), "realise", "r.ts", "--no-out-link"], env);
  const first = await realise({ VERSION: "1", UNRELATED: "1" });
  t.is(first.code, 0, first.stderr);
  const second = await realise({ VERSION: "1", UNRELATED: "2" });
  t.is(second.stdout, first.stdout);
  t.false(second.stderr.includes("note:"), second.stderr);
  t.is(fs.readFileSync(path.join(project, "evaluations"), "utf8"), "x", "esbuild or ukb's own code counted as the recipe's");
  const third = await realise({ VERSION: "2", UNRELATED: "2" });
  t.not(third.stdout, first.stdout);
  // An error names the recipe's line, not a frame of ukb's bundle.
  const bad = await run([path.join(installed, "bin/ukb.cjs"), "realise", "bad.ts", "--no-out-link"], {});
  t.is(bad.code, 2);
  t.regex(bad.stderr, /^ukb: error: bad\.ts:3: /m);
});

test("a package's own work as it loads is not the recipe's: its clock and chance as it loads count for nothing, what the recipe asks of it does, and a file it reads as it loads is the recipe's", async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const lib = path.join(dir, "node_modules/clocky");
  fs.mkdirSync(lib, { recursive: true });
  fs.writeFileSync(path.join(lib, "package.json"), `{"name":"clocky","main":"index.js"}`);
  // As lodash and others do when they load: an id drawn, the time read.
  fs.writeFileSync(path.join(lib, "index.js"), `const loadedAt = Date.now() + Math.random();\nexports.add = (a, b) => a + b;\nexports.now = () => Date.now();\nexports.word = require("node:fs").readFileSync(__dirname + "/word.txt", "utf8").trim();\n`);
  fs.writeFileSync(path.join(lib, "word.txt"), "one\n");
  const recipe = (name: string, use: string) =>
    writeRecipe(dir, name, `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nimport { add, now, word } from "clocky";\nfs.appendFileSync("${name}.evaluations", "x");\nconst v = ${use};\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "p", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${word} > $out\`] });\n`);
  recipe("quiet.ts", "add(1, 2)");
  recipe("clock.ts", "now()");
  for (const run of [1, 2]) {
    const quiet = await ukb(["realise", "quiet.ts", "--no-out-link"], { cwd: dir });
    t.is(quiet.code, 0, quiet.stderr);
    t.false(quiet.stderr.includes("note:"), `run ${run}: ${quiet.stderr}`);
    const clock = await ukb(["realise", "clock.ts", "--no-out-link"], { cwd: dir });
    t.regex(clock.stderr, /ukb: note: clock\.ts is evaluated on every run, not cached: it reads the clock \(Date\.now\) at clock\.ts:5/);
  }
  t.is(fs.readFileSync(path.join(dir, "quiet.ts.evaluations"), "utf8"), "x");
  t.is(fs.readFileSync(path.join(dir, "clock.ts.evaluations"), "utf8"), "xx");
  fs.writeFileSync(path.join(lib, "word.txt"), "two\n");
  const changed = await ukb(["realise", "quiet.ts", "--no-out-link"], { cwd: dir });
  t.is(changed.code, 0, changed.stderr);
  t.is(fs.readFileSync(changed.stdout.trim(), "utf8"), "two\n", "a file the package read as it loaded changed, and the cached graph was used");
});

test("reads through other doors: promisify(readFile), a Buffer path, a recursive listing, a copy's source, a stat's time, the time zone, package.json and tsconfig.json", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "tree/sub"), { recursive: true });
  const write = (f: string, text: string) => fs.writeFileSync(path.join(dir, f), text);
  write("a.txt", "a1");
  write("b.txt", "b1");
  write("src.txt", "s1");
  write("tree/sub/x", "");
  write("one.ts", `export const word = "one";\n`);
  for (const word of ["two", "three", "four", "five", "six"]) write(`${word}.ts`, `export const word = "${word}";\n`);
  const pathsTo = (file: string) => JSON.stringify({ compilerOptions: { paths: { "@word": [file] } } });
  write("tsconfig.json", JSON.stringify({ compilerOptions: { paths: { "@word": ["./one.ts"] } } }));
  write("package.json", "{}");
  writeRecipe(
    dir,
    "doors.ts",
    `import { derivation, hostTools } from "ukb";
import fs from "node:fs";
import { promisify } from "node:util";
import { word } from "@word";
const parts = [
  await promisify(fs.readFile)("a.txt", "utf8"),
  fs.readFileSync(Buffer.from("b.txt"), "utf8"),
  (fs.readdirSync("tree", { recursive: true }) as string[]).sort().join("+"),
  (fs.copyFileSync("src.txt", "copy.txt"), fs.readFileSync("copy.txt", "utf8")),
  Math.round(fs.statSync("a.txt").mtimeMs / 1000),
  new Date(0).getHours(),
  word,
  (function (this: unknown) { return this === undefined ? "strict" : "sloppy"; })(),
];
const t = hostTools(["sh"]);
export default derivation({ name: "doors", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${parts.join(" ")} > $out\`] });
`,
  );
  // Top-level await: an ES module, by its extension (package.json's "type" is one of the changes).
  fs.renameSync(path.join(dir, "doors.ts"), path.join(dir, "doors.mts"));
  const realise = async (env: NodeJS.ProcessEnv, noCache = false) => {
    const r = await ukb(["realise", "doors.mts", "--no-out-link", ...(noCache ? ["--no-eval-cache"] : [])], { cwd: dir, env });
    t.is(r.code, 0, r.stderr);
    return fs.readFileSync(r.stdout.trim(), "utf8").trim();
  };
  let env: NodeJS.ProcessEnv = { TZ: "UTC" };
  const seen = new Set<string>();
  const changes: [string, () => void][] = [
    ["nothing", () => {}],
    ["promisify(readFile)'s file", () => write("a.txt", "a2")],
    ["a Buffer path's file", () => write("b.txt", "b2")],
    ["a file deep in a recursive listing", () => write("tree/sub/y", "")],
    ["a copy's source", () => write("src.txt", "s2")],
    ["a stat's time, with the same bytes", () => fs.utimesSync(path.join(dir, "a.txt"), 1e9, 1e9)],
    ["the time zone", () => (env = { TZ: "Asia/Tokyo" })],
    ["tsconfig.json's paths", () => write("tsconfig.json", pathsTo("./two.ts"))],
    [
      "tsconfig.json extending another file",
      () => {
        write("base.json", pathsTo("./three.ts"));
        write("tsconfig.json", `{ // comments and a trailing comma, as TypeScript allows\n "extends": "./base", }`);
      },
    ],
    ["the file it extends", () => write("base.json", pathsTo("./four.ts"))],
    [
      "that file extending a package's config",
      () => {
        fs.mkdirSync(path.join(dir, "node_modules/shared-config"), { recursive: true });
        // Paths in a config are relative to that config's folder.
        write("node_modules/shared-config/paths.json", pathsTo("../../five.ts"));
        write("base.json", JSON.stringify({ extends: "shared-config/paths.json" }));
      },
    ],
    ["the package's config, two links away", () => write("node_modules/shared-config/paths.json", pathsTo("../../six.ts"))],
  ];
  for (const [label, change] of changes) {
    change();
    const cached = await realise(env);
    t.is(cached, await realise(env, true), `${label}: the cached evaluation is stale`);
    t.false(seen.has(cached), `${label} changed nothing`);
    seen.add(cached);
  }
  // A .ts recipe is what package.json says: here, a CommonJS script, sloppy; then an ES module, strict.
  writeRecipe(dir, "mode.ts", `import { derivation, hostTools } from "ukb";\nconst mode = (function (this: unknown) { return this === undefined ? "strict" : "sloppy"; })();\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "mode", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${mode} > $out\`] });\n`);
  const mode = async () => fs.readFileSync((await ukb(["realise", "mode.ts", "--no-out-link"], { cwd: dir })).stdout.trim(), "utf8").trim();
  t.is(await mode(), "sloppy");
  write("package.json", JSON.stringify({ type: "module" }));
  t.is(await mode(), "strict");
});

test("more doors: a device or /proc read, a file turned folder, a new variable among those enumerated, an optional package installed, a variable the recipe sets itself, structuredClone(process.env), a Worker subclass", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "tree"));
  fs.writeFileSync(path.join(dir, "tree/x"), "");
  writeRecipe(
    dir,
    "more.ts",
    `const { derivation, hostTools } = require("ukb");
const fs = require("node:fs");
fs.appendFileSync("evaluations", "x");
let optional = "none";
try { optional = require("optpkg").v; } catch {}
process.env.SET_HERE = "by the recipe";
const parts = [
  fs.existsSync("/dev/zero"),
  fs.readdirSync("tree", { withFileTypes: true }).map((e) => e.name + (e.isDirectory() ? "/" : "")).join("+"),
  Object.keys(process.env).filter((k) => k.startsWith("MYAPP_")).sort().join("+") || "no-myapp",
  optional,
  process.env.SET_HERE.length,
  structuredClone(process.env).MYAPP_A ?? "unset",
];
const t = hostTools(["sh"]);
module.exports.default = derivation({ name: "more", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${parts.join(" ")} > $out\`] });
`,
  );
  let env: NodeJS.ProcessEnv = {};
  const run = async (noCache = false) => {
    const r = await ukb(["realise", "more.ts", "--no-out-link", ...(noCache ? ["--no-eval-cache"] : [])], { cwd: dir, env });
    t.is(r.code, 0, r.stderr);
    t.false(r.stderr.includes("note:"), r.stderr);
    return fs.readFileSync(r.stdout.trim(), "utf8").trim();
  };
  t.is(await run(), "true x no-myapp none 13 unset");
  t.is(await run(), "true x no-myapp none 13 unset");
  t.is(fs.readFileSync(path.join(dir, "evaluations"), "utf8"), "x", "a device looked at, a variable set by the recipe: still cached");
  const changes: [string, () => void, string][] = [
    ["a file turned folder", () => (fs.rmSync(path.join(dir, "tree/x")), fs.mkdirSync(path.join(dir, "tree/x"))), "true x/ no-myapp none 13 unset"],
    ["a new variable among those enumerated", () => (env = { MYAPP_A: "1" }), "true x/ MYAPP_A none 13 1"],
    [
      "an optional package installed",
      () => {
        fs.mkdirSync(path.join(dir, "node_modules/optpkg"), { recursive: true });
        fs.writeFileSync(path.join(dir, "node_modules/optpkg/index.js"), `exports.v = "installed";\n`);
      },
      "true x/ MYAPP_A installed 13 1",
    ],
  ];
  for (const [label, change, expected] of changes) {
    change();
    t.is(await run(), expected, `${label}: stale`);
    t.is(await run(true), expected);
  }
  // util.inspect prints a Proxy's target without its traps: every variable, read.
  writeRecipe(dir, "inspect.ts", `const { derivation, hostTools } = require("ukb");\nconst util = require("node:util");\nutil.inspect(Buffer.alloc(200_000_000));\nconst shown = [util.inspect(process.env), util.format("%o", process.env), util.inspect({ settings: [process.env] }), util.inspect(new Map([["env", process.env]])), util.inspect({ a: { b: { c: { d: { e: process.env } } } } }, { depth: null })].map((s) => s.includes("SHOWN_B") ? "shown" : "hidden").join(" ");\nconst t = hostTools(["sh"]);\nmodule.exports.default = derivation({ name: "inspect", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${shown} > $out\`] });\n`);
  const inspected = async (extra: NodeJS.ProcessEnv) => {
    const r = await ukb(["realise", "inspect.ts", "--no-out-link"], { cwd: dir, env: extra });
    t.is(r.code, 0, r.stderr);
    return fs.readFileSync(r.stdout.trim(), "utf8").trim();
  };
  // (A 200 MB Buffer inspected on the way: looked into, it took seconds, or threw 'Too many properties to enumerate'.)
  t.is(await inspected({}), "hidden hidden hidden hidden hidden");
  t.is(await inspected({ SHOWN_B: "1" }), "shown shown shown shown shown", "a variable only util.inspect saw: stale");
  // A device's or /proc's content is the moment's: volatile. A Worker subclass still works.
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  writeRecipe(dir, "proc.ts", `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nimport { Worker } from "node:worker_threads";\nconst up = fs.readFileSync("/proc/uptime", "utf8").length > 0;\nclass W extends Worker {}\nconst w = new W("1", { eval: true });\nconst ok = w instanceof Worker && typeof w.postMessage === "function";\nawait new Promise((done) => w.on("exit", done));\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "proc", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${up} \${ok} > $out\`] });\n`);
  const proc = await ukb(["realise", "proc.ts", "--no-out-link"], { cwd: dir });
  t.is(proc.code, 0, proc.stderr);
  t.is(fs.readFileSync(proc.stdout.trim(), "utf8"), "true true\n");
  // (Line 5: the subclass's constructor, which calls Worker's. The worker outranks /proc as the reason.)
  t.regex(proc.stderr, /ukb: note: proc\.ts is evaluated on every run, not cached: it starts a worker thread \(its reads are not seen\) at proc\.ts:5/);
});

// Serial: evaluations in this process (and their wrappers) are global.
// First of this file's serial tests (ava runs them before the others, in order): no evaluation of
// this process has gone through Node's ES module loader yet, whose modules would be shared too.
test.serial("a second evaluation in one process that takes a package the first loaded (ukb report a.ts b.ts) is not cached: its files were never resolved again", async (t) => {
  const { loadRecipe } = await import("../src/recipe/load.js");
  const dir = tempDir();
  const helper = path.join(dir, "node_modules/helper");
  fs.mkdirSync(helper, { recursive: true });
  fs.writeFileSync(path.join(helper, "package.json"), `{"name":"helper","main":"index.js"}`);
  fs.writeFileSync(path.join(helper, "index.js"), `module.exports = require("./data.json");\n`);
  fs.writeFileSync(path.join(helper, "data.json"), `{"w":"one"}`);
  for (const n of ["a", "b"]) writeRecipe(dir, `${n}.ts`, `import { derivation, hostTools } from "ukb";\nimport h from "helper";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "${n}", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${h.w} > $out\`] });\n`);
  const entries = new Map<string, string>();
  const cache = { get: (k: string) => entries.get(k), put: (k: string, v: string) => void entries.set(k, v) };
  const a = await loadRecipe(path.join(dir, "a.ts"), { cache });
  const b = await loadRecipe(path.join(dir, "b.ts"), { cache });
  t.true(a.deps.includes(path.join(helper, "data.json")), a.deps.join(" "));
  t.true(b.sharesModules);
  t.truthy(entries.get(`${path.join(dir, "a.ts")}\0`));
  t.is(entries.get(`${path.join(dir, "b.ts")}\0`), undefined);
  // Later tests of this file evaluate in this process too: they must not find these modules.
  const loaded = createRequire(import.meta.url).cache;
  for (const f of Object.keys(loaded)) if (f.startsWith(dir)) delete loaded[f];
});

test.serial("a function a package kept from an earlier evaluation of the process reports to the one under way", async (t) => {
  const { evaluateRecipe } = await import("../src/recipe/load.js");
  const dir = tempDir();
  const lib = path.join(dir, "node_modules/keeper");
  fs.mkdirSync(lib, { recursive: true });
  fs.writeFileSync(path.join(lib, "package.json"), `{"name":"keeper","main":"index.js"}`);
  // As lodash keeps Math.random: the function it found as it loaded.
  fs.writeFileSync(path.join(lib, "index.js"), `const random = Math.random;\nexports.roll = () => random();\nexports.one = () => 1;\n`);
  const recipe = (name: string, use: string) =>
    writeRecipe(dir, name, `const { derivation, hostTools } = require("ukb");\nconst k = require("keeper");\nconst v = ${use};\nconst t = hostTools(["sh"]);\nmodule.exports.default = derivation({ name: "${name.replace(".ts", "")}", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`);
  recipe("first.ts", "k.one()");
  recipe("second.ts", "k.roll()");
  const first = await evaluateRecipe(path.join(dir, "first.ts"));
  t.is(first.volatile, undefined);
  const second = await evaluateRecipe(path.join(dir, "second.ts"));
  t.regex(second.volatile ?? "", /draws a random number \(Math\.random\)/);
});

// Serial: the other tests of this file, running in this process at the same time, read process.env too.
test.serial("two evaluations at once in one process each see their own reads, and leave process.env and fs as they were", async (t) => {
  const { evaluateRecipe } = await import("../src/recipe/load.js");
  const dir = tempDir();
  for (const n of ["1", "2"]) {
    writeRecipe(dir, `r${n}.ts`, `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nawait new Promise((r) => setTimeout(r, 50));\nconst v = (process.env.V${n} ?? "") + fs.readFileSync(new URL("./data${n}.txt", import.meta.url), "utf8");\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "r${n}", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${v} > $out\`] });\n`);
    fs.writeFileSync(path.join(dir, `data${n}.txt`), n);
  }
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const env = process.env;
  const readFileSync = fs.readFileSync;
  const [a, b] = await Promise.all([evaluateRecipe(path.join(dir, "r1.ts")), evaluateRecipe(path.join(dir, "r2.ts"))]);
  // (TZ and the locale are read for every recipe: Node read them at its start. hostTools searched PATH and read dpkg's database.)
  const implicit = ["LANG", "LC_ALL", "LC_TIME", "LC_MESSAGES", "TZ"];
  t.deepEqual(Object.keys(a.env).filter((k) => !implicit.includes(k)), ["DPKG_ADMINDIR", "PATH", "V1"]);
  t.deepEqual(Object.keys(b.env).filter((k) => !implicit.includes(k)), ["DPKG_ADMINDIR", "PATH", "V2"]);
  t.true(a.deps.includes(path.join(dir, "data1.txt")) && !a.deps.includes(path.join(dir, "data2.txt")));
  t.true(b.deps.includes(path.join(dir, "data2.txt")) && !b.deps.includes(path.join(dir, "data1.txt")));
  t.is(process.env, env);
  t.is(fs.readFileSync, readFileSync);
});


test("unikraft.defaultTools(): a link on PATH retargeted (update-alternatives, /bin/sh switched) is a new evaluation", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "bin"));
  fs.symlinkSync("/usr/bin/dash", path.join(dir, "bin/sh"));
  writeRecipe(dir, "u.ts", `import { unikraft } from "ukb";\nexport default unikraft.defaultTools();\n`);
  const env = { PATH: `${path.join(dir, "bin")}:${process.env.PATH}` };
  const realise = async () => {
    const r = await ukb(["realise", "u.ts", "--no-out-link"], { cwd: dir, env });
    t.is(r.code, 0, r.stderr);
    return fs.readlinkSync(path.join(r.stdout.trim(), "bin/sh"));
  };
  t.regex(await realise(), /dash$/);
  fs.rmSync(path.join(dir, "bin/sh"));
  fs.symlinkSync("/usr/bin/bash", path.join(dir, "bin/sh"));
  t.regex(await realise(), /bash$/);
});

test("a file the recipe read, changed while it was still being evaluated: that evaluation is not cached, the next run reads the new one", async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, "data.txt"), "old\n");
  writeRecipe(
    dir,
    "slow.ts",
    `import { derivation, hostTools } from "ukb";\nimport fs from "node:fs";\nconst w = fs.readFileSync("data.txt", "utf8").trim();\nfs.writeFileSync("read", "");\nfor (const end = performance.now() + 1500; performance.now() < end; );\nexport default derivation({ name: "s", builder: \`\${hostTools(["sh"])}/bin/sh\`, args: ["-c", \`echo \${w} > $out\`] });\n`,
  );
  const running = ukb(["realise", "slow.ts", "--no-out-link"], { cwd: dir });
  // Changed once the recipe has read it, while it still runs.
  while (!fs.existsSync(path.join(dir, "read"))) await new Promise((r) => setTimeout(r, 20));
  fs.writeFileSync(path.join(dir, "data.txt"), "new\n");
  const first = await running;
  t.is(first.code, 0, first.stderr);
  t.is(fs.readFileSync(first.stdout.trim(), "utf8"), "old\n");
  const second = await ukb(["realise", "slow.ts", "--no-out-link"], { cwd: dir });
  t.is(fs.readFileSync(second.stdout.trim(), "utf8"), "new\n");
});
