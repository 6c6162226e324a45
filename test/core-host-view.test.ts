/**
 * What a build sees of the host's system directories (src/build/host-view.ts):
 * the files of the Debian packages its host tools run with, and /bin/sh's,
 * not the rest of /usr. A header or a program the recipe did not declare
 * (zlib.h of an installed zlib1g-dev, a stray file in /usr/local/include,
 * python3) changes no build, in a pooled sandbox or in one bwrap per build.
 */
import test, { type ExecutionContext } from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const HAS_DPKG = fs.existsSync("/var/lib/dpkg/status");
const MODES = ["pool", "fresh"] as const;

/** A recipe whose output says, for each path, whether its build sees it. */
function looker(tools: string[], paths: string[], name = "look"): string {
  return `import { derivation, hostTools } from "ukb";
const t = hostTools(${JSON.stringify(tools)});
export default derivation({
  name: ${JSON.stringify(name)},
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`for f in ${paths.join(" ")}; do if [ -e $f ]; then echo "seen $f"; else echo "hidden $f"; fi; done > $out\`],
});
`;
}

async function realise(t: ExecutionContext, dir: string, recipe: string, env: NodeJS.ProcessEnv, store = "store"): Promise<{ path: string; text: string }> {
  const r = await ukb(["realise", recipe, "--no-out-link", "--store", path.join(dir, store)], { cwd: dir, env: { ...process.env, ...env } });
  t.is(r.code, 0, r.stderr);
  const out = r.stdout.trim().split("\n").pop()!;
  return { path: out, text: fs.readFileSync(out, "utf8") };
}

test("a build sees its tools' packages and the Essential ones, not the rest of the host's /usr, in a pooled sandbox and in one bwrap per build alike", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  // On the host: all of them. unxz is xz-utils' (as xz is); bash, perl and ls are Essential packages';
  // bzip2, python3 and the compiler are no declared tool's.
  const paths = ["/bin/sh", "/usr/bin/xz", "/usr/bin/unxz", "/usr/bin/bash", "/usr/bin/perl", "/usr/bin/ls", "/usr/bin/bzip2", "/usr/bin/python3", "/usr/bin/gcc", "/usr/include/stdio.h"];
  for (const p of paths) t.true(fs.existsSync(p), `${p} is not on this host`);
  const dir = tempDir();
  writeRecipe(dir, "look.ts", looker(["sh", "xz"], paths));
  const expected = paths.map((p, i) => `${i < 6 ? "seen" : "hidden"} ${p}\n`).join("");
  const seen: Record<string, string> = {};
  for (const mode of MODES) {
    const { path: out, text } = await realise(t, dir, "look.ts", { UKB_SANDBOX: mode }, `store-${mode}`);
    t.is(text, expected, mode);
    seen[mode] = path.basename(out);
  }
  t.is(seen.pool, seen.fresh);

  // UKB_HOST_VIEW=system: all of the system directories, as before there were views.
  const { text } = await realise(t, dir, "look.ts", { UKB_HOST_VIEW: "system" }, "store-system");
  t.regex(text, /^seen \/usr\/bin\/python3$/m);
});

