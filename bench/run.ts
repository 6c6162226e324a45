/** Running a command and measuring it: wall time and peak RSS (GNU time). */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface Measured {
  seconds: number;
  peakRssMb?: number;
  code: number;
  stderr: string;
}

const gnuTime = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;

export function measure(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Measured {
  const argv = gnuTime ? ["-f", "UKB_BENCH_RSS_KB=%M", cmd, ...args] : args;
  const started = performance.now();
  const r = spawnSync(gnuTime ?? cmd, argv, { cwd: options.cwd, env: { ...process.env, ...options.env }, encoding: "utf8", maxBuffer: 256 << 20 });
  const seconds = (performance.now() - started) / 1000;
  const m = /UKB_BENCH_RSS_KB=(\d+)/.exec(r.stderr ?? "");
  return { seconds, code: r.status ?? 1, stderr: r.stderr ?? "", ...(m ? { peakRssMb: Number(m[1]) / 1024 } : {}) };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function hasCommand(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`]).status === 0;
}

export function fmt(x: number | undefined, digits = 2): string {
  return x === undefined ? "-" : x.toFixed(digits);
}

/**
 * The median wall time of `runs` runs of a short command (after one warm-up),
 * through hyperfine when it is there: measured from a Node process, every
 * run would also pay a fork of Node (~11 ms here), more than a no-op through
 * ukb's server takes. Falls back to measure(). Throws if a run fails.
 */
export function medianSeconds(cmd: string, args: string[], runs: number, options: { cwd?: string } = {}): number {
  if (hasCommand("hyperfine")) {
    const json = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "ukb-bench-")), "times.json");
    const quoted = [cmd, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
    const r = spawnSync("hyperfine", ["-N", "--warmup", "1", "--runs", String(runs), "--export-json", json, quoted], { cwd: options.cwd, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${(r.stderr ?? "").slice(-2000)}`);
    const times = (JSON.parse(fs.readFileSync(json, "utf8")) as { results: Array<{ times: number[] }> }).results[0]!.times;
    fs.rmSync(path.dirname(json), { recursive: true, force: true });
    return median(times);
  }
  return median(
    Array.from({ length: runs }, () => {
      const r = measure(cmd, args, options);
      if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stderr.slice(-2000)}`);
      return r.seconds;
    }),
  );
}
