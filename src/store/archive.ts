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

/** Little-endian length fields of the archive format (shared with the cache's manifests). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Streams the canonical archive of `root` (a file, a directory or a symlink). */
export async function* dumpTree(root: string): AsyncGenerator<Buffer> {
  yield MAGIC;
  yield* dumpNode(root);
}

// Synchronous fs calls inside: see fsutil.ts for why (a large tree walks minutes faster).
async function* dumpNode(p: string): AsyncGenerator<Buffer> {
  yield* dumpNodeSync(p);
}

function* dumpNodeSync(p: string): Generator<Buffer> {
  const st = fs.lstatSync(p);
  if (st.isSymbolicLink()) {
    const target = Buffer.from(fs.readlinkSync(p));
    yield Buffer.concat([Buffer.from("l"), u32(target.length), target]);
  } else if (st.isFile()) {
    yield Buffer.concat([Buffer.from(st.mode & 0o100 ? "x" : "f"), u64(st.size)]);
    if (st.size === 0) return;
    const fd = fs.openSync(p, "r");
    try {
      let left = st.size;
      while (left > 0) {
        // A fresh buffer per chunk: consumers (stream writers) may keep it.
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, left));
        const bytesRead = fs.readSync(fd, buf, 0, buf.length, null);
        if (bytesRead === 0) throw new UkbError("store", `${p} shrank while it was being read`);
        left -= bytesRead;
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      fs.closeSync(fd);
    }
  } else if (st.isDirectory()) {
    const names = fs.readdirSync(p).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    yield Buffer.concat([Buffer.from("d"), u32(names.length)]);
    for (const name of names) {
      const n = Buffer.from(name);
      yield Buffer.concat([u32(n.length), n]);
      yield* dumpNodeSync(path.join(p, name));
    }
  } else {
    throw new UkbError("store", `${p} is neither a file, a directory nor a symlink: the store holds nothing else`);
  }
}

/** The canonical hash of a tree: BLAKE3 (hex) over its archive, and the archive's size. */
export async function hashTree(root: string): Promise<{ blake3: string; size: number }> {
  const h = blake3Stream();
  h.update(MAGIC);
  let size = MAGIC.length;
  for (const chunk of dumpNodeSync(root)) {
    h.update(chunk);
    size += chunk.length;
  }
  return { blake3: h.digestHex(), size };
}

// ---- restoreTree: the inverse of dumpTree (added for binary caches, issue 7) ----

/**
 * A manifest (src/cache) is an archive with holes: its magic differs and, besides
 * the nodes above, it may hold
 *   node := "F" u64 size blake3[32]   (regular file whose bytes live elsewhere)
 *         | "X" u64 size blake3[32]   (the same, executable)
 * A plain archive never holds these.
 */
export const MANIFEST_MAGIC = Buffer.from("ukb-manifest-1\0");

/** A file a manifest names by its BLAKE3 instead of carrying its bytes. */
export interface ExternalFile {
  readonly blake3: string;
  readonly size: number;
  readonly executable: boolean;
}

export interface RestoreOptions {
  /** The magic the stream must start with (default: a plain archive's). */
  readonly magic?: Buffer;
  /**
   * Writes an external file's bytes at `file` (which does not exist yet). Needed
   * for manifests; the promise may settle later: restoreTree waits for all of
   * them (and reports the first failure) before it returns.
   */
  readonly external?: (ref: ExternalFile, file: string) => Promise<void>;
  /** Refuse streams whose tree would be larger than this (bytes of the canonical archive). */
  readonly maxSize?: number;
}

const MAX_DEPTH = 256;
const MAX_NAME = 255;
const MAX_LINK = 4095;

function corrupt(why: string): UkbError {
  return new UkbError("store", `refusing a corrupt archive: ${why}`);
}

