/**
 * The store: immutable outputs under `<root>/store/<hash>-<name>`, facts about
 * them in `<root>/ukb.sqlite`. Builds see it at the fixed virtual path
 * `/ukb/store`; here it is wherever the user keeps it.
 */
import fs from "node:fs";
import path from "node:path";
import { ExitCode, UkbError } from "../errors/index.js";
import { baseName, type DrvRecord } from "../graph/index.js";
import { openDb, type Db } from "./db.js";
import { Locks, SELF, ownerAlive } from "./lock.js";
import { removeTree } from "./fsutil.js";
import { freeBytes, isNoSpace, nearlyFull, NoSpaceError } from "./space.js";
import { damagedDbError, isDamagedDb, noteOpened } from "./damage.js";
import { markRootsComplete, mirrorRoot, unmirrorRoot } from "./roots.js";

/** What the store knows about a valid path. */
export interface PathInfo {
  /** `<hash>-<name>` */
  readonly base: string;
  /** BLAKE3 (hex) of the canonical archive. */
  readonly contentHash: string;
  /** Size in bytes of the canonical archive. */
  readonly size: number;
  /** Basenames of the store paths it refers to (itself included when it does). */
  readonly references: readonly string[];
  /** Hash of the derivation that produced it. */
  readonly deriver?: string;
  /** Fixed outputs: `<algo>:<hex>` of the declared content. */
  readonly ca?: string;
  readonly registeredAt: number;
  readonly buildMs?: number;
  /** Log file relative to the store root. */
  readonly log?: string;
  readonly signatures: readonly string[];
}

/** A row of the paths table, as SQLite returns it. */
export interface PathRow {
  id: number;
  base: string;
  content_hash: string;
  size: number;
  deriver: string | null;
  ca: string | null;
  registered_at: number;
  build_ms: number | null;
  log: string | null;
  signatures: string;
}

/** How the content index names what a path holds: a file by its bytes, a tree canonically. */
export type ContentKind = "file-sha256" | "file-blake3" | "tree-blake3";

export class Store {
  /** The store's root folder (holding `store/`, `ukb.sqlite`, `logs/`, `tmp/`). */
  readonly root: string;
  /** Where outputs live on disk. */
  readonly storeDir: string;
  readonly logDir: string;
  readonly tmpDir: string;
  readonly db: Db;
  readonly locks: Locks;
  private readonly stmts;

