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

test("a build sees its tools' packages and /bin/sh, not the rest of the host's /usr, in a pooled sandbox and in one bwrap per build alike", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  // On the host: all of them. ls is coreutils', so are dir and sleep; python3 and the compiler are no one's here.
  const paths = ["/bin/sh", "/usr/bin/ls", "/usr/bin/dir", "/usr/bin/sleep", "/usr/bin/python3", "/usr/bin/gcc", "/usr/include/stdio.h"];
  for (const p of paths) t.true(fs.existsSync(p), `${p} is not on this host`);
  const dir = tempDir();
  writeRecipe(dir, "look.ts", looker(["sh", "ls"], paths));
  const seen: Record<string, string> = {};
  for (const mode of MODES) {
    const { path: out, text } = await realise(t, dir, "look.ts", { UKB_SANDBOX: mode }, `store-${mode}`);
    t.is(text, ["seen /bin/sh", "seen /usr/bin/ls", "seen /usr/bin/dir", "seen /usr/bin/sleep", "hidden /usr/bin/python3", "hidden /usr/bin/gcc", "hidden /usr/include/stdio.h", ""].join("\n"), mode);
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

test("pooled sandboxes keep to one view: a build after one of other tools, in the same ukb, sees its own tools' packages only", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  // The compiler's own file (/usr/bin/gcc is a link of another package, gcc, which hostTools goes past).
  const gcc = fs.realpathSync("/usr/bin/gcc");
  writeRecipe(
    dir,
    "two.ts",
    `import { derivation, hostTools } from "ukb";
const coreutils = hostTools(["sh", "ls", "umount"], { name: "coreutils-tools" });
const compiler = hostTools(["sh", "gcc"], { name: "compiler-tools" });
const probe = (t: typeof coreutils, name: string, after?: unknown) => derivation({
  name,
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`: \${after ?? ""}; for f in /usr/bin/ls ${gcc} /usr/bin/umount; do if [ -e $f ]; then echo "seen $f"; else echo "hidden $f"; fi; done > $out
/usr/bin/umount -l /usr 2>/dev/null && echo "UNMOUNTED" >> $out; true\`],
});
const first = probe(coreutils, "first");
const second = probe(compiler, "second", first);
export default probe(coreutils, "third", second);
`,
  );
  const r = await ukb(["realise", "two.ts", "--no-out-link", "--jobs", "1"], { cwd: dir, env: { ...process.env, UKB_SANDBOX: "pool" } });
  t.is(r.code, 0, r.stderr);
  const store = path.join(dir, "cache", "store");
  const read = (name: string) => fs.readFileSync(path.join(store, fs.readdirSync(store).find((b) => b.endsWith(`-${name}`))!), "utf8");
  const coreutilsView = `seen /usr/bin/ls\nhidden ${gcc}\nseen /usr/bin/umount\n`;
  t.is(read("first"), coreutilsView);
  t.is(read("second"), `hidden /usr/bin/ls\nseen ${gcc}\nhidden /usr/bin/umount\n`);
  // Back to the first view (a sandbox of it may be spare again, or a new one): and no builder can take the view away.
  t.is(read("third"), coreutilsView);
});

test("a hostTools output whose derivation the store does not know (substituted in another's closure) still shows its tools' packages", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const dir = tempDir();
  writeRecipe(dir, "a.ts", looker(["sh", "ls"], ["/usr/bin/ls", "/usr/bin/python3"], "a"));
  await realise(t, dir, "a.ts", {});
  // Forget which derivation made each path, as a substituted closure leaves them.
  const db = new Database(path.join(dir, "store", "ukb.sqlite"));
  db.prepare("DELETE FROM drv_outputs").run();
  db.close();
  writeRecipe(dir, "b.ts", looker(["sh", "ls"], ["/usr/bin/ls", "/usr/bin/python3"], "b"));
  const { text } = await realise(t, dir, "b.ts", {});
  t.is(text, "seen /usr/bin/ls\nhidden /usr/bin/python3\n");
});

test("a host tool no package owns: the build sees the system directories whole (what the tool runs with is unknown)", async (t) => {
  if (!HAS_DPKG) return t.pass("no dpkg database on this machine");
  const tool = `/usr/local/bin/ukb-unowned-sh-${process.pid}`;
  try {
    fs.copyFileSync(fs.realpathSync("/bin/sh"), tool);
    fs.chmodSync(tool, 0o755);
  } catch {
    return t.pass("/usr/local/bin is not writable here");
  }
  t.teardown(() => fs.rmSync(tool, { force: true }));
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
});
