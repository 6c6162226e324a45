/** Running a command and measuring it: wall time and peak RSS (GNU time). */
import { spawnSync } from "node:child_process";
import fs from "node:fs";

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
