/**
 * Reads a tar stream with node-tar's Parser (which knows pax, GNU long names
 * and the other dialects) and hands each entry to the TreeWriter. node-tar's
 * own extractor is not used: the refusals live in one place for tar and zip.
 */
import { Parser, type ReadEntry } from "tar";
import { UkbError } from "../errors/index.js";
import { isZeroBlock, looksLikeTarHeader, type Compression } from "./archive-format.js";
import type { TreeWriter } from "./tree-writer.js";

const SPECIAL: Record<string, string> = {
  CharacterDevice: "character device",
  BlockDevice: "block device",
  FIFO: "fifo",
};

async function writeEntry(entry: ReadEntry, w: TreeWriter): Promise<void> {
  switch (entry.type) {
    case "File":
    case "OldFile":
    case "ContiguousFile":
      return w.file(entry.path, entry.mode, entry.size, entry);
    case "Directory":
    case "GNUDumpDir":
      entry.resume();
      return w.directory(entry.path, entry.mode);
    case "SymbolicLink":
      entry.resume();
      return w.symlink(entry.path, entry.linkpath ?? "");
    case "Link":
      entry.resume();
      return w.hardlink(entry.path, entry.linkpath ?? "");
    default:
      entry.resume();
      if (SPECIAL[entry.type]) throw w.special(entry.path, SPECIAL[entry.type]!);
      throw w.refuse(entry.path, `has a tar entry type ukb does not unpack (${entry.type})`);
  }
}

/**
 * Feeds `source` (decompressed tar bytes) through the parser into `w`.
 * `maxStreamBytes` bounds the tar stream itself, headers and padding
 * included, so even a bomb of empty blocks stops.
 */
export async function extractTar(source: AsyncIterable<Uint8Array>, w: TreeWriter, archive: string, compression: Compression, maxStreamBytes: number): Promise<void> {
  const parser = new Parser({ strict: true, brotli: false, zstd: false });
  let failure: unknown;
  let signalFailure: () => void = () => undefined;
  const failed = new Promise<void>((resolve) => (signalFailure = resolve));
  const fail = (e: unknown): void => {
    if (failure !== undefined) return;
    failure = e;
    w.abort();
    signalFailure();
  };

  // Entries are handled one after another, in archive order; the parser
  // emits the next one only when the current one's data has been read.
  let chain: Promise<void> = Promise.resolve();
  parser.on("entry", (entry: ReadEntry) => {
    chain = chain.then(async () => {
      if (failure !== undefined) return void entry.resume();
      try {
        await writeEntry(entry, w);
      } catch (e) {
        fail(e);
      }
    });
  });
  // Entries the parser skips (sparse files, vendor types, huge pax headers)
  // would silently go missing from the tree: refuse them instead.
  parser.on("ignoredEntry", (entry: ReadEntry) => fail(w.refuse(entry.path, `has a tar entry type ukb does not unpack (${entry.type})`)));
  let emptyTar = false;
  parser.on("error", (e: Error) => {
    // Strict mode calls an archive of only end blocks "unrecognized"; it is just empty.
    if (emptyTar && /Unrecognized archive format/.test(e.message)) return;
    fail(new UkbError("unpack", `${archive}: damaged tar archive: ${e.message.replace(/^TAR_\w+: /, "")}`, { cause: e }));
  });

  const kind = compression === "none" ? "tar" : `${compression} data`;
  let total = 0;
  let head: Buffer | undefined = Buffer.alloc(0);
  try {
    for await (const chunk of source) {
      if (failure !== undefined) break;
      total += chunk.length;
      if (total > maxStreamBytes) {
        fail(new UkbError("unpack", `${archive}: the ${kind} decompresses to more than ${maxStreamBytes} bytes (decompression bomb?)`, { hint: "raise maxBytes if the archive is genuine" }));
        break;
      }
      let data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      if (head !== undefined) {
        // Check the first block ourselves: "gzip data that is not a tar" says more than a checksum error.
        head = Buffer.concat([head, data]);
        if (head.length < 512) continue;
        const first = head.subarray(0, 512);
        if (!looksLikeTarHeader(first) && !isZeroBlock(first)) {
          fail(new UkbError("unpack", `${archive}: the ${kind} is not a tar archive`, { hint: "use a fetchurl (no unpacking) for a single compressed file" }));
          break;
        }
        emptyTar = isZeroBlock(first);
        data = head;
        head = undefined;
      }
      if (!parser.write(data)) await Promise.race([new Promise((r) => parser.once("drain", r)), failed]);
    }
  } catch (e) {
    fail(e instanceof UkbError ? e : new UkbError("unpack", `${archive}: damaged ${kind}: ${(e as Error).message}`, { cause: e }));
  }
  if (failure === undefined && head !== undefined) {
    if (head.length > 0) parser.write(head); // too short to be a tar: the parser says so
    else fail(new UkbError("unpack", `${archive}: the ${kind} is empty`));
  }
  if (failure === undefined) {
    const ended = new Promise((r) => parser.once("end", r));
    parser.end();
    await Promise.race([ended, failed]);
  }
  // fail() aborted the writer, which releases a handler waiting for data
  // that will never come: the chain settles before the caller deletes the tree.
  await chain;
  if (failure !== undefined) throw failure;
}
