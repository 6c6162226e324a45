/**
 * Issue 2's benchmarks: the BENCH-GRAPH layered graph (N = 100, 1000) cold and
 * no-op, peak RSS; the 10x10 sleep graph with 2 jobs against its ideal; a
 * no-op realise of recipes/hello.ts. With nix-build on the machine, the same
 * graphs through Nix in the same run, sandbox on for both.
 */
import fs from "node:fs";
import path from "node:path";
import { writeNixGraph, writeUkbGraph } from "./graph.js";
import { fmt, hasCommand, measure, median } from "./run.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const UKB = path.join(ROOT, "bin/ukb.cjs");
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
  console.log("| N | ukb cold s | ukb no-op s | ukb peak RSS MB | nix cold s | nix no-op s | cold ratio | no-op ratio |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const n of [100, 1000]) {
    const dir = path.join(WORK, `graph-${n}`);
    const file = writeUkbGraph(dir, { n, salt });
    const cold = ukbRealise(dir, file);
    const noop = median([0, 1, 2, 3, 4].map(() => ukbRealise(dir, file).seconds));
    let nixCold: number | undefined;
    let nixNoop: number | undefined;
    if (nix) {
      const nixFile = writeNixGraph(path.join(dir, "nix"), { n, salt });
      nixCold = nixBuild(nixFile).seconds;
      nixNoop = median([0, 1, 2].map(() => nixBuild(nixFile).seconds));
    }
    console.log(
      `| ${n} | ${fmt(cold.seconds)} | ${fmt(noop, 3)} | ${fmt(cold.peakRssMb, 0)} | ${fmt(nixCold)} | ${fmt(nixNoop, 3)} | ${nixCold ? fmt(nixCold / cold.seconds, 1) + "x" : "-"} | ${nixNoop ? fmt(nixNoop / noop, 1) + "x" : "-"} |`,
    );
  }

  const sleepDir = path.join(WORK, "sleep");
  const sleepFile = writeUkbGraph(sleepDir, { n: 100, salt, sleep: true });
  const sleep = ukbRealise(sleepDir, sleepFile).seconds;
  let nixSleep: number | undefined;
  if (nix) nixSleep = nixBuild(writeNixGraph(path.join(sleepDir, "nix"), { n: 100, salt, sleep: true })).seconds;
  const floor = sleepFloor(path.join(sleepDir, "floor"));
  console.log(`\n## core: 10x10 graph of 'sleep 0.2' builders, --jobs 2 (ideal 10.00 s)`);
  console.log(`ukb ${fmt(sleep)} s (+${fmt((sleep / 10 - 1) * 100, 1)}% over ideal)${nixSleep ? `; nix-build sandboxed ${fmt(nixSleep)} s (+${fmt((nixSleep / 10 - 1) * 100, 1)}%)` : ""}`);
  if (floor !== undefined) {
    console.log(`floor: the same 100 builder commands, no sandbox, no tool, two at a time by posix_spawn: ${fmt(floor)} s (+${fmt((floor / 10 - 1) * 100, 1)}%); ukb's own share ${fmt(sleep - floor)} s`);
  }

  const helloDir = path.join(WORK, "hello");
  fs.mkdirSync(helloDir, { recursive: true });
  const hello = path.join(ROOT, "recipes/hello.ts");
  ukbRealise(helloDir, hello);
  const runs = Array.from({ length: 15 }, () => ukbRealise(helloDir, hello).seconds);
  const nodeBaseline = median(Array.from({ length: 15 }, () => measure(process.execPath, ["-e", "0"]).seconds));
  console.log(`\n## core: no-op 'ukb realise recipes/hello.ts' (median of 15): ${fmt(median(runs) * 1000, 0)} ms; 'node -e 0' on this machine now: ${fmt(nodeBaseline * 1000, 0)} ms`);
}
