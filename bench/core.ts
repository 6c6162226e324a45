/**
 * Issue 2's benchmarks: the BENCH-GRAPH layered graph (N = 100, 1000) cold and
 * no-op, peak RSS; the 10x10 sleep graph with 2 jobs against its ideal; a
 * no-op realise of recipes/hello.ts; a cold evaluation of host tools reached
 * through update-alternatives; no-ops both by Node and through the
 * native launcher and the store's server; the edit loop (one derivation of
 * two changed before each realise) through the server's started CLI, through
 * Node, and through Nix. With nix-build on the machine, the same
 * graphs through Nix in the same run, sandbox on for both.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { writeNixGraph, writeUkbGraph } from "./graph.js";
import { fmt, hasCommand, measure, median, medianSeconds } from "./run.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const UKB = path.join(ROOT, "bin/ukb.cjs");
/** The command as users run it: the native launcher, which asks the store's server first. */
const UKB_COMMAND = path.join(ROOT, "bin/ukb");
const WORK = path.join(ROOT, ".bench");

const NIX_OPTIONS = [
  "--option", "build-users-group", "",
  "--option", "substituters", "",
  "--option", "sandbox", "true",
  "--option", "extra-sandbox-paths", "/bin /usr /lib /lib64",
  "--max-jobs", "2", "--cores", "1", "--no-out-link", "--quiet",
];

function ukbRealise(dir: string, file: string, extra: string[] = []) {
  const r = measure(process.execPath, [UKB, "realise", file, "--no-out-link", "--jobs", "2", "--store", path.join(dir, "store"), ...extra], { cwd: dir });
  if (r.code !== 0) throw new Error(`ukb failed:\n${r.stderr.slice(-2000)}`);
  return r;
}

/** The arguments of a no-op realise of `file` in `dir`'s store. */
const noopArgs = (dir: string, file: string) => ["realise", file, "--no-out-link", "--jobs", "2", "--store", path.join(dir, "store")];

/** Runs `body` with a `ukb server` for `dir`'s store, stopped after. */
function withServer<T>(dir: string, body: () => T): T {
  const store = ["--store", path.join(dir, "store")];
  const started = measure(process.execPath, [UKB, "server", "start", "--idle-timeout", "600", ...store]);
  if (started.code !== 0) throw new Error(`ukb server start failed:\n${started.stderr}`);
  try {
    return body();
  } finally {
    measure(process.execPath, [UKB, "server", "stop", ...store]);
  }
}

function nixBuild(file: string) {
  const r = measure("nix-build", [...NIX_OPTIONS, file]);
  if (r.code !== 0) throw new Error(`nix-build failed:\n${r.stderr.slice(-2000)}`);
  return r;
}

/**
 * What the sleep graph costs with no build tool at all: its 100 builder
 * commands, layer after layer, two at a time, each started by Python's
 * posix_spawn (the cheapest start on this machine). The 0.2 s sleeps are
 * the ideal; the rest is the builders' own sh and sleep execs, which every
 * tool pays. Undefined without python3.
 */
function sleepFloor(dir: string): number | undefined {
  if (!fs.existsSync("/usr/bin/python3")) return undefined;
  fs.mkdirSync(dir, { recursive: true });
  const script = `
import os, sys, threading
out = sys.argv[1]
def worker(queue):
    while queue:
        i = queue.pop(0)
        env = {"name": "node-%04d" % i, "out": "%s/%d" % (out, i)}
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "/bin/sleep 0.2; echo $name > $out"], env)
        os.waitpid(pid, 0)
for layer in range(10):
    queue = list(range(10 * layer, 10 * layer + 10))
    workers = [threading.Thread(target=worker, args=(queue,)) for _ in range(2)]
    for w in workers: w.start()
    for w in workers: w.join()
`;
  const r = measure("/usr/bin/python3", ["-I", "-S", "-c", script, dir]);
  // Timed like ukb and Nix: the whole process, its own start included.
  return r.code === 0 ? r.seconds : undefined;
}

