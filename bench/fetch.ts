/**
 * Issue 3's benchmark: the store's hashing path on a 1 GiB file against
 * sha256sum and b3sum (MB/s), and the time to add a 1 GiB file and a
 * 50,000-file tree to the store with `ukb store add`.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { hashTree } from "../src/store/archive.js";
import { hashFile } from "../src/fetch/digest.js";
import { fmt, hasCommand, measure } from "./run.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const UKB = path.join(ROOT, "bin/ukb.cjs");
const GIB = 1 << 30;

function makeBigFile(file: string): void {
  const fd = fs.openSync(file, "w");
  const chunk = crypto.randomBytes(1 << 20);
  for (let i = 0; i < GIB / chunk.length; i++) fs.writeSync(fd, chunk);
  fs.closeSync(fd);
}

function makeTree(dir: string, files: number): void {
  for (let i = 0; i < files; i++) {
    const sub = path.join(dir, String(i % 100).padStart(2, "0"), String(Math.floor(i / 100) % 50).padStart(2, "0"));
    if (i < 5000) fs.mkdirSync(sub, { recursive: true });
    fs.writeFileSync(path.join(sub, `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 7)));
  }
}

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}

export async function benchFetch(): Promise<void> {
  const work = path.join(ROOT, ".bench", "fetch");
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const big = path.join(work, "big.bin");
  makeBigFile(big);
  const mbps = (s: number) => fmt(GIB / 1e6 / s, 0);
  console.log("\n## fetch/store: hashing a 1 GiB file (MB/s, higher is better; page cache warm)");
  measure("cat", [big]); // warm the page cache
  const treeHash = await seconds(() => hashTree(big));
  const both = await seconds(() => hashFile(big));
  const rows: [string, number][] = [
    ["ukb canonical hash (BLAKE3, native, 1 MiB reads)", treeHash],
    ["ukb fetch digests (sha256 + BLAKE3 in one pass)", both],
  ];
  if (hasCommand("sha256sum")) rows.push(["sha256sum", measure("sha256sum", [big]).seconds]);
  if (hasCommand("b3sum")) {
    rows.push(["b3sum (multi-threaded)", measure("b3sum", [big]).seconds]);
    rows.push(["b3sum --num-threads 1", measure("b3sum", ["--num-threads", "1", big]).seconds]);
  }
  for (const [label, s] of rows) console.log(`${label.padEnd(52)} ${fmt(s)} s  ${mbps(s)} MB/s`);

  const store = path.join(work, "store");
  const addBig = measure(process.execPath, [UKB, "store", "add", big, "--store", store]);
  const tree = path.join(work, "tree");
  makeTree(tree, 50_000);
  const addTree = measure(process.execPath, [UKB, "store", "add", tree, "--store", store]);
  console.log(`\n## fetch/store: ukb store add`);
  console.log(`1 GiB file: ${fmt(addBig.seconds)} s (${mbps(addBig.seconds)} MB/s, peak RSS ${fmt(addBig.peakRssMb, 0)} MB)`);
  console.log(`50,000-file tree: ${fmt(addTree.seconds)} s (${fmt(50_000 / addTree.seconds, 0)} files/s, peak RSS ${fmt(addTree.peakRssMb, 0)} MB)`);
  fs.rmSync(work, { recursive: true, force: true });
}
