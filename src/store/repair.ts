/**
 * `ukb store repair`: a new database for a store whose `ukb.sqlite` is
 * damaged (or lost), made from the store folder itself and whatever the old
 * database still lets be read.
 *
 * The store folder holds only whole paths (everything enters it by one
 * rename), so each of its folders can be registered again: its content hash
 * is recomputed; where the old record of it is readable, the two must agree
 * (a path that differs is left unregistered, for gc); where it is not, the
 * path is registered from its files alone, and said so. References are the
 * old record's when the references table was read whole, otherwise what a
 * scan of the content finds among the folder's paths (as a build's are
 * found). A path whose references cannot all be registered is not either:
 * the new database never holds a dangling reference. Derivations, roots,
 * signatures and the content index are copied as far as they can be read;
 * the eval cache (a cache) and locks (of processes that must not be running)
 * are not.
 *
 * Nothing is lost: the damaged file is kept beside the new one as
 * `ukb.sqlite.damaged-<time>`, and the new database replaces the old in one
 * rename. Run it while no other ukb uses the store: it refuses when the old
 * database names a live process holding a lock or a temp root.
 */
import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { UkbError } from "../errors/index.js";
import { STORE_BASE_PATTERN } from "../graph/index.js";
import { hashTree } from "./archive.js";
import { openDb, openRawDb } from "./db.js";
import { contentKeys } from "./digest.js";
import { scanReferences } from "./fsutil.js";
import { SELF, ownerAlive } from "./lock.js";
import { mirroredRoots, rootsComplete } from "./roots.js";
import type { PathRow } from "./store.js";

export interface RepairReport {
  /** Where the store's root is. */
  readonly root: string;
  /** Paths registered in the new database. */
  readonly registered: number;
  /** Of those, the ones whose content matched a readable old record. */
  readonly asRecorded: number;
  /** Of those, the ones with no readable record: registered from their files alone. */
  readonly fromFilesOnly: readonly string[];
  /** Folders of the store folder left unregistered (gc removes them), and why. */
  readonly skipped: readonly { base: string; reason: string }[];
  /** Rows read from the old database, by table; a table that could not be read whole is marked. */
  readonly salvaged: Readonly<Record<SalvagedTable, { rows: number; whole: boolean }>>;
  /** Roots that only the store's roots/ folder still knew (see roots.ts), and whether it is known to hold them all. */
  readonly rootsFromFolder: { readonly added: number; readonly complete: boolean };
  /** Where the old database was kept, if there was one. */
  readonly damagedCopy?: string;
}

const BASE = STORE_BASE_PATTERN;

type SalvagedTable = "paths" | "refs" | "drvs" | "drv_outputs" | "roots" | "content";

/** What the old database recorded of a path (its id means nothing in the new one). */
type OldPath = Omit<PathRow, "id">;

/**
 * Every row of `query`'s table that SQLite can still read. A damaged page
 * stops a scan; the rows past it are looked up one rowid at a time (a point
 * lookup walks another route through the b-tree), until a long run of
 * rowids gives nothing.
 */
function salvage<T>(db: Database.Database | undefined, table: string, columns: string): { rows: T[]; whole: boolean } {
  if (!db) return { rows: [], whole: false };
  const rows: T[] = [];
  let last = 0;
  try {
    for (const row of db.prepare(`SELECT rowid AS _rowid, ${columns} FROM ${table} ORDER BY rowid`).iterate() as IterableIterator<T & { _rowid: number }>) {
      last = row._rowid;
      rows.push(row);
    }
    return { rows, whole: true };
  } catch {
    // fall through to point lookups
  }
  let one: Database.Statement;
  try {
    one = db.prepare(`SELECT rowid AS _rowid, ${columns} FROM ${table} WHERE rowid = ?`);
  } catch {
    return { rows, whole: false };
  }
  const GIVE_UP_AFTER = 50_000;
  for (let id = last + 1, lastHit = last; id - lastHit <= GIVE_UP_AFTER; id++) {
    try {
      const row = one.get(id) as T | undefined;
      if (row) {
        rows.push(row);
        lastHit = id;
      }
    } catch {
      // a damaged page on this rowid's route: the next may take another
    }
  }
  return { rows, whole: false };
}

/** Opens the old database for reading only, if SQLite will open it at all. */
function openOld(file: string): Database.Database | undefined {
  if (!fs.existsSync(file)) return undefined;
  try {
    const db = openRawDb(file, { readonly: true });
    db.prepare("SELECT 1 FROM sqlite_master LIMIT 1").get();
    return db;
  } catch {
    return undefined;
  }
}

