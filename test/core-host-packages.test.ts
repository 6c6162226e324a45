/**
 * hostTools' hash covers what its programs run with: the Debian packages
 * that own them and what those depend on (gcc's cc1, libc6-dev's headers).
 * The tests work on a copy of this machine's dpkg database (DPKG_ADMINDIR,
 * as dpkg itself reads it), where an upgrade is a changed Version line.
 */
import test, { type ExecutionContext } from "ava";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

interface Shown {
  root: string;
  derivations: Record<string, { name: string; hostPackages?: string[] }>;
}

const HAS_DPKG = fs.existsSync("/var/lib/dpkg/status");

/** A copy of this machine's dpkg database: its status file and its file lists. */
function copyOfDpkg(): string {
  const admin = path.join(tempDir(), "dpkg");
  fs.mkdirSync(path.join(admin, "info"), { recursive: true });
  fs.copyFileSync("/var/lib/dpkg/status", path.join(admin, "status"));
  if (fs.existsSync("/var/lib/dpkg/diversions")) fs.copyFileSync("/var/lib/dpkg/diversions", path.join(admin, "diversions"));
  for (const f of fs.readdirSync("/var/lib/dpkg/info")) if (f.endsWith(".list")) fs.copyFileSync(path.join("/var/lib/dpkg/info", f), path.join(admin, "info", f));
  return admin;
}

/** `dpkg` upgrading `name` in the copy: a new Version in its paragraph of the status file. */
function upgrade(admin: string, name: string): string {
  const file = path.join(admin, "status");
  const paragraphs = fs.readFileSync(file, "utf8").split("\n\n");
  let version = "";
  const changed = paragraphs.map((p) => {
    if (!new RegExp(`^Package: ${name.replace(/[+.]/g, "\\$&")}$`, "m").test(p)) return p;
    return p.replace(/^Version: (.*)$/m, (_line, v: string) => `Version: ${(version = `${v}+upgraded`)}`);
  });
  fs.writeFileSync(file, changed.join("\n\n"));
  return version;
}

/** `ukb show` of `recipe` in `dir` with dpkg's database at `admin`: the root's hash and its hostPackages. */
async function shown(t: ExecutionContext, dir: string, recipe: string, admin: string): Promise<{ hash: string; packages: string[] | undefined }> {
  // The index of a copied database is kept beside it, not in the user's cache folder.
  const r = await ukb(["show", recipe], { cwd: dir, env: { DPKG_ADMINDIR: admin, XDG_CACHE_HOME: path.join(dir, "xdg-cache") } });
  t.is(r.code, 0, r.stderr);
  const graph = JSON.parse(r.stdout) as Shown;
  return { hash: graph.root, packages: graph.derivations[graph.root]!.hostPackages };
}

function installedVersion(name: string): string {
  return execFileSync("dpkg-query", ["-W", "-f", "${Version}", name], { encoding: "utf8" });
}