test("a header the recipe did not declare changes no build: an undeclared package's, or a stray one in /usr/local/include, which gcc searches", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  const stray = `ukb-stray-${process.pid}.h`;
  const strayFile = path.join("/usr/local/include", stray);
  let strayWritten = false;
  try {
    fs.writeFileSync(strayFile, "#define UKB_STRAY 1\n");
    strayWritten = true;
  } catch {
    t.log("/usr/local/include is not writable here: the stray header is not tried");
  }
  t.teardown(() => fs.rmSync(strayFile, { force: true }));
  // A header some package beside the compiler's closure installed on this host (zlib1g-dev's, ncurses'...), if one did.
  const other = ["zlib.h", "curses.h", "expat.h", "bzlib.h", "sqlite3.h", "png.h"].find((h) => fs.existsSync(path.join("/usr/include", h)));
  const headers = [...(strayWritten ? [stray] : []), ...(other ? [other] : []), "stdio.h"];
  const source = headers.map((h) => `#if __has_include(<${h}>)\\nSEEN ${h}\\n#else\\nHIDDEN ${h}\\n#endif\\n`).join("");
  // The host's own gcc sees them all: what the sandbox hides is there.
  const onHost = execFileSync("sh", ["-c", `printf '${source}' | gcc -E -P -x c -`], { encoding: "utf8" });
  for (const h of headers) t.regex(onHost, new RegExp(`^SEEN ${h.replace(/\./g, "\\.")}$`, "m"));
  writeRecipe(
    dir,
    "cc.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "gcc"]);
export default derivation({
  name: "probe-headers",
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`printf '${source}' | \${t}/bin/gcc -E -P -x c - > $out\`],
  env: { PATH: \`\${t}/bin\` },
});
`,
  );
  for (const mode of MODES) {
    const { text } = await realise(t, dir, "cc.ts", { UKB_SANDBOX: mode }, `store-${mode}`);
    t.regex(text, /^SEEN stdio\.h$/m, mode);
    if (strayWritten) t.regex(text, new RegExp(`^HIDDEN ${stray.replace(/\./g, "\\.")}$`, "m"), mode);
    if (other) t.regex(text, new RegExp(`^HIDDEN ${other.replace(/\./g, "\\.")}$`, "m"), mode);
  }
  if (!strayWritten && !other) t.log("only stdio.h was tried: nothing else to hide on this host");
});

test("pooled sandboxes keep to one view: builds of other tools, one after the other in the same ukb, each see their own tools' packages only", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  // /usr/bin/gcc is package gcc's link to gcc-12's file: both packages are hashed, and shown.
  const gcc = "/usr/bin/gcc";
  writeRecipe(
    dir,
    "two.ts",
    `import { derivation, hostTools } from "ukb";
const archiver = hostTools(["sh", "xz", "umount"], { name: "archiver-tools" });
const compiler = hostTools(["sh", "gcc"], { name: "compiler-tools" });
const probe = (t: typeof archiver, name: string) => derivation({
  name,
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`for f in /usr/bin/xz ${gcc} /usr/bin/umount; do if [ -e $f ]; then echo "seen $f"; else echo "hidden $f"; fi; done > $out
/usr/bin/umount -l /usr 2>/dev/null && echo "UNMOUNTED" >> $out; true\`],
});
const first = probe(archiver, "first");
const second = probe(compiler, "second");
const third = probe(archiver, "third");
// Built last; the three before it, in either order, from one pool of sandboxes.
export default derivation({ name: "all", builder: \`\${archiver}/bin/sh\`, args: ["-c", \`echo \${first} \${second} \${third} > $out\`] });
`,
  );
  const r = await ukb(["realise", "two.ts", "--no-out-link", "--jobs", "1"], { cwd: dir, env: { ...process.env, UKB_SANDBOX: "pool" } });
  t.is(r.code, 0, r.stderr);
  const store = path.join(dir, "cache", "store");
  const read = (name: string) => fs.readFileSync(path.join(store, fs.readdirSync(store).find((b) => b.endsWith(`-${name}`))!), "utf8");
  const archiverView = `seen /usr/bin/xz\nhidden ${gcc}\nseen /usr/bin/umount\n`;
  t.is(read("first"), archiverView);
  t.is(read("second"), `hidden /usr/bin/xz\nseen ${gcc}\nhidden /usr/bin/umount\n`);
  // Whichever ran after another view (a sandbox of its own view spare again, or a new one); and no builder can take the view away.
  t.is(read("third"), archiverView);
});

