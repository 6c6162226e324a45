/**
 * Pooled sandboxes (src/build/sandbox-pool.ts): one bwrap runs build after
 * build. What a build sees must not depend on that: no capabilities, the
 * store's root folder out of reach, and nothing left over from the build
 * that ran before it in the same sandbox.
 */
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { outcome, tempDir, UKB, ukb, ukbSpawn, writeRecipe, type RunResult } from "./helpers/ukb.js";

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

for (const [mode, sandbox] of [["pooled", "pool"], ["fresh", "fresh"]] as const) {
  test(`${mode} sandboxes: a store path that is a symlink stays one, with no way to the host's tree, the store's root or the sysctls`, async (t) => {
    const dir = tempDir();
    writeRecipe(
      dir,
      "links.ts",
      `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "ln", "cat"]);
const sh = \`\${t}/bin/sh\`;
const root = derivation({ name: "root", builder: sh, args: ["-c", \`\${t}/bin/ln -s / $out\`] });
const up = derivation({ name: "up", builder: sh, args: ["-c", \`\${t}/bin/ln -s ../.. $out\`] });
export default derivation({
  name: "reader",
  builder: sh,
  args: ["-c", \`exec > $out 2>/dev/null
for l in \${root} \${up}; do
  [ -e $l/etc/passwd ] && echo HOST-ETC-VISIBLE
  echo x > $l/.ukb-host/PWNED && echo STORE-ROOT-WRITTEN
  echo x > $l/PWNED && echo ROOT-WRITTEN
done
\${t}/bin/cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern && echo HOST-SYSCTL-WRITTEN
echo "40000 40001" > /proc/sys/net/ipv4/ip_local_port_range && echo SYSCTL-WRITTEN
echo done\`],
});
`,
    );
    const r = await ukb(["realise", "links.ts", "--no-out-link"], { cwd: dir, env: { ...process.env, UKB_SANDBOX: sandbox } });
    t.is(r.code, 0, r.stderr);
    t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "done\n");
    t.false(fs.existsSync(path.join(dir, "cache/PWNED")));
    t.false(fs.existsSync("/PWNED"));
  });
}

/** Realises `file` in pooled sandboxes, --jobs 1, with pipes up to fd 11 inherited (as from a make jobserver). */
function realiseInheriting(dir: string, file: string): Promise<RunResult> {
  const child = ukbSpawn(["realise", file, "--no-out-link", "--jobs", "1"], {
    cwd: dir,
    // The system's python3, not a shim in front of it (hostTools takes programs from the system directories only).
    env: { ...process.env, UKB_SANDBOX: "pool", PATH: "/usr/bin:/bin" },
    extraFds: 9,
  });
  return outcome(child);
}

test("in both kinds of sandbox, under any umask of the user's: a builder has no capability and umask 022", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "caps.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "grep"]);
export default derivation({ name: "caps", builder: \`\${t}/bin/sh\`, args: ["-c", \`{ umask; \${t}/bin/grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; } > $out\`] });
`,
  );
  for (const mode of ["pool", "fresh"]) {
    // The user's umask is 077: a builder's own files must not take it (a tar of them would differ).
    const r = await ukb(["-c", `umask 077; exec "${process.execPath}" "$@"`, "sh", UKB, "realise", "caps.ts", "--no-out-link", "--store", `store-${mode}`], {
      cwd: dir,
      env: { UKB_SANDBOX: mode },
      command: "/bin/sh",
    });
    t.is(r.code, 0, `${mode}: ${r.stderr}`);
    const report = fs.readFileSync(r.stdout.trim(), "utf8");
    t.regex(report, /^0022\n/, `${mode}: ${report}`);
    for (const set of ["CapPrm", "CapEff", "CapBnd"]) t.regex(report, new RegExp(`${set}:\\s+0+\\n`), `${mode}: ${report}`);
  }
});

