/**
 * `ukb store gc`: delete what no root reaches. Roots are live out-links,
 * temp roots of running processes and paths a running build holds a lock
 * on; everything a root refers to, transitively, is kept. Leftovers of
 * interrupted builds and dead processes' temp dirs go too.
 *
 * gc plans from a read of the database, then deletes in batches, each
 * decided again in a short write transaction: a realise that protects a
 * path waits for one batch at most, never for the whole collection (with
 * 100,000 dead paths, one transaction held the write lock for seven
 * seconds, close to the 10 s busy timeout of every other ukb).
 */
import fs from "node:fs";
import { STORE_BASE_PATTERN } from "../graph/index.js";
import type { Store } from "./store.js";
import { ownerAlive } from "./lock.js";

export interface GcReport {
  readonly roots: number;
  readonly kept: number;
  readonly deleted: readonly string[];
  readonly freedBytes: number;
}

export interface GcOptions {
  readonly dryRun?: boolean;
  /** Paths invalidated per write transaction. */
  readonly batchSize?: number;
  /** Called after each batch is gone, with the batch, how many paths are gone so far and how many the plan named. */
  readonly onProgress?: (batch: readonly string[], gone: number, planned: number) => void | Promise<void>;
}

/** Paths a running build holds a lock on (valid ones: a lock on a path to come protects nothing yet). */
function lockedPaths(store: Store): string[] {
  return store.db
    .prepare<[], { name: string; owner: string }>("SELECT name, owner FROM locks")
    .all()
    .filter((l) => ownerAlive(l.owner))
    .map((l) => l.name)
    .filter((b) => store.isValid(b));
}

/** What every kind of root names now: out-links, live temp roots, live locks. */
function rootedNow(store: Store, forget = true): { roots: string[]; all: string[] } {
  const roots = [...store.rootPaths({ forget }).values()];
  const temp = store.liveTempRoots().filter((b) => store.isValid(b));
  return { roots, all: [...roots, ...temp, ...lockedPaths(store)] };
}

/**
 * The dead paths in deletion order: referrers before what they refer to, so
 * the database never holds a dangling reference. A post-order walk with a
 * stack of its own: a chain deeper than the call stack (tens of thousands
 * of paths) would overflow a recursive one.
 */
function deletionOrder(store: Store, dead: readonly string[]): string[] {
  const order: string[] = [];
  const deadSet = new Set(dead);
  const visited = new Set<string>();
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
  return order;
}

export async function collectGarbage(store: Store, options: GcOptions = {}): Promise<GcReport> {
  // On a full disk, the database needs room to forget the first paths gc deletes (each frees more).
  if (!options.dryRun) store.releaseReserve();

  // One gc at a time: two would each plan paths the other deletes. The lock row keeps out other
  // processes; lock rows name a process, not a handle, so handles of this one queue here.
  const turn = gcQueue.then(async () => {
    const releaseGc = await store.locks.acquire([GC_LOCK]);
    try {
      return await collect(store, options);
    } finally {
      releaseGc();
    }
  });
  gcQueue = turn.then(
    () => undefined,
    () => undefined,
  );
  return turn;
}

/** Collections of this process, one after the other. */
let gcQueue: Promise<void> = Promise.resolve();

/** The lock row that serialises collections (no store path has this name). */
const GC_LOCK = "gc";

async function collect(store: Store, options: GcOptions): Promise<GcReport> {
  const batchSize = options.batchSize ?? 256;
  // The plan: read only, so no other ukb waits for it however large the store.
  // A dry run changes nothing: stale roots stay recorded.
  const first = rootedNow(store, !options.dryRun);
  const plan = store.db.transaction(() => {
    // A root gone since it was read (a link removed, a process exited and its path collected) is no root.
    const live = new Set(store.closure(first.all.filter((b) => store.isValid(b))));
    const order = deletionOrder(store, store.allValid().filter((b) => !live.has(b)));
    return { live, order };
  })();
  if (options.dryRun) {
    const freed = plan.order.reduce((n, b) => n + (store.info(b)?.size ?? 0), 0);
    return { roots: first.roots.length, kept: plan.live.size, deleted: plan.order, freedBytes: freed };
  }

  const dead = new Set(plan.order);
  const gone: string[] = [];
  let freed = 0;
  let rescued = 0;
  let next = 0;
  while (next < plan.order.length) {
    // Each batch is decided again inside its write transaction: a process that protects a path
    // (a temp root) and then finds it valid either committed its temp root before (the path and
    // its closure leave the plan) or sees it invalid after (and makes it again, once the files
    // are gone and the lock released).
    const releases: (() => void)[] = [];
    let batch: string[];
    try {
      batch = store.db.transaction(() => {
        const keep = (bases: readonly string[]) => {
          for (const b of store.closure(bases)) if (dead.delete(b)) rescued++;
        };
        keep(rootedNow(store).all.filter((b) => !plan.live.has(b)));
        const taken: string[] = [];
        while (taken.length < batchSize && next < plan.order.length) {
          const b = plan.order[next++]!;
          // Invalid already: deleted by hand (a repair, a concurrent process) since the plan.
          if (dead.has(b) && store.isValid(b)) taken.push(b);
        }
        // A path registered since the plan that refers to one of these (whose maker did not
        // protect it) keeps it: the database never holds a dangling reference.
        const inBatch = new Set(taken);
        keep(taken.filter((b) => store.referrers(b).some((r) => !inBatch.has(r))));
        const chosen: string[] = [];
        for (const b of taken) {
          if (!dead.has(b)) continue; // kept since it was taken (with a path kept below)
          // Locked until its files are gone: a process that wants the path again waits, then makes it anew.
          const release = store.locks.tryAcquire(b);
          // A lock taken since the roots were read in this transaction cannot be (taking one is a write,
          // which waits for it); kept all the same, with its closure, rather than fail the collection.
          if (!release) {
            keep([b]);
            continue;
          }
          chosen.push(b);
          releases.push(release);
        }
        for (const b of chosen) freed += store.info(b)?.size ?? 0;
        store.invalidate(chosen);
        return chosen;
      }).immediate();
    } catch (err) {
      for (const release of releases) release();
      throw err;
    }
    // Copied into the database file now, by gc, while the WAL is one batch long: else another
    // process's next commit (a protect) may be the one that crosses the auto-checkpoint
    // threshold and pays for copying several batches (measured: 100+ ms waits at 256 a batch).
    store.db.pragma("wal_checkpoint(PASSIVE)");
    // Each lock goes as soon as its path has left the store folder: a process that wants it
    // again waits for that one only.
    try {
      await store.discardAll(batch, (i) => {
        releases[i]!();
        gone.push(batch[i]!);
      });
    } finally {
      for (const release of releases) release();
    }
    await options.onProgress?.(batch, gone.length, plan.order.length);
  }

  const deleted = [...gone];
  // Leftovers of interrupted builds: each under its lock, so that a build of another process
  // (which holds it from before it moves its output in until it is registered) keeps its output.
  for (const name of fs.readdirSync(store.storeDir)) {
    // Only what ukb makes: a file of the user's put there (a note, a second store) is not a leftover.
    if (!STORE_BASE_PATTERN.test(name) || store.isValid(name)) continue;
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
  return { roots: first.roots.length, kept: plan.live.size + rescued, deleted, freedBytes: freed };
}
