/**
 * Safe unpacking of source archives (fetchzip): format from magic bytes,
 * entries written by the TreeWriter (which holds the refusals), into a temp
 * dir beside dest renamed into place on success — dest is either the whole
 * tree or absent, and nothing is left behind on failure.
 */
import { chmod, lstat, mkdtemp, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { UkbError } from "../errors/index.js";
import { COMPRESSION_OF, detectArchiveFormat, type ArchiveFormat } from "./archive-format.js";
import { decompressedStream } from "./decompress.js";
import { fsyncDir } from "./download.js";
import { TreeWriter } from "./tree-writer.js";
import { extractTar } from "./untar.js";
import { extractZip } from "./unzip.js";

export interface UnpackOptions {
  archive: string;
  /** Must not exist; created with the archive's contents. */
  dest: string;
  /** Make the single top-level directory the root (GitHub and release tarballs need it). Default true. */
  stripRoot?: boolean;
  /** Cap on total file bytes. Default 8 GiB. */
  maxBytes?: number;
  /** Cap on entries. Default 1,000,000. */
  maxEntries?: number;
}

export interface UnpackResult {
  format: ArchiveFormat;
  /** Entries written (directories, files, links). */
  entries: number;
  /** Bytes of file contents written. */
  bytes: number;
  /** The stripped top-level directory's name, when stripRoot. */
  root?: string;
}

export const UNPACK_DEFAULTS = {
  maxBytes: 8 * 1024 ** 3,
  maxEntries: 1_000_000,
} as const;

/**
 * Slack for the tar stream over the file bytes it carries: a header (and
 * often a pax header) per entry plus padding, and a margin for the end
 * blocks; beyond it, the stream is a bomb of headers or zeros.
 */
const TAR_OVERHEAD_PER_ENTRY = 2048;
const TAR_OVERHEAD_FIXED = 16 << 20;

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

export async function unpackArchive(options: UnpackOptions): Promise<UnpackResult> {
  const { archive, dest } = options;
  const stripRoot = options.stripRoot ?? true;
  const limits = { maxBytes: options.maxBytes ?? UNPACK_DEFAULTS.maxBytes, maxEntries: options.maxEntries ?? UNPACK_DEFAULTS.maxEntries };
  if (await exists(dest)) throw new UkbError("unpack", `${archive}: cannot unpack into ${dest}: it already exists`);
  const format = await detectArchiveFormat(archive);

  const tmp = await mkdtemp(join(dirname(dest), `.${basename(dest)}.unpack-`));
  try {
    const w = new TreeWriter(tmp, archive, limits, stripRoot);
    if (format === "zip") {
      await extractZip(archive, w);
    } else {
      const compression = COMPRESSION_OF[format];
      const maxStream = limits.maxBytes + limits.maxEntries * TAR_OVERHEAD_PER_ENTRY + TAR_OVERHEAD_FIXED;
      await extractTar(decompressedStream(archive, compression), w, archive, compression, maxStream);
    }
    w.finish();
    // mkdtemp made it 0700; a tree's root reads like any directory.
    await chmod(tmp, 0o755);
    await rename(tmp, dest);
    await fsyncDir(dirname(dest));
    return { format, entries: w.entries, bytes: w.bytes, ...(w.root !== undefined && stripRoot ? { root: w.root } : {}) };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (e instanceof UkbError) throw e;
    throw new UkbError("unpack", `${archive}: cannot unpack into ${dest}: ${(e as Error).message}`, { cause: e });
  }
}
