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
  // What is live and what goes is decided, and what goes made invalid and locked, in one write
  // transaction: a process that protects a path (a temp root) and then finds it valid either
  // committed its temp root before (gc keeps the path) or sees it invalid after (and makes it
  // again, once gc has removed the files and released the lock).
  const releases: (() => void)[] = [];
  let decided: { roots: number; kept: number; order: string[]; freed: number };
  try {
    decided = store.db.transaction(() => {
      const roots = [...store.rootPaths().values()];
      const temp = store.liveTempRoots().filter((b) => store.isValid(b));
      const locked = store.db
        .prepare<[], { name: string; owner: string }>("SELECT name, owner FROM locks")
        .all()
        .filter((l) => ownerAlive(l.owner))
        .map((l) => l.name)
        .filter((b) => store.isValid(b));
      const live = new Set(store.closure([...roots, ...temp, ...locked]));
      const dead = store.allValid().filter((b) => !live.has(b));
      // Referrers before what they refer to, so the database never holds a dangling reference.
      const order: string[] = [];
      const deadSet = new Set(dead);
      const visited = new Set<string>();
      // A post-order walk with a stack of its own: a chain of references deeper than the call
      // stack (tens of thousands of paths) would overflow a recursive one.
      for (const start of dead) {
        if (visited.has(start)) continue;
        visited.add(start);
        const stack: { base: string; pending: string[] }[] = [{ base: start, pending: store.referrers(start) }];
        while (stack.length > 0) {
          const top = stack[stack.length - 1]!;
          const next = top.pending.pop();
          if (next === undefined) {
            order.push(top.base);
            stack.pop();
          } else if (deadSet.has(next) && next !== top.base && !visited.has(next)) {
            visited.add(next);
            stack.push({ base: next, pending: store.referrers(next) });
          }
        }
      }
      const freed = order.reduce((n, b) => n + (store.info(b)?.size ?? 0), 0);
      if (!options.dryRun) {
        // Locked until its files are gone: a process that wants the path again waits, then makes it anew.
        for (const b of order) {
          const release = store.locks.tryAcquire(b);
          // Cannot happen: a path whose lock a live process holds is a root above.
          if (!release) throw new Error(`gc: ${b} is locked by a live process but was not kept`);
          releases.push(release);
        }
        store.invalidate(order);
      }
      return { roots: roots.length, kept: live.size, order, freed };
    }).immediate();
  } catch (err) {
    for (const release of releases) release();
    throw err;
  }
  const deleted = [...decided.order];
  if (!options.dryRun) {
    // Each lock goes as soon as its path is gone: a process that wants it again waits for that one only.
    try {
      for (const [i, b] of decided.order.entries()) {
        await store.discard(b);
        releases[i]!();
      }
    } finally {
      for (const release of releases) release();
    }
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
  return { roots: decided.roots, kept: decided.kept, deleted, freedBytes: decided.freed };
}
