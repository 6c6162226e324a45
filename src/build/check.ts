/**
 * `ukb check`: build a valid derivation again, beside the store, and compare
 * the result with what the store holds, down to the first differing byte.
 * Reproducible means bit-identical; this is how ukb proves it.
 */
import fs from "node:fs";
import path from "node:path";
import { baseName, type DrvRecord } from "../graph/index.js";
import { explainNoSpace, nearlyFull, NoSpaceError, removeTree, type Store } from "../store/index.js";
import { BuildFailedError, buildInto, withSpaceHint, type BuildOptions } from "./build.js";

export type Difference = { file: string; offset?: number; detail: string };

export interface CheckResult {
  readonly drv: DrvRecord;
  /** Per output: undefined when identical. */
  readonly differences: Readonly<Record<string, Difference | undefined>>;
  readonly ms: number;
}

async function readAt(fd: fs.promises.FileHandle, buf: Buffer, pos: number): Promise<number> {
  const { bytesRead } = await fd.read(buf, 0, buf.length, pos);
  return bytesRead;
}

async function firstDifferentByte(a: string, b: string): Promise<number | undefined> {
  const [fa, fb] = await Promise.all([fs.promises.open(a, "r"), fs.promises.open(b, "r")]);
  try {
    const ba = Buffer.alloc(1 << 20);
    const bb = Buffer.alloc(1 << 20);
    for (let pos = 0; ; pos += ba.length) {
      const [na, nb] = await Promise.all([readAt(fa, ba, pos), readAt(fb, bb, pos)]);
      const n = Math.min(na, nb);
      for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return pos + i;
      if (na !== nb) return pos + n;
      if (na === 0) return undefined;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** The first difference between two trees (sorted walk), or undefined. */
export async function compareTrees(a: string, b: string, rel = ""): Promise<Difference | undefined> {
  const [sa, sb] = await Promise.all([fs.promises.lstat(a), fs.promises.lstat(b)]);
  const where = rel || ".";
  const kind = (s: fs.Stats) => (s.isSymbolicLink() ? "symlink" : s.isDirectory() ? "directory" : s.isFile() ? "file" : "other");
  if (kind(sa) !== kind(sb)) return { file: where, detail: `a ${kind(sa)} in the store, a ${kind(sb)} when rebuilt` };
  if (sa.isSymbolicLink()) {
    const [ta, tb] = await Promise.all([fs.promises.readlink(a), fs.promises.readlink(b)]);
    return ta === tb ? undefined : { file: where, detail: `symlink to ${ta} in the store, to ${tb} when rebuilt` };
  }
  if (sa.isDirectory()) {
    const [na, nb] = await Promise.all([fs.promises.readdir(a), fs.promises.readdir(b)]);
    const names = [...new Set([...na, ...nb])].sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      if (!na.includes(n)) return { file: r, detail: "only in the rebuild" };
      if (!nb.includes(n)) return { file: r, detail: "only in the store" };
      const d = await compareTrees(path.join(a, n), path.join(b, n), r);
      if (d) return d;
    }
    return undefined;
  }
  if ((sa.mode & 0o100) !== (sb.mode & 0o100)) return { file: where, detail: "executable bit differs" };
  const offset = await firstDifferentByte(a, b);
  if (offset === undefined) return undefined;
  return { file: where, offset, detail: `first difference at byte ${offset} (sizes ${sa.size} and ${sb.size})` };
}

/** Rebuilds a valid derivation and compares each output with the store's. */
export async function checkDerivation(store: Store, drv: DrvRecord, opts: BuildOptions): Promise<CheckResult> {
  const started = performance.now();
  const tmp = store.makeTempDir(`check-${drv.hash.slice(0, 12)}`);
  try {
    const logFile = path.join(store.logDir, `${baseName(drv.outputs.out ?? Object.values(drv.outputs)[0]!)}.check.log`);
    const { infos } = await buildInto(store, drv, tmp, logFile, opts);
    const differences: Record<string, Difference | undefined> = {};
    for (const i of infos) differences[i.output] = await compareTrees(store.realPath(i.base), i.staged);
    // A rebuild cut short by a full disk differs for want of room, not of reproducibility.
    if (Object.values(differences).some((d) => d !== undefined) && nearlyFull(store.root)) throw new NoSpaceError(store.root, `checking '${drv.name}' (its rebuild may be cut short)`);
    return { drv, differences, ms: Math.round(performance.now() - started) };
  } catch (err) {
    if (err instanceof BuildFailedError) throw withSpaceHint(err, store.root);
    throw explainNoSpace(err, store.root, `checking '${drv.name}'`);
  } finally {
    await removeTree(tmp);
  }
}
