/**
 * Fixed-output checks: a fixed-output derivation promises a content hash; an
 * output that does not match never enters the store.
 */
import fs from "node:fs";
import { HashMismatchError } from "../errors/index.js";
import type { DrvRecord } from "../graph/index.js";
import { contentKeys, fileDigest } from "../store/index.js";

/** Throws if the staged output does not have the hash its derivation declares. */
export async function checkFixedOutput(drv: DrvRecord, staged: string, treeHash: string): Promise<void> {
  const fixed = drv.fixed!;
  let actual: string;
  if (fixed.mode === "tree") {
    actual = treeHash;
  } else {
    const st = await fs.promises.lstat(staged);
    if (!st.isFile()) throw new HashMismatchError(`'${drv.name}'`, `a file with ${fixed.algo} ${fixed.hash}`, "a directory or symlink");
    actual = await fileDigest(staged, fixed.algo);
  }
  if (actual !== fixed.hash) {
    throw new HashMismatchError(`'${drv.name}' (${fixed.algo})`, fixed.hash, actual, "fix the hash in the recipe, or check where the content came from");
  }
}

export { fileDigest, contentKeys };