  private constructor(root: string) {
    this.root = root;
    this.storeDir = path.join(root, "store");
    this.logDir = path.join(root, "logs");
    this.tmpDir = path.join(root, "tmp");
    for (const d of [this.storeDir, this.logDir, this.tmpDir]) fs.mkdirSync(d, { recursive: true });
    const fresh = !fs.existsSync(path.join(root, "ukb.sqlite"));
    this.db = openDb(path.join(root, "ukb.sqlite"));
    // A new store has no root but those roots/ will record.
    if (fresh) markRootsComplete(root);
    this.locks = new Locks(this.db);
    const db = this.db;
    // Prepared on first use: a no-op realise needs three statements of twenty.
    this.stmts = lazily({
      byBase: () => db.prepare<[string], PathRow>("SELECT * FROM paths WHERE base = ?"),
      valid: () => db.prepare<[string], { one: number }>("SELECT 1 AS one FROM paths WHERE base = ?"),
      refsOf: () => db.prepare<[number], { base: string }>("SELECT p.base FROM refs r JOIN paths p ON p.id = r.reference WHERE r.referrer = ? ORDER BY p.base"),
      referrersOf: () => db.prepare<[number], { base: string }>("SELECT p.base FROM refs r JOIN paths p ON p.id = r.referrer WHERE r.reference = ? ORDER BY p.base"),
      insertPath: () => db.prepare(
        "INSERT INTO paths (base, content_hash, size, deriver, ca, registered_at, build_ms, log, signatures) VALUES (@base, @contentHash, @size, @deriver, @ca, @registeredAt, @buildMs, @log, @signatures)",
      ),
      insertRef: () => db.prepare("INSERT OR IGNORE INTO refs (referrer, reference) SELECT a.id, b.id FROM paths a, paths b WHERE a.base = ? AND b.base = ?"),
      insertDrv: () => db.prepare("INSERT OR IGNORE INTO drvs (hash, name, json) VALUES (?, ?, ?)"),
      insertDrvOutput: () => db.prepare("INSERT OR REPLACE INTO drv_outputs (drv, output, base) VALUES (?, ?, ?)"),
      getDrv: () => db.prepare<[string], { json: string }>("SELECT json FROM drvs WHERE hash = ?"),
      drvOfBase: () => db.prepare<[string], { drv: string }>("SELECT drv FROM drv_outputs WHERE base = ?"),
      allBases: () => db.prepare<[], { base: string }>("SELECT base FROM paths ORDER BY base"),
      deletePath: () => db.prepare("DELETE FROM paths WHERE base = ?"),
      evalGet: () => db.prepare<[string], { value: string }>("SELECT value FROM eval_cache WHERE key = ?"),
      evalPut: () => db.prepare("INSERT OR REPLACE INTO eval_cache (key, value) VALUES (?, ?)"),
      addRoot: () => db.prepare("INSERT OR REPLACE INTO roots (link, owner) VALUES (?, ?)"),
      roots: () => db.prepare<[], { link: string; owner: string | null }>("SELECT link, owner FROM roots ORDER BY link"),
      deleteRoot: () => db.prepare("DELETE FROM roots WHERE link = ?"),
      addContent: () => db.prepare("INSERT OR IGNORE INTO content (kind, hash, base) VALUES (?, ?, ?)"),
      findContent: () => db.prepare<[string, string], { base: string }>("SELECT c.base FROM content c JOIN paths p ON p.base = c.base WHERE c.kind = ? AND c.hash = ? LIMIT 1"),
      setSignatures: () => db.prepare("UPDATE paths SET signatures = ? WHERE base = ?"),
      addTempRoot: () => db.prepare("INSERT OR IGNORE INTO temp_roots (owner, base) VALUES (?, ?)"),
      tempRoots: () => db.prepare<[], { owner: string; base: string }>("SELECT owner, base FROM temp_roots"),
      dropTempRoots: () => db.prepare("DELETE FROM temp_roots WHERE owner = ?"),
    });
  }

