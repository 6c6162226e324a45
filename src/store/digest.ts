/**
 * Digests the content index keeps: a file's sha256 and BLAKE3 (what recipes
 * pin), a tree's canonical BLAKE3.
 */
import fs from "node:fs";
import crypto from "node:crypto";
import { blake3Stream } from "../graph/index.js";
import type { ContentKind } from "./store.js";

export async function fileDigest(file: string, algo: "sha256" | "blake3"): Promise<string> {
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

/** The content-index keys of a fixed output: both digests of a file, the canonical hash of a tree. */
export async function contentKeys(staged: string, treeHash: string): Promise<{ kind: ContentKind; hash: string }[]> {
  const st = await fs.promises.lstat(staged);
  if (!st.isFile()) return [{ kind: "tree-blake3", hash: treeHash }];
  return [
    { kind: "file-sha256", hash: await fileDigest(staged, "sha256") },
    { kind: "file-blake3", hash: await fileDigest(staged, "blake3") },
    { kind: "tree-blake3", hash: treeHash },
  ];
}

