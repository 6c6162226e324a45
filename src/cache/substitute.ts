/**
 * Substitution: asking caches for paths, and fetching what they have into
 * the store — verified (signature at lookup, content hash after restoring)
 * and registered atomically, or not at all.
 *
 * Caches are asked in parallel; each has a bounded time to answer all of a
 * planning round's lookups. A cache that fails (down, slow, errors, garbage)
 * gets one warning and is not asked again in this run; a path a cache offers
 * but that fails verification gets a warning of its own. Either way the
 * caller goes on without it (and builds locally).
 */
import fs from "node:fs";
import path from "node:path";
import { baseName, type DrvRecord } from "../graph/index.js";
import { isUkbError, UkbError } from "../errors/index.js";
import { hashTree, isNoSpace, normaliseTree, removeTree, type ContentKind, type Store } from "../store/index.js";
import type { CacheBackend } from "./backend.js";
import { decompress } from "./compress.js";
import { cacheError, describe } from "./errors.js";
import { checkEntry, type CacheEntry, type Trust } from "./info.js";
import { unpackTree } from "./pack.js";

export interface CacheHit {
  readonly base: string;
  /** URL of the cache that has it. */
  readonly cache: string;
  readonly entry: CacheEntry;
}

export interface CacheOptions {
  readonly trust: Trust;
  /** Time a cache has to answer one round of lookups (default 3 s). */
  readonly lookupTimeoutMs?: number;
  /** A download that delivers nothing for this long is abandoned (default 20 s). */
  readonly idleTimeoutMs?: number;
  /** Lookups in flight per cache (default 16). */
  readonly lookupConcurrency?: number;
  /** Blob downloads in flight per path (default 4). */
  readonly downloadConcurrency?: number;
  /** Warnings (a cache skipped, a path refused): shown to the user once each. */
  readonly onWarning?: (cache: string, message: string) => void;
}

export interface FetchProgress {
  /** Compressed bytes received. */
  bytes: number;
}

