import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { events, tempDir, UKB, UKB_COMMAND, ukb, ukbSpawn, writeRecipe, HELLO, REFS } from "./helpers/ukb.js";

/** Five derivations that each take a while, in a chain with a fan-out. */
const SLOW = `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep", "cat"]);
const slow = (name: string, deps: unknown[]) => derivation({
  name, builder: \`\${t}/bin/sh\`,
  args: ["-c", \`\${t}/bin/sleep 0.4; echo \${name} > $out; \${deps.map((d) => \`\${t}/bin/cat \${d} >> $out\`).join("; ")}\`],
});
const a = slow("a", []);
const b = slow("b", [a]);
const c = slow("c", [a]);
export default slow("d", [b, c]);
`;

function collect(child: ReturnType<typeof ukbSpawn>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

/** Resolves once what the child wrote to stderr matches. */
function stderrMatches(child: ReturnType<typeof ukbSpawn>, pattern: RegExp): Promise<void> {
  let text = "";
  return new Promise((resolve) => {
    const onData = (d: Buffer) => {
      text += d;
      if (pattern.test(text)) {
        child.stderr!.off("data", onData);
        resolve();
      }
    };
    child.stderr!.on("data", onData);
  });
}

test("two concurrent realise processes on one store build each derivation once", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "slow.ts", SLOW);
  const [one, two] = await Promise.all([
    collect(ukbSpawn(["realise", "slow.ts", "--json", "--no-out-link", "--jobs", "2"], { cwd: dir })),
    collect(ukbSpawn(["realise", "slow.ts", "--json", "--no-out-link", "--jobs", "2"], { cwd: dir })),
  ]);
  t.is(one.code, 0, one.stderr);
  t.is(two.code, 0, two.stderr);
  t.is(one.stdout, two.stdout);
  const builtHere = [...events(one.stderr), ...events(two.stderr)].filter((e) => e.type === "done" && e.builtHere).map((e) => e.name);
  t.deepEqual(builtHere.sort(), ["a", "b", "c", "d", "host-tools"]);
  const v = await ukb(["store", "verify"], { cwd: dir });
  t.is(v.code, 0, v.stdout);
});

test("a realise in another PID namespace (a container, unshare -p) holds its locks: one outside waits for it, never takes them over", async (t) => {
  if (process.getuid?.() !== 0) return t.pass("needs root for a PID namespace");
  const dir = tempDir();
  writeRecipe(dir, "slow.ts", SLOW);
  const args = ["realise", "slow.ts", "--json", "--no-out-link", "--jobs", "2"];
  const inside = ukb(["-p", "-f", "--mount-proc", process.execPath, UKB, ...args], { cwd: dir, command: "unshare", env: { UKB_NO_SERVER: "1" } });
  // Once the inner one builds 'a' (its PID there is small, and may be a live process's out here).
  while (!fs.existsSync(path.join(dir, "cache/logs")) || !fs.readdirSync(path.join(dir, "cache/logs")).some((f) => f.endsWith("-a.log"))) await new Promise((r) => setTimeout(r, 20));
  const [one, two] = await Promise.all([inside, ukb(args, { cwd: dir, env: { UKB_NO_SERVER: "1" } })]);
  t.is(one.code, 0, one.stderr);
  t.is(two.code, 0, two.stderr);
  const builtHere = [...events(one.stderr), ...events(two.stderr)].filter((e) => e.type === "done" && e.builtHere).map((e) => e.name);
  t.deepEqual(builtHere.sort(), ["a", "b", "c", "d", "host-tools"]);
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);

  // Waiting for a build of 10 s in there, the one outside says whom it waits for, and that it
  // cannot look into where that one runs.
  writeRecipe(dir, "long.ts", `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh", "sleep"]);\nexport default derivation({ name: "long", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 10; echo > $out\`] });\n`);
  const longArgs = ["realise", "long.ts", "--json", "--no-out-link"];
  const longInside = ukb(["-p", "-f", "--mount-proc", process.execPath, UKB, ...longArgs], { cwd: dir, command: "unshare", env: { UKB_NO_SERVER: "1" } });
  while (!fs.readdirSync(path.join(dir, "cache/logs")).some((f) => f.endsWith("-long.log"))) await new Promise((r) => setTimeout(r, 20));
  const [, outside] = await Promise.all([longInside, ukb(longArgs, { cwd: dir, env: { UKB_NO_SERVER: "1" } })]);
  const waits = events(outside.stderr).filter((e) => e.type === "waiting").map((e) => String(e.reason));
  t.true(waits.some((w) => /holds their lock \(ukb pid \d+ on .* \(another machine or PID namespace: ukb cannot tell whether it still runs/.test(w)), waits.join("\n"));
});

test("kill -9 of ukb mid-build leaves the store consistent and the next realise completes", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "slow.ts", SLOW);
  const child = ukbSpawn(["realise", "slow.ts", "--json", "--jobs", "1"], { cwd: dir });
  let stderr = "";
  await new Promise<void>((resolve) => {
    child.stderr!.on("data", (d) => {
      stderr += d;
      // Kill it while 'b' or 'c' is being built: 'a' is valid, the rest is not.
      if (/"type":"start","name":"[bc]"/.test(stderr)) resolve();
    });
  });
  child.kill("SIGKILL");
  await new Promise((r) => child.on("close", r));
  const v = await ukb(["store", "verify"], { cwd: dir });
  t.is(v.code, 0, v.stdout);
  const r = await ukb(["realise", "slow.ts", "--json"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const built = events(r.stderr).filter((e) => e.type === "done").map((e) => e.name);
  t.false(built.includes("a"), "what was valid before the kill is not built again");
  t.true(built.includes("d"));
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "d\nb\na\nc\na\n");
  const gc = await ukb(["store", "gc"], { cwd: dir });
  t.is(gc.code, 0, gc.stderr);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/tmp")), [], "no temp dir of the killed process remains");
});

