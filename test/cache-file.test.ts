/**
 * Binary caches on a folder (file://), through the CLI: the round trip,
 * every refusal (each a warning and a local build, never a corrupt store),
 * the dry run, copy --from, and a no-op that contacts no cache.
 */
import fs from "node:fs";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { events, fixture, ok, realiseA, storePaths, substituteIntoB, ukb, writeRecipe, type Fixture } from "./cache-fixtures.js";

// One store A and two caches (signed, unsigned) shared by the tests that only read them or tamper with a copy.
let shared: { f: Fixture; top: string; signed: string; unsigned: string };
let n = 0;

test.before(async (t) => {
  const f = await fixture(t as unknown as ExecutionContext, "file-shared");
  const top = await realiseA(t as unknown as ExecutionContext, f);
  const signed = path.join(f.dir, "signed");
  const unsigned = path.join(f.dir, "unsigned");
  // Unsigned first: signing records the signatures in A, and copies carry a path's signatures.
  await upload(t as unknown as ExecutionContext, f, `file://${unsigned}`, false);
  await upload(t as unknown as ExecutionContext, f, `file://${signed}`);
  shared = { f, top, signed, unsigned };
});

/** A copy of a shared cache to tamper with, and a fresh store B. */
function copyOf(cache: string): { dir: string; url: string; f: Fixture } {
  const i = n++;
  const dir = path.join(shared.f.dir, `cache-${i}`);
  fs.cpSync(cache, dir, { recursive: true });
  return { dir, url: `file://${dir}`, f: { ...shared.f, storeB: path.join(shared.f.dir, `B-${i}`) } };
}