/** Runs `f` over `items` with at most `n` at once. */
async function pool<T>(items: readonly T[], n: number, f: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await f(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

/** A semaphore: `run(f)` waits for a free slot. */
function limiter(n: number): <T>(f: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return async (f) => {
    if (active >= n) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await f();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

/** The substituters of a run, in priority order (first = preferred). */
export class CacheSet {
  private readonly down = new Set<string>();
  private readonly warned = new Set<string>();
  /** Answers of earlier rounds: a base → its hit, or null when no cache had it. */
  private readonly known = new Map<string, CacheHit | null>();

  constructor(
    readonly caches: readonly CacheBackend[],
    readonly options: CacheOptions,
  ) {}

  get size(): number {
    return this.caches.length;
  }

  backend(url: string): CacheBackend {
    const b = this.caches.find((c) => c.url === url);
    if (!b) throw new UkbError("internal", `no cache ${url} in this run`);
    return b;
  }

  /** One warning per distinct message. */
  warn(cache: string, message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.options.onWarning?.(cache, message);
  }

  /** Marks a cache as failed for the rest of the run, with one warning. */
  giveUp(cache: string, err: unknown): void {
    if (this.down.has(cache)) return;
    this.down.add(cache);
    const why = describe(err);
    this.warn(cache, `${why.includes(cache) ? why : `cache ${cache}: ${why}`}; not using this cache for the rest of the run`);
  }

  isDown(cache: string): boolean {
    return this.down.has(cache);
  }

  /**
   * Which caches have which of `bases`: for each base, the hit of the
   * preferred cache among those that have it and whose info passes the checks.
   */
  async query(wanted: readonly string[]): Promise<Map<string, CacheHit>> {
    const result = new Map<string, CacheHit>();
    for (const b of wanted) {
      const k = this.known.get(b);
      if (k) result.set(b, k);
    }
    const bases = [...new Set(wanted)].filter((b) => !this.known.has(b));
    if (bases.length === 0) return result;
    const timeout = this.options.lookupTimeoutMs ?? 3000;
    const found = await Promise.all(
      this.caches.map(async (backend) => {
        const hits = new Map<string, CacheHit>();
        if (this.down.has(backend.url) || bases.length === 0) return hits;
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(new Error(`no answer within ${(timeout / 1000).toFixed(1)} s`)), timeout);
        try {
          await pool(bases, this.options.lookupConcurrency ?? 16, async (base) => {
            if (controller.signal.aborted) return;
            let entry: CacheEntry | undefined;
            try {
              entry = await backend.getEntry(base.slice(0, 32), controller.signal);
            } catch (err) {
              controller.abort(err);
              this.giveUp(backend.url, controller.signal.reason === err ? err : controller.signal.reason);
              return;
            }
            if (!entry) return;
            try {
              checkEntry(entry, base, this.options.trust, backend.url);
            } catch (err) {
              this.warn(backend.url, `${describe(err)}${isUkbError(err) && err.hint ? `\n  hint: ${err.hint}` : ""}`);
              return;
            }
            hits.set(base, { base, cache: backend.url, entry });
          });
        } finally {
          clearTimeout(timer);
        }
        if (controller.signal.aborted && !this.down.has(backend.url)) this.giveUp(backend.url, controller.signal.reason);
        return this.down.has(backend.url) ? new Map<string, CacheHit>() : hits;
      }),
    );
    for (const hits of found) for (const [base, hit] of hits) if (!result.has(base)) result.set(base, hit);
    for (const b of bases) this.known.set(b, result.get(b) ?? null);
    return result;
  }

  /**
   * `bases` and every path they refer to that `have` says is missing, from
   * the caches; undefined if some path of that closure is in none of them.
   * Ordered references first.
   */
  async closure(bases: readonly string[], have: (base: string) => boolean): Promise<{ hits: CacheHit[]; missing: string[] }> {
    const known = new Map<string, CacheHit>();
    const missing: string[] = [];
    let round = [...new Set(bases)].filter((b) => !have(b));
    while (round.length > 0) {
      const hits = await this.query(round);
      const next = new Set<string>();
      for (const b of round) {
        const h = hits.get(b);
        if (!h) {
          missing.push(b);
          continue;
        }
        known.set(b, h);
        for (const r of h.entry.references) if (r !== b && !known.has(r) && !have(r)) next.add(r);
      }
      round = [...next].filter((b) => !known.has(b) && !missing.includes(b));
    }
    // References first (the store's reference graph has no cycles but self-references).
    const ordered: CacheHit[] = [];
    const state = new Map<string, number>();
    const visit = (b: string) => {
      if (state.get(b) !== undefined) return;
      state.set(b, 1);
      const h = known.get(b)!;
      for (const r of h.entry.references) if (r !== b && known.has(r)) visit(r);
      ordered.push(h);
    };
    for (const b of [...known.keys()].sort()) visit(b);
    return { hits: ordered, missing };
  }
}

/**
 * Wraps a byte stream so that `idleMs` without a byte aborts `controller`
 * and fails the stream at once — without waiting for the source to notice
 * (a stalled peer may never answer a cancel). Stopping early does not wait
 * for the source's cancellation either.
 */
async function* watchdog(source: AsyncIterable<Uint8Array>, idleMs: number, controller: AbortController, what: string): AsyncGenerator<Uint8Array> {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(new Error(`${what}: no data for ${(idleMs / 1000).toFixed(1)} s`)), idleMs);
  };
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(controller.signal.reason);
    if (controller.signal.aborted) onAbort();
    else controller.signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => undefined);
  const it = source[Symbol.asyncIterator]();
  arm();
  try {
    for (;;) {
      const r = await Promise.race([it.next(), aborted]);
      if (r.done) return;
      arm();
      yield r.value;
    }
  } finally {
    clearTimeout(timer);
    controller.signal.removeEventListener("abort", onAbort!);
    void Promise.resolve(it.return?.()).catch(() => undefined);
  }
}

