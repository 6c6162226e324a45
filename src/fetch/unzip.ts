/**
 * Reads a zip with yauzl (central directory first, sizes validated against
 * what each entry really inflates to) and hands each entry to the
 * TreeWriter. yauzl's own name checks are bypassed (decodeStrings: false) so
 * refusals are worded, and decided, by the TreeWriter like tar's.
 */
import type { Readable } from "node:stream";
import yauzl, { type Entry, type ZipFile } from "yauzl";
import { UkbError } from "../errors/index.js";
import type { TreeWriter } from "./tree-writer.js";

const S_IFMT = 0o170000;
const TYPES: Record<number, string> = {
  0o010000: "fifo",
  0o020000: "character device",
  0o060000: "block device",
  0o140000: "socket",
};
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** Made-by host 3 is Unix: only then do the external attributes carry a mode. */
const HOST_UNIX = 3;
const DOS_DIRECTORY = 0x10;
const MAX_LINK_TARGET = 4096;

async function readAll(stream: Readable, limit: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) {
      stream.destroy();
      return undefined;
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

async function writeEntry(zip: ZipFile, entry: Entry, w: TreeWriter): Promise<void> {
  // Info-ZIP's Unicode path field, the UTF-8 flag, else CP437; backslashes become slashes.
  const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
  const unix = entry.versionMadeBy >> 8 === HOST_UNIX;
  const mode = unix ? entry.externalFileAttributes >>> 16 : 0;
  const type = mode & S_IFMT;
  const perms = type !== 0 || mode !== 0 ? mode & 0o7777 : undefined;

  if (TYPES[type]) throw w.special(name, TYPES[type]!);
  if (name.endsWith("/") || type === S_IFDIR || (!unix && (entry.externalFileAttributes & DOS_DIRECTORY) !== 0)) {
    return w.directory(name, perms);
  }
  if (entry.isEncrypted()) throw w.refuse(name, "is encrypted");
  if (!entry.canDecodeFileData()) throw w.refuse(name, `uses a compression method ukb does not unpack (${entry.compressionMethod})`);
  const stream = await zip.openReadStreamPromise(entry);
  if (type === S_IFLNK) {
    const target = await readAll(stream, MAX_LINK_TARGET);
    if (target === undefined) throw w.refuse(name, `is a symlink with a target longer than ${MAX_LINK_TARGET} bytes`);
    return w.symlink(name, target.toString("utf8"));
  }
  try {
    await w.file(name, perms, entry.uncompressedSize, stream);
  } finally {
    stream.destroy();
  }
}

export async function extractZip(archive: string, w: TreeWriter): Promise<void> {
  let zip: ZipFile;
  try {
    zip = await yauzl.openPromise(archive, { lazyEntries: true, autoClose: false, decodeStrings: false, validateEntrySizes: true, strictFileNames: false });
  } catch (e) {
    throw new UkbError("unpack", `${archive}: damaged zip archive: ${(e as Error).message}`, { cause: e });
  }
  try {
    for await (const entry of zip.eachEntry()) await writeEntry(zip, entry, w);
  } catch (e) {
    if (e instanceof UkbError) throw e;
    throw new UkbError("unpack", `${archive}: damaged zip archive: ${(e as Error).message}`, { cause: e });
  } finally {
    zip.close();
  }
}