export async function benchCore(): Promise<void> {
  fs.rmSync(WORK, { recursive: true, force: true });
  const nix = hasCommand("nix-build");
  const salt = `${Date.now()}`;
  console.log(`\n## core: layered graph (BENCH-GRAPH.md), --jobs 2, sandbox on${nix ? ", against nix-build (sandboxed)" : " (nix-build not found: no comparison)"}`);
  const sandbox = process.env.UKB_SANDBOX === "fresh" ? `one bwrap per build, started by the ${process.env.UKB_SPAWNER ?? "python"} co-process` : "pooled sandboxes";
  console.log(`builders run in ${sandbox} (UKB_SANDBOX=pool|fresh and UKB_SPAWNER=python|sh pick)`);
  console.log("no-op: median of hyperfine runs; 'server' is bin/ukb (the native launcher) with `ukb server start` on the store, 'Node' is node bin/ukb.cjs");
  console.log("| N | ukb cold s | nix cold s | cold ratio | ukb no-op s, server | ukb no-op s, Node | nix no-op s | no-op ratio, server | no-op ratio, Node | ukb peak RSS MB |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const n of [100, 1000]) {
    const dir = path.join(WORK, `graph-${n}`);
    const file = writeUkbGraph(dir, { n, salt });
    const cold = ukbRealise(dir, file);
    const noop = medianSeconds(process.execPath, [UKB, ...noopArgs(dir, file)], 10, { cwd: dir });
    const served = withServer(dir, () => medianSeconds(UKB_COMMAND, noopArgs(dir, file), 30, { cwd: dir }));
    let nixCold: number | undefined;
    let nixNoop: number | undefined;
    if (nix) {
      const nixFile = writeNixGraph(path.join(dir, "nix"), { n, salt });
      nixCold = nixBuild(nixFile).seconds;
      nixNoop = medianSeconds("nix-build", [...NIX_OPTIONS, nixFile], 5);
    }
    const ratio = (x: number | undefined, y: number) => (x ? fmt(x / y, 1) + "x" : "-");
    console.log(
      `| ${n} | ${fmt(cold.seconds)} | ${fmt(nixCold)} | ${ratio(nixCold, cold.seconds)} | ${fmt(served, 4)} | ${fmt(noop, 3)} | ${fmt(nixNoop, 3)} | ${ratio(nixNoop, served)} | ${ratio(nixNoop, noop)} | ${fmt(cold.peakRssMb, 0)} |`,
    );
  }

  const sleepDir = path.join(WORK, "sleep");
  const sleepFile = writeUkbGraph(sleepDir, { n: 100, salt, sleep: true });
  // With --json, ukb's events say when its first builder started and its last ended (epoch ms).
  const launchedAt = Date.now();
  const sleepRun = ukbRealise(sleepDir, sleepFile, ["--json"]);
  const sleep = sleepRun.seconds;
  const endedAt = launchedAt + sleep * 1000;
  const builds = sleepRun.stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { type: string; name?: string; time: number })
    .filter((e) => (e.type === "start" || e.type === "done") && e.name?.startsWith("node-"));
  const firstStart = Math.min(...builds.filter((e) => e.type === "start").map((e) => e.time));
  const lastDone = Math.max(...builds.filter((e) => e.type === "done").map((e) => e.time));
  // As users run it (bin/ukb): with the store's server up, its started CLI runs the realise, and Node's start is not paid.
  const servedSleepFile = writeUkbGraph(sleepDir, { n: 100, salt: `${salt}-served`, sleep: true });
  const servedSleep = withServer(sleepDir, () => {
    waitForStartedCli(path.join(sleepDir, "store"));
    const r = measure(UKB_COMMAND, ["realise", servedSleepFile, "--no-out-link", "--jobs", "2", "--store", path.join(sleepDir, "store")], { cwd: sleepDir });
    if (r.code !== 0) throw new Error(`ukb failed:\n${r.stderr.slice(-2000)}`);
    if ((serverStatus(path.join(sleepDir, "store"))?.ran ?? 0) !== 1) throw new Error("the server's started CLI did not run the sleep graph");
    return r.seconds;
  });
  let nixSleep: number | undefined;
  if (nix) nixSleep = nixBuild(writeNixGraph(path.join(sleepDir, "nix"), { n: 100, salt, sleep: true })).seconds;
  const floor = sleepFloor(path.join(sleepDir, "floor"));
  console.log(`\n## core: 10x10 graph of 'sleep 0.2' builders, --jobs 2 (ideal 10.00 s)`);
  console.log(`ukb through bin/ukb, run by the store's server's started CLI: ${fmt(servedSleep)} s (+${fmt((servedSleep / 10 - 1) * 100, 1)}% over ideal)`);
  console.log(`ukb through Node ${fmt(sleep)} s (+${fmt((sleep / 10 - 1) * 100, 1)}% over ideal)${nixSleep ? `; nix-build sandboxed ${fmt(nixSleep)} s (+${fmt((nixSleep / 10 - 1) * 100, 1)}%)` : ""}`);
  if (floor !== undefined) {
    console.log(`floor: the same 100 builder commands, no sandbox, no tool, two at a time by posix_spawn: ${fmt(floor)} s (+${fmt((floor / 10 - 1) * 100, 1)}%); ukb's own share ${fmt(sleep - floor)} s`);
  }
  console.log(
    `where ukb's time goes: ${fmt((firstStart - launchedAt) / 1000)} s before its first 'sleep' builder starts (Node, the recipe's evaluation, the store, sandboxes), ` +
      `${fmt((lastDone - firstStart) / 1000)} s from there to the last one's registration, ${fmt((endedAt - lastDone) / 1000)} s after (the 'top' derivation, exit)`,
  );

  const helloDir = path.join(WORK, "hello");
  fs.rmSync(helloDir, { recursive: true, force: true });
  fs.mkdirSync(helloDir, { recursive: true });
  const hello = path.join(ROOT, "recipes/hello.ts");
  // As a user runs it: the first realise through bin/ukb builds, then starts the store's server itself.
  const first = measure(UKB_COMMAND, noopArgs(helloDir, hello), { cwd: helloDir });
  if (first.code !== 0) throw new Error(`ukb failed:\n${first.stderr.slice(-2000)}`);
  const helloStore = ["--store", path.join(helloDir, "store")];
  try {
    for (let waited = 0; measure(process.execPath, [UKB, "server", "status", ...helloStore]).code !== 0; waited += 0.1) {
      if (waited > 15) throw new Error("the first realise through bin/ukb started no server");
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
    const byServer = medianSeconds(UKB_COMMAND, noopArgs(helloDir, hello), 30, { cwd: helloDir });
    const byNode = medianSeconds(process.execPath, [UKB, ...noopArgs(helloDir, hello)], 30, { cwd: helloDir });
    const nodeBaseline = medianSeconds(process.execPath, ["-e", "0"], 30);
    console.log(
      `\n## core: no-op 'ukb realise recipes/hello.ts' (median of 30): ${fmt(byNode * 1000, 0)} ms by Node, ` +
        `${fmt(byServer * 1000, 1)} ms through bin/ukb and the server its first realise started; 'node -e 0' on this machine now: ${fmt(nodeBaseline * 1000, 0)} ms`,
    );
  } finally {
    measure(process.execPath, [UKB, "server", "stop", ...helloStore]);
  }
  benchColdEvaluation();
  benchEditLoop(nix);
}

