/**
 * A damaged database: `ukb.sqlite` overwritten, truncated, or corrupted by a
 * disk. SQLite says so (SQLITE_CORRUPT, SQLITE_NOTADB) at the first statement
 * that reads a bad page, from anywhere in ukb; the CLI turns that into one
 * line naming the file and what to do. Light on purpose: `cli/main.ts` loads it.
 */
import path from "node:path";
import { UkbError } from "../errors/index.js";

/** The store opened last in this process: which database a damage report is about. */
let lastOpened: string | undefined;

/** Called by Store.open. */
export function noteOpened(root: string): void {
  lastOpened = root;
}

/** True when SQLite found the database file damaged. */
export function isDamagedDb(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && (code.startsWith("SQLITE_CORRUPT") || code === "SQLITE_NOTADB");
}

export const DAMAGED_HINT =
  "'ukb store repair' makes a new one from the store folder and what the old one still lets be read (it keeps the old file); 'ukb store verify' lists the damage";

/** The one-line report of a damaged database. */
export function damagedDbError(err: unknown, root = lastOpened): UkbError {
  const file = root ? path.join(root, "ukb.sqlite") : "the store's database";
  return new UkbError("store", `${file} is damaged (SQLite: ${(err as Error).message})`, { hint: DAMAGED_HINT, cause: err });
}