test("hostTools' hash covers its programs' packages and what they depend on: an upgrade of cc1's or the headers' package changes it, of an unrelated package it does not", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  const admin = copyOfDpkg();
  writeRecipe(dir, "cc.ts", `import { hostTools } from "ukb";\nexport default hostTools(["gcc", "sh"]);\n`);
  const show = async () => {
    const { hash, packages } = await shown(t, dir, "cc.ts", admin);
    return { hash, packages: packages ?? [] };
  };
  const first = await show();
  const has = (name: string, version = installedVersion(name)) => first.packages.some((p) => new RegExp(`^${name.replace(/[+.]/g, "\\$&")}:[\\w-]+=`).test(p) && p.endsWith(`=${version}`));
  // gcc's driver is gcc-12's; cc1 is cpp-12's; the headers are libc6-dev's (which gcc-12 recommends); sh is dash's.
  for (const name of ["gcc-12", "cpp-12", "libc6-dev", "linux-libc-dev", "dash", "libc6"]) t.true(has(name), `${name} missing from ${first.packages.join(" ")}`);

  // An unrelated package upgraded: the same hash (the database changed: evaluated again).
  const names = new Set(first.packages.map((p) => p.replace(/:.*$/, "")));
  const unrelated = ["hyperfine", "nginx", "qemu-system-x86", "skopeo"].find((n) => !names.has(n) && fs.readFileSync(path.join(admin, "status"), "utf8").includes(`\nPackage: ${n}\n`));
  t.truthy(unrelated, "no unrelated package installed to upgrade");
  upgrade(admin, unrelated!);
  t.is((await show()).hash, first.hash);

  // An Essential package reached only as a dependency (dash needs dpkg, which needs tar, for install scripts): not what sh runs with.
  t.false(names.has("tar") || names.has("dpkg"), first.packages.join(" "));
  upgrade(admin, "tar");
  t.is((await show()).hash, first.hash, "a tar update rebuilt what uses sh");

  // The headers' package upgraded: another hash, naming the new version.
  const version = upgrade(admin, "linux-libc-dev");
  const second = await show();
  t.not(second.hash, first.hash);
  t.true(second.packages.some((p) => p.startsWith("linux-libc-dev:") && p.endsWith(`=${version}`)), second.packages.join(" "));
});

test("a program no package owns (/usr/local) adds no packages; with no dpkg database, only the programs' bytes count", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  // A folder of its own under /usr/local, not /usr/local/bin: a file added to a folder on PATH makes
  // every cached evaluation that searched PATH (other tests', running meanwhile) evaluate again.
  const folder = fs.mkdtempSync("/usr/local/lib/ukb-test-");
  t.teardown(() => fs.rmSync(folder, { recursive: true, force: true }));
  fs.writeFileSync(path.join(folder, "ukb-test-tool"), "#!/bin/sh\necho tool\n", { mode: 0o755 });
  writeRecipe(dir, "local.ts", `import { hostTools } from "ukb";\nexport default hostTools(["ukb-test-tool"], { path: "${folder}" });\n`);
  const packagesWith = async (admin: string) => (await shown(t, dir, "local.ts", admin)).packages;
  t.is(await packagesWith(copyOfDpkg()), undefined);
  // No dpkg database at all: sh, which dash owns on this machine, is covered by its bytes alone.
  writeRecipe(dir, "local.ts", `import { hostTools } from "ukb";\nexport default hostTools(["sh"]);\n`);
  t.true(((await packagesWith("/var/lib/dpkg")) ?? []).some((p) => p.startsWith("dash:")));
  t.is(await packagesWith(path.join(dir, "no-such-dpkg")), undefined);
});

test("a library installed for two architectures (multiarch) is the one of the package that needs it; a package named like an object's property is a package", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  const admin = copyOfDpkg();
  writeRecipe(dir, "sh.ts", `import { hostTools } from "ukb";\nexport default hostTools(["sh"]);\n`);
  const show = async () => {
    const { hash, packages } = await shown(t, dir, "sh.ts", admin);
    return { hash, packages: packages ?? [] };
  };
  const first = await show();
  const libc = first.packages.find((p) => p.startsWith("libc6:"))!;
  t.truthy(libc, first.packages.join(" "));
  // Another architecture's libc6, and a package providing "constructor", after the native ones.
  const status = path.join(admin, "status");
  fs.appendFileSync(status, "\nPackage: libc6\nStatus: install ok installed\nArchitecture: i386\nVersion: 9.99-1\n\nPackage: odd\nStatus: install ok installed\nArchitecture: all\nVersion: 1\nProvides: constructor, __proto__\n");
  const second = await show();
  t.is(second.hash, first.hash, second.packages.join(" "));
  t.true(second.packages.includes(libc));
});