test("what a build sees follows from its derivation graph, not from what its inputs hold: a path linking into /usr, its derivation unknown to the store (as a substituted closure leaves it), shows nothing more", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  const recipe = (name: string) => `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "mkdir", "ln"]);
// Not a hostTools output, though its bin/ links into /usr as one does.
const links = derivation({ name: "links", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/mkdir -p $out/bin && \${t}/bin/ln -s /usr/bin/python3 $out/bin/py\`] });
const uses = derivation({ name: "uses", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${links} > $out\`] });
export default derivation({
  name: ${JSON.stringify(name)},
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`: \${uses}; if [ -e /usr/bin/python3 ]; then echo seen > $out; else echo hidden > $out; fi\`],
});
`;
  writeRecipe(dir, "a.ts", recipe("a"));
  t.is((await realise(t, dir, "a.ts", {})).text, "hidden\n");
  // Forget which derivation made each path.
  const db = new Database(path.join(dir, "store", "ukb.sqlite"));
  db.prepare("DELETE FROM drv_outputs").run();
  db.prepare("DELETE FROM drvs").run();
  db.close();
  writeRecipe(dir, "b.ts", recipe("b"));
  t.is((await realise(t, dir, "b.ts", {})).text, "hidden\n");
});

test("a host tool outside the bin folders (apt's http method) is found in dpkg's file lists: its packages are hashed and shown", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const method = "/usr/lib/apt/methods/http";
  t.true(fs.existsSync(method), `${method} is not on this host`);
  const dir = tempDir();
  writeRecipe(
    dir,
    "m.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "http=${method}"]);
export default derivation({ name: "method", builder: \`\${t}/bin/sh\`, args: ["-c", "for f in ${method} /usr/bin/apt-get /usr/bin/python3; do if [ -e $f ]; then echo seen $f; else echo hidden $f; fi; done > $out"] });
`,
  );
  const shown = await ukb(["show", "m.ts"], { cwd: dir });
  t.is(shown.code, 0, shown.stderr);
  const graph = JSON.parse(shown.stdout) as { derivations: Record<string, { kind: string; hostPackages?: string[] }> };
  const tools = Object.values(graph.derivations).find((d) => d.kind === "host-tools")!;
  t.true((tools.hostPackages ?? []).some((p) => p.startsWith("apt:")), (tools.hostPackages ?? []).join(" "));
  t.is((await realise(t, dir, "m.ts", {})).text, `seen ${method}\nseen /usr/bin/apt-get\nhidden /usr/bin/python3\n`);
});

test("a host tool no package owns: the build sees the system directories whole (what the tool runs with is unknown)", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  // A folder of its own under /usr/local, not /usr/local/bin: a file added to a folder on PATH makes
  // every cached evaluation that searched PATH (other tests', running meanwhile) evaluate again.
  let folder: string;
  try {
    folder = fs.mkdtempSync("/usr/local/lib/ukb-test-");
  } catch {
    return t.pass("/usr/local/lib is not writable here");
  }
  t.teardown(() => fs.rmSync(folder, { recursive: true, force: true }));
  const tool = path.join(folder, "ukb-unowned-sh");
  fs.copyFileSync(fs.realpathSync("/bin/sh"), tool);
  fs.chmodSync(tool, 0o755);
  const dir = tempDir();
  writeRecipe(
    dir,
    "u.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh=${tool}"]);
export default derivation({ name: "unowned", builder: \`\${t}/bin/sh\`, args: ["-c", "if [ -e /usr/bin/python3 ]; then echo seen > $out; else echo hidden > $out; fi"] });
`,
  );
  t.is((await realise(t, dir, "u.ts", {})).text, "seen\n");
  // Said in the build's log, where `ukb log` shows it.
  const log = await ukb(["log", "u.ts", "--store", path.join(dir, "store")], { cwd: dir });
  t.regex(log.stdout, new RegExp(`sees all of the host's system directories: its host tool ${tool} belongs to no Debian package`));
});