  /**
   * Opens (creating if needed) the store rooted at `root`. On a full disk,
   * `useReserve` (gc's) frees the reserve to make room; other commands fail
   * and keep it for gc.
   */
  static open(root: string, options: { useReserve?: boolean } = {}): Store {
    const given = path.resolve(root);
    let abs = given;
    let store: Store;
    try {
      fs.mkdirSync(given, { recursive: true });
      // Its real path: the store's paths, and the out-links gc keeps as roots, must be the same
      // text whether it is named through a symlink or not.
      abs = fs.realpathSync(given);
      // The store folder of a store (the folder its printed paths are in) is not a store itself:
      // one made there would be deleted by the outer store's gc.
      if (path.basename(abs) === "store" && fs.existsSync(path.join(path.dirname(abs), "ukb.sqlite"))) {
        throw new UkbError("store", `${given} is the folder of the store at ${path.dirname(abs)}, not a store: give --store ${path.dirname(abs)}`, { exitCode: ExitCode.badInput });
      }
      store = new Store(abs);
    } catch (err) {
      if (err instanceof UkbError) throw err;
      // A full disk: SQLite cannot even make its shared-memory file ("disk I/O error"). The
      // reserve makes room for it, so that `ukb store gc` can run and free some.
      if (isDamagedDb(err)) throw damagedDbError(err, abs);
      const full = isNoSpace(err) || nearlyFull(abs);
      if (full && options.useReserve && releaseReserve(abs)) return Store.open(abs);
      if (full && !options.useReserve && fs.existsSync(path.join(abs, RESERVE_NAME))) throw new NoSpaceError(abs, "opening it", err);
      if (full) throw new NoSpaceError(abs, "opening it", err, "free some space on that filesystem outside the store: ukb cannot open the store, nor collect its garbage, until there is some");
      // Not a folder, or one this user may not write: the --store given is wrong, not the store.
      const code = whyNotWritable(abs, (err as NodeJS.ErrnoException).code);
      if (code === "EEXIST" || code === "ENOTDIR") throw new UkbError("store", `cannot open the store at ${abs}: it is not a folder`, { cause: err, exitCode: ExitCode.badInput });
      if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
        const owner = code === "EROFS" ? undefined : ownerOf(abs);
        throw new UkbError("store", `cannot open the store at ${abs}: ${code === "EROFS" ? "its filesystem is read-only" : `permission denied${owner === undefined ? "" : ` (it belongs to uid ${owner}, ukb runs as uid ${process.getuid?.()})`}`}`, {
          cause: err,
          exitCode: ExitCode.badInput,
          hint: "ukb writes to its store on every command (locks, roots, the eval cache): give --store a folder this user may write",
        });
      }
      throw new UkbError("store", `cannot open the store at ${abs}: ${(err as Error).message}`, { cause: err });
    }
    noteOpened(abs);
    store.keepReserve();
    return store;
  }

  /**
   * Keeps {@link RESERVED_BYTES} of the disk for the store's own bookkeeping
   * (as Nix's gc-reserved-space): written once the disk has room for it
   * several times over; released when the disk is full (see {@link open})
   * and by gc before it starts. Best effort: a reserve that cannot be written
   * is not. Written in the background (a new store's first command need not
   * wait for it; the process does not exit before it is done) under a name of
   * its own, then renamed: never half a reserve.
   */
  keepReserve(): void {
    const file = path.join(this.root, RESERVE_NAME);
    try {
      if (fs.statSync(file).size === RESERVED_BYTES) return;
    } catch {
      // missing: make it
    }
    if ((freeBytes(this.root) ?? 0) < 4 * RESERVED_BYTES) return;
    removeDeadReserveTemps(this.root);
    const tmp = `${file}.tmp-${process.pid}-${(tempCounter++).toString(36)}`;
    const giveUp = () => fs.rm(tmp, { force: true }, () => undefined);
    fs.writeFile(tmp, Buffer.alloc(RESERVED_BYTES), { flag: "wx" }, (err) => {
      if (err) giveUp();
      else fs.rename(tmp, file, (renameErr) => void (renameErr && giveUp()));
    });
  }

  /** Frees the reserve (gc does, before it writes anything). */
  releaseReserve(): void {
    releaseReserve(this.root);
  }

  /** Paths this handle has protected for this process (see {@link protect}). */
  private readonly protectedHere = new Set<string>();
  /**
   * This handle's temp-root owner: the process (which is what {@link ownerAlive}
   * reads), then the handle, so that closing one handle leaves another's rows.
   */
  private readonly tempRootOwner = `${SELF}:${handleCounter++}`;

  /**
   * Makes paths temporary gc roots for as long as their owner process lives
   * (this one by default), as Nix's temp roots: what a realise is about to
   * use or make, before it checks what is valid. gc reads them in the same
   * transaction in which it invalidates what it deletes, so a path valid
   * when checked after this call stays valid (with its closure) until the
   * owner exits or this handle closes. Paths need not be valid yet: once
   * made, they are kept. `owner` SELF keeps them until this process exits,
   * whatever handles close; another process's owner string, until it exits.
   */
  protect(storePaths: readonly string[], owner: string = this.tempRootOwner): void {
    const own = owner === this.tempRootOwner;
    const bases = [...new Set(storePaths.map(baseName))].filter((b) => !(own && this.protectedHere.has(b)));
    if (bases.length === 0) return;
    this.db.transaction(() => {
      for (const b of bases) this.stmts.addTempRoot.run(owner, b);
    })();
    if (own) for (const b of bases) this.protectedHere.add(b);
  }

  /**
   * The temp roots of live processes; the rows of dead ones are deleted
   * (gc calls this inside its transaction).
   */
  liveTempRoots(): string[] {
    const alive = new Map<string, boolean>();
    const live = new Set<string>();
    for (const { owner, base } of this.stmts.tempRoots.all()) {
      let ok = alive.get(owner);
      if (ok === undefined) alive.set(owner, (ok = ownerAlive(owner)));
      if (ok) live.add(base);
    }
    for (const [owner, ok] of alive) if (!ok) this.stmts.dropTempRoots.run(owner);
    return [...live];
  }

  /** Deletes the temp roots of owners that have exited among `owners` (the server's launchers); returns those still alive. */
  dropDeadTempRoots(owners: Iterable<string>): string[] {
    const alive: string[] = [];
    for (const owner of owners) {
      if (ownerAlive(owner)) alive.push(owner);
      else this.stmts.dropTempRoots.run(owner);
    }
    return alive;
  }

  close(): void {
    if (this.protectedHere.size > 0) {
      try {
        this.stmts.dropTempRoots.run(this.tempRootOwner);
      } catch {
        // Rows of an exited process are ignored and deleted by the next gc.
      }
    }
    this.db.close();
  }

  /** The on-disk path of a store path (virtual or real) or basename. */
  realPath(storePath: string): string {
    return path.join(this.storeDir, baseName(storePath));
  }

  /**
   * The basename a user's argument names: a basename, a real or virtual store
   * path (or a file inside one), or a symlink into the store such as ./result.
   */
  parse(arg: string): string | undefined {
    if (/^[0-9a-df-np-sv-z]{32}-[^/]+$/.test(arg)) return arg;
    let p = path.resolve(arg);
    try {
      p = fs.realpathSync(p);
    } catch {
      // not on disk: may still be a virtual path
    }
    for (const prefix of [this.storeDir + "/", "/ukb/store/"]) {
      if (p.startsWith(prefix)) {
        const base = p.slice(prefix.length).split("/")[0]!;
        if (/^[0-9a-df-np-sv-z]{32}-/.test(base)) return base;
      }
    }
    return undefined;
  }

  isValid(storePath: string): boolean {
    return this.stmts.valid.get(baseName(storePath)) !== undefined;
  }

  /**
   * Throws if a valid path is missing from the store folder: deleted by hand
   * (`rm -rf cache/store/...`). The database is trusted everywhere else, as
   * Nix trusts its own; this is checked where a path is handed on (an
   * out-link, a build's input), so the user hears what happened, not a
   * dangling link or a failed build.
   */
  assertPresent(storePaths: Iterable<string>): void {
    for (const p of storePaths) {
      const real = this.realPath(p);
      try {
        fs.lstatSync(real);
      } catch {
        throw new UkbError("store", `${real} is registered in the store's database but missing from its folder (deleted by hand?)`, {
          hint: `ukb store repair${this.root === path.resolve("cache") ? "" : ` --store ${this.root}`} forgets it and what refers to it; the next realise builds it again`,
        });
      }
    }
  }

  info(storePath: string): PathInfo | undefined {
    const row = this.stmts.byBase.get(baseName(storePath));
    if (!row) return undefined;
    const info: { -readonly [K in keyof PathInfo]: PathInfo[K] } = {
      base: row.base,
      contentHash: row.content_hash,
      size: row.size,
      references: this.stmts.refsOf.all(row.id).map((r) => r.base),
      registeredAt: row.registered_at,
      signatures: JSON.parse(row.signatures) as string[],
    };
    if (row.deriver !== null) info.deriver = row.deriver;
    if (row.ca !== null) info.ca = row.ca;
    if (row.build_ms !== null) info.buildMs = row.build_ms;
    if (row.log !== null) info.log = row.log;
    return info;
  }

  /** Basenames of valid paths that refer to this one. */
  referrers(storePath: string): string[] {
    const row = this.stmts.byBase.get(baseName(storePath));
    return row ? this.stmts.referrersOf.all(row.id).map((r) => r.base) : [];
  }

  /** References of valid paths never change: remembered for the life of this handle. */
  private readonly refsCache = new Map<string, readonly string[]>();

  private referencesOf(base: string): readonly string[] {
    let refs = this.refsCache.get(base);
    if (!refs) {
      const row = this.stmts.byBase.get(base);
      if (!row) throw new UkbError("store", `${base} is not valid in the store at ${this.root}`);
      refs = this.stmts.refsOf.all(row.id).map((r) => r.base);
      this.refsCache.set(base, refs);
    }
    return refs;
  }

  /** The paths and everything they refer to, transitively (basenames, sorted). */
  closure(storePaths: readonly string[]): string[] {
    const seen = new Set<string>();
    const todo = storePaths.map(baseName);
    while (todo.length > 0) {
      const b = todo.pop()!;
      if (seen.has(b)) continue;
      seen.add(b);
      todo.push(...this.referencesOf(b));
    }
    return [...seen].sort();
  }

  /** Every valid path (basenames). */
  allValid(): string[] {
    return this.stmts.allBases.all().map((r) => r.base);
  }

  /**
   * Makes paths valid, in one transaction. Their files must already be at
   * their real paths and their references valid or among `infos`.
   */
  register(
    infos: readonly (Omit<PathInfo, "registeredAt" | "signatures"> & { content?: readonly { kind: ContentKind; hash: string }[] })[],
    drv?: DrvRecord,
  ): void {
    const now = Date.now();
    this.db.transaction(() => {
      for (const i of infos) {
        this.stmts.insertPath.run({
          base: i.base,
          contentHash: i.contentHash,
          size: i.size,
          deriver: i.deriver ?? null,
          ca: i.ca ?? null,
          registeredAt: now,
          buildMs: i.buildMs ?? null,
          log: i.log ?? null,
          signatures: "[]",
        });
      }
      for (const i of infos) {
        for (const r of i.references) {
          if (!this.stmts.valid.get(r)) throw new UkbError("store", `${i.base} refers to ${r}, which is not valid`);
          this.stmts.insertRef.run(i.base, r);
        }
        for (const c of i.content ?? []) this.stmts.addContent.run(c.kind, c.hash, i.base);
      }
      if (drv) this.saveDrv(drv);
    })();
  }

  /** Records a derivation (for `ukb log`, `ukb store info` and `ukb check`). */
  saveDrv(drv: DrvRecord): void {
    this.stmts.insertDrv.run(drv.hash, drv.name, JSON.stringify(drv));
    for (const [o, p] of Object.entries(drv.outputs)) this.stmts.insertDrvOutput.run(drv.hash, o, baseName(p));
  }

  getDrv(hash: string): DrvRecord | undefined {
    const row = this.stmts.getDrv.get(hash);
    return row ? (JSON.parse(row.json) as DrvRecord) : undefined;
  }

  /** The derivation that declares this output path, if the store has seen it. */
  drvOf(storePath: string): DrvRecord | undefined {
    const row = this.stmts.drvOfBase.get(baseName(storePath));
    return row ? this.getDrv(row.drv) : undefined;
  }

  /** A valid path holding this content, whatever its name: what lets a fetch be served offline. */
  findContent(kind: ContentKind, hash: string): string | undefined {
    return this.stmts.findContent.get(kind, hash.toLowerCase())?.base;
  }

  setSignatures(storePath: string, signatures: readonly string[]): void {
    this.stmts.setSignatures.run(JSON.stringify([...new Set(signatures)].sort()), baseName(storePath));
  }

  /** Forgets paths (gc); their referrers must be gone first. */
  invalidate(bases: readonly string[]): void {
    for (const b of bases) this.refsCache.delete(b);
    this.db.transaction(() => {
      for (const b of bases) this.stmts.deletePath.run(b);
    })();
  }

  /** A fresh temp dir inside the store's filesystem, named after this process so gc knows whose it is. */
  makeTempDir(tag: string): string {
    // SELF names this process (host, pid, start time), the counter the folder; a leftover
    // of the same name (a pid and start time seen again after a reboot) is stepped over.
    for (;;) {
      const dir = path.join(this.tmpDir, `${SELF.replaceAll(":", "_")}_${tag}_${(tempCounter++).toString(36)}`);
      try {
        fs.mkdirSync(dir);
        return dir;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
  }

  /**
   * Removes what the store folder holds under `base` (never a valid path's
   * files: the caller invalidated it, or it never was valid). It is renamed
   * into a temp folder of this process first, in one step, then deleted: a
   * kill -9 meanwhile leaves a temp folder gc cleans, not half a path in
   * the store folder.
   */
  async discard(base: string): Promise<void> {
    // Nothing there, as before most builds: no temp folder to make and remove.
    try {
      fs.lstatSync(this.realPath(base));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    }
    await this.discardAll([base]);
  }

  /**
   * {@link discard} for many paths: all are moved out of the store folder into
   * one temp folder (calling `onMoved` with each one's index once its store
   * folder is gone), which is then deleted in one go. gc's batches take this
   * way: a folder per path cost a mkdir and an rmdir more each.
   */
  async discardAll(bases: readonly string[], onMoved?: (index: number) => void): Promise<void> {
    const tmp = this.makeTempDir("discard");
    try {
      for (const [i, base] of bases.entries()) {
        const from = this.realPath(base);
        try {
          await fs.promises.rename(from, path.join(tmp, String(i)));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // A folder moves to another parent only if its own ".." can be rewritten: a store folder
          // is read-only (0555), which stops every user but root.
          const st = code === "EACCES" || code === "EPERM" ? await fs.promises.lstat(from) : undefined;
          if (st?.isDirectory()) {
            await fs.promises.chmod(from, st.mode | 0o200);
            await fs.promises.rename(from, path.join(tmp, String(i)));
          } else if (code !== "ENOENT") throw err;
        }
        onMoved?.(i);
      }
    } finally {
      await removeTree(tmp);
    }
  }

  /** Temp dirs (names in `tmp/`) whose owning process is gone: what a killed ukb left. */
  deadTemps(): string[] {
    return fs.readdirSync(this.tmpDir).filter((name) => {
      // HOST_PID_START_TAG_N (makeTempDir): read from the right, a host name may hold "_".
      const parts = name.split("_");
      if (parts.length < 5) return false;
      const [pid, start] = parts.slice(-4, -2);
      return !ownerAlive(`${parts.slice(0, -4).join("_")}:${pid}:${start}`);
    });
  }

  /** Removes temp dirs whose owning process is gone (and reserves such a process left half written). */
  async cleanDeadTemps(): Promise<number> {
    removeDeadReserveTemps(this.root);
    const dead = this.deadTemps();
    for (const name of dead) await removeTree(path.join(this.tmpDir, name));
    return dead.length;
  }

  /** An out-link (`./result`) is a gc root while it points into this store. */
  /**
   * `owner` is the process that makes the link (this one by default; the
   * launcher, for the server): until it exits, a root whose link is not
   * there yet is kept, not dropped as stale.
   */
  addRoot(link: string, owner: string = SELF): void {
    const abs = path.resolve(link);
    this.stmts.addRoot.run(abs, owner);
    mirrorRoot(this.root, abs);
  }

  /**
   * Valid paths the roots point at. Stale roots are forgotten (unless
   * `forget` is false: a dry run), and every live one is made sure of in
   * roots/, which is marked complete once they all are (see roots.ts).
   */
  rootPaths(options: { forget?: boolean } = {}): Map<string, string> {
    const live = new Map<string, string>();
    let mirrored = true;
    for (const { link, owner } of this.stmts.roots.all()) {
      let target: string | undefined;
      try {
        target = fs.readlinkSync(link);
      } catch {
        target = undefined;
      }
      const base = target && path.dirname(path.resolve(path.dirname(link), target)) === this.storeDir ? path.basename(target) : undefined;
      if (base && this.isValid(base)) {
        live.set(link, base);
        // A root of a store made before roots/ existed gets its entry here.
        mirrored = mirrorRoot(this.root, link) && mirrored;
      } else if (target === undefined && owner && ownerAlive(owner)) {
        mirrored = mirrorRoot(this.root, link) && mirrored; // its link is still to come
      } else if (options.forget !== false) {
        this.stmts.deleteRoot.run(link);
        unmirrorRoot(this.root, link);
      }
    }
    if (mirrored) markRootsComplete(this.root);
    return live;
  }

  evalCache(): { get(key: string): string | undefined; put(key: string, value: string): void } {
    return {
      get: (key) => this.stmts.evalGet.get(key)?.value,
      put: (key, value) => {
        try {
          this.stmts.evalPut.run(key, value);
        } catch (err) {
          // A cache that cannot be written on a full disk is only not written: the next run evaluates again.
          if (!isNoSpace(err)) throw err;
        }
      },
    };
  }
}

/**
 * What stops this user writing the store's folder, told in a system call's
 * terms: SQLite says only "unable to open database file" or "attempt to write
 * a readonly database" (SQLITE_CANTOPEN, SQLITE_READONLY). `code` is kept
 * when it says more, or the folder is writable after all.
 */
function whyNotWritable(root: string, code: string | undefined): string | undefined {
  if (!code?.startsWith("SQLITE_CANTOPEN") && !code?.startsWith("SQLITE_READONLY")) return code;
  for (const p of [root, path.join(root, "ukb.sqlite")]) {
    try {
      fs.accessSync(p, fs.constants.W_OK);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code;
      if (why === "EROFS" || why === "EACCES" || why === "EPERM") return why;
    }
  }
  return code;
}

function ownerOf(p: string): number | undefined {
  try {
    return fs.statSync(p).uid;
  } catch {
    return undefined;
  }
}

let tempCounter = 0;
let handleCounter = 0;

/** The file that holds the reserve, in the store's root. */
const RESERVE_NAME = "reserved";
/**
 * Room for SQLite's shared-memory file (32 KiB) and the WAL frames of gc's
 * first transactions (a few pages each; every path gc deletes then frees more).
 */
export const RESERVED_BYTES = 1 << 20;

/** Reserves half written by a process that died (kill -9 while it wrote one). */
function removeDeadReserveTemps(root: string): void {
  try {
    for (const name of fs.readdirSync(root)) {
      const m = /^reserved\.tmp-(\d+)-/.exec(name);
      if (m && !pidAlive(Number(m[1]))) fs.rmSync(path.join(root, name), { force: true });
    }
  } catch {
    // best effort
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes the reserve of the store at `root`; true if there was one. */
function releaseReserve(root: string): boolean {
  try {
    fs.unlinkSync(path.join(root, RESERVE_NAME));
    return true;
  } catch {
    return false;
  }
}

/** An object whose properties are made by `makers` the first time each is read, then kept. */
function lazily<T extends Record<string, () => unknown>>(makers: T): { readonly [K in keyof T]: ReturnType<T[K]> } {
  const out = {} as { [K in keyof T]: ReturnType<T[K]> };
  for (const key of Object.keys(makers) as (keyof T & string)[]) {
    Object.defineProperty(out, key, {
      configurable: true,
      get() {
        const value = makers[key]!();
        Object.defineProperty(out, key, { value });
        return value;
      },
    });
  }
  return out;
}
