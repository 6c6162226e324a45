/**
 * `ukb store verify`: recompute every valid path's hash, check that its
 * references are valid, and list leftovers in the store folder that are not
 * valid paths (what a crash between rename and registration leaves: noted,
 * not a problem). The database itself is checked first (SQLite's
 * quick_check); a damaged one is a problem like the others, read as far as
 * it can be.
 */
import fs from "node:fs";
import { STORE_BASE_PATTERN } from "../graph/index.js";
import { hashTree } from "./archive.js";
import { isSymlink } from "./fsutil.js";
import { isDamagedDb } from "./damage.js";
import type { Store } from "./store.js";

export interface VerifyProblem {
  readonly base: string;
  readonly problem: "missing" | "modified" | "dangling-reference" | "database";
  readonly detail: string;
}

export interface VerifyReport {
  readonly checked: number;
  readonly problems: readonly VerifyProblem[];
  /**
   * Folders in the store folder that are not valid paths: what a process
   * killed between moving an output in and registering it leaves. Not a
   * problem (nothing valid refers to them, ukb never reads them, and the next
   * build of the path or gc removes them), as Nix's invalid paths are not.
   */
  readonly leftovers: readonly string[];
  /** Scratch folders in `tmp/` of processes that died (kill -9): not a problem either; gc and the next build remove them. */
  readonly deadTemps: readonly string[];
}

export async function verifyStore(store: Store): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  // The database first: SQLite's own check of its pages and indexes (what a bad disk or an overwrite breaks).
  const database = "ukb.sqlite";
  let integrity: string[];
  try {
    integrity = (store.db.pragma("quick_check") as { quick_check: string }[]).map((r) => r.quick_check.replace(/\s*\n\s*/g, " "));
  } catch (err) {
    if (!isDamagedDb(err)) throw err;
    integrity = [(err as Error).message];
  }
  if (integrity.join() !== "ok") problems.push({ base: database, problem: "database", detail: `damaged: ${integrity.slice(0, 3).join("; ")}${integrity.length > 3 ? `; and ${integrity.length - 3} more` : ""}` });
  let valid: string[];
  try {
    valid = store.allValid();
  } catch (err) {
    if (!isDamagedDb(err)) throw err;
    problems.push({ base: database, problem: "database", detail: `cannot list the valid paths: ${(err as Error).message}` });
    return { checked: 0, problems, leftovers: [], deadTemps: [] };
  }
  const validSet = new Set(valid);
  let checked = 0;
  for (const base of valid) {
    let info;
    try {
      info = store.info(base);
    } catch (err) {
      if (!isDamagedDb(err)) throw err;
      problems.push({ base, problem: "database", detail: `cannot read what is registered: ${(err as Error).message}` });
      continue;
    }
    // Collected by a gc running meanwhile: no longer registered, so nothing to check.
    if (!info) continue;
    checked++;
    const real = store.realPath(base);
    if (!fs.existsSync(real) && !isSymlink(real)) {
      if (!store.isValid(base)) continue;
      problems.push({ base, problem: "missing", detail: `registered but ${real} does not exist` });
      continue;
    }
    const { blake3, size } = await hashTree(real);
    if (blake3 !== info.contentHash || size !== info.size) {
      problems.push({ base, problem: "modified", detail: `content hash ${blake3} (size ${size}) differs from the registered ${info.contentHash} (size ${info.size})` });
    }
    for (const r of info.references) {
      if (!validSet.has(r)) problems.push({ base, problem: "dangling-reference", detail: `refers to ${r}, which is not valid` });
    }
  }
  const leftovers = fs.readdirSync(store.storeDir).filter((name) => STORE_BASE_PATTERN.test(name) && !validSet.has(name) && !store.isValid(name));
  return { checked, problems, leftovers, deadTemps: store.deadTemps() };
}