test("a diverted program is the diverting package's (dpkg-divert), as dpkg -S says: the package whose list also names the path is not its owner", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  const admin = copyOfDpkg();
  writeRecipe(dir, "tr.ts", `import { hostTools } from "ukb";\nexport default hostTools(["tr"]);\n`);
  const before = await shown(t, dir, "tr.ts", admin);
  t.true((before.packages ?? []).some((p) => p.startsWith("coreutils:")), (before.packages ?? []).join(" "));
  // A realise, whose evaluation is cached: the diversion must be seen through the cache too.
  const env = { DPKG_ADMINDIR: admin, XDG_CACHE_HOME: path.join(dir, "xdg-cache") };
  const realisedBefore = await ukb(["realise", "tr.ts", "--no-out-link"], { cwd: dir, env });
  t.is(realisedBefore.code, 0, realisedBefore.stderr);
  // hyperfine (installed by install-deps, needed by nothing here) now ships /usr/bin/tr and has diverted coreutils' to tr.coreutils.
  fs.appendFileSync(path.join(admin, "info", "hyperfine.list"), "/usr/bin/tr\n");
  fs.appendFileSync(path.join(admin, "diversions"), "/usr/bin/tr\n/usr/bin/tr.coreutils\nhyperfine\n");
  const after = await shown(t, dir, "tr.ts", admin);
  t.true((after.packages ?? []).some((p) => p.startsWith("hyperfine:")), (after.packages ?? []).join(" "));
  t.false((after.packages ?? []).some((p) => p.startsWith("coreutils:")), (after.packages ?? []).join(" "));
  t.not(after.hash, before.hash);
  const realisedAfter = await ukb(["realise", "tr.ts", "--no-out-link"], { cwd: dir, env });
  t.is(realisedAfter.code, 0, realisedAfter.stderr);
  t.not(realisedAfter.stdout, realisedBefore.stdout, "the cached evaluation was taken");
});

test("a program outside the bin folders is looked for in every package's file list once per state of the database, and the next ukb remembers it; update-alternatives' links are in no list", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const method = "/usr/lib/apt/methods/http";
  t.true(fs.existsSync(method), `${method} is not on this host`);
  const dir = tempDir();
  const admin = copyOfDpkg();
  const xdg = path.join(dir, "xdg-cache");
  writeRecipe(dir, "m.ts", `import { hostTools } from "ukb";\nexport default hostTools(["http=${method}", "awk"]);\n`);
  // A new store each time: no cached evaluation, every run asks the database.
  let runs = 0;
  const packages = async () => {
    const r = await ukb(["show", "m.ts", "--store", path.join(dir, `store-${runs++}`)], { cwd: dir, env: { DPKG_ADMINDIR: admin, XDG_CACHE_HOME: xdg } });
    t.is(r.code, 0, r.stderr);
    const graph = JSON.parse(r.stdout) as Shown;
    return graph.derivations[graph.root]!.hostPackages ?? [];
  };
  const first = await packages();
  const apt = first.find((p) => p.startsWith("apt:"))?.replace(/=.*$/, "");
  t.truthy(apt, first.join(" "));
  const rememberedFile = fs.readdirSync(path.join(xdg, "ukb")).find((f) => f.startsWith("dpkg-listed-"));
  t.truthy(rememberedFile);
  const file = path.join(xdg, "ukb", rememberedFile!);
  const remembered = JSON.parse(fs.readFileSync(file, "utf8")) as { key: string; owners: Record<string, string | null> };
  t.is(remembered.owners[method], apt);
  // awk is reached through /etc/alternatives/awk, which dpkg never lists: not looked for.
  t.deepEqual(Object.keys(remembered.owners).filter((p) => p.startsWith("/etc/alternatives/")), []);

  // The next ukb takes the owner from what was remembered (here, doctored) rather than reading every list...
  fs.writeFileSync(file, JSON.stringify({ ...remembered, owners: { ...remembered.owners, [method]: `coreutils:${apt!.split(":")[1]}` } }));
  const doctored = await packages();
  t.true(doctored.some((p) => p.startsWith("coreutils:")) && !doctored.some((p) => p.startsWith("apt:")), doctored.join(" "));
  // ... while the database is the same: a change of it (an upgrade) looks again.
  upgrade(admin, "tar");
  const after = await packages();
  t.true(after.some((p) => p.startsWith("apt:")), after.join(" "));
});
