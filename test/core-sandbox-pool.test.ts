/**
 * Pooled sandboxes (src/build/sandbox-pool.ts): one bwrap runs build after
 * build. What a build sees must not depend on that: no capabilities, the
 * store's root folder out of reach, and nothing left over from the build
 * that ran before it in the same sandbox.
 */
import test from "ava";
import fs from "node:fs";
import { tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const POOL = { ...process.env, UKB_SANDBOX: "pool" };

test("a build in a pooled sandbox has no capability and cannot reach the store's root or remount its inputs", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "probe.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "grep", "ls", "mount", "umount", "touch"]);
const input = derivation({ name: "input", builder: \`\${t}/bin/sh\`, args: ["-c", "echo in > $out"] });
export default derivation({
  name: "probe",
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`exec > $out 2>&1
P=\${t}/bin
$P/grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status
$P/ls /.ukb-host >/dev/null 2>&1 && echo HOST-VISIBLE
$P/umount /.ukb-host 2>/dev/null && echo HOST-UNMOUNTED
$P/mount -o remount,rw \${input} 2>/dev/null && echo INPUT-REMOUNTED
echo x 2>/dev/null > \${input} && echo INPUT-WRITTEN
$P/touch /dev/left 2>/dev/null && echo DEV-WRITTEN
echo store: $($P/ls /ukb/store)
true\`],
});
`,
  );
  const r = await ukb(["realise", "probe.ts", "--no-out-link"], { cwd: dir, env: POOL });
  t.is(r.code, 0, r.stderr);
  const report = fs.readFileSync(r.stdout.trim(), "utf8");
  for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) t.regex(report, new RegExp(`${set}:\\s+0+\\n`), report);
  t.notRegex(report, /HOST-VISIBLE|HOST-UNMOUNTED|INPUT-REMOUNTED|INPUT-WRITTEN|DEV-WRITTEN/, report);
  // The build's inputs (and its own output) only, not the rest of the store.
  const store = /store: (.*)/.exec(report)![1]!.split(" ").map((b) => b.replace(/^[a-z0-9]{32}-/, "")).sort();
  t.deepEqual(store, ["host-tools", "input", "probe"]);
});

test("nothing of a build is left for the next one in the same sandbox: processes, /tmp, /dev/shm, SysV IPC", async (t) => {
  const dir = tempDir();
  const marker = `${process.pid}${Date.now() % 100000}`;
  writeRecipe(
    dir,
    "chain.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep", "ipcmk", "ipcs", "ls", "cat", "readlink", "tr"]);
const P = \`\${t}/bin\`;
// The first build leaves a process running, files in /tmp and /dev/shm, and a shared memory segment.
const first = derivation({
  name: "first",
  builder: \`\${P}/sh\`,
  args: ["-c", \`(\${P}/sleep 300.${marker} &) ; echo > /tmp/left; echo > /dev/shm/left; \${P}/ipcmk -M 4096 >/dev/null; \${P}/readlink /proc/self/ns/net > $out\`],
});
// The next one (it depends on the first, so it runs after it, and with --jobs 1 in the sandbox the first left idle).
export default derivation({
  name: "second",
  builder: \`\${P}/sh\`,
  args: ["-c", \`exec > $out; \${P}/cat \${first}; \${P}/readlink /proc/self/ns/net; echo tmp: $(\${P}/ls -A /tmp) $(\${P}/ls -A /dev/shm); echo shm: $(\${P}/ipcs -m | \${P}/tr -cd 0-9 | \${P}/tr -d 0); \${P}/cat /proc/[0-9]*/cmdline | \${P}/tr '\\\\0' ' '\`],
});
`,
  );
  const r = await ukb(["realise", "chain.ts", "--no-out-link", "--jobs", "1"], { cwd: dir, env: POOL });
  t.is(r.code, 0, r.stderr);
  const [firstNet, secondNet, tmp, shm, processes] = fs.readFileSync(r.stdout.trim(), "utf8").split("\n");
  t.is(firstNet, secondNet, "the two builds did not share a sandbox: this test proves nothing");
  t.is(tmp, "tmp:");
  t.is(shm, "shm:");
  t.false(processes!.includes(`300.${marker}`), "the first build's process was still running");
});

test("UKB_SANDBOX=pool where pooled sandboxes cannot run: one line says why, nothing is built", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "one.ts", `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "one", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`);
  const r = await ukb(["realise", "one.ts", "--no-out-link"], { cwd: dir, env: { ...POOL, UKB_PYTHON: `${dir}/python3` } });
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /pooled sandboxes cannot run here: UKB_PYTHON .* is outside the system directories/);
  t.is(r.stdout, "");
});
