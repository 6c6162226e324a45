/**
 * Every way ukb starts sandboxed builders — pooled sandboxes (one bwrap, many
 * builds), and one bwrap per build started by either co-process (Python's
 * posix_spawn, or the POSIX shell where python3 is missing) — builds the same
 * graph to the same paths, reports failures the same way, keeps to --jobs
 * even though sandboxes are prepared ahead of their slot, and leaves nothing
 * running when a build fails or ukb is killed.
 */
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { tempDir, ukb, ukbSpawn, writeRecipe } from "./helpers/ukb.js";

// Eight builders, each recording when it ran (a shared folder outside the store would break the
// sandbox, so each writes its own start and end times into its output).
const GRAPH = `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "date", "sleep", "cat"]);
const leaves = Array.from({ length: 8 }, (_, i) =>
  derivation({
    name: \`leaf-\${i}\`,
    builder: \`\${t}/bin/sh\`,
    args: ["-c", \`\${t}/bin/date +%s%N > $out; \${t}/bin/sleep 0.3; \${t}/bin/date +%s%N >> $out\`],
    env: { i: String(i), salt: process.env.SALT ?? "" },
  }),
);
export default derivation({
  name: "all",
  builder: \`\${t}/bin/sh\`,
  args: ["-c", \`\${t}/bin/cat \${leaves.join(" ")} > $out\`],
});
export const broken = derivation({ name: "broken", builder: \`\${t}/bin/sh\`, args: ["-c", "echo oops; exit 7"] });
`;

/** The ways to start sandboxed builders, by the environment that forces each. */
const STARTERS: Record<string, NodeJS.ProcessEnv> = {
  "pooled sandboxes": { UKB_SANDBOX: "pool" },
  "co-process python": { UKB_SANDBOX: "fresh", UKB_SPAWNER: "python" },
  "co-process sh": { UKB_SANDBOX: "fresh", UKB_SPAWNER: "sh" },
};

for (const [starter, forced] of Object.entries(STARTERS)) {
  test(`${starter}: builds, keeps to --jobs 1, reports failures`, async (t) => {
    const dir = tempDir();
    writeRecipe(dir, "graph.ts", GRAPH);
    const env = { ...process.env, ...forced, SALT: starter };
    const r = await ukb(["realise", "graph.ts", "--jobs", "1"], { cwd: dir, env });
    t.is(r.code, 0, r.stderr);
    const lines = fs.readFileSync(r.stdout.trim(), "utf8").trim().split("\n").map(BigInt);
    t.is(lines.length, 16);
    const spans = Array.from({ length: 8 }, (_, i) => [lines[2 * i]!, lines[2 * i + 1]!] as const).sort((a, b) => (a[0] < b[0] ? -1 : 1));
    for (let i = 1; i < spans.length; i++) t.true(spans[i]![0] >= spans[i - 1]![1], "two builders ran at once under --jobs 1");

    const f = await ukb(["realise", "graph.ts", "-A", "broken"], { cwd: dir, env });
    t.is(f.code, 1);
    t.regex(f.stderr, /build of 'broken' failed: exit status 7/);
    t.regex(f.stderr, /oops/);
  });
}

test("every way of starting builders gives the same store paths and bytes", async (t) => {
  const out: string[] = [];
  for (const forced of Object.values(STARTERS)) {
    const dir = tempDir();
    writeRecipe(dir, "graph.ts", GRAPH.replaceAll("${t}/bin/date +%s%N", "echo same"));
    const r = await ukb(["realise", "graph.ts", "--jobs", "2"], { cwd: dir, env: { ...process.env, ...forced } });
    t.is(r.code, 0, r.stderr);
    out.push(`${path.basename(r.stdout.trim())}\n${fs.readFileSync(r.stdout.trim(), "utf8")}`);
  }
  t.is(new Set(out).size, 1);
});

test("a python3 that fails to start: no pooled sandbox, the shell co-process takes over, the build completes", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "graph.ts", GRAPH.replaceAll("${t}/bin/date +%s%N", "echo same"));
  const r = await ukb(["realise", "graph.ts", "--jobs", "2"], { cwd: dir, env: { ...process.env, UKB_PYTHON: "/bin/false" } });
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8").trim().split("\n").length, 16);
});

/** Pids of processes whose command line holds `marker`. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

for (const [starter, forced] of Object.entries(STARTERS)) {
  test(`${starter}: a failure cancels running and prepared builders at once, none is left behind`, async (t) => {
    const dir = tempDir();
    const marker = `${process.pid}${starter.length}${Date.now() % 100000}`;
    writeRecipe(
      dir,
      "cancel.ts",
      `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep"]);
// "pause" and "broken" take both slots; when "pause" is done, one slow builder runs and the others
// wait in prepared sandboxes; then "broken" fails.
const pause = derivation({ name: "pause", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 1; echo > $out\`] });
const slow = Array.from({ length: 6 }, (_, i) =>
  derivation({ name: \`slow-\${i}\`, builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 300.${marker}; echo \${pause} > $out\`], env: { i: String(i) } }),
);
const broken = derivation({ name: "broken", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 3; exit 3\`] });
export default derivation({ name: "all", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${slow.join(" ")} \${broken} > $out\`] });
`,
    );
    const started = Date.now();
    const r = await ukb(["realise", "cancel.ts", "--jobs", "2"], { cwd: dir, env: { ...process.env, ...forced } });
    t.is(r.code, 1, r.stderr);
    t.regex(r.stderr, /build of 'broken' failed: exit status 3/);
    t.true(Date.now() - started < 60_000, "the run waited for the slow builders");
    // Killed sandboxes die asynchronously (bwrap's parent-death signal); on a loaded machine (CI, with
    // the servers of core-server and their started CLIs beside it) that takes seconds: up to 20 are given.
    for (let i = 0; i < 200 && processesWith(`300.${marker}`).length > 0; i++) await new Promise((res) => setTimeout(res, 100));
    t.deepEqual(processesWith(`300.${marker}`), [], "a builder outlived ukb");
  });
}

for (const [starter, forced] of Object.entries(STARTERS)) {
  test(`${starter}: kill -9 of ukb leaves no builder running, prepared sandboxes included`, async (t) => {
    const dir = tempDir();
    const marker = `${process.pid}${starter.length}9${Date.now() % 100000}`;
    writeRecipe(
      dir,
      "slow.ts",
      `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "sleep"]);
const slow = Array.from({ length: 5 }, (_, i) =>
  derivation({ name: \`slow-\${i}\`, builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 300.${marker}; echo > $out\`], env: { i: String(i) } }),
);
export default derivation({ name: "all", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${slow.join(" ")} > $out\`] });
`,
    );
    const child = ukbSpawn(["realise", "slow.ts", "--jobs", "2"], { cwd: dir, env: { ...process.env, ...forced } });
    for (let i = 0; i < 300 && processesWith(`sleep 300.${marker}`).length < 2; i++) await new Promise((res) => setTimeout(res, 100));
    // Two builders run; except with the shell co-process, the others wait in prepared sandboxes.
    await new Promise((res) => setTimeout(res, 1000));
    child.kill("SIGKILL");
    for (let i = 0; i < 200 && processesWith(`300.${marker}`).length > 0; i++) await new Promise((res) => setTimeout(res, 100));
    t.deepEqual(processesWith(`300.${marker}`), [], "a builder or sandbox outlived ukb");
  });
}
