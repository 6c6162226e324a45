/**
 * Fixed-output checks: a fixed-output derivation promises a content hash; an
 * output that does not match never enters the store.
 */
import fs from "node:fs";
import crypto from "node:crypto";
import { HashMismatchError } from "../errors/index.js";
import { blake3Stream, type DrvRecord } from "../graph/index.js";

async function fileDigest(file: string, algo: "sha256" | "blake3"): Promise<string> {
  const h = algo === "sha256" ? crypto.createHash("sha256") : blake3Stream();
  const fd = await fs.promises.open(file, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fd.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fd.close();
  }
  return "digest" in h ? h.digest("hex") : h.digestHex();
}

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

export { fileDigest };