/**
 * Restores the tree of `hit` at `dest` (which must not exist) and checks it:
 * every blob against its BLAKE3, the whole tree against the signed content
 * hash and size. Throws a cache error naming what was wrong.
 */
export async function fetchTree(backend: CacheBackend, hit: CacheHit, dest: string, options: CacheOptions & { signal?: AbortSignal; epoch?: number; progress?: FetchProgress }): Promise<void> {
  const { entry } = hit;
  const idle = options.idleTimeoutMs ?? 20_000;
  const controller = new AbortController();
  const onOuter = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) throw options.signal.reason;
  options.signal?.addEventListener("abort", onOuter, { once: true });
  const progress = options.progress ?? { bytes: 0 };
  const counted = async function* (s: AsyncIterable<Uint8Array>) {
    for await (const c of s) {
      progress.bytes += c.length;
      yield c;
    }
  };
  const blobs = new Map(entry.blobs.map((b) => [b.blake3, b]));
  const limit = limiter(options.downloadConcurrency ?? 4);
  const written = new Map<string, Promise<string>>();
  const what = `${hit.base} from ${hit.cache}`;
  try {
    const external = async (ref: { blake3: string; size: number; executable: boolean }, file: string): Promise<void> => {
      const blob = blobs.get(ref.blake3);
      if (!blob || blob.size !== ref.size) throw cacheError(`${what}: the manifest names a file (blake3:${ref.blake3}) its info does not list`);
      const first = written.get(ref.blake3);
      if (first) {
        await fs.promises.copyFile(await first, file, fs.constants.COPYFILE_EXCL);
      } else {
        const p = limit(async () => {
          const stream = await backend.openBlob(blob, controller.signal);
          const fd = await fs.promises.open(file, "wx", 0o644);
          try {
            for await (const c of decompress(watchdog(counted(stream), idle, controller, what), { size: blob.size, blake3: blob.blake3 }, `${what}: blob ${blob.blake3}`)) await fd.write(c);
          } finally {
            await fd.close();
          }
          return file;
        });
        written.set(ref.blake3, p);
        await p.catch((err: unknown) => {
          controller.abort(err); // stop the other downloads of this path
          throw err;
        });
      }
      if (ref.executable) await fs.promises.chmod(file, 0o755);
    };
    const manifestStream = await backend.openBlob(entry.manifest, controller.signal);
    await unpackTree(
      decompress(watchdog(counted(manifestStream), idle, controller, what), { size: entry.manifest.size, blake3: entry.manifest.blake3 }, `${what}: manifest`),
      dest,
      external,
      entry.size,
    );
    await normaliseTree(dest, options.epoch ?? 1);
    const { blake3, size } = await hashTree(dest);
    if (blake3 !== entry.contentHash || size !== entry.size) {
      throw cacheError(`${what}: the restored tree hashes to blake3:${blake3} (${size} bytes), not the signed blake3:${entry.contentHash} (${entry.size} bytes): refused (tampered or corrupt archive)`);
    }
  } catch (err) {
    if (options.signal?.aborted) throw options.signal.reason;
    // A full disk here is not the cache's fault: it rises as it is, for the caller to say so (store/space.ts).
    for (const e of [err, controller.signal.reason]) if (isNoSpace(e)) throw e;
    if (isUkbError(err) && (err.kind === "cache" || err.kind === "store")) {
      throw err.kind === "cache" ? err : cacheError(`${what}: ${err.message}`);
    }
    throw cacheError(`${what}: ${controller.signal.aborted ? describe(controller.signal.reason) : describe(err)}`);
  } finally {
    options.signal?.removeEventListener("abort", onOuter);
  }
}

