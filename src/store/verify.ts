/**
 * `ukb store verify`: recompute every valid path's hash, check that its
 * references are valid, and list leftovers in the store folder that are not
 * valid paths (what a crash between rename and registration leaves).
 */
import fs from "node:fs";
import { hashTree } from "./archive.js";
import { isSymlink } from "./fsutil.js";
import type { Store } from "./store.js";

export interface VerifyProblem {
  readonly base: string;
  readonly problem: "missing" | "modified" | "dangling-reference" | "not-registered";
  readonly detail: string;
}

export interface VerifyReport {
  readonly checked: number;
  readonly problems: readonly VerifyProblem[];
}

export async function verifyStore(store: Store): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const valid = store.allValid();
  const validSet = new Set(valid);
  for (const base of valid) {
    const info = store.info(base)!;
    const real = store.realPath(base);
    if (!fs.existsSync(real) && !isSymlink(real)) {
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
  for (const name of fs.readdirSync(store.storeDir)) {
    if (!validSet.has(name)) problems.push({ base: name, problem: "not-registered", detail: "in the store folder but not valid (an interrupted build; gc removes it)" });
  }
  return { checked: valid.length, problems };
}