async function upload(t: ExecutionContext, f: Fixture, cache: string, sign = true): Promise<string> {
  const r = await ukb(["copy", "--to", cache, ...(sign ? ["--sign-key", f.keyFile] : []), f.recipe, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t, r, "copy --to");
  return r.stdout;
}

/** Realises in B expecting a refusal: one warning matching `warning`, then a local build, and a store that verifies. */
async function refused(t: ExecutionContext, f: Fixture, args: string[], warning: RegExp): Promise<void> {
  const r = await ukb(["realise", f.recipe, "--store", f.storeB, "--no-out-link", "--json", ...args], { cwd: f.dir, env: f.env });
  ok(t, r, "realise in B");
  const ev = events(r.stderr);
  const warnings = ev.filter((e) => e.type === "cache-warning").map((e) => String(e.message));
  t.true(warnings.some((w) => warning.test(w)), `warnings: ${warnings.join("\n")}`);
  t.true(ev.some((e) => e.type === "done" && e.name === "top"), "top is built locally");
  t.false(ev.some((e) => e.type === "substituted" && e.name === "top"));
  const v = await ukb(["store", "verify", "--store", f.storeB], { cwd: f.dir, env: f.env });
  ok(t, v, "store verify in B");
}

test("file:// round trip: copy the closure up, substitute everything in an empty store, bit for bit", async (t) => {
  const f = await fixture(t, "file-round-trip");
  await realiseA(t, f);
  const cache = `file://${path.join(f.dir, "cache")}`;
  const out = await upload(t, f, cache);
  t.regex(out, /^3 paths uploaded .* signed by test-cache-1/m);
  // big.dat and big-copy.dat are the same bytes: one blob. big-tool: another.
  t.is(fs.readdirSync(path.join(f.dir, "cache", "blob")).filter((n) => n.endsWith(".zst")).length, 3 + 2);

  const dry = await ukb(["realise", f.recipe, "--store", f.storeB, "--dry-run", "--substituters", cache, "--trusted-keys", f.publicKey], { cwd: f.dir, env: f.env });
  ok(t, dry, "dry run");
  t.regex(dry.stdout, /these 3 paths will be fetched/);
  t.regex(dry.stdout, new RegExp(`-top from ${cache.replace(/[/.]/g, "\\$&")}`));
  t.notRegex(dry.stdout, /will be built/);

  await substituteIntoB(t, f, cache);
  // Signatures travel with the paths.
  const info = await ukb(["store", "info", "--json", "--store", f.storeB, path.join(f.storeB, "store", storePaths(f.storeB).find((b) => b.endsWith("-top"))!)], { cwd: f.dir, env: f.env });
  t.regex(info.stdout, /test-cache-1:/);

  // Copying again uploads nothing.
  t.regex(await upload(t, f, cache), /^0 paths uploaded .* 3 already there/m);
  // A no-op realise contacts no cache: a substituter that does not exist draws no warning.
  const noop = await ukb(["realise", f.recipe, "--store", f.storeB, "--no-out-link", "--substituters", "file:///nonexistent/ukb-cache"], { cwd: f.dir, env: f.env });
  ok(t, noop, "no-op");
  t.notRegex(noop.stderr, /warning/);
});

test("settings from UKB_SUBSTITUTERS / UKB_TRUSTED_KEYS and from the config file", async (t) => {
  const { url: cache, f: base } = copyOf(shared.signed);
  const config = path.join(base.storeB, "config"); // this test's own
  const f = { ...base, env: { ...base.env, XDG_CONFIG_HOME: config } };
  const viaEnv = await ukb(["realise", f.recipe, "--store", `${f.storeB}-C`, "--dry-run"], { cwd: f.dir, env: { ...f.env, UKB_SUBSTITUTERS: cache, UKB_TRUSTED_KEYS: f.publicKey } });
  t.regex(viaEnv.stdout, /these 3 paths will be fetched/);
  fs.mkdirSync(path.join(config, "ukb"), { recursive: true });
  fs.writeFileSync(path.join(config, "ukb", "config.json"), JSON.stringify({ substituters: [cache], trustedKeys: [f.publicKey] }));
  const viaConfig = await ukb(["realise", f.recipe, "--store", `${f.storeB}-C`, "--dry-run"], { cwd: f.dir, env: f.env });
  t.regex(viaConfig.stdout, /these 3 paths will be fetched/);
  // An empty flag turns them off.
  const off = await ukb(["realise", f.recipe, "--store", `${f.storeB}-C`, "--dry-run", "--substituters", ""], { cwd: f.dir, env: f.env });
  t.regex(off.stdout, /these \d+ derivations will be built/);
  t.notRegex(off.stdout, /fetched/);
});

test("copy --from: a path and its closure, verified", async (t) => {
  const { url: cache, f } = copyOf(shared.signed);
  const top = shared.top;
  const base = path.basename(top);
  const r = await ukb(["copy", "--from", cache, "--trusted-keys", f.publicKey, `/ukb/store/${base}`, "--store", f.storeB], { cwd: f.dir, env: f.env });
  ok(t, r, "copy --from");
  t.regex(r.stdout, /^3 paths fetched/m);
  t.is(storePaths(f.storeB).length, 3);
  ok(t, await ukb(["store", "verify", "--store", f.storeB], { cwd: f.dir, env: f.env }), "verify");
  // Without a trusted key it refuses, and says why.
  const refused = await ukb(["copy", "--from", cache, `/ukb/store/${base}`, "--store", `${f.storeB}-C`], { cwd: f.dir, env: f.env });
  t.is(refused.code, 1);
  t.regex(refused.stderr, /signed by test-cache-1, not by a trusted key: refused/);
});

test("refused: a tampered archive (hash mismatch)", async (t) => {
  const { dir, f } = copyOf(shared.signed);
  // Swap a file blob for the compressed bytes of other content of the same size.
  const blobs = fs.readdirSync(path.join(dir, "blob")).map((n) => path.join(dir, "blob", n));
  const big = blobs.sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
  const other = blobs.find((b) => b !== big)!;
  fs.copyFileSync(other, big);
  await refused(t, f, ["--substituters", `file://${dir}`, "--trusted-keys", f.publicKey], /(does not match its hash|bytes announced|truncated).*building '\w+' locally/);
});

test("refused: a tampered info (bad signature)", async (t) => {
  const { dir, f } = copyOf(shared.signed);
  const top = shared.top;
  const infoFile = path.join(dir, "info", `${path.basename(top).slice(0, 32)}.json`);
  const info = JSON.parse(fs.readFileSync(infoFile, "utf8")) as { references: string[] };
  info.references = info.references.slice(1); // claims fewer references
  fs.writeFileSync(infoFile, JSON.stringify(info));
  await refused(t, f, ["--substituters", `file://${dir}`, "--trusted-keys", f.publicKey], /-top from .* has a signature by test-cache-1 that does not match its content: refused/);
});

test("refused: an unsigned path; accepted with --no-verify (hashes still checked)", async (t) => {
  const { url: cache, f } = copyOf(shared.unsigned);
  await refused(t, f, ["--substituters", cache, "--trusted-keys", f.publicKey], /-top from .* is not signed: refused/);
  const r = await ukb(["realise", f.recipe, "--store", `${f.storeB}-C`, "--no-out-link", "--json", "--substituters", cache, "--no-verify"], { cwd: f.dir, env: f.env });
  ok(t, r, "--no-verify");
  t.deepEqual(events(r.stderr).filter((e) => e.type === "start"), []);
});

test("refused: signed by a key that is not trusted", async (t) => {
  const { url: cache, f } = copyOf(shared.signed);
  const other = await ukb(["key", "generate", "--name", "someone-else", "--out", path.join(f.dir, "other.sec")], { cwd: f.dir, env: f.env });
  await refused(t, f, ["--substituters", cache, "--trusted-keys", other.stdout.trim()], /signed by test-cache-1, not by a trusted key: refused/);
});

test("refused: the info of one path replayed under another's name", async (t) => {
  const { dir, f } = copyOf(shared.signed);
  const top = shared.top;
  // Put lib's (validly signed) info where top's belongs.
  const lib = storePaths(f.storeA).find((b) => b.endsWith("-lib"))!;
  fs.copyFileSync(path.join(dir, "info", `${lib.slice(0, 32)}.json`), path.join(dir, "info", `${path.basename(top).slice(0, 32)}.json`));
  await refused(t, f, ["--substituters", `file://${dir}`, "--trusted-keys", f.publicKey], /answered for .*-top with the info of .*-lib: refused/);
});

test("a cache that does not exist: one warning, then a local build", async (t) => {
  const { f } = copyOf(shared.signed);
  await refused(t, f, ["--substituters", `file://${path.join(f.dir, "nope")}`], /does not exist; not using this cache/);
});

test("key generate refuses to overwrite, key public prints the public key", async (t) => {
  const { f } = copyOf(shared.signed);
  const again = await ukb(["key", "generate", "--name", "x", "--out", f.keyFile], { cwd: f.dir, env: f.env });
  t.is(again.code, 2);
  t.regex(again.stderr, /exists: not overwriting a key/);
  const pub = await ukb(["key", "public", f.keyFile], { cwd: f.dir, env: f.env });
  t.is(pub.stdout.trim(), f.publicKey);
  t.is(fs.statSync(f.keyFile).mode & 0o777, 0o600);
  const bad = await ukb(["realise", f.recipe, "--store", f.storeB, "--dry-run", "--substituters", "file:///x", "--trusted-keys", "nonsense"], { cwd: f.dir, env: f.env });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /is not NAME:base64/);
  // A secret key file that is not one line (a comment added): refused without showing the key.
  const commented = path.join(f.dir, "commented.sec");
  fs.writeFileSync(commented, `${fs.readFileSync(f.keyFile, "utf8")}# the CI key\n`);
  const leak = await ukb(["key", "public", commented], { cwd: f.dir, env: f.env });
  t.is(leak.code, 2);
  t.regex(leak.stderr, /secret key file .*commented\.sec is not NAME:base64/);
  const secret = fs.readFileSync(f.keyFile, "utf8").trim().split(":")[1]!;
  t.false(leak.stderr.includes(secret.slice(0, 12)), leak.stderr);
});

