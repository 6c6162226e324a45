/**
 * Reproducible cpio archives in the "newc" format (magic 070701), the format
 * the Linux kernel's initramfs and Unikraft's ukcpio read.
 *
 * Everything that varies between two copies of the same tree is fixed:
 * entries in byte order of their path, uid/gid 0, one mtime for all
 * (SOURCE_DATE_EPOCH), inode numbers 1, 2, 3... in archive order, nlink 2
 * for directories and 1 for everything else (hard links are stored as
 * independent files). Only permission bits are kept, without setuid/setgid.
 *
 * Names are relative, without "./" and without an entry for the root: Linux
 * accepts both forms, and Unikraft's ukcpio joins "<mountpoint>/" + name and
 * creates no missing parent, so parents must (and do) come first.
 */
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { assertAbsent, writeAtomically } from "./atomic.js";
import { DigestTap } from "./digest.js";
import { badInput, failure, wrap } from "./errors.js";
import { deterministicGzip } from "./gzip.js";
import { walkTree, type TreeEntry } from "./walk.js";

export interface WriteCpioOptions {
  /** Directory whose contents become the archive (the directory itself is not an entry). */
  root: string;
  /** File to write; must not exist yet. */
  out: string;
  /** SOURCE_DATE_EPOCH, in seconds: the mtime of every entry. */
  mtime: number;
  /** Gzip the archive (deterministically). Unikraft's initrd must stay uncompressed. */
  gzip?: boolean;
  /**
   * The root is a store path, whose modes the store has normalised (read-only,
   * only the executable bit kept): entries get the modes a tree is made with
   * (folders 0755, files 0644, or 0755 when executable) instead of the disk's.
   */
  fromStore?: boolean;
  /** Modes a recipe declared, by path in the archive (no leading "/"): they win over all others. */
  modes?: Readonly<Record<string, number>>;
}

export interface ArtifactDigest {
  /** Hex sha256 of the file written. */
  sha256: string;
  /** Its size in bytes. */
  size: number;
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** rwx for all plus sticky; setuid and setgid are dropped on purpose. */
const KEPT_PERMISSIONS = 0o1777;
const MAX_U32 = 0xffffffff;
const TRAILER = "TRAILER!!!";

interface NewcFields {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  filesize: number;
  /** Bytes of the name including its terminating NUL. */
  namesize: number;
}

function hex8(value: number): string {
  return value.toString(16).toUpperCase().padStart(8, "0");
}

/** Bytes needed to bring `n` to a multiple of 4. */
function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Header + name + NUL + padding, ready to be followed by the data. */
export function newcHeader(name: string, f: NewcFields): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  if (nameBytes.length + 1 !== f.namesize) throw new Error("namesize mismatch");
  const fields = [f.ino, f.mode, 0 /* uid */, 0 /* gid */, f.nlink, f.mtime, f.filesize, 0, 0, 0, 0, f.namesize, 0 /* check */];
  const head = Buffer.from("070701" + fields.map(hex8).join(""), "ascii");
  const total = head.length + f.namesize;
  const out = Buffer.alloc(total + pad4(total));
  head.copy(out, 0);
  nameBytes.copy(out, head.length);
  return out;
}

function checkMtime(mtime: number): void {
  if (!Number.isInteger(mtime) || mtime < 0 || mtime > MAX_U32) {
    throw badInput(`cpio mtime must be a whole number of seconds between 0 and ${MAX_U32} (SOURCE_DATE_EPOCH), got ${mtime}`);
  }
}

function modeOf(entry: TreeEntry, options: Pick<WriteCpioOptions, "fromStore" | "modes">): number {
  const declared = options.modes?.[entry.rel];
  switch (entry.type) {
    case "dir":
      return S_IFDIR | (declared ?? (options.fromStore ? 0o755 : entry.mode & KEPT_PERMISSIONS));
    case "file":
      return S_IFREG | (declared ?? (options.fromStore ? ((entry.mode & 0o100) !== 0 ? 0o755 : 0o644) : entry.mode & KEPT_PERMISSIONS));
    case "symlink":
      // Symlink permissions mean nothing on Linux; fix them so the host's don't leak in.
      return S_IFLNK | 0o777;
  }
}

/** Copy a file's bytes, failing if it changed size since it was listed. */
async function* fileBytes(entry: TreeEntry): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of createReadStream(entry.abs, { highWaterMark: 1 << 20 })) {
    const buf = chunk as Buffer;
    seen += buf.length;
    if (seen > entry.size) break;
    yield buf;
  }
  if (seen !== entry.size) throw failure(`${entry.abs} changed size while being archived (${entry.size} bytes listed, ${seen} read)`);
}

/** The archive as a stream of buffers; file contents are streamed, never held whole. */
async function* newcStream(entries: TreeEntry[], mtime: number, options: Pick<WriteCpioOptions, "fromStore" | "modes">): AsyncGenerator<Buffer> {
  let ino = 0;
  for (const entry of entries) {
    ino += 1;
    const nameSize = Buffer.byteLength(entry.rel, "utf8") + 1;
    const data = entry.type === "symlink" ? Buffer.from(entry.target!, "utf8") : undefined;
    const filesize = entry.type === "file" ? entry.size : (data?.length ?? 0);
    yield newcHeader(entry.rel, { ino, mode: modeOf(entry, options), nlink: entry.type === "dir" ? 2 : 1, mtime, filesize, namesize: nameSize });
    if (entry.type === "file") yield* fileBytes(entry);
    else if (data) yield data;
    if (pad4(filesize) > 0) yield Buffer.alloc(pad4(filesize));
  }
  // The trailer is an entry like any other, with nlink 1 as gen_init_cpio and GNU cpio write it.
  yield newcHeader(TRAILER, { ino: 0, mode: 0, nlink: 1, mtime: 0, filesize: 0, namesize: TRAILER.length + 1 });
}

/** Check what the format cannot hold before writing a byte. */
function checkEntries(entries: TreeEntry[]): void {
  for (const e of entries) {
    if (e.type === "file" && e.size > MAX_U32) {
      throw badInput(`${e.abs} is ${e.size} bytes; a newc cpio entry holds at most 4 GiB`);
    }
  }
}

/**
 * Write the tree under `root` as a reproducible newc cpio archive (optionally
 * gzipped) to `out`, atomically. Returns the sha256 and size of what was written.
 */
export async function writeCpio(options: WriteCpioOptions): Promise<ArtifactDigest> {
  const { root, out, mtime, gzip = false } = options;
  checkMtime(mtime);
  await assertAbsent(out, "cpio output");
  const entries = await walkTree(root);
  checkEntries(entries);

  return writeAtomically(out, async (tmp) => {
    const tap = new DigestTap();
    const handle = await open(tmp, "wx", 0o644);
    const sink = handle.createWriteStream();
    try {
      if (gzip) {
        await pipeline(newcStream(entries, mtime, options), deterministicGzip(), tap, sink);
      } else {
        await pipeline(newcStream(entries, mtime, options), tap, sink);
      }
    } catch (err) {
      throw wrap(`writing cpio archive ${out}`, err);
    }
    return { sha256: tap.sha256, size: tap.size };
  });
}
