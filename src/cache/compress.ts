/**
 * zstd for the wire. Compression: @bokuweb/zstd-wasm (libzstd compiled to
 * WebAssembly: no native build, the same bytes on every CPU) one frame per
 * 4 MiB of input, so memory stays bounded whatever the file's size and the
 * output is a plain multi-frame zstd stream any zstd reads (`zstd -d`).
 * Decompression: the same library, one frame at a time: the stream is cut
 * into frames by their headers, each frame's announced content size is
 * checked against what is still expected before anything is allocated, so a
 * hostile cache cannot make a decompression bomb of a few bytes, and memory
 * stays at one frame.
 */
import fs from "node:fs";
import crypto from "node:crypto";
import { createRequire } from "node:module";
import { blake3Stream } from "../graph/index.js";
import { cacheError } from "./errors.js";

interface ZstdWasm {
  init(): Promise<void>;
  compress(data: Uint8Array, level?: number): Uint8Array;
  decompress(data: Uint8Array, opts?: { defaultHeapSize: number }): Uint8Array;
}

const FRAME = 4 << 20;
const LEVEL = 3;
/** The largest frame content accepted (ukb writes 4 MiB frames). */
const MAX_FRAME_CONTENT = 64 << 20;
const ZSTD_MAGIC = 0xfd2fb528;
let zstd: Promise<ZstdWasm> | undefined;

function loadZstd(): Promise<ZstdWasm> {
  return (zstd ??= (async () => {
    // A CommonJS package whose wasm is read from beside it: load it through require.
    const m = createRequire(import.meta.url)("@bokuweb/zstd-wasm") as ZstdWasm;
    await m.init();
    return m;
  })());
}

export interface Compressed {
  /** BLAKE3 (hex) and size of the uncompressed bytes. */
  readonly blake3: string;
  readonly size: number;
  /** sha256 (hex) and size of the compressed bytes. */
  readonly sha256: string;
  readonly compressedSize: number;
}

/** Compresses `src` (a file, or bytes) into the file `dst`. */
export async function compressToFile(src: string | Buffer, dst: string): Promise<Compressed> {
  const z = await loadZstd();
  const b3 = blake3Stream();
  const sha = crypto.createHash("sha256");
  let size = 0;
  let compressedSize = 0;
  const out = await fs.promises.open(dst, "wx", 0o644);
  const input = typeof src === "string" ? await fs.promises.open(src, "r") : undefined;
  try {
    const buf = input ? Buffer.allocUnsafe(FRAME) : undefined;
    let offset = 0;
    for (;;) {
      let chunk: Buffer;
      if (input) {
        const { bytesRead } = await input.read(buf!, 0, FRAME, null);
        chunk = buf!.subarray(0, bytesRead);
      } else {
        chunk = (src as Buffer).subarray(offset, offset + FRAME);
        offset += chunk.length;
      }
      // An empty input still gets one (empty) frame: a blob is never zero bytes.
      if (chunk.length === 0 && size > 0) break;
      b3.update(chunk);
      size += chunk.length;
      const frame = z.compress(chunk, LEVEL);
      sha.update(frame);
      compressedSize += frame.length;
      await out.write(frame);
      if (chunk.length < FRAME) break;
    }
    await out.sync();
  } finally {
    await out.close();
    await input?.close();
  }
  return { blake3: b3.digestHex(), size, sha256: sha.digest("hex"), compressedSize };
}

/** A frame that announces more content than the stream may still yield. */
class TooLarge extends Error {}

/** zstd's ZSTD_COMPRESSBOUND: the most a frame's compressed blocks can take for `n` bytes. */
function compressBound(n: number): number {
  return n + Math.floor(n / 256) + (n < 128 << 10 ? Math.floor(((128 << 10) - n) / 2048) : 0);
}

/**
 * Where the zstd frame at the start of `b` ends and how many bytes it
 * announces, or undefined if `b` does not hold the whole frame yet. Throws
 * on what is not a zstd frame with a content size.
 */
