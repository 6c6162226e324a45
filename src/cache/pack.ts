/**
 * A path's tree as a manifest plus blobs (see info.ts), and back.
 *
 * Packing reads every file once and computes, in the same pass, the
 * canonical archive's hash (so a path modified on disk is never uploaded
 * under its old hash), the manifest, and each large file's BLAKE3.
 */
import fs from "node:fs";
import path from "node:path";
import { blake3Stream } from "../graph/index.js";
import { MANIFEST_MAGIC, restoreTree, u32, u64, type ExternalFile } from "../store/archive.js";
import { EXTERNAL_MIN } from "./info.js";

const CANONICAL_MAGIC = Buffer.from("ukb-archive-1\0");
const CHUNK = 1 << 20;

export interface PackedTree {
  /** The manifest's bytes (uncompressed). */
  readonly manifest: Buffer;
  /** BLAKE3 → a file holding those bytes, and their size. */
  readonly externals: ReadonlyMap<string, { file: string; size: number }>;
  /** The canonical archive's BLAKE3 and size, as computed while packing. */
  readonly contentHash: string;
  readonly size: number;
}


export async function packTree(root: string, externalMin = EXTERNAL_MIN): Promise<PackedTree> {
  const canonical = blake3Stream();
  let size = 0;
  const manifest: Buffer[] = [MANIFEST_MAGIC];
  const externals = new Map<string, { file: string; size: number }>();
  const both = (b: Buffer) => {
    canonical.update(b);
    size += b.length;
    manifest.push(b);
  };
  const canonicalOnly = (b: Buffer) => {
    canonical.update(b);
    size += b.length;
  };
  canonicalOnly(CANONICAL_MAGIC);

  const walk = async (p: string): Promise<void> => {
    const st = await fs.promises.lstat(p);
    if (st.isSymbolicLink()) {
      const target = Buffer.from(await fs.promises.readlink(p));
      both(Buffer.concat([Buffer.from("l"), u32(target.length), target]));
    } else if (st.isFile()) {
      const exec = (st.mode & 0o100) !== 0;
      const header = Buffer.concat([Buffer.from(exec ? "x" : "f"), u64(st.size)]);
      const external = st.size >= externalMin;
      if (external) canonicalOnly(header);
      else both(header);
      const fileHash = external ? blake3Stream() : undefined;
      const fd = await fs.promises.open(p, "r");
      try {
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(1, st.size)));
        let left = st.size;
        while (left > 0) {
          const { bytesRead } = await fd.read(buf, 0, Math.min(buf.length, left), null);
          if (bytesRead === 0) throw new Error(`${p} shrank while it was being read`);
          left -= bytesRead;
          const chunk = buf.subarray(0, bytesRead);
          if (fileHash) {
            fileHash.update(chunk);
            canonicalOnly(chunk);
          } else {
            both(Buffer.from(chunk));
          }
        }
      } finally {
        await fd.close();
      }
      if (fileHash) {
        const h = fileHash.digestHex();
        if (!externals.has(h)) externals.set(h, { file: p, size: st.size });
        manifest.push(Buffer.concat([Buffer.from(exec ? "X" : "F"), u64(st.size), Buffer.from(h, "hex")]));
      }
    } else if (st.isDirectory()) {
      const names = (await fs.promises.readdir(p)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      both(Buffer.concat([Buffer.from("d"), u32(names.length)]));
      for (const name of names) {
        const n = Buffer.from(name);
        both(Buffer.concat([u32(n.length), n]));
        await walk(path.join(p, name));
      }
    } else {
      throw new Error(`${p} is neither a file, a directory nor a symlink`);
    }
  };
  await walk(root);
  return { manifest: Buffer.concat(manifest), externals, contentHash: canonical.digestHex(), size };
}

/** Rebuilds a tree from its manifest's bytes; `external` writes each large file. */
export async function unpackTree(
  manifest: AsyncIterable<Uint8Array>,
  dest: string,
  external: (ref: ExternalFile, file: string) => Promise<void>,
  maxSize: number,
): Promise<{ size: number }> {
  return restoreTree(manifest, dest, { magic: MANIFEST_MAGIC, external, maxSize });
}