/**
 * 'b' takes a while and reads 'a' only at its end: a gc meanwhile must keep
 * 'a' and the tools. (Eight seconds: a gc started on a loaded machine must
 * be done before 'b' is, which the test checks.)
 */
const GATED = `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep", "cat"]);
const a = derivation({ name: "a", builder: \`\${t}/bin/sh\`, args: ["-c", "echo a > $out"] });
export default derivation({ name: "b", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 20; echo b > $out; \${t}/bin/cat \${a} >> $out\`] });
`;

test("gc during a realise keeps what the realise uses and has built (temp roots); once it exits, or dies, they go", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "gated.ts", GATED);
  const child = ukbSpawn(["realise", "gated.ts", "--json", "--no-out-link", "--jobs", "1"], { cwd: dir });
  const done = collect(child);
  // Once 'b' has started, 'a' and the tools are valid, unrooted and unlocked, and 'b' will read them
  // (for 20 s: repair and gc, each a new ukb, must both end first, on a CI machine running every test file).
  await stderrMatches(child, /"type":"start","name":"b"/);
  // (store repair must not replace the database under a running build.)
  const repair = await ukb(["store", "repair"], { cwd: dir });
  t.is(repair.code, 1);
  t.regex(repair.stderr, /^ukb: error: another ukb process \(\S+ pid \d+\) is using the store at .*\n  hint: run 'ukb store repair' once it has finished\n$/);
  const gc = await ukb(["store", "gc"], { cwd: dir });
  t.is(gc.code, 0, gc.stderr);
  const gcDone = Date.now();
  const r = await done;
  const bDone = events(r.stderr).find((e) => e.type === "done" && e.name === "b");
  t.true(bDone !== undefined && (bDone.time as number) > gcDone, "gc ran while 'b' was being built");
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "b\na\n");
  const v = await ukb(["store", "verify"], { cwd: dir });
  t.is(v.code, 0, v.stdout);

  // The realise has exited: nothing keeps its paths any more.
  t.is((await ukb(["store", "gc"], { cwd: dir })).code, 0);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);

  // A realise killed mid-build leaves temp-root rows that name a dead process: gc ignores them.
  const killed = ukbSpawn(["realise", "gated.ts", "--json", "--no-out-link", "--jobs", "1"], { cwd: dir });
  await stderrMatches(killed, /"type":"start","name":"b"/);
  killed.kill("SIGKILL");
  await new Promise((res) => killed.on("close", res));
  t.is((await ukb(["store", "gc"], { cwd: dir })).code, 0);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);
});

