/**
 * A copy of the gc roots on the filesystem, beside the database: `roots/`
 * in the store holds one symlink per root, named by a hash of the root's
 * link and pointing at it (as Nix's `gcroots/auto`). The database's `roots`
 * table is what gc reads; this folder is what `ukb store repair` reads when
 * that table is damaged, so a repaired store still knows every `./result`
 * and gc does not delete what they point at.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const ROOTS_DIR = "roots";

function entryFor(storeRoot: string, link: string): string {
  return path.join(storeRoot, ROOTS_DIR, createHash("sha256").update(link).digest("hex").slice(0, 32));
}

/**
 * Records `link` (absolute) in the folder, if it is not there yet. Best
 * effort: the database holds the root either way, and a folder that cannot
 * be written (a read-only copy of a store) only costs repair its backup.
 */
export function mirrorRoot(storeRoot: string, link: string): void {
  const entry = entryFor(storeRoot, link);
  try {
    fs.symlinkSync(link, entry);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      try {
        fs.mkdirSync(path.dirname(entry), { recursive: true });
        fs.symlinkSync(link, entry);
      } catch {
        // see above
      }
    }
    // EEXIST: recorded already.
  }
}

/** Forgets `link` (a root gc found stale). */
export function unmirrorRoot(storeRoot: string, link: string): void {
  fs.rmSync(entryFor(storeRoot, link), { force: true });
}

/** Every link the folder records (repair's second source of roots). */
export function mirroredRoots(storeRoot: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(storeRoot, ROOTS_DIR));
  } catch {
    return [];
  }
  const links: string[] = [];
  for (const name of names) {
    try {
      const link = fs.readlinkSync(path.join(storeRoot, ROOTS_DIR, name));
      // Only entries this module wrote: an absolute link under its own hash.
      if (path.isAbsolute(link) && entryFor(storeRoot, link) === path.join(storeRoot, ROOTS_DIR, name)) links.push(link);
    } catch {
      // not a symlink: not ours
    }
  }
  return links.sort();
}
