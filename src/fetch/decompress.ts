/**
 * Streaming decompressors, one per compression, all yielding the
 * decompressed bytes as an async iterable so the tar reader is the same for
 * each. Everything streams with backpressure except zstd (see below); no
 * native builds: gzip is Node's zlib, xz is WebAssembly (xz-decompress),
 * bzip2 (unbzip2-stream) and zstd (fzstd) are JavaScript.
 */
import { createReadStream } from "node:fs";
import { createRequire } from "node:module";
import { open } from "node:fs/promises";
import { Readable, pipeline, type Duplex } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createGunzip } from "node:zlib";
import { Decompress as ZstdDecompress } from "fzstd";
import unbzip2 from "unbzip2-stream";
import type { Compression } from "./archive-format.js";

// xz-decompress is a webpack bundle whose named exports Node's ESM loader cannot see.
const { XzReadableStream } = createRequire(import.meta.url)("xz-decompress") as typeof import("xz-decompress");

const READ_CHUNK = 1 << 20;
/**
 * zstd's decoder is push-only: one push decodes every block it completes,
 * synchronously. Small pushes bound what one push can produce (a run-length
 * block is 4 bytes in, 128 KiB out: 8 KiB in is at most 256 MiB out) at a
 * modest cost in speed (~1.3 s per 100 MB here).
 */
const ZSTD_PUSH = 8 << 10;

function fileStream(path: string): Readable {
  return createReadStream(path, { highWaterMark: READ_CHUNK });
}

/**
 * Connects a file to a classic (pre-streams3) transform such as
 * unbzip2-stream. Not Readable.wrap(): it destroys the wrapper on the
 * transform's 'close', which `through` emits right after 'end' — before the
 * consumer has read the last chunks ("Premature close").
 */
function throughClassic(path: string, transform: NodeJS.ReadWriteStream): Readable {
  const input = fileStream(path);
  const out = new Readable({
    highWaterMark: READ_CHUNK,
    read: () => void transform.resume(),
    destroy: (err, cb) => {
      input.destroy();
      cb(err);
    },
  });
  transform.on("data", (chunk: Buffer) => {
    if (!out.push(chunk)) transform.pause();
  });
  transform.on("end", () => out.push(null));
  transform.on("error", (e: Error) => out.destroy(e));
  input.on("error", (e) => out.destroy(e));
  input.pipe(transform as unknown as NodeJS.WritableStream);
  return out;
}

async function* zstdChunks(path: string): AsyncGenerator<Uint8Array> {
  const fh = await open(path, "r");
  try {
    let pending: Uint8Array[] = [];
    const decoder = new ZstdDecompress((chunk) => {
      // The decoder may reuse its window; copy what we hand on.
      if (chunk.length > 0) pending.push(Buffer.from(chunk));
    });
    for (;;) {
      // A fresh buffer per push: the decoder keeps references to partial input.
      const buf = Buffer.allocUnsafe(ZSTD_PUSH);
      const { bytesRead } = await fh.read(buf, 0, ZSTD_PUSH, null);
      decoder.push(buf.subarray(0, bytesRead), bytesRead === 0);
      const out = pending;
      pending = [];
      yield* out;
      if (bytesRead === 0) return;
    }
  } finally {
    await fh.close();
  }
}

/** The decompressed bytes of `path`. Breaking out of the iteration releases the file. */
export function decompressedStream(path: string, compression: Compression): AsyncIterable<Uint8Array> {
  switch (compression) {
    case "none":
      return fileStream(path);
    case "gzip":
      // pipeline() tears down the file stream when the consumer stops early.
      return pipeline(fileStream(path), createGunzip({ chunkSize: 256 << 10 }), () => undefined) as Duplex;
    case "xz": {
      const web = Readable.toWeb(fileStream(path)) as unknown as ReadableStream<Uint8Array>;
      return Readable.fromWeb(new XzReadableStream(web) as unknown as WebReadableStream<Uint8Array>);
    }
    case "bzip2":
      return throughClassic(path, unbzip2());
    case "zstd":
      return zstdChunks(path);
  }
}