function frameAt(b: Buffer, maxContent: number): { end: number; contentSize: number } | undefined {
  if (b.length < 6) return undefined;
  if (b.readUInt32LE(0) !== ZSTD_MAGIC) throw new Error("bad frame magic");
  const fhd = b[4]!;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0) throw new Error("a frame without a content size");
  let pos = 5 + (single ? 0 : 1) + dictBytes;
  if (b.length < pos + fcsBytes) return undefined;
  let contentSize: number;
  if (fcsBytes === 1) contentSize = b[pos]!;
  else if (fcsBytes === 2) contentSize = b.readUInt16LE(pos) + 256;
  else if (fcsBytes === 4) contentSize = b.readUInt32LE(pos);
  else {
    const v = b.readBigUInt64LE(pos);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("an absurd frame size");
    contentSize = Number(v);
  }
  // Said as soon as the header is in, not after buffering the whole frame: a cache cannot make ukb
  // hold more than the bytes it announced, in a frame that says more, or in one padded without end
  // (empty blocks): no frame of that content needs more than zstd's compress bound.
  if (contentSize > maxContent) throw new TooLarge();
  const longest = pos + fcsBytes + compressBound(contentSize) + 3 * (Math.ceil(contentSize / (128 << 10)) + 1) + 4;
  pos += fcsBytes;
  for (;;) {
    if (b.length > longest) throw new Error(`a frame longer than ${longest} bytes, more than ${contentSize} bytes of content can need`);
    if (b.length < pos + 3) return undefined;
    const header = b[pos]! | (b[pos + 1]! << 8) | (b[pos + 2]! << 16);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) throw new Error("a reserved block type");
    pos += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  pos += checksum ? 4 : 0;
  return b.length < pos ? undefined : { end: pos, contentSize };
}

/**
 * Decompresses a zstd stream, checking that it yields exactly `expected.size`
 * bytes whose BLAKE3 is `expected.blake3` (when given). Yields the bytes as
 * they come; throws (a cache error naming `what`) on garbage, truncation or a
 * wrong size or hash — after the last byte, so a caller writing to a staging
 * folder must discard it on error.
 */
export async function* decompress(source: AsyncIterable<Uint8Array>, expected: { size: number; blake3?: string }, what: string): AsyncGenerator<Buffer> {
  const z = await loadZstd();
  const b3 = expected.blake3 ? blake3Stream() : undefined;
  let produced = 0;
  let pending: Buffer = Buffer.alloc(0);
  // Bytes received but not yet joined to `pending`: joining only once enough is there keeps copying linear.
  let parts: Buffer[] = [];
  let partsLength = 0;
  let nextTry = 0;
  let sawInput = false;
  const frames = function* (final: boolean): Generator<Buffer> {
    for (;;) {
      let f: { end: number; contentSize: number } | undefined;
      try {
        f = frameAt(pending, Math.min(MAX_FRAME_CONTENT, expected.size - produced));
      } catch (err) {
        if (err instanceof TooLarge) throw cacheError(`${what}: decompresses to more than the ${expected.size} bytes announced`);
        throw cacheError(`${what}: not a valid zstd stream (${(err as Error).message})`);
      }
      if (!f) {
        if (final && pending.length > 0) throw cacheError(`${what}: truncated: the last zstd frame is incomplete`);
        nextTry = Math.max(2 * pending.length, pending.length + (64 << 10));
        return;
      }
      let out: Buffer;
      try {
        const raw = z.decompress(pending.subarray(0, f.end), { defaultHeapSize: f.contentSize });
        out = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength); // already a copy out of wasm memory
      } catch (err) {
        throw cacheError(`${what}: not a valid zstd stream (${(err as Error).message})`);
      }
      if (out.length !== f.contentSize) throw cacheError(`${what}: not a valid zstd stream (a frame gave ${out.length} bytes, not ${f.contentSize})`);
      pending = pending.subarray(f.end);
      produced += out.length;
      b3?.update(out);
      yield out;
    }
  };
  const join = () => {
    if (partsLength === 0) return;
    pending = pending.length === 0 && parts.length === 1 ? parts[0]! : Buffer.concat([pending, ...parts]);
    parts = [];
    partsLength = 0;
  };
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    sawInput = true;
    parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    partsLength += chunk.length;
    if (pending.length + partsLength < nextTry) continue;
    join();
    yield* frames(false);
  }
  if (!sawInput) throw cacheError(`${what}: empty`);
  join();
  yield* frames(true);
  if (produced !== expected.size) throw cacheError(`${what}: truncated: ${produced} of ${expected.size} bytes`);
  if (b3 && b3.digestHex() !== expected.blake3) throw cacheError(`${what}: content does not match its hash blake3:${expected.blake3}`);
}
