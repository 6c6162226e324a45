import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { HELLO, ROOT, events, tempDir, ukb, writeRecipe, REFS } from "./helpers/ukb.js";

test("the README example realises, prints the store path and links ./result", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const r = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const out = r.stdout.trim();
  t.regex(out, new RegExp(`^${dir}/cache/store/[0-9a-df-np-sv-z]{32}-shout$`));
  t.is(fs.readFileSync(out, "utf8"), "HELLO\n");
  t.is(fs.readlinkSync(path.join(dir, "result")), out);

  const g = await ukb(["realise", "hello.ts", "-A", "greeting", "--no-out-link"], { cwd: dir });
  t.is(g.code, 0, g.stderr);
  t.is(fs.readFileSync(g.stdout.trim(), "utf8"), "hello\n");
  t.is(fs.readlinkSync(path.join(dir, "result")), out, "--no-out-link leaves ./result alone");
});

test("a recipe in an ES module package also resolves 'ukb'", async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  writeRecipe(dir, "hello.ts", HELLO);
  const r = await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "HELLO\n");
});

test("identity is the same in two stores in different folders", async (t) => {
  const a = tempDir();
  const b = tempDir("ukb-other-");
  writeRecipe(a, "hello.ts", HELLO);
  writeRecipe(b, "nested/deeper/hello.ts", HELLO);
  const ra = await ukb(["realise", "hello.ts", "--store", path.join(a, "s1")], { cwd: a });
  const rb = await ukb(["realise", "nested/deeper/hello.ts", "--store", path.join(b, "elsewhere/s2")], { cwd: b });
  t.is(ra.code, 0, ra.stderr);
  t.is(rb.code, 0, rb.stderr);
  t.is(path.basename(ra.stdout.trim()), path.basename(rb.stdout.trim()));
  const sa = await ukb(["show", "hello.ts", "--store", path.join(a, "s1")], { cwd: a });
  const sb = await ukb(["show", "nested/deeper/hello.ts", "--store", path.join(b, "elsewhere/s2")], { cwd: b });
  t.is(sa.stdout, sb.stdout, "the canonical graph does not depend on the store or recipe location");
  const ia = JSON.parse((await ukb(["store", "info", ra.stdout.trim(), "--json", "--store", path.join(a, "s1")])).stdout);
  const ib = JSON.parse((await ukb(["store", "info", rb.stdout.trim(), "--json", "--store", path.join(b, "elsewhere/s2")])).stdout);
  t.is(ia.contentHash, ib.contentHash);
  t.is(ia.size, ib.size);
});