/** `ukb server status --json` of `store`, or undefined when no server runs. */
function serverStatus(store: string): { startedCli: string; ran: number } | undefined {
  const r = spawnSync(process.execPath, [UKB, "server", "status", "--json", "--store", store], { encoding: "utf8" });
  return (JSON.parse(r.stdout || "null") as { startedCli: string; ran: number } | null) ?? undefined;
}

/** Waits up to 15 s until the server of `store` has its started CLI ready (it starts one after each run). */
function waitForStartedCli(store: string): void {
  for (let waited = 0; waited < 15_000; waited += 50) {
    if (serverStatus(store)?.startedCli === "ready") return;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  throw new Error("the server's started CLI never became ready");
}

/**
 * The edit loop: a recipe of hello's shape (host tools, a greeting, its
 * upper-cased copy) whose greeting's environment changes before each
 * realise, so each realise evaluates once and builds two derivations. As a
 * person edits: half a second between realises (not timed). ukb through
 * bin/ukb and the store's server (its started CLI runs it), ukb through
 * Node (UKB_NO_SERVER=1), and nix-build sandboxed, interleaved.
 */
export function benchEditLoop(nix: boolean): void {
  const dir = path.join(WORK, "edit");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const ukbFile = path.join(dir, "edit.ts");
  const nixFile = path.join(dir, "edit.nix");
  const writeUkb = (salt: string) =>
    fs.writeFileSync(
      ukbFile,
      `import { derivation, hostTools } from "ukb";\nconst tools = hostTools(["sh", "tr"]);\n` +
        `export const greeting = derivation({ name: "greeting", builder: \`\${tools}/bin/sh\`, args: ["-c", "echo hello > $out"], env: { salt: "${salt}" } });\n` +
        `export default derivation({ name: "shout", builder: \`\${tools}/bin/sh\`, args: ["-c", \`\${tools}/bin/tr a-z A-Z < \${greeting} > $out\`] });\n`,
    );
  const writeNix = (salt: string) =>
    fs.writeFileSync(
      nixFile,
      `let greeting = builtins.derivation { name = "greeting"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo hello > $out" ]; salt = "${salt}"; };\n` +
        `in builtins.derivation { name = "shout"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/usr/bin/tr a-z A-Z < \${greeting} > $out" ]; }\n`,
    );
  const store = path.join(dir, "store");
  const args = ["realise", ukbFile, "--no-out-link", "--store", store];
  const runs = 20;
  let counter = 0;
  const salt = () => `${Date.now()}-${counter++}`;
  // The first realise builds the host tools; then the store's server.
  writeUkb(salt());
  if (measure(process.execPath, [UKB, ...args], { cwd: dir }).code !== 0) throw new Error("ukb failed on the edit-loop recipe");
  const times = { server: [] as number[], node: [] as number[], nix: [] as number[] };
  withServer(dir, () => {
    // One edit, half a second as a person takes, then the timed realise.
    const edit = (times: number[], write: () => void, cmd: string, cmdArgs: string[], env: NodeJS.ProcessEnv = {}) => {
      write();
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
      const r = measure(cmd, cmdArgs, { cwd: dir, env });
      if (r.code !== 0) throw new Error(`${path.basename(cmd)} failed:\n${r.stderr.slice(-2000)}`);
      times.push(r.seconds);
    };
    for (let i = 0; i < runs; i++) {
      edit(times.server, () => (writeUkb(salt()), waitForStartedCli(store)), UKB_COMMAND, args);
      edit(times.node, () => writeUkb(salt()), UKB_COMMAND, args, { UKB_NO_SERVER: "1" });
      if (nix) edit(times.nix, () => writeNix(salt()), "nix-build", [...NIX_OPTIONS, nixFile]);
    }
    const ran = serverStatus(store)?.ran ?? 0;
    if (ran < runs) throw new Error(`the server's started CLI ran ${ran} of ${runs} edits`);
  });
  const ms = (xs: number[]) => (xs.length ? `${fmt(median(xs) * 1000, 0)} ms (${fmt(Math.min(...xs) * 1000, 0)}–${fmt(Math.max(...xs) * 1000, 0)})` : "-");
  console.log(`\n## core: the edit loop: a recipe of hello's shape, its greeting changed before each realise (2 derivations built), median (min–max) of ${runs}`);
  console.log(`ukb through bin/ukb, run by the server's started CLI: ${ms(times.server)}; ukb through Node: ${ms(times.node)}${nix ? `; nix-build sandboxed: ${ms(times.nix)}` : ""}`);
  if (nix) console.log(`nix / ukb (started CLI): ${fmt(median(times.nix) / median(times.server), 2)}x; nix / ukb (Node): ${fmt(median(times.nix) / median(times.node), 2)}x`);
}

/**
 * What every edit of a recipe costs before its first build: an evaluation,
 * nothing cached. Host tools reached through update-alternatives (cc, awk)
 * once sent ukb through all of dpkg's file lists on each one.
 */
export function benchColdEvaluation(): void {
  const dir = path.join(WORK, "alternatives");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, "tools.ts"),
    `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh", "awk", "cc"]);\nexport default derivation({ name: "tools", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
  );
  const args = [UKB, "realise", "tools.ts", "--no-eval-cache", "--dry-run", "--store", path.join(dir, "store")];
  const cold = medianSeconds(process.execPath, args, 10, { cwd: dir });
  console.log(`\n## core: a cold evaluation of hostTools(["sh", "awk", "cc"]) (realise --no-eval-cache --dry-run, median of 10): ${fmt(cold * 1000, 0)} ms`);
}