test("in a pooled sandbox, keys, signals to PID 1 and descriptors ukb inherited do not carry over to the next build", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "state.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "cat", "grep", "kill", "readlink", "python3"]);
const sh = \`\${t}/bin/sh\`;
// The first build adds a key to the namespace's user keyring and signals PID 1.
const first = derivation({
  name: "first",
  builder: sh,
  args: ["-c", \`\${t}/bin/python3 -I -S -c 'import ctypes; l = ctypes.CDLL(None); p = l.syscall(250, 22, -1, -3); [l.syscall(248, b"user", b"ukb-leftover", b"x", 1, k) for k in (-4, -5, p)]'
\${t}/bin/kill -INT 1; \${t}/bin/readlink /proc/self/ns/net > $out\`],
});
export default derivation({
  name: "second",
  builder: sh,
  args: ["-c", \`exec > $out; \${t}/bin/cat \${first}; \${t}/bin/readlink /proc/self/ns/net
\${t}/bin/python3 -I -S -c 'import ctypes; l = ctypes.CDLL(None); p = l.syscall(250, 22, -1, -3); print(sum(l.syscall(250, 10, k, b"user", b"ukb-leftover", 0) >= 0 for k in (-3, -4, -5, p)))'
for f in /proc/self/fd/*; do echo "fd \${"$"}{f##*/}"; done\`],
});
`,
  );
  const r = await realiseInheriting(dir, "state.ts");
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stderr, /KeyboardInterrupt|Traceback/);
  const [firstNet, secondNet, keys, ...rest] = fs.readFileSync(r.stdout.trim(), "utf8").trim().split("\n");
  t.is(firstNet, secondNet, "the two builds did not share a sandbox: this test proves nothing");
  // Searched for in the keyrings the build has (session, user, user session, persistent): a key the first build
  // left there would be found. (/proc/keys may still list it, unlinked, until the kernel's key gc runs.)
  t.is(keys, "0", "the first build's key reached the second");
  const fds = rest.map((l) => Number(l.replace("fd ", "")));
  t.false(fds.includes(11), `fds: ${fds.join(" ")}`);
});

test("a build that lowers its pooled sandbox's own limits gets that sandbox retired: the next build has the usual limits", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "limits.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "prlimit", "cat"]);
const sh = \`\${t}/bin/sh\`;
const first = derivation({ name: "first", builder: sh, args: ["-c", \`\${t}/bin/prlimit --pid 1 --nofile=20:20 --fsize=100000:100000; echo 0x7f > /proc/1/coredump_filter; echo > $out\`] });
export default derivation({
  name: "second",
  builder: sh,
  args: ["-c", \`exec > $out; echo \${first} >/dev/null; \${t}/bin/prlimit --pid $$ --nofile --fsize --noheadings --output SOFT,HARD; \${t}/bin/cat /proc/self/coredump_filter\`],
});
`,
  );
  const r = await realiseInheriting(dir, "limits.ts");
  t.is(r.code, 0, r.stderr);
  const [nofile, fsize, coredump] = fs.readFileSync(r.stdout.trim(), "utf8").split("\n").map((l) => l.trim());
  t.notRegex(nofile!, /^20\s+20$/);
  t.notRegex(fsize!, /^100000\s+100000$/);
  t.not(coredump, "0000007f");
});

/** Pids of the pooled sandboxes' PID 1 (python) serving the store under `dir`, each with whether it runs a builder now. */
function sandboxesOf(dir: string): { pid: number; busy: boolean }[] {
  const parentOf = new Map<number, number>();
  const cmdline = new Map<number, string>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      cmdline.set(Number(entry), fs.readFileSync(`/proc/${entry}/cmdline`, "utf8"));
    } catch {
      // gone meanwhile
    }
  }
  const found: { pid: number; busy: boolean }[] = [];
  for (const [pid, cmd] of cmdline) {
    const parent = parentOf.get(pid);
    if (!cmd.includes("ukb sandbox") || parent === undefined || !cmdline.get(parent)?.includes(`${dir}/cache\0/.ukb-host`)) continue;
    found.push({ pid, busy: [...parentOf].some(([, p]) => p === pid) });
  }
  return found;
}

test("a spare pooled sandbox that dies (the OOM killer, say) is replaced: every build still completes", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "graph.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep", "cat"]);
const sh = \`\${t}/bin/sh\`;
const a = derivation({ name: "a", builder: sh, args: ["-c", \`\${t}/bin/sleep 3; echo a > $out\`] });
const b = derivation({ name: "b", builder: sh, args: ["-c", \`\${t}/bin/sleep 3; echo b > $out\`] });
const cs = [1, 2, 3].map((i) => derivation({ name: \`c\${i}\`, builder: sh, args: ["-c", \`\${t}/bin/cat \${a} \${b} > $out\`] }));
export default derivation({ name: "all", builder: sh, args: ["-c", \`\${t}/bin/cat \${cs.join(" ")} > $out\`] });
`,
  );
  const finished = outcome(ukbSpawn(["realise", "graph.ts", "--no-out-link", "--jobs", "3"], { cwd: dir, env: { ...process.env, UKB_SANDBOX: "pool" } }));
  // While a and b run, kill every sandbox that waits idle.
  let killed = 0;
  for (let i = 0; i < 50 && killed === 0; i++) {
    await new Promise((res) => setTimeout(res, 100));
    const sandboxes = sandboxesOf(dir);
    if (sandboxes.filter((s) => s.busy).length < 2) continue;
    for (const s of sandboxes.filter((s) => !s.busy)) {
      process.kill(s.pid, "SIGKILL");
      killed++;
    }
  }
  t.true(killed > 0, "no idle sandbox was found: this test proves nothing");
  const r = await finished;
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "a\nb\na\nb\na\nb\n");
});