test("gc keeps what roots reach and deletes the rest", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  writeRecipe(dir, "other.ts", HELLO.replace("echo hello", "echo other").replace(/"shout"/, '"whisper"'));
  const kept = await ukb(["realise", "hello.ts"], { cwd: dir });
  const gone = await ukb(["realise", "other.ts", "--no-out-link"], { cwd: dir });
  t.is(kept.code, 0, kept.stderr);
  t.is(gone.code, 0, gone.stderr);
  const dry = await ukb(["store", "gc", "--dry-run"], { cwd: dir });
  t.regex(dry.stdout, /would delete .*-whisper/);
  t.true(fs.existsSync(gone.stdout.trim()));
  const gc = await ukb(["store", "gc"], { cwd: dir });
  t.is(gc.code, 0, gc.stderr);
  t.false(fs.existsSync(gone.stdout.trim()));
  t.true(fs.existsSync(kept.stdout.trim()));
  t.is(fs.readFileSync(path.join(dir, "result"), "utf8"), "HELLO\n");
  const info = await ukb(["store", "info", "result"], { cwd: dir });
  t.is(info.code, 0, info.stderr);
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);
  // The root's copy for repair, in the store's roots/ folder.
  const mirrored = () => fs.readdirSync(path.join(dir, "cache/roots")).filter((e) => e !== "complete").map((e) => fs.readlinkSync(path.join(dir, "cache/roots", e)));
  t.true(fs.existsSync(path.join(dir, "cache/roots/complete")), "a new store's roots/ holds them all");
  t.deepEqual(mirrored(), [path.join(dir, "result")]);
  // A removed out-link is no longer a root, in either place.
  fs.unlinkSync(path.join(dir, "result"));
  await ukb(["store", "gc"], { cwd: dir });
  t.false(fs.existsSync(kept.stdout.trim()));
  t.deepEqual(mirrored(), []);
});

test("gc keeps the references of a root", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "refs.ts", REFS);
  const r = await ukb(["realise", "refs.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  await ukb(["store", "gc"], { cwd: dir });
  const names = fs.readdirSync(path.join(dir, "cache/store")).map((n) => n.slice(33)).sort();
  t.deepEqual(names, ["app", "lib"]);
});

test("a store path deleted by hand: realise names it and how to repair, as does a build that needs it; after repair, all is built again", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const first = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  const shout = first.stdout.trim();
  const greeting = fs.readdirSync(path.join(dir, "cache/store")).find((n) => n.endsWith("-greeting"))!;
  fs.rmSync(shout);
  for (const launcher of ["node", "bin/ukb"]) {
    const r = launcher === "node" ? await ukb(["realise", "hello.ts"], { cwd: dir }) : await ukb(["realise", "hello.ts"], { cwd: dir, command: UKB_COMMAND });
    t.is(r.code, 1, `${launcher}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`^ukb: error: ${shout.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is registered in the store's database but missing from its folder \\(deleted by hand\\?\\)\n  hint: ukb store repair forgets it`, "m"), launcher);
  }
  await ukb(["server", "stop"], { cwd: dir });
  // An input gone: the build that needs it says which.
  fs.chmodSync(path.join(dir, "cache/store", greeting), 0o755);
  fs.rmSync(path.join(dir, "cache/store", greeting));
  writeRecipe(dir, "hello.ts", HELLO.replace("tr a-z A-Z <", "tr '[:lower:]' '[:upper:]' <"));
  const rebuild = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.is(rebuild.code, 1, rebuild.stderr);
  t.regex(rebuild.stderr, new RegExp(`${greeting} is registered in the store's database but missing from its folder`));
  t.is((await ukb(["store", "repair"], { cwd: dir })).code, 0);
  const again = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.is(again.code, 0, again.stderr);
  t.is(fs.readFileSync(path.join(dir, "result"), "utf8"), "HELLO\n");
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);
});

test("a tampered store path is reported by verify", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const r = await ukb(["realise", "hello.ts"], { cwd: dir });
  const out = r.stdout.trim();
  fs.chmodSync(out, 0o644);
  fs.writeFileSync(out, "TAMPERED\n");
  const v = await ukb(["store", "verify"], { cwd: dir });
  t.is(v.code, 1);
  t.regex(v.stdout, /modified: .*-shout/);
});

