/**
 * The store's database (better-sqlite3, WAL): what is valid, and facts about
 * it. A path is valid exactly when its row exists; rows are written in one
 * transaction after the files are in place, so a crash at any moment leaves
 * either a valid path or an invalid leftover that the next build removes.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import Database from "better-sqlite3";

export type Db = Database.Database;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS paths (
  id            INTEGER PRIMARY KEY,
  base          TEXT NOT NULL UNIQUE,   -- <hash>-<name>
  content_hash  TEXT NOT NULL,          -- BLAKE3 of the canonical archive
  size          INTEGER NOT NULL,       -- size of the canonical archive
  deriver       TEXT,                   -- hash of the derivation that made it
  ca            TEXT,                   -- fixed outputs: the declared hash
  registered_at INTEGER NOT NULL,
  build_ms      INTEGER,
  log           TEXT,                   -- log file, relative to the store root
  signatures    TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS refs (
  referrer  INTEGER NOT NULL REFERENCES paths(id) ON DELETE CASCADE,
  reference INTEGER NOT NULL REFERENCES paths(id) ON DELETE RESTRICT,
  PRIMARY KEY (referrer, reference)
);
CREATE INDEX IF NOT EXISTS refs_reference ON refs(reference);
CREATE TABLE IF NOT EXISTS drvs (
  hash TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drv_outputs (
  drv    TEXT NOT NULL,
  output TEXT NOT NULL,
  base   TEXT NOT NULL,
  PRIMARY KEY (drv, output)
);
CREATE INDEX IF NOT EXISTS drv_outputs_base ON drv_outputs(base);
CREATE TABLE IF NOT EXISTS roots (
  link  TEXT PRIMARY KEY,               -- absolute path of an out-link
  owner TEXT                            -- the process that makes the link: kept without it while that lives
);
CREATE TABLE IF NOT EXISTS locks (
  name  TEXT PRIMARY KEY,
  owner TEXT NOT NULL,                  -- host:pid:start-time
  since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS temp_roots (
  owner TEXT NOT NULL,                  -- host:pid:start-time of the process using the path
  base  TEXT NOT NULL,                  -- <hash>-<name>, valid or still to be made
  PRIMARY KEY (owner, base)
);
CREATE TABLE IF NOT EXISTS content (
  kind TEXT NOT NULL,                   -- file-sha256 | file-blake3 | tree-blake3
  hash TEXT NOT NULL,                   -- lowercase hex
  base TEXT NOT NULL REFERENCES paths(base) ON DELETE CASCADE,
  PRIMARY KEY (kind, hash, base)
);
CREATE TABLE IF NOT EXISTS eval_cache (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

/** Bumped whenever SCHEMA changes; a store at this version skips the schema on open. */
const SCHEMA_VERSION = 4;

let addonFile: string | null | undefined;
/**
 * better-sqlite3's compiled addon, named directly: otherwise it loads the
 * `bindings` package, which probes a dozen places for it (~5 ms of a no-op
 * realise here). Undefined when it is not where npm builds it.
 */
function nativeBinding(): string | undefined {
  if (addonFile === undefined) {
    try {
      const dir = path.dirname(createRequire(import.meta.url).resolve("better-sqlite3/package.json"));
      const candidate = path.join(dir, "build/Release/better_sqlite3.node");
      addonFile = fs.existsSync(candidate) ? candidate : null;
    } catch {
      addonFile = null;
    }
  }
  return addonFile ?? undefined;
}

/** The database file as it is: no pragmas, no schema (what `store repair` reads a damaged file with). */
export function openRawDb(file: string, options: { readonly?: boolean } = {}): Db {
  const addon = nativeBinding();
  return new Database(file, { ...(addon ? { nativeBinding: addon } : {}), readonly: Boolean(options.readonly), fileMustExist: true });
}

export function openDb(file: string): Db {
  const addon = nativeBinding();
  const db = new Database(file, addon ? { nativeBinding: addon } : {});
  // One exec, not three pragma() calls (each prepares a statement): this runs on every command.
  db.exec("PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON");
  // WAL is a property of the file: set once, when the store is created or upgraded.
  if (db.pragma("user_version", { simple: true }) !== SCHEMA_VERSION) {
    db.pragma("journal_mode = WAL");
    db.exec(SCHEMA);
    // Stores made before roots named the process that makes their link.
    if (!(db.pragma("table_info(roots)") as { name: string }[]).some((c) => c.name === "owner")) db.exec("ALTER TABLE roots ADD COLUMN owner TEXT");
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }
  return db;
}
