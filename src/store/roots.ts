/**
 * A copy of the gc roots on the filesystem, beside the database: `roots/`
 * in the store holds one symlink per root, named by a hash of the root's
 * link and pointing at it (as Nix's `gcroots/auto`). The database's `roots`
 * table is what gc reads; this folder is what `ukb store repair` reads when
 * that table is damaged, so a repaired store still knows every `./result`
 * and gc does not delete what they point at.
 *
 * The folder is known to hold every root only when it says so: a file
 * `roots/complete`, written with a new store and by each gc that found every
 * root there, removed whenever an entry could not be written. A store made
 * by a ukb before this folder existed has roots only its database knows
 * until a gc has run; repair then still warns.
 */
import fs from "node:fs";
import path from "node:path";

const ROOTS_DIR = "roots";

/**
 * The entry's name: a 64-bit FNV-1a of the link, in hex. Not node:crypto:
 * every realise, the no-op included, records its root, and crypto brings
 * Node's streams with it (~10 ms of a 150 ms no-op). A clash of two links is
 * caught by reading the entry back (mirrorRoot).
 */
function entryFor(storeRoot: string, link: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(link)) h = BigInt.asUintN(64, (h ^ BigInt(byte)) * 0x100000001b3n);
  return path.join(storeRoot, ROOTS_DIR, h.toString(16).padStart(16, "0"));
}

const COMPLETE = "complete";

/**
 * Records `link` (absolute) in the folder, if it is not there yet, and says
 * whether it is there. Best effort: the database holds the root either way,
 * and a folder that cannot be written (a store shared with a user who may
 * not write it) only costs repair its backup, and the folder its mark.
 */
export function mirrorRoot(storeRoot: string, link: string): boolean {
  const entry = entryFor(storeRoot, link);
  try {
    fs.symlinkSync(link, entry);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") {
      try {
        return fs.readlinkSync(entry) === link;
      } catch {
        return false;
      }
    }
    if (code === "ENOENT") {
      try {
        fs.mkdirSync(path.dirname(entry), { recursive: true });
        fs.symlinkSync(link, entry);
        return true;
      } catch {
        // below
      }
    }
    try {
      fs.rmSync(path.join(storeRoot, ROOTS_DIR, COMPLETE), { force: true });
    } catch {
      // a folder we may not write: its mark is not ours to remove either
    }
    return false;
  }
}

/** Forgets `link` (a root gc found stale). Best effort, as mirrorRoot: a leftover entry only names a link that is gone. */
export function unmirrorRoot(storeRoot: string, link: string): void {
  try {
    fs.rmSync(entryFor(storeRoot, link), { force: true });
  } catch {
    // see above
  }
}

/** Marks the folder as holding every root (a new store; a gc that found them all there). */
export function markRootsComplete(storeRoot: string): void {
  const mark = path.join(storeRoot, ROOTS_DIR, COMPLETE);
  if (fs.existsSync(mark)) return;
  try {
    fs.mkdirSync(path.dirname(mark), { recursive: true });
    fs.writeFileSync(mark, "");
  } catch {
    // unmarked: repair warns, as it would have
  }
}

/** Whether the folder holds every root (see the module's comment). */
export function rootsComplete(storeRoot: string): boolean {
  return fs.existsSync(path.join(storeRoot, ROOTS_DIR, COMPLETE));
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
