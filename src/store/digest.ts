/**
 * Digests the content index keeps: a file's sha256 and BLAKE3 (what recipes
 * pin), a tree's canonical BLAKE3.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import { blake3Stream } from "../graph/index.js";
import type { ContentKind } from "./store.js";

// node:crypto loads on first use: it pulls in Node's streams, 10 ms of a no-op realise here.
let crypto: typeof import("node:crypto") | undefined;
const nodeCrypto = () => (crypto ??= createRequire(import.meta.url)("node:crypto") as typeof import("node:crypto"));

/** sha256 and BLAKE3 of a file in one pass of 1 MiB reads. */
export function fileDigests(file: string): { sha256: string; blake3: string } {
  const sha = nodeCrypto().createHash("sha256");
  const b3 = blake3Stream();
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      sha.update(buf.subarray(0, n));
      b3.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return { sha256: sha.digest("hex"), blake3: b3.digestHex() };
}

export async function fileDigest(file: string, algo: "sha256" | "blake3"): Promise<string> {
  return fileDigests(file)[algo];
}

/** The content-index keys of a fixed output: both digests of a file, the canonical hash of a tree. */
export async function contentKeys(staged: string, treeHash: string): Promise<{ kind: ContentKind; hash: string }[]> {
  const st = fs.lstatSync(staged);
  if (!st.isFile()) return [{ kind: "tree-blake3", hash: treeHash }];
  const d = fileDigests(staged);
  return [
    { kind: "file-sha256", hash: d.sha256 },
    { kind: "file-blake3", hash: d.blake3 },
    { kind: "tree-blake3", hash: treeHash },
  ];
}
