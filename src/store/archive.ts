/**
 * The canonical archive of a tree (ukb's NAR).
 *
 * tar and zip have no canonical form, so a tree is hashed over a stream that
 * keeps only what a build can depend on: entry type, executable bit, symlink
 * target and bytes, directory entries sorted by name. No times, owners or
 * other mode bits. The same tree gives the same bytes anywhere.
 *
 *   archive := "ukb-archive-1\0" node
 *   node    := "f" u64 size bytes      (regular file)
 *            | "x" u64 size bytes      (executable file)
 *            | "l" u32 len target      (symlink)
 *            | "d" u32 count (u32 len name node)*   (names sorted bytewise)
 */
import fs from "node:fs";
import path from "node:path";
import { blake3Stream } from "../graph/index.js";
import { UkbError } from "../errors/index.js";

const MAGIC = Buffer.from("ukb-archive-1\0");
const CHUNK = 1 << 20;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Streams the canonical archive of `root` (a file, a directory or a symlink). */
export async function* dumpTree(root: string): AsyncGenerator<Buffer> {
  yield MAGIC;
  yield* dumpNode(root);
}

async function* dumpNode(p: string): AsyncGenerator<Buffer> {
  const st = await fs.promises.lstat(p);
  if (st.isSymbolicLink()) {
    const target = Buffer.from(await fs.promises.readlink(p));
    yield Buffer.concat([Buffer.from("l"), u32(target.length), target]);
  } else if (st.isFile()) {
    yield Buffer.concat([Buffer.from(st.mode & 0o100 ? "x" : "f"), u64(st.size)]);
    if (st.size === 0) return;
    const fd = await fs.promises.open(p, "r");
    try {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, st.size));
      let left = st.size;
      while (left > 0) {
        const { bytesRead } = await fd.read(buf, 0, Math.min(buf.length, left), null);
        if (bytesRead === 0) throw new UkbError("store", `${p} shrank while it was being read`);
        left -= bytesRead;
        yield Buffer.from(buf.subarray(0, bytesRead));
      }
    } finally {
      await fd.close();
    }
  } else if (st.isDirectory()) {
    const names = (await fs.promises.readdir(p)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    yield Buffer.concat([Buffer.from("d"), u32(names.length)]);
    for (const name of names) {
      const n = Buffer.from(name);
      yield Buffer.concat([u32(n.length), n]);
      yield* dumpNode(path.join(p, name));
    }
  } else {
    throw new UkbError("store", `${p} is neither a file, a directory nor a symlink: the store holds nothing else`);
  }
}

/** The canonical hash of a tree: BLAKE3 (hex) over its archive, and the archive's size. */
export async function hashTree(root: string): Promise<{ blake3: string; size: number }> {
  const h = blake3Stream();
  let size = 0;
  for await (const chunk of dumpTree(root)) {
    h.update(chunk);
    size += chunk.length;
  }
  return { blake3: h.digestHex(), size };
}
