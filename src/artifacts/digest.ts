/**
 * Streaming sha256 + byte count. OCI digests and the `{ sha256, size }`
 * results are computed while the bytes stream to disk, never by re-reading.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { Transform, type TransformCallback } from "node:stream";

/** A pass-through stream that hashes (sha256) and counts what flows through it. */
export class DigestTap extends Transform {
  private readonly hash: Hash = createHash("sha256");
  size = 0;
  private hex: string | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }

  /** The hex sha256; call only after the stream finished. */
  get sha256(): string {
    this.hex ??= this.hash.digest("hex");
    return this.hex;
  }
}

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** sha256 and size of a file, read in 1 MiB chunks. */
export async function sha256File(file: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest("hex"), size };
}
