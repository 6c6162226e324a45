/**
 * Deterministic gzip, whatever machine runs it.
 *
 * Node's zlib is Chromium's, whose deflate output depends on the CPU (it
 * hashes with CRC32C where SSE4.2/PCLMUL exist) and on the Node release, so
 * two machines can gzip the same bytes differently. fflate is a pure
 * JavaScript deflate: same input, same level, same library version — same
 * bytes everywhere. Its header carries MTIME 0 (we pass 0), no name, OS 3.
 */
import { Transform, type TransformCallback } from "node:stream";
import { Gzip } from "fflate";

/** The pinned compression level: artifacts are built once and pulled many times. */
export const GZIP_LEVEL = 9;

class DeterministicGzip extends Transform {
  private readonly gz = new Gzip({ level: GZIP_LEVEL, mem: 8, mtime: 0 }, (chunk) => {
    this.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  });
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.gz.push(chunk, false);
      done();
    } catch (err) {
      done(err as Error);
    }
  }
  override _flush(done: TransformCallback): void {
    try {
      this.gz.push(new Uint8Array(0), true);
      done();
    } catch (err) {
      done(err as Error);
    }
  }
}

/** A stream that gzips deterministically. */
export function deterministicGzip(): Transform {
  return new DeterministicGzip();
}