test("a damaged database: every command says which file in one line; verify lists the damage; a restored copy works again", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  t.is((await ukb(["realise", "hello.ts"], { cwd: dir })).code, 0);
  const db = path.join(dir, "cache/ukb.sqlite");
  const good = fs.readFileSync(db);
  // Garbage over the pages after the schema's: what a bad disk or a stray write leaves.
  const damaged = Buffer.from(good);
  for (let i = 8192; i < Math.min(damaged.length, 8192 + 3000); i++) damaged[i] = (i * 131) & 0xff;
  fs.writeFileSync(db, damaged);
  const file = db.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  for (const args of [["realise", "hello.ts"], ["store", "gc"], ["store", "info", "result"]]) {
    const r = await ukb(args, { cwd: dir });
    t.is(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`^ukb: error: ${file} is damaged \\(SQLite: [^\\n]+\\)\\n  hint: `), args.join(" "));
    t.notRegex(r.stderr, /internal error|\n\s+at /);
  }
  const verify = await ukb(["store", "verify"], { cwd: dir });
  t.is(verify.code, 1);
  t.regex(verify.stdout, /^database: ukb\.sqlite: damaged: [^\n]+\n/);
  t.notRegex(verify.stderr, /internal error/);
  fs.writeFileSync(path.join(dir, "cache/ukb.sqlite"), "not a database at all, not even its header");
  const notDb = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.regex(notDb.stderr, /is damaged \(SQLite: file is not a database\)/);
  fs.writeFileSync(db, good);
  const again = await ukb(["store", "verify"], { cwd: dir });
  t.is(again.code, 0, again.stdout);
  t.regex(again.stdout, /all valid/);
});

/** Garbage over the pages after the schema's: what a bad disk or a stray write leaves. */
function damage(db: string): void {
  const bytes = fs.readFileSync(db);
  for (let i = 8192; i < Math.min(bytes.length, 8192 + 3000); i++) bytes[i] = (i * 131) & 0xff;
  fs.writeFileSync(db, bytes);
}

test("store repair: a new database from the store folder and what the damaged one still lets be read; nothing rebuilt, nothing lost", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "refs.ts", REFS);
  const first = await ukb(["realise", "refs.ts"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  const app = first.stdout.trim();
  const lib = fs.readFileSync(app, "utf8").trim().split("/").pop()!;
  const db = path.join(dir, "cache/ukb.sqlite");

  // Damaged pages: what is still readable is kept, the rest comes from the files.
  damage(db);
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 1);
  const repaired = await ukb(["store", "repair"], { cwd: dir });
  t.is(repaired.code, 0, repaired.stderr);
  t.regex(repaired.stdout, /^repaired the database of the store .*:\n  3 paths registered: /);
  const kept = /the old database is kept as (\S+)/.exec(repaired.stdout)?.[1];
  t.truthy(kept && fs.existsSync(kept), repaired.stdout);
  const verify = await ukb(["store", "verify"], { cwd: dir });
  t.is(verify.code, 0, verify.stdout);
  t.regex(verify.stdout, /checked 3 paths: all valid/);
  const again = await ukb(["realise", "refs.ts", "--json"], { cwd: dir });
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout.trim(), app);
  t.false(events(again.stderr).some((e) => e.type === "start"), "nothing is built again");
  t.regex((await ukb(["store", "info", "result"], { cwd: dir })).stdout, new RegExp(`references +.*${lib}`));
  t.is((await ukb(["store", "gc"], { cwd: dir })).code, 0);
  t.true(fs.existsSync(path.join(dir, "cache/store", lib)), "gc keeps the root's closure, references included");

  // A path whose content differs from its readable record is not registered; the next realise makes it anew.
  fs.chmodSync(app, 0o644);
  fs.writeFileSync(app, "tampered\n");
  damage(db);
  const refused = await ukb(["store", "repair"], { cwd: dir });
  t.is(refused.code, 0, refused.stderr);
  t.regex(refused.stdout, new RegExp(`not registered: ${path.basename(app)}: its content \\(blake3 \\w+\\) differs from the recorded \\w+`));
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);
  const rebuilt = await ukb(["realise", "refs.ts", "--json"], { cwd: dir });
  t.is(rebuilt.code, 0, rebuilt.stderr);
  // 'app' again (and the tools gc removed above, which only its build needs), never 'lib'.
  t.deepEqual(events(rebuilt.stderr).filter((e) => e.type === "start").map((e) => e.name), ["host-tools", "app"]);
  t.regex(fs.readFileSync(app, "utf8"), /^uses /);

  // Not a database at all: every path from its files alone, said so; references found by a scan.
  fs.writeFileSync(db, "not a database at all, not even its header");
  fs.rmSync(`${db}-wal`, { force: true });
  fs.rmSync(`${db}-shm`, { force: true });
  const fromFiles = await ukb(["store", "repair", "--json"], { cwd: dir });
  t.is(fromFiles.code, 0, fromFiles.stderr);
  const report = JSON.parse(fromFiles.stdout) as { registered: number; fromFilesOnly: string[]; salvaged: { roots: { whole: boolean } }; rootsFromFolder: { added: number } };
  t.is(report.registered, 3);
  t.is(report.fromFilesOnly.length, 3);
  t.false(report.salvaged.roots.whole);
  // The roots table went with the rest: its copy in the store's roots/ folder brings ./result back, before any realise.
  t.is(report.rootsFromFolder.added, 1);
  t.is((await ukb(["store", "gc"], { cwd: dir })).code, 0);
  t.true(fs.existsSync(app) && fs.existsSync(path.join(dir, "cache/store", lib)), "gc after the repair deleted what ./result reaches");
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);
  const noop = await ukb(["realise", "refs.ts", "--json"], { cwd: dir });
  t.false(events(noop.stderr).some((e) => e.type === "start"));
  t.regex((await ukb(["store", "info", "result"], { cwd: dir })).stdout, new RegExp(`references +.*${lib}`));
});

