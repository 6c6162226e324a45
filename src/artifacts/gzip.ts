/**
 * Deterministic gzip.
 *
 * Node's zlib writes a gzip header with MTIME 0 and no file name (checked on
 * Node 20: `1f8b 08 00 00000000 XFL 03`), and XFL depends only on the level,
 * which we pin. The OS byte is the one field that varies by platform (3 on
 * Linux, 19 on macOS builds of zlib), so we force it to 3 ("Unix").
 *
 * Caveat (documented, not fixable here): the deflate bytes themselves are
 * only as stable as the zlib that Node bundles. Node ships Chromium's zlib,
 * whose hasher uses CRC32C when the CPU has SSE4.2+PCLMUL (x86) or CRC32
 * (arm64) and canonical Rabin-Karp otherwise, and a Node upgrade may bring a
 * different zlib. Same Node + a CPU with those features (every x86-64 server
 * since ~2010, every arm64 server) gives the same bytes. Callers that need
 * digests independent of the compressor use uncompressed output.
 */
import { Transform, type TransformCallback } from "node:stream";
import { constants, createGzip } from "node:zlib";

/** The pinned compression level: artifacts are built once and pulled many times. */
export const GZIP_LEVEL = 9;

const OS_BYTE_OFFSET = 9;
const OS_UNIX = 3;

/** Rewrites byte 9 of the stream (the gzip header's OS field) to "Unix". */
class PinGzipOs extends Transform {
  private seen = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.seen <= OS_BYTE_OFFSET && this.seen + chunk.length > OS_BYTE_OFFSET) {
      chunk = Buffer.from(chunk);
      chunk[OS_BYTE_OFFSET - this.seen] = OS_UNIX;
    }
    this.seen += chunk.length;
    done(null, chunk);
  }
}

/** The streams to put in a pipeline to gzip deterministically. */
export function deterministicGzip(): [Transform, Transform] {
  const gzip = createGzip({ level: GZIP_LEVEL, memLevel: 8, windowBits: 15, strategy: constants.Z_DEFAULT_STRATEGY });
  return [gzip, new PinGzipOs()];
}