/** Rebuilds the database of the store at `root`; see the module's comment. */
export async function repairStore(root: string): Promise<RepairReport> {
  const dbFile = path.join(root, "ukb.sqlite");
  const storeDir = path.join(root, "store");
  if (!fs.existsSync(storeDir)) throw new UkbError("store", `${root} is not a ukb store (no store/ folder)`);
  removeDeadRepairs(root);

  const old = openOld(dbFile);
  let salvaged: RepairReport["salvaged"];
  let oldPaths: OldPath[];
  let oldRefs: { referrer: string; reference: string }[];
  let drvs: { hash: string; name: string; json: string }[];
  let drvOutputs: { drv: string; output: string; base: string }[];
  let roots: { link: string }[];
  let rootsFromFolder: RepairReport["rootsFromFolder"];
  let content: { kind: string; hash: string; base: string }[];
  try {
    // Another ukb at work would race the rename below: refuse while the old database names one.
    const busy = [
      ...salvage<{ owner: string }>(old, "locks", "owner").rows,
      ...salvage<{ owner: string }>(old, "temp_roots", "owner").rows,
    ].find((r) => !r.owner.startsWith(`${SELF}`) && ownerAlive(r.owner));
    if (busy) {
      throw new UkbError("store", `another ukb process (${busy.owner.split(":").slice(0, 2).join(" pid ")}) is using the store at ${root}`, {
        hint: "run 'ukb store repair' once it has finished",
      });
    }
    const p = salvage<OldPath>(old, "paths", "base, content_hash, size, deriver, ca, registered_at, build_ms, log, signatures");
    // References by name: the ids of the old table mean nothing in the new one.
    const ids = salvage<{ id: number; base: string }>(old, "paths", "id, base");
    const r = salvage<{ referrer: number; reference: number }>(old, "refs", "referrer, reference");
    const d = salvage<{ hash: string; name: string; json: string }>(old, "drvs", "hash, name, json");
    const o = salvage<{ drv: string; output: string; base: string }>(old, "drv_outputs", "drv, output, base");
    const ro = salvage<{ link: string }>(old, "roots", "link");
    const c = salvage<{ kind: string; hash: string; base: string }>(old, "content", "kind, hash, base");
    const byId = new Map(ids.rows.map((row) => [row.id, row.base]));
    oldPaths = p.rows;
    oldRefs = r.rows.flatMap((row) => {
      const referrer = byId.get(row.referrer);
      const reference = byId.get(row.reference);
      return referrer && reference ? [{ referrer, reference }] : [];
    });
    drvs = d.rows;
    drvOutputs = o.rows;
    roots = ro.rows;
    content = c.rows;
    // The roots' copy on the filesystem: what a damaged table lost, it still has.
    const known = new Set(roots.map((row) => row.link));
    const fromFolder = mirroredRoots(root).filter((link) => !known.has(link));
    rootsFromFolder = { added: fromFolder.length, complete: rootsComplete(root) };
    roots = [...roots, ...fromFolder.map((link) => ({ link }))];
    const whole = (x: { whole: boolean }) => x.whole;
    salvaged = {
      paths: { rows: p.rows.length, whole: whole(p) },
      refs: { rows: oldRefs.length, whole: whole(r) && whole(ids) },
      drvs: { rows: d.rows.length, whole: whole(d) },
      drv_outputs: { rows: o.rows.length, whole: whole(o) },
      roots: { rows: ro.rows.length, whole: whole(ro) },
      content: { rows: c.rows.length, whole: whole(c) },
    };
  } finally {
    old?.close();
  }

  // What the store folder holds, hashed; checked against the old record where there is one.
  const recorded = new Map(oldPaths.map((row) => [row.base, row]));
  const refsOf = new Map<string, string[]>();
  for (const { referrer, reference } of oldRefs) {
    let list = refsOf.get(referrer);
    if (!list) refsOf.set(referrer, (list = []));
    list.push(reference);
  }
  const present = fs.readdirSync(storeDir).filter((name) => BASE.test(name)).sort();
  const byHashPart = new Map(present.map((b) => [b.slice(0, 32), b]));
  const skipped: { base: string; reason: string }[] = [];
  const candidates = new Map<string, { base: string; blake3: string; size: number; references: string[]; record?: OldPath }>();
  for (const base of present) {
    const real = path.join(storeDir, base);
    let hashed: { blake3: string; size: number };
    try {
      hashed = await hashTree(real);
    } catch (err) {
      skipped.push({ base, reason: `cannot be read: ${(err as Error).message}` });
      continue;
    }
    const record = recorded.get(base);
    if (record && (record.content_hash !== hashed.blake3 || record.size !== hashed.size)) {
      skipped.push({ base, reason: `its content (blake3 ${hashed.blake3}) differs from the recorded ${record.content_hash}` });
      continue;
    }
    // The recorded references when the table was read whole (a build's scan saw only its inputs);
    // otherwise a scan against every path in the folder, as a build's finds them.
    const references =
      record && salvaged.refs.whole
        ? [...(refsOf.get(base) ?? [])].sort()
        : [...(await scanReferences(real, [...byHashPart.keys()]))].map((h) => byHashPart.get(h)!).sort();
    candidates.set(base, { base, ...hashed, references, ...(record ? { record } : {}) });
  }

  // Only paths whose references are all registered, references first.
  const order: string[] = [];
  const state = new Map<string, "visiting" | "ok" | "no">();
  const visit = (base: string): boolean => {
    const s = state.get(base);
    if (s === "ok") return true;
    if (s === "no") return false;
    if (s === "visiting") return true; // a cycle through references (only a path's own, here): fine
    const c = candidates.get(base);
    if (!c) return false;
    state.set(base, "visiting");
    const missing = c.references.filter((r) => r !== base && !visit(r));
    if (missing.length > 0) {
      state.set(base, "no");
      skipped.push({ base, reason: `refers to ${missing[0]}${missing.length > 1 ? ` and ${missing.length - 1} more` : ""}, which cannot be registered` });
      return false;
    }
    state.set(base, "ok");
    order.push(base);
    return true;
  };
  for (const base of candidates.keys()) visit(base);

  // The new database, beside the old one, then renamed over it.
  const fresh = `${dbFile}.repair-${process.pid}`;
  for (const f of [fresh, `${fresh}-wal`, `${fresh}-shm`]) fs.rmSync(f, { force: true });
  const db = openDb(fresh);
  const fromFilesOnly: string[] = [];
  try {
    const insertPath = db.prepare(
      "INSERT INTO paths (base, content_hash, size, deriver, ca, registered_at, build_ms, log, signatures) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    const insertRef = db.prepare("INSERT OR IGNORE INTO refs (referrer, reference) SELECT a.id, b.id FROM paths a, paths b WHERE a.base = ? AND b.base = ?");
    const insertContent = db.prepare("INSERT OR IGNORE INTO content (kind, hash, base) VALUES (?, ?, ?)");
    const now = Date.now();
    const keysOf = new Map<string, { kind: string; hash: string }[]>();
    for (const base of order) {
      const c = candidates.get(base)!;
      // Fixed outputs without a readable content index: their keys again (what lets a fetch be served offline).
      if (c.record?.ca && !content.some((row) => row.base === base)) keysOf.set(base, await contentKeys(path.join(storeDir, base), c.blake3));
    }
    db.transaction(() => {
      for (const base of order) {
        const c = candidates.get(base)!;
        const r = c.record;
        if (!r) fromFilesOnly.push(base);
        insertPath.run(base, c.blake3, c.size, r?.deriver ?? null, r?.ca ?? null, r?.registered_at ?? now, r?.build_ms ?? null, r?.log ?? null, r?.signatures ?? "[]");
      }
      for (const base of order) for (const ref of candidates.get(base)!.references) insertRef.run(base, ref);
      const registered = new Set(order);
      for (const row of content) if (registered.has(row.base)) insertContent.run(row.kind, row.hash, row.base);
      for (const [base, keys] of keysOf) for (const k of keys) insertContent.run(k.kind, k.hash, base);
      const insertDrv = db.prepare("INSERT OR IGNORE INTO drvs (hash, name, json) VALUES (?, ?, ?)");
      for (const row of drvs) insertDrv.run(row.hash, row.name, row.json);
      const insertOutput = db.prepare("INSERT OR REPLACE INTO drv_outputs (drv, output, base) VALUES (?, ?, ?)");
      for (const row of drvOutputs) insertOutput.run(row.drv, row.output, row.base);
      const insertRoot = db.prepare("INSERT OR IGNORE INTO roots (link) VALUES (?)");
      for (const row of roots) insertRoot.run(row.link);
    })();
    // One file: nothing of the new database may live in a WAL that the rename leaves behind.
    db.pragma("wal_checkpoint(TRUNCATE)");
  } finally {
    db.close();
  }

  // Keep the old file (and its WAL, which holds its last transactions), drop its WAL and
  // shared memory (SQLite would apply them to the new file), then rename the new one in.
  let damagedCopy: string | undefined;
  if (fs.existsSync(dbFile)) {
    damagedCopy = `${dbFile}.damaged-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    fs.copyFileSync(dbFile, damagedCopy);
    if (fs.existsSync(`${dbFile}-wal`)) fs.copyFileSync(`${dbFile}-wal`, `${damagedCopy}-wal`);
  }
  for (const f of [`${dbFile}-wal`, `${dbFile}-shm`, `${fresh}-wal`, `${fresh}-shm`]) fs.rmSync(f, { force: true });
  fs.renameSync(fresh, dbFile);

  return {
    root,
    registered: order.length,
    asRecorded: order.length - fromFilesOnly.length,
    fromFilesOnly,
    skipped,
    salvaged,
    rootsFromFolder,
    ...(damagedCopy ? { damagedCopy } : {}),
  };
}

/** New databases a killed repair left half made. */
function removeDeadRepairs(root: string): void {
  for (const name of fs.readdirSync(root)) {
    const m = /^ukb\.sqlite\.repair-(\d+)(-wal|-shm)?$/.exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") fs.rmSync(path.join(root, name), { force: true });
    }
  }
}