test("store repair warns that roots may be lost unless roots/ is known to hold them all; gc --dry-run forgets no root", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  t.is((await ukb(["realise", "hello.ts"], { cwd: dir })).code, 0);
  const roots = path.join(dir, "cache/roots");
  const entries = () => fs.readdirSync(roots).filter((e) => e !== "complete");
  // A dry run of gc after the link went: the root stays recorded, in both places.
  fs.renameSync(path.join(dir, "result"), path.join(dir, "kept"));
  t.is((await ukb(["store", "gc", "--dry-run"], { cwd: dir })).code, 0);
  t.is(entries().length, 1, "a dry run forgot a root");
  fs.renameSync(path.join(dir, "kept"), path.join(dir, "result"));
  const wreck = () => {
    fs.writeFileSync(path.join(dir, "cache/ukb.sqlite"), "not a database");
    for (const f of ["-wal", "-shm"]) fs.rmSync(path.join(dir, `cache/ukb.sqlite${f}`), { force: true });
  };
  // As a store that had roots before roots/ existed: no mark, a warning.
  fs.rmSync(path.join(roots, "complete"));
  wreck();
  const unmarked = await ukb(["store", "repair"], { cwd: dir });
  t.is(unmarked.code, 0, unmarked.stderr);
  t.regex(unmarked.stdout, /1 gc roots the database had lost were taken from the store's roots\/ folder/);
  t.regex(unmarked.stdout, /gc roots may be lost/);
  // A gc that finds every root there marks the folder: the next repair need not warn.
  t.is((await ukb(["store", "gc"], { cwd: dir })).code, 0);
  t.true(fs.existsSync(path.join(roots, "complete")));
  wreck();
  const marked = await ukb(["store", "repair"], { cwd: dir });
  t.is(marked.code, 0, marked.stderr);
  t.notRegex(marked.stdout, /gc roots may be lost/);
});