/** Reads exact byte counts from a stream of chunks. */
class ChunkReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Uint8Array>;
  private ended = false;
  /** Bytes handed out so far. */
  consumed = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    const chunk = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    return true;
  }

  async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) if (!(await this.more())) throw corrupt(`truncated after ${this.consumed + this.buf.length} bytes`);
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    this.consumed += n;
    return out;
  }

  /** Yields exactly `n` bytes, in chunks as they come. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.more())) throw corrupt(`truncated after ${this.consumed} bytes`);
      const k = Math.min(left, this.buf.length);
      const out = this.buf.subarray(0, k);
      this.buf = this.buf.subarray(k);
      this.consumed += k;
      left -= k;
      yield out;
    }
  }

  async atEnd(): Promise<boolean> {
    while (this.buf.length === 0) if (!(await this.more())) return true;
    return false;
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/**
 * Rebuilds the tree a canonical archive (or a manifest) describes at `dest`,
 * which must not exist. Streaming: file bytes go to disk as they arrive.
 * Refuses anything dumpTree could not have written: names that are empty,
 * `.`, `..`, hold `/` or NUL or are not UTF-8, duplicate or unsorted entries,
 * unknown node types, trailing bytes, absurd depths. Nothing is written
 * outside `dest`: entries are only ever created (never opened) inside
 * directories this function made. Permissions are left plain (0644/0755 and
 * directories 0755): normaliseTree makes them the store's.
 * Returns the size of the canonical archive of the restored tree.
 */
export async function restoreTree(source: AsyncIterable<Uint8Array>, dest: string, options: RestoreOptions = {}): Promise<{ size: number }> {
  const magic = options.magic ?? MAGIC;
  const reader = new ChunkReader(source);
  const pending: Promise<void>[] = [];
  let size = MAGIC.length; // the canonical archive's, whatever the stream's magic
  const grow = (n: number): void => {
    size += n;
    if (options.maxSize !== undefined && size > options.maxSize) throw corrupt(`larger than the ${options.maxSize} bytes announced`);
  };
  const readU32 = async () => (await reader.take(4)).readUInt32LE(0);
  const readU64 = async () => {
    const v = (await reader.take(8)).readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt("a file size beyond 2^53");
    return Number(v);
  };

  const node = async (p: string, depth: number): Promise<void> => {
    if (depth > MAX_DEPTH) throw corrupt(`directories nested deeper than ${MAX_DEPTH}`);
    const tag = String.fromCharCode((await reader.take(1))[0]!);
    switch (tag) {
      case "f":
      case "x": {
        const n = await readU64();
        grow(9 + n);
        const fd = await fs.promises.open(p, "wx", tag === "x" ? 0o755 : 0o644);
        try {
          for await (const chunk of reader.stream(n)) await fd.write(chunk);
        } finally {
          await fd.close();
        }
        return;
      }
      case "F":
      case "X": {
        if (!options.external) throw corrupt(`node type '${tag}' in a plain archive`);
        const n = await readU64();
        const hash = (await reader.take(32)).toString("hex");
        grow(9 + n);
        const done = options.external({ blake3: hash, size: n, executable: tag === "X" }, p);
        done.catch(() => undefined); // reported below, after every write has settled
        pending.push(done);
        return;
      }
      case "l": {
        const n = await readU32();
        if (n === 0 || n > MAX_LINK) throw corrupt(`a symlink target of ${n} bytes`);
        const target = await reader.take(n);
        if (target.includes(0)) throw corrupt("a symlink target holding NUL");
        grow(5 + n);
        await fs.promises.symlink(target.toString("utf8"), p);
        return;
      }
      case "d": {
        const count = await readU32();
        grow(5);
        await fs.promises.mkdir(p, { mode: 0o755 });
        let previous: Buffer | undefined;
        for (let i = 0; i < count; i++) {
          const len = await readU32();
          if (len === 0 || len > MAX_NAME) throw corrupt(`an entry name of ${len} bytes in ${p}`);
          const raw = await reader.take(len);
          const name = raw.toString("utf8");
          if (name === "." || name === ".." || raw.includes(0x2f) || raw.includes(0) || !Buffer.from(name, "utf8").equals(raw)) {
            throw corrupt(`an entry named ${JSON.stringify(name)} in ${p}`);
          }
          if (previous !== undefined && Buffer.compare(previous, raw) >= 0) {
            throw corrupt(`${Buffer.compare(previous, raw) === 0 ? "a duplicate" : "an unsorted"} entry ${JSON.stringify(name)} in ${p}`);
          }
          previous = raw;
          grow(4 + len);
          await node(path.join(p, name), depth + 1);
        }
        return;
      }
      default:
        throw corrupt(`unknown node type 0x${tag.charCodeAt(0).toString(16)}`);
    }
  };

  try {
    const head = await reader.take(magic.length);
    if (!head.equals(magic)) throw corrupt("it does not start with the expected magic");
    await node(dest, 0);
    if (!(await reader.atEnd())) throw corrupt("trailing bytes after the tree");
  } finally {
    await reader.close().catch(() => undefined);
    const settled = await Promise.allSettled(pending);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) throw failed.reason;
  }
  return { size };
}
