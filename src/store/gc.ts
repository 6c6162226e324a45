/**
 * `ukb store gc`: delete what no root reaches. Roots are live out-links and
 * paths that a running build holds a lock on; everything a root refers to,
 * transitively, is kept. Leftovers of interrupted builds and dead processes'
 * temp dirs go too.
 */
import fs from "node:fs";
import type { Store } from "./store.js";
import { ownerAlive } from "./lock.js";

export interface GcReport {
  readonly roots: number;
  readonly kept: number;
  readonly deleted: readonly string[];
  readonly freedBytes: number;
}

export async function collectGarbage(store: Store, options: { dryRun?: boolean } = {}): Promise<GcReport> {
  // On a full disk, the database needs room to forget the first paths gc deletes (each frees more).
  if (!options.dryRun) store.releaseReserve();
  const roots = [...store.rootPaths().values()];
  const locked = store.db
    .prepare<[], { name: string; owner: string }>("SELECT name, owner FROM locks")
    .all()
    .filter((l) => ownerAlive(l.owner))
    .map((l) => l.name)
    .filter((b) => store.isValid(b));
  const live = new Set(store.closure([...roots, ...locked]));
  const valid = store.allValid();
  const dead = valid.filter((b) => !live.has(b));
  // Delete referrers before what they refer to, so the database never holds a dangling reference.
  const order: string[] = [];
  const deadSet = new Set(dead);
  const visited = new Set<string>();
  const visit = (b: string): void => {
    if (visited.has(b)) return;
    visited.add(b);
    for (const r of store.referrers(b)) if (deadSet.has(r) && r !== b) visit(r);
    order.push(b);
  };
  for (const b of dead) visit(b);
  let freed = 0;
  const deleted: string[] = [];
  for (const b of order) {
    freed += store.info(b)?.size ?? 0;
    deleted.push(b);
    if (options.dryRun) continue;
    store.invalidate([b]);
    await store.discard(b);
  }
  if (!options.dryRun) {
    // Leftovers of interrupted builds: each under its lock, so that a build of another process
    // (which holds it from before it moves its output in until it is registered) keeps its output.
    for (const name of fs.readdirSync(store.storeDir)) {
      if (store.isValid(name)) continue;
      const release = store.locks.tryAcquire(name);
      if (!release) continue;
      try {
        if (store.isValid(name)) continue;
        await store.discard(name);
        deleted.push(name);
      } finally {
        release();
      }
    }
    await store.cleanDeadTemps();
    store.keepReserve();
  }
  return { roots: roots.length, kept: live.size, deleted, freedBytes: freed };
}