test("two substitutions in one process that share a reference: fetched and registered once, nothing lost", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "shared.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "head", "cat"]);
export const lib = derivation({ name: "lib", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/head -c 3000000 /dev/urandom > $out\`] });
export const top1 = derivation({ name: "top1", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${lib} > $out\`] });
export const top2 = derivation({ name: "top2", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${lib} > $out\`] });
export default derivation({ name: "both", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${top1} \${top2} > $out\`] });
`,
  );
  const cache = `file://${path.join(dir, "bincache")}`;
  for (const attr of ["top1", "top2"]) {
    t.is((await ukb(["realise", "shared.ts", "-A", attr, "--no-out-link", "--store", "A"], { cwd: dir })).code, 0);
    const up = await ukb(["copy", "--to", cache, "shared.ts", "-A", attr, "--store", "A"], { cwd: dir });
    t.is(up.code, 0, up.stderr);
  }
  // Store B substitutes top1 and top2 at once, each with lib in its closure.
  const r = await ukb(["realise", "shared.ts", "--no-out-link", "--store", "B", "--substituters", cache, "--no-verify", "--json"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stderr, /cache-warning|UNIQUE/, "no substitution fell back to a build");
  const verify = await ukb(["store", "verify", "--store", "B"], { cwd: dir });
  t.is(verify.code, 0, verify.stdout);
  t.regex(verify.stdout, /all valid/);
});

test("a build and a substitution that share a derivation's outputs, one job slot: no deadlock, each output registered once", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "multi.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "cat"]);
export const p = derivation({ name: "p", builder: \`\${t}/bin/sh\`, outputs: ["out", "dev"], args: ["-c", "echo lib > $out; echo dev > $dev"] });
export const a = derivation({ name: "a", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${p} > $out\`] });
export const tools = t;
export default derivation({ name: "top", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${a} > $out; echo \${p.output("dev")} >> $out\`] });
`,
  );
  const cache = `file://${path.join(dir, "bincache")}`;
  const run = (args: string[]) => ukb([...args, "--no-out-link"], { cwd: dir });
  t.is((await run(["realise", "multi.ts", "-A", "a", "--store", "A"])).code, 0);
  // The cache gets a and p's out, not p's dev: top needs p built here, and a (with p.out) fetched.
  t.is((await ukb(["copy", "--to", cache, "multi.ts", "-A", "a", "--store", "A"], { cwd: dir })).code, 0);
  t.is((await run(["realise", "multi.ts", "-A", "tools", "--store", "B"])).code, 0);
  const child = ukbSpawn(["realise", "multi.ts", "--no-out-link", "--store", "B", "--substituters", cache, "--no-verify", "-j", "1"], { cwd: dir });
  const hung = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const both = await collect(child);
  clearTimeout(hung);
  t.not(both.code, null, "realise did not finish within 60 s (a build and a substitution waiting for each other)");
  t.is(both.code, 0, both.stderr);
  t.regex((await ukb(["store", "verify", "--store", "B"], { cwd: dir })).stdout, /all valid/);
  // p's out already valid (fetched with a's closure) when p is built for its dev output.
  t.is((await run(["realise", "multi.ts", "-A", "a", "--store", "C", "--substituters", cache, "--no-verify"])).code, 0);
  const rest = await run(["realise", "multi.ts", "--store", "C"]);
  t.is(rest.code, 0, rest.stderr);
  t.regex((await ukb(["store", "verify", "--store", "C"], { cwd: dir })).stdout, /all valid/);
});

test("kill -9 of gc while it deletes a large path: verify stays clean, and the next gc removes the remains", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "many.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "seq", "touch", "mkdir", "xargs"]);
export default derivation({ name: "many", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/mkdir $out && cd $out && \${t}/bin/seq 1 20000 | \${t}/bin/xargs \${t}/bin/touch\`] });
`,
  );
  const built = await ukb(["realise", "many.ts", "--no-out-link"], { cwd: dir });
  t.is(built.code, 0, built.stderr);
  const gc = ukbSpawn(["store", "gc"], { cwd: dir });
  const output = collect(gc);
  // Killed while it deletes the 20000 files (once the path has left the store folder).
  const many = built.stdout.trim();
  for (let i = 0; i < 400 && fs.existsSync(many); i++) await new Promise((r) => setTimeout(r, 5));
  gc.kill("SIGKILL");
  await output;
  const left = fs.readdirSync(path.join(dir, "cache/tmp"));
  t.true(left.length > 0, "the kill came while gc was deleting");
  const verify = await ukb(["store", "verify"], { cwd: dir });
  t.is(verify.code, 0, verify.stdout);
  t.regex(verify.stdout, /all valid/);
  t.notRegex(verify.stdout, /-many/, "no half-deleted path in the store folder");
  t.is((await ukb(["store", "gc"], { cwd: dir })).code, 0);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/tmp")), [], "the killed gc's remains are gone");
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
});

test("verify notes a leftover of an interrupted build without failing; gc removes it", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  t.is((await ukb(["realise", "hello.ts"], { cwd: dir })).code, 0);
  // What a kill between moving an output in and registering it leaves.
  const leftover = "0123456789abcdfghijklmnpqrsvwxyz-half";
  fs.writeFileSync(path.join(dir, "cache/store", leftover), "never registered\n");
  // A user's own files there are no store paths: neither listed nor deleted.
  fs.writeFileSync(path.join(dir, "cache/store", "notes.txt"), "mine\n");
  fs.mkdirSync(path.join(dir, "cache/store", "photos"));
  const verify = await ukb(["store", "verify"], { cwd: dir });
  t.is(verify.code, 0, verify.stdout);
  t.regex(verify.stdout, new RegExp(`^leftover: ${leftover}: in the store folder but not valid`, "m"));
  t.regex(verify.stdout, /checked 3 paths: all valid \(1 leftover for gc\)\n$/);
  const gc = await ukb(["store", "gc"], { cwd: dir });
  t.regex(gc.stdout, new RegExp(`deleted \\S+${leftover}`));
  t.false(fs.existsSync(path.join(dir, "cache/store", leftover)));
  t.true(fs.existsSync(path.join(dir, "cache/store", "notes.txt")));
  t.true(fs.existsSync(path.join(dir, "cache/store", "photos")));
  // The store's folder of paths is no store: refused, not made into one inside it.
  const inner = await ukb(["realise", "hello.ts", "--store", "cache/store"], { cwd: dir });
  t.is(inner.code, 2, inner.stderr);
  t.regex(inner.stderr, /cache\/store is the folder of the store at .*cache, not a store: give --store .*cache\n/);
  t.false(fs.existsSync(path.join(dir, "cache/store/ukb.sqlite")));
});

