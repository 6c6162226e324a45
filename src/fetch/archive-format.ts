/**
 * Archive formats, told by their first bytes. File names lie (GitHub serves
 * `.tar.gz` for zips behind some URLs, mirrors rename, `store add` keeps no
 * name at all); magic numbers do not.
 */
import { open } from "node:fs/promises";
import { UkbError } from "../errors/index.js";

export type Compression = "none" | "gzip" | "xz" | "bzip2" | "zstd";
export type ArchiveFormat = "tar" | "tar.gz" | "tar.xz" | "tar.bz2" | "tar.zst" | "zip";

export const COMPRESSION_OF: Record<Exclude<ArchiveFormat, "zip">, Compression> = {
  tar: "none",
  "tar.gz": "gzip",
  "tar.xz": "xz",
  "tar.bz2": "bzip2",
  "tar.zst": "zstd",
};

const startsWith = (head: Uint8Array, magic: readonly number[], at = 0): boolean => magic.every((b, i) => head[at + i] === b);

/** True for a 512-byte block that is a tar header: ustar magic, or (old v7 tar) a valid checksum. */
export function looksLikeTarHeader(block: Uint8Array): boolean {
  if (block.length < 512) return false;
  // "ustar\0" (POSIX) or "ustar " (GNU) at offset 257.
  if (startsWith(block, [0x75, 0x73, 0x74, 0x61, 0x72], 257)) return true;
  const field = Buffer.from(block.subarray(148, 156)).toString("latin1").replace(/[\0 ]+$/, "").trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === parseInt(field, 8);
}

/** An all-zero block: the end-of-archive marker, which is all an empty tar holds. */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < 512 && i < block.length; i++) if (block[i] !== 0) return false;
  return block.length >= 512;
}

/** The format the first bytes announce (at least 512 of them for plain tar), or undefined. */
export function sniffFormat(head: Uint8Array): ArchiveFormat | undefined {
  if (startsWith(head, [0x1f, 0x8b])) return "tar.gz";
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return "tar.xz";
  if (startsWith(head, [0x42, 0x5a, 0x68]) && head[3]! >= 0x31 && head[3]! <= 0x39) return "tar.bz2";
  if (startsWith(head, [0x28, 0xb5, 0x2f, 0xfd])) return "tar.zst";
  // Local file header, or the end-of-central-directory record of an empty zip.
  if (startsWith(head, [0x50, 0x4b, 0x03, 0x04]) || startsWith(head, [0x50, 0x4b, 0x05, 0x06])) return "zip";
  if (looksLikeTarHeader(head) || isZeroBlock(head)) return "tar";
  return undefined;
}

/** Reads the first bytes of `path` and names its format; a clear error when it is none we unpack. */
export async function detectArchiveFormat(path: string): Promise<ArchiveFormat> {
  const fh = await open(path, "r");
  let head: Buffer;
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const format = sniffFormat(head);
  if (format === undefined) {
    const hex = Buffer.from(head.subarray(0, 8)).toString("hex").replace(/(..)/g, "$1 ").trim();
    throw new UkbError("unpack", `${path}: not an archive ukb can unpack (first bytes: ${hex || "none, the file is empty"})`, {
      hint: "supported: tar, tar.gz, tar.xz, tar.bz2, tar.zst and zip; use a fetchurl (no unpacking) for anything else",
    });
  }
  return format;
}
