/**
 * Cross-process locks kept in the store's database. A lock row names its
 * owner by host, PID and the process's start time, so a lock held by a
 * process that died (kill -9) is recognised and taken over, and a recycled
 * PID is not mistaken for the old owner.
 */
import fs from "node:fs";
import os from "node:os";
import type { Db } from "./db.js";

function startTime(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 22 (starttime) comes after the parenthesised command name, which may hold spaces.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "?";
  } catch {
    return "?";
  }
}

/**
 * Where a PID means this process: the host, and the PID namespace (a
 * container, `unshare -p`) whose numbers these are. A process of another
 * namespace with the same host name has PIDs that mean nothing here: its
 * locks are waited for, as another machine's are, never taken over.
 */
const host = `${os.hostname()}~${pidNamespace()}`;
/** How ukb before PID namespaces were named wrote this host: its rows are checked as this namespace's. */
const legacyHost = os.hostname();

function pidNamespace(): string {
  try {
    return /\[(\d+)\]/.exec(fs.readlinkSync("/proc/self/ns/pid"))?.[1] ?? "?";
  } catch {
    return "?";
  }
}
/** This process, as lock rows and temp directories name it. */
export const SELF = `${host}:${process.pid}:${startTime(process.pid)}`;

/** Another process of this machine (in this PID namespace), as lock and temp-root rows name it. */
export function processOwner(pid: number): string {
  return `${host}:${pid}:${startTime(pid)}`;
}

/** Whether the process an owner string names is still running. */
export function ownerAlive(owner: string): boolean {
  const [ownerHost, pidText, start] = owner.split(":");
  // Another machine or PID namespace: we cannot tell, so we wait.
  if (ownerHost !== host && ownerHost !== legacyHost) return true;
  const pid = Number(pidText);
  // PID 0 (kill(0) signals our own group) and an unknown start time name no process we can watch.
  if (!Number.isInteger(pid) || pid < 1 || start === "?") return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  return startTime(pid) === start;
}

/**
 * Who holds a lock, for a person who waits for it: a process here, or one ukb
 * cannot see (another machine or PID namespace: a container's), which it
 * waits for until it lets go, however long.
 */
function describeOwner(owner: string): string {
  const [ownerHost, pid] = owner.split(":");
  if (owner === SELF) return "this ukb";
  if (ownerHost === host || ownerHost === legacyHost) return `ukb pid ${pid}`;
  return `ukb pid ${pid} on ${ownerHost!.replace(/~(\d+|\?)$/, "")} (another machine or PID namespace: ukb cannot tell whether it still runs, and waits until it lets go)`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `done` does, or rejects with the signal's reason when it aborts first. */
function untilReleased(done: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return done;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    void done.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
  });
}

export class Locks {
  /** Takes the lock and answers undefined, or answers who holds it. */
  private readonly tryTake: (name: string) => string | undefined;
  private readonly deleteRow: (name: string) => void;
  /**
   * Locks whose row could not be deleted (a full disk: even a DELETE must
   * grow the WAL). Retried at each later take and release; until then other
   * processes wait for this one, and once it exits they take the row over.
   */
  private readonly undropped = new Set<string>();
  /**
   * Locks held in this process, each with what resolves at its release. A row
   * names its owner by process, so it cannot tell two holders in one process
   * apart: without this, two substitutions sharing a reference would both
   * "take" it, and one would remove the other's copy.
   */
  private readonly held = new Map<string, { released: Promise<void>; release: () => void }>();

  constructor(db: Db) {
    const select = db.prepare<[string], { owner: string }>("SELECT owner FROM locks WHERE name = ?");
    const upsert = db.prepare("INSERT OR REPLACE INTO locks (name, owner, since) VALUES (?, ?, ?)");
    const del = db.prepare("DELETE FROM locks WHERE name = ? AND owner = ?");
    this.tryTake = db.transaction((name: string) => {
      const row = select.get(name);
      if (row && row.owner !== SELF && ownerAlive(row.owner)) return row.owner;
      upsert.run(name, SELF, Date.now());
      return undefined;
    }).immediate as (name: string) => string | undefined;
    this.deleteRow = (name) => void del.run(name, SELF);
  }

  /** Releases a lock; never throws, so a failure to release cannot hide the error that ended the work. */
  private drop(name: string): void {
    this.undropped.add(name);
    this.retryDrops();
  }

  private retryDrops(): void {
    for (const n of this.undropped) {
      try {
        this.deleteRow(n);
        this.undropped.delete(n);
      } catch {
        // kept for the next try
      }
    }
  }

  /**
   * Takes every lock in `names` (in sorted order, so two processes never
   * deadlock), waiting for live owners; `onWait` is called once if it waits,
   * with who it waits for (see {@link describeOwner}).
   */
  async acquire(names: readonly string[], onWait?: (holder: string) => void, signal?: AbortSignal): Promise<() => void> {
    const sorted = [...new Set(names)].sort();
    const taken: string[] = [];
    let waited = false;
    try {
      this.retryDrops();
      const wait = (owner: string) => {
        if (!waited) {
          waited = true;
          onWait?.(describeOwner(owner));
        }
        if (signal?.aborted) throw signal.reason;
      };
      for (const name of sorted) {
        let delay = 5;
        for (;;) {
          // Checked and taken in one synchronous step: no other acquire here runs in between.
          const holder = this.held.get(name);
          if (holder) {
            wait(SELF);
            await untilReleased(holder.released, signal);
            continue;
          }
          const owner = this.tryTake(name);
          if (owner === undefined) break;
          wait(owner);
          await sleep(delay);
          delay = Math.min(delay * 2, 100);
        }
        let release!: () => void;
        const released = new Promise<void>((r) => (release = r));
        this.held.set(name, { released, release });
        // Held anew: its row is ours again, for the release of this acquire to delete.
        this.undropped.delete(name);
        taken.push(name);
      }
    } catch (err) {
      this.releaseAll(taken);
      throw err;
    }
    let done = false;
    // Once only: a second call must not drop rows another acquire has taken since.
    return () => {
      if (!done) this.releaseAll(taken);
      done = true;
    };
  }

  /** Takes the lock of `name` if no one (here or in a live process) holds it; undefined otherwise. */
  tryAcquire(name: string): (() => void) | undefined {
    this.retryDrops();
    if (this.held.has(name) || this.tryTake(name) !== undefined) return undefined;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    this.held.set(name, { released, release });
    this.undropped.delete(name);
    let done = false;
    return () => {
      if (!done) this.releaseAll([name]);
      done = true;
    };
  }

  private releaseAll(names: readonly string[]): void {
    for (const name of names) {
      this.drop(name);
      const holder = this.held.get(name);
      this.held.delete(name);
      holder?.release();
    }
  }
}