export interface SubstituteOptions extends CacheOptions {
  readonly signal?: AbortSignal;
  /** The derivation whose outputs these are (recorded as their deriver). */
  readonly drv?: DrvRecord;
  /** Extra checks of a restored output before it is registered (fixed outputs: the declared hash), and its content-index keys. */
  readonly check?: (base: string, staged: string, contentHash: string) => Promise<readonly { kind: ContentKind; hash: string }[]>;
  readonly onWait?: (holder: string) => void;
  readonly progress?: FetchProgress;
  /**
   * Waits for a job slot and resolves with its release; asked once the locks
   * are held and something is to be fetched (the order a build keeps: a job
   * holding a slot never waits for a lock, so none waits for the other).
   */
  readonly slot?: (signal?: AbortSignal) => Promise<() => void>;
}

/**
 * Fetches `hits` (references first) into the store under their locks and
 * registers them in one transaction, with their signatures. Paths already
 * valid are skipped. Returns the bases fetched. On any failure nothing new
 * is valid and nothing is left in the store folder.
 */
export async function substitute(store: Store, set: CacheSet, hits: readonly CacheHit[], options: SubstituteOptions): Promise<string[]> {
  const bases = hits.map((h) => h.base);
  const release = await store.locks.acquire(bases, options.onWait, options.signal);
  let tmp: string | undefined;
  let releaseSlot: (() => void) | undefined;
  const moved: string[] = [];
  try {
    const todo = hits.filter((h) => !store.isValid(h.base));
    if (todo.length === 0) return [];
    releaseSlot = await options.slot?.(options.signal);
    const inRun = new Set(todo.map((h) => h.base));
    for (const h of todo) {
      for (const r of h.entry.references) {
        if (!inRun.has(r) && !store.isValid(r)) throw cacheError(`${h.base} from ${h.cache} refers to ${r}, which is neither valid here nor fetched with it`);
      }
    }
    for (const h of todo) await store.discard(h.base);
    tmp = store.makeTempDir("substitute");
    const epoch = options.drv ? Number(options.drv.env.SOURCE_DATE_EPOCH ?? 1) : 1;
    const content = new Map<string, readonly { kind: ContentKind; hash: string }[]>();
    for (const h of todo) {
      const staged = path.join(tmp, h.base);
      await fetchTree(set.backend(h.cache), h, staged, { ...set.options, ...options, epoch: Number.isFinite(epoch) && epoch >= 0 ? Math.floor(epoch) : 1 });
      if (options.check) content.set(h.base, await options.check(h.base, staged, h.entry.contentHash));
    }
    for (const h of todo) {
      const staged = path.join(tmp, h.base);
      const st = await fs.promises.lstat(staged);
      if (st.isDirectory()) await fs.promises.chmod(staged, 0o755);
      await fs.promises.rename(staged, store.realPath(h.base));
      moved.push(h.base);
      if (st.isDirectory()) await fs.promises.chmod(store.realPath(h.base), 0o555);
    }
    const ownOutputs = new Set(options.drv ? Object.values(options.drv.outputs).map(baseName) : []);
    store.db.transaction(() => {
      store.register(
        todo.map((h) => ({
          base: h.base,
          contentHash: h.entry.contentHash,
          size: h.entry.size,
          references: h.entry.references,
          ...(ownOutputs.has(h.base) && options.drv ? { deriver: options.drv.hash } : h.entry.deriver ? { deriver: h.entry.deriver } : {}),
          ...(h.entry.ca ? { ca: h.entry.ca } : {}),
          ...(content.get(h.base)?.length ? { content: content.get(h.base)! } : {}),
        })),
        options.drv,
      );
      for (const h of todo) if (h.entry.signatures.length > 0) store.setSignatures(h.base, h.entry.signatures);
    })();
    moved.length = 0;
    return todo.map((h) => h.base);
  } finally {
    // What this run moved in and did not register; never a path that is valid (registered by another holder).
    for (const b of moved) if (!validOr(store, b, true)) await store.discard(b).catch(() => undefined);
    if (tmp) await removeTree(tmp).catch(() => undefined);
    releaseSlot?.();
    release();
  }
}

/** Whether `base` is valid, or `fallback` when the store cannot tell (a damaged database). */
function validOr(store: Store, base: string, fallback: boolean): boolean {
  try {
    return store.isValid(base);
  } catch {
    return fallback;
  }
}