test("what every Debian system has is there though no tool's package depends on it: bash for ldd, perl for shasum, libc-bin's UTF-8 locale", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  writeRecipe(
    dir,
    "base.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "ldd", "shasum", "grep"]);
export default derivation({
  name: "base",
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`P=\${t}/bin; { $P/ldd $P/grep | $P/grep -c libc.so; echo abc | $P/shasum; printf '\\\\303\\\\251\\\\n' | $P/grep -c '^.$'; } > $out 2>&1\`],
  env: { LC_ALL: "C.UTF-8" },
});
`,
  );
  for (const mode of MODES) {
    const { text } = await realise(t, dir, "base.ts", { UKB_SANDBOX: mode }, `store-${mode}`);
    // ldd (a bash script) finds grep's libc; shasum (perl) hashes; é is one character in C.UTF-8.
    t.is(text, "1\n03cfd743661f07975fa2f1220c5194cbaff48451  -\n1\n", mode);
  }
});

test.serial("a view kept in the user's cache is made again when a folder it bound whole gains a file", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const { hostViewFor } = await import("../src/build/host-view.js");
  const cache = tempDir();
  const before = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = cache;
  t.teardown(() => {
    if (before === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = before;
  });
  // The tools of a recipe, as a build of it finds them in its graph.
  const dir = tempDir();
  writeRecipe(dir, "stray.ts", looker(["sh"], ["/the/stray/file"], "stray"));
  const shown = await ukb(["show", "stray.ts"], { cwd: dir });
  t.is(shown.code, 0, shown.stderr);
  const drvs = Object.values((JSON.parse(shown.stdout) as { derivations: Record<string, { kind: string; hostTools?: { path: string }[]; hostPackages?: string[] }> }).derivations);
  const tools = drvs.find((d) => d.kind === "host-tools")!;
  const { view } = hostViewFor({ programs: tools.hostTools!.map((p) => p.path), packages: (tools.hostPackages ?? []).map((p) => p.replace(/=.*$/, "")) });
  t.truthy(view, "no view of sh's packages");
  t.true(fs.readdirSync(path.join(cache, "ukb", "host-views")).length > 0, "the view was not kept");
  // A folder the view binds whole (every entry of it is a shown package's), under /usr/share.
  const whole = view!.roots.flatMap((r) => r.entries).find((e) => e.kind === "bind" && e.path.startsWith("/usr/share/") && fs.statSync(e.path).isDirectory());
  t.truthy(whole, "no folder bound whole under /usr/share");
  const stray = path.join(whole!.path, `ukb-stray-${process.pid}`);
  try {
    fs.writeFileSync(stray, "not a package's\n");
  } catch {
    return t.log(`${whole!.path} is not writable here: the stale view is not tried`);
  }
  t.teardown(() => fs.rmSync(stray, { force: true }));
  writeRecipe(dir, "stray.ts", looker(["sh"], [stray], "stray"));
  // The same tools (so the same cached view, by name), in a new process: the folder's stamp changed.
  const { text } = await realise(t, dir, "stray.ts", { XDG_CACHE_HOME: cache });
  t.is(text, `hidden ${stray}\n`);
});

test("hostTools' packages option declares a library no program brings: zlib1g-dev's header and library are hashed and shown, an unknown package is a bad recipe", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  t.true(fs.existsSync("/usr/include/zlib.h"), "zlib1g-dev is not installed (scripts/install-deps.sh installs it)");
  const dir = tempDir();
  const recipe = (packages: string) => `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "gcc", "as", "ld", "perl"], { packages: ${packages} });
export default derivation({
  name: "zlib-user",
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`printf '#include <zlib.h>\\\\n#include <stdio.h>\\\\nint main(void){printf("%%lu\\\\\\\\n", crc32(0, (const unsigned char *)"abc", 3));return 0;}\\\\n' > z.c && gcc -o z z.c -lz && ./z > $out && perl -MDigest::SHA=sha1_hex -e 'print sha1_hex("abc"), "\\\\n"' >> $out\`],
  env: { PATH: \`\${t}/bin\` },
});
`;
  // libz-dev: the virtual name zlib1g-dev provides, as a Build-Depends line would say it.
  writeRecipe(dir, "z.ts", recipe(`["libz-dev", "perl"]`));
  const shown = await ukb(["show", "z.ts"], { cwd: dir });
  const tools = Object.values((JSON.parse(shown.stdout) as { derivations: Record<string, { kind: string; hostPackages?: string[] }> }).derivations).find((d) => d.kind === "host-tools")!;
  for (const name of ["zlib1g-dev", "libperl5.36", "perl"]) t.true(tools.hostPackages!.some((p) => p.startsWith(`${name}:`)), `${name} not in ${tools.hostPackages!.join(" ")}`);
  for (const mode of MODES) {
    // crc32("abc") and Digest::SHA, which perl-base alone lacks.
    t.is((await realise(t, dir, "z.ts", { UKB_SANDBOX: mode }, `store-${mode}`)).text, "891568578\na9993e364706816aba3e25717850c26c9cd0d89d\n", mode);
  }
  // Without them the same build fails: the header and the module are not there.
  writeRecipe(dir, "bare.ts", recipe("[]"));
  const bare = await ukb(["realise", "bare.ts", "--no-out-link"], { cwd: dir });
  t.is(bare.code, 1, bare.stderr);
  t.regex(bare.stderr, /zlib\.h: No such file or directory/);

  writeRecipe(dir, "bad.ts", recipe(`["no-such-package-ukb"]`));
  const bad = await ukb(["realise", "bad.ts", "--no-out-link"], { cwd: dir });
  t.is(bad.code, 2, bad.stderr);
  t.regex(bad.stderr, /bad\.ts:2: hostTools: package 'no-such-package-ukb' is not installed on this host/);
});