test("a store named through a symlink: its out-links stay gc roots, found by either name", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  fs.mkdirSync(path.join(dir, "real"));
  fs.symlinkSync("real", path.join(dir, "link"));
  const r = await ukb(["realise", "hello.ts", "--store", "link", "--out-link", "r"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  for (const store of ["real", "link"]) {
    t.is((await ukb(["store", "gc", "--store", store], { cwd: dir })).code, 0);
    t.is(fs.readFileSync(path.join(dir, "r"), "utf8"), "HELLO\n", `after gc --store ${store}`);
    const info = await ukb(["store", "info", "r", "--store", store === "real" ? "link" : "real"], { cwd: dir });
    t.is(info.code, 0, info.stderr);
  }
});

test("a store this user may not write, or on a read-only filesystem: one line says which, exit 2", async (t) => {
  if (process.getuid?.() !== 0) return t.pass("needs root to run ukb as another user and to mount");
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  t.is((await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: dir })).code, 0);
  // The folders are others' to read, not to write (mkdtemp made the test's 0700).
  fs.chmodSync(dir, 0o755);
  const other = await ukb(["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, UKB, "store", "verify"], { cwd: dir, command: "setpriv" });
  t.is(other.code, 2, other.stderr);
  t.regex(other.stderr, /^ukb: error: cannot open the store at .*cache: permission denied \(it belongs to uid 0, ukb runs as uid 65534\)\n  hint: /);
  const ro = path.join(dir, "ro");
  fs.mkdirSync(ro);
  execFileSync("mount", ["--bind", "-o", "ro", path.join(dir, "cache"), ro]);
  t.teardown(() => execFileSync("umount", [ro]));
  const readOnly = await ukb(["store", "verify", "--store", ro], { cwd: dir });
  t.is(readOnly.code, 2, readOnly.stderr);
  t.regex(readOnly.stderr, /^ukb: error: cannot open the store at .*ro: its filesystem is read-only\n/);
});

test("gc and verify as a user other than root, whose store folders are read-only to it too", async (t) => {
  if (process.getuid?.() !== 0) return t.pass("needs root to run ukb as another user");
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  fs.chownSync(dir, 65534, 65534);
  for (const f of fs.readdirSync(dir)) fs.chownSync(path.join(dir, f), 65534, 65534);
  const asNobody = (args: string[]) =>
    ukb(["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, UKB, ...args], { cwd: dir, command: "setpriv", env: { HOME: dir } });
  const built = await asNobody(["realise", "hello.ts", "--no-out-link"]);
  t.is(built.code, 0, built.stderr);
  const gc = await asNobody(["store", "gc"]);
  t.is(gc.code, 0, gc.stderr);
  t.regex(gc.stdout, /3 deleted/);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
  const verify = await asNobody(["store", "verify"]);
  t.is(verify.code, 0, verify.stderr);
  t.regex(verify.stdout, /all valid\n$/);
  // Built again after: nothing of the old paths is in the way.
  t.is((await asNobody(["realise", "hello.ts", "--no-out-link"])).code, 0);
});

test("scratch folders of a ukb that died: verify notes them, the next build removes them", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  t.is((await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: dir })).code, 0);
  // What kill -9 of a ukb in the middle of a build leaves: a scratch folder named after it.
  const dead = `${os.hostname()}_999999_12345_build_0`;
  fs.mkdirSync(path.join(dir, "cache/tmp", dead, "build"), { recursive: true });
  fs.writeFileSync(path.join(dir, "cache/tmp", dead, "build/half.o"), "x".repeat(1 << 20));
  const verify = await ukb(["store", "verify"], { cwd: dir });
  t.is(verify.code, 0, verify.stdout);
  t.regex(verify.stdout, new RegExp(`^leftover: tmp/${dead}: scratch of a ukb that died`, "m"));
  t.regex(verify.stdout, /all valid \(1 leftover for gc\)\n$/);
  writeRecipe(dir, "other.ts", HELLO.replaceAll("hello", "other"));
  t.is((await ukb(["realise", "other.ts", "--no-out-link"], { cwd: dir })).code, 0);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/tmp")), []);
});