test("copy --to --sign-key signs what the cache already holds unsigned; copy --from names a cache without its password", async (t) => {
  const { dir, url: cache, f } = copyOf(shared.unsigned);
  const r = await ukb(["copy", "--to", cache, "--sign-key", f.keyFile, f.recipe, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t, r, "copy --to --sign-key");
  for (const info of fs.readdirSync(path.join(dir, "info"))) {
    const entry = JSON.parse(fs.readFileSync(path.join(dir, "info", info), "utf8")) as { signatures: string[] };
    t.true(entry.signatures.some((s) => s.startsWith("test-cache-1:")), `${info}: ${entry.signatures.join(" ")}`);
  }
  const b = await ukb(["realise", f.recipe, "--store", f.storeB, "--no-out-link", "--json", "--substituters", cache, "--trusted-keys", f.publicKey], { cwd: f.dir, env: f.env });
  ok(t, b, "realise from the newly signed cache");
  t.deepEqual(events(b.stderr).filter((e) => e.type === "start"), []);
  const from = await ukb(["copy", "--from", "http://user:hunter2@127.0.0.1:9/cache", f.recipe, "--store", `${f.storeB}-D`], { cwd: f.dir, env: f.env });
  t.not(from.code, 0);
  t.false(from.stderr.includes("hunter2"), from.stderr);
});

test("--no-verify: a fixed output that comes along as a reference is still checked against its pinned hash", async (t) => {
  const { packTree } = await import("../src/cache/pack.js");
  const { compressToFile } = await import("../src/cache/compress.js");
  const { encodeEntry } = await import("../src/cache/info.js");
  const f = await fixture(t, "fixed-reference");
  fs.mkdirSync(path.join(f.dir, "src"));
  fs.writeFileSync(path.join(f.dir, "src/f"), "the real source\n");
  const recipe = writeRecipe(f.dir, "fod.ts", `import { derivation, hostTools, local } from "ukb";\nconst t = hostTools(["sh", "cat"]);\nconst src = local("./src");\nexport default derivation({ name: "uses", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${src}/f > $out; echo \${src} >> $out\`] });\n`);
  ok(t, await ukb(["realise", recipe, "--store", f.storeA, "--no-out-link"], { cwd: f.dir, env: f.env }), "realise in A");
  const cache = path.join(f.dir, "cache-fod");
  ok(t, await ukb(["copy", "--to", `file://${cache}`, recipe, "--store", f.storeA], { cwd: f.dir, env: f.env }), "copy --to");
  // The cache now serves other bytes for the source, under its pinned name, with an entry that matches them.
  const srcBase = storePaths(f.storeA).find((b) => b.endsWith("-src"))!;
  const evil = path.join(f.dir, "evil");
  fs.mkdirSync(evil);
  fs.writeFileSync(path.join(evil, "f"), "EVIL\n");
  const packed = await packTree(evil);
  const manifest = await compressToFile(packed.manifest, path.join(f.dir, "manifest.zst"));
  fs.copyFileSync(path.join(f.dir, "manifest.zst"), path.join(cache, "blob", `${manifest.blake3}.zst`));
  const forged = { base: srcBase, contentHash: packed.contentHash, size: packed.size, references: [], signatures: [], manifest: { blake3: manifest.blake3, size: manifest.size, compressedSize: manifest.compressedSize }, blobs: [] };
  fs.writeFileSync(path.join(cache, "info", `${srcBase.slice(0, 32)}.json`), encodeEntry(forged as unknown as Parameters<typeof encodeEntry>[0]));
  const r = await ukb(["realise", recipe, "--store", f.storeB, "--no-out-link", "--json", "--substituters", `file://${cache}`, "--no-verify"], { cwd: f.dir, env: f.env });
  ok(t, r, "realise in B");
  t.true(events(r.stderr).some((e) => e.type === "cache-warning" && /hash mismatch|hash/.test(String(e.message))), r.stderr);
  t.is(fs.readFileSync(path.join(f.storeB, "store", srcBase, "f"), "utf8"), "the real source\n");
  ok(t, await ukb(["store", "verify", "--store", f.storeB], { cwd: f.dir, env: f.env }), "verify B");
});