test("a view a pooled sandbox cannot make (a file gone since ukb listed it) fails the build with the file named; nothing is registered, and the view made again builds", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  const cache = tempDir();
  const env = { XDG_CACHE_HOME: cache, UKB_SANDBOX: "pool" };
  writeRecipe(dir, "look.ts", looker(["sh"], ["/usr/bin/xz"]));
  await realise(t, dir, "look.ts", env);
  // The kept view names a file the host no longer has; its folders' stamps still say it is current.
  const views = path.join(cache, "ukb", "host-views");
  const gone = `/usr/share/ukb-gone-${process.pid}`;
  for (const name of fs.readdirSync(views)) {
    const file = path.join(views, name);
    const kept = JSON.parse(fs.readFileSync(file, "utf8")) as { choice: { view?: { roots: { root: string; entries: unknown[] }[] } } };
    kept.choice.view!.roots.find((r) => r.root === "/usr")!.entries.push({ kind: "bind", path: gone });
    fs.writeFileSync(file, JSON.stringify(kept));
  }
  // A new derivation with the same tools: its sandbox is given the view before the build is set up.
  writeRecipe(dir, "look.ts", looker(["sh"], ["/usr/bin/xz", "/"]));
  const failed = await ukb(["realise", "look.ts", "--no-out-link", "--store", path.join(dir, "store")], { cwd: dir, env: { ...process.env, ...env } });
  t.is(failed.code, 1, failed.stderr);
  t.regex(failed.stderr, new RegExp(`build of 'look' failed: exit status 127[^]*cannot set the sandbox up: ${gone}: No such file or directory`));
  const verify = await ukb(["store", "verify", "--store", path.join(dir, "store")], { cwd: dir });
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.false(fs.readdirSync(path.join(dir, "store", "store")).some((b) => b.endsWith("-look") && fs.readFileSync(path.join(dir, "store", "store", b), "utf8").includes("seen /\n")));
  // The kept view removed: made again from dpkg's lists, it builds.
  fs.rmSync(views, { recursive: true });
  const { text } = await realise(t, dir, "look.ts", env);
  t.is(text, "hidden /usr/bin/xz\nseen /\n");
});
