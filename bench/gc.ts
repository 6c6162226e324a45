/**
 * `ukb store gc` over a large dead store while another process keeps
 * protecting paths (what every realise does first): how long gc takes, and
 * how long the other process waits for the write lock. gc in batches of 256
 * (what `ukb store gc` does) against gc in one write transaction (what it
 * did before, the last moment another realise could start before it ends).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Store, collectGarbage } from "../src/store/index.js";
import { fmt, median } from "./run.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const WORK = path.join(ROOT, ".bench", "gc");
const alphabet = "0123456789abcdfghijklmnpqrsvwxyz";

/** `n` dead paths in layers of 1000, each referring to up to three of the layer below. */
function deadStore(dir: string, n: number): void {
  fs.rmSync(dir, { recursive: true, force: true });
  const store = Store.open(dir);
  let seed = 1;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const base = (i: number) => {
    let h = "";
    for (let k = 0, x = i; k < 32; k++, x = Math.floor(x / 32) + k * 7) h += alphabet[x % 32];
    return `${h}-p${i}`;
  };
  for (let layer = 0; layer * 1000 < n; layer++) {
    const infos = [];
    for (let i = layer * 1000; i < Math.min(n, (layer + 1) * 1000); i++) {
      fs.writeFileSync(store.realPath(base(i)), "x");
      const refs = layer === 0 ? [] : [...new Set([0, 1, 2].map(() => base((layer - 1) * 1000 + Math.floor(random() * 1000))))];
      infos.push({ base: base(i), contentHash: "0", size: 1, references: refs });
    }
    store.register(infos);
  }
  store.close();
}

async function run(dir: string, batchSize: number): Promise<{ seconds: number; deleted: number; waits: number[] }> {
  const protector = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "gc-protector.ts"), dir], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  protector.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => protector.on("exit", r));
  await new Promise((r) => setTimeout(r, 1500)); // its start (tsx) is not what is measured
  const store = Store.open(dir);
  const started = performance.now();
  const report = await collectGarbage(store, { batchSize });
  const seconds = (performance.now() - started) / 1000;
  store.close();
  protector.kill("SIGTERM");
  await exited;
  return { seconds, deleted: report.deleted.length, waits: JSON.parse(out) as number[] };
}

export async function benchGc(): Promise<void> {
  const n = Number(process.env.BENCH_GC_N ?? 100_000);
  console.log(`\n## gc: ${n} dead paths (layers of 1000, up to 3 references each), another process protecting a path every 50 ms`);
  console.log("| gc | wall s | paths/s | protects | protect wait median ms | p99 ms | max ms |");
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const [label, batch] of [["batches of 256 (ukb store gc)", 256], ["one write transaction", Number.MAX_SAFE_INTEGER]] as const) {
    const dir = path.join(WORK, "store");
    deadStore(dir, n);
    const r = await run(dir, batch);
    const sorted = [...r.waits].sort((a, b) => a - b);
    const p99 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))];
    console.log(`| ${label} | ${fmt(r.seconds)} | ${fmt(r.deleted / r.seconds, 0)} | ${r.waits.length} | ${fmt(median(r.waits), 1)} | ${fmt(p99, 1)} | ${fmt(sorted[sorted.length - 1], 1)} |`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