test("show prints the canonical graph with every derivation and its inputs", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const r = await ukb(["show", "hello.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const g = JSON.parse(r.stdout) as { root: string; derivations: Record<string, { name: string; inputs: string[]; kind: string }> };
  const names = Object.values(g.derivations).map((d) => d.name).sort();
  t.deepEqual(names, ["greeting", "host-tools", "shout"]);
  const root = g.derivations[g.root]!;
  t.is(root.name, "shout");
  t.is(root.inputs.length, 2);
  t.true(root.inputs.every((p) => p.startsWith("/ukb/store/")));
  // Each derivation's key is the BLAKE3 of its hashed fields in canonical JSON: anyone can check it.
  const { blake3Hex, canonicalJson } = await import("../src/graph/index.js");
  for (const [hash, d] of Object.entries(g.derivations as Record<string, Record<string, unknown>>)) {
    const { outputPaths, inputDrvs, ...hashed } = d;
    t.truthy(outputPaths);
    t.truthy(inputDrvs);
    t.is(blake3Hex(canonicalJson(hashed as never)), hash, String(d.name));
  }
  // It builds nothing, so it makes no store: the same graph, evaluated without the eval cache.
  t.false(fs.existsSync(path.join(dir, "cache")));
  t.is((await ukb(["realise", "hello.ts", "--dry-run"], { cwd: dir })).code, 0);
  const cached = await ukb(["show", "hello.ts"], { cwd: dir });
  t.is(cached.stdout, r.stdout);
});

test("a diamond dependency is built once", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "diamond.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "cat"]);
const base = derivation({ name: "base", builder: \`\${t}/bin/sh\`, args: ["-c", "echo base > $out"] });
const left = derivation({ name: "left", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${base} > $out; echo left >> $out\`] });
const right = derivation({ name: "right", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${base} > $out; echo right >> $out\`] });
export default derivation({ name: "top", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${left} \${right} > $out\`] });
`,
  );
  const r = await ukb(["realise", "diamond.ts", "--json", "--jobs", "2"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const started = events(r.stderr).filter((e) => e.type === "start").map((e) => e.name);
  t.deepEqual([...started].sort(), ["base", "host-tools", "left", "right", "top"]);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "base\nleft\nbase\nright\n");
  const again = await ukb(["realise", "diamond.ts", "--json"], { cwd: dir });
  t.is(events(again.stderr).filter((e) => e.type === "start").length, 0, "a second realise builds nothing");
});

test("--dry-run prints the plan and builds nothing", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const r = await ukb(["realise", "hello.ts", "--dry-run"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /these 3 derivations will be built/);
  t.regex(r.stdout, /-shout\n/);
  t.false(fs.existsSync(path.join(dir, "result")));
  // Half built: what is valid is listed with what will be built.
  const greeting = await ukb(["realise", "hello.ts", "-A", "greeting", "--no-out-link"], { cwd: dir });
  const half = await ukb(["realise", "hello.ts", "--dry-run"], { cwd: dir });
  t.regex(half.stdout, /^this derivation will be built:\n {2}\S+-shout\nthese 2 derivations are valid already:\n/);
  t.true(half.stdout.includes(`  ${greeting.stdout.trim()}\n`), half.stdout);
  const json = await ukb(["realise", "hello.ts", "--dry-run", "--json"], { cwd: dir });
  const plan = JSON.parse(json.stdout) as { validOutputs: { name: string; outputs: { out: string } }[] };
  t.is(plan.validOutputs.find((v) => v.name === "greeting")?.outputs.out, greeting.stdout.trim());
  await ukb(["realise", "hello.ts"], { cwd: dir });
  const again = await ukb(["realise", "hello.ts", "--dry-run"], { cwd: dir });
  t.regex(again.stdout, /^nothing to build: every output is valid\nthis derivation is valid already:\n {2}\S+-shout\n$/);
});

test("ukb log prints a build's log by path or by attribute", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "noisy.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh"]);
export default derivation({ name: "noisy", builder: \`\${t}/bin/sh\`, args: ["-c", "echo compiling things; echo warning >&2; echo x > $out"] });
`,
  );
  const r = await ukb(["realise", "noisy.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const byPath = await ukb(["log", r.stdout.trim()], { cwd: dir });
  t.is(byPath.code, 0, byPath.stderr);
  t.regex(byPath.stdout, /compiling things\nwarning/);
  const byAttr = await ukb(["log", "noisy.ts"], { cwd: dir });
  t.is(byAttr.stdout, byPath.stdout);
});

test("store info names hash, size, references and deriver", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "refs.ts", REFS);
  const r = await ukb(["realise", "refs.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const info = JSON.parse((await ukb(["store", "info", "result", "--json"], { cwd: dir })).stdout);
  t.regex(info.contentHash, /^blake3:[0-9a-f]{64}$/);
  t.true(info.size > 0);
  t.is(info.references.length, 1, "the reference to lib is found by scanning; the builder's tools are not referenced");
  t.regex(info.references[0], /-lib$/);
  t.regex(info.deriver, /^app \([0-9a-f]{64}\)$/);
});

test("-A naming one output of a derivation prints and links that output; a derivation's link goes where ${drv} does ('out')", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "multi.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh"]);
const m = derivation({ name: "multi", builder: \`\${t}/bin/sh\`, outputs: ["bin", "out", "dev"],
  args: ["-c", "echo bin > $bin; echo out > $out; echo dev > $dev"] });
export default m;
export const dev = m.output("dev");
export const uses = derivation({ name: "uses", builder: \`\${t}/bin/sh\`, args: ["-c", \`read x < \${m}; echo $x > $out\`] });
`,
  );
  const dev = await ukb(["realise", "multi.ts", "-A", "dev", "--out-link", "dev-link"], { cwd: dir });
  t.is(dev.code, 0, dev.stderr);
  const devPath = dev.stdout.trim();
  t.notRegex(devPath, /\n/, "one path: the output named");
  t.regex(devPath, /-multi-dev$/);
  t.is(fs.readFileSync(path.join(dir, "dev-link"), "utf8"), "dev\n");
  // The link is a root of that output: gc keeps it.
  const gc = await ukb(["store", "gc", "--dry-run"], { cwd: dir });
  t.false(gc.stdout.includes(devPath), gc.stdout);

  const all = await ukb(["realise", "multi.ts"], { cwd: dir });
  t.is(all.code, 0, all.stderr);
  t.is(all.stdout.trim().split("\n").length, 3);
  t.is(fs.readFileSync(path.join(dir, "result"), "utf8"), "out\n", "./result is the 'out' output, as ${m} is");
  const uses = await ukb(["realise", "multi.ts", "-A", "uses", "--no-out-link"], { cwd: dir });
  t.is(uses.code, 0, uses.stderr);
  t.is(fs.readFileSync(uses.stdout.trim(), "utf8"), "out\n");
});

test("--jobs 2: never more than two builders between 'start' and 'registering' (the status line's 'running')", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "wide.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep"]);
const leaves = Array.from({ length: 6 }, (_, i) => derivation({ name: "leaf" + i, builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 0.1; echo \${i} > $out\`] }));
export default derivation({ name: "top", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"], env: { leaves: leaves.join(" ") } });
`,
  );
  const r = await ukb(["realise", "wide.ts", "--jobs", "2", "--json", "--no-out-link"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const evs = events(r.stderr);
  let running = 0;
  let most = 0;
  for (const e of evs) {
    if (e.type === "start") most = Math.max(most, ++running);
    if (e.type === "registering") running--;
  }
  t.is(evs.filter((e) => e.type === "registering").length, 8, "one per build (host-tools, six leaves, top)");
  t.true(most <= 2, `at most 2 builders at once, saw ${most}`);
  t.is(running, 0);
});

test("flake.nix parses (Debian's nix-instantiate), and its package needs no hash kept in step with the lock file", async (t) => {
  const nix = await ukb(["--parse", path.join(ROOT, "flake.nix")], { command: "nix-instantiate" }).catch(() => undefined);
  if (!nix || (nix.code !== 0 && /ENOENT|not found/.test(nix.stderr))) return t.pass("nix-instantiate is not installed");
  t.is(nix.code, 0, nix.stderr);
  const flake = fs.readFileSync(path.join(ROOT, "flake.nix"), "utf8");
  t.false(flake.includes("fakeHash"), "a placeholder hash: `nix build` cannot succeed");
  t.regex(flake, /importNpmLock/);
  // importNpmLock fetches each package from its "resolved" URL (an npm set to omit them writes none).
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { integrity?: string; resolved?: string }> };
  const unresolved = Object.entries(lock.packages).filter(([, p]) => p.integrity && !p.resolved?.startsWith("https://"));
  t.deepEqual(unresolved.map(([k]) => k), []);
});