test("scratch folders of a ukb that died on a host whose name holds '_': found and removed", async (t) => {
  // (The hostname command refuses a "_"; the kernel, through Python's sethostname, does not.)
  if (process.getuid?.() !== 0) return t.pass("needs root for a UTS namespace with its own host name");
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const dead = "build_box_1_999999_12345_build_0";
  fs.mkdirSync(path.join(dir, "cache/tmp", dead), { recursive: true });
  const r = await ukb(["-u", "sh", "-c", 'python3 -c "import socket; socket.sethostname(\\"build_box_1\\")" && exec "$0" "$@"', process.execPath, UKB, "realise", "hello.ts", "--no-out-link"], { cwd: dir, command: "unshare" });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/tmp")), []);
});

test("store add of a symlink adds what it points at; prefetch refuses a --name that is no store name before it downloads", async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, "file.txt"), "content\n");
  fs.mkdirSync(path.join(dir, "tree"));
  fs.writeFileSync(path.join(dir, "tree/a"), "a\n");
  fs.symlinkSync("file.txt", path.join(dir, "rel-link"));
  fs.symlinkSync(path.join(dir, "tree"), path.join(dir, "dir-link"));
  const file = await ukb(["store", "add", "rel-link", "--json"], { cwd: dir });
  t.is(file.code, 0, file.stderr);
  const added = JSON.parse(file.stdout) as { path: string; mode: string };
  t.is(added.mode, "flat");
  t.is(fs.readFileSync(added.path, "utf8"), "content\n");
  t.false(fs.lstatSync(added.path).isSymbolicLink());
  const tree = await ukb(["store", "add", "dir-link", "--json"], { cwd: dir });
  t.is(tree.code, 0, tree.stderr);
  const addedTree = JSON.parse(tree.stdout) as { path: string; mode: string };
  t.is(addedTree.mode, "tree");
  t.false(fs.lstatSync(addedTree.path).isSymbolicLink());
  t.is(fs.readFileSync(path.join(addedTree.path, "a"), "utf8"), "a\n");
  const prefetch = await ukb(["prefetch", "http://127.0.0.1:9/x", "--name", "../../ukb.sqlite"], { cwd: dir });
  t.is(prefetch.code, 2, prefetch.stderr);
  t.regex(prefetch.stderr, /'\.\.\/\.\.\/ukb\.sqlite' is not a valid store name/);
  t.is((await ukb(["store", "verify"], { cwd: dir })).code, 0);
});
