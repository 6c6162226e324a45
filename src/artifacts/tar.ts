/**
 * A small reproducible tar (ustar) writer.
 *
 * We write the headers ourselves rather than drive node-tar: every field is
 * then ours to fix (uid/gid 0, empty user/group names, one mtime, modes as
 * given, no pax headers carrying atime/ctime), and the archive is exactly the
 * list of entries we pass, in that order. Names up to 255 bytes (ustar's
 * prefix + name) cover everything ukb writes: image layers and OCI layouts.
 */
import { createReadStream } from "node:fs";
import { badInput, failure } from "./errors.js";

export type TarEntry =
  | { type: "dir"; name: string; mode: number; mtime: number }
  | { type: "file"; name: string; mode: number; mtime: number; size: number; data: Buffer }
  | { type: "file"; name: string; mode: number; mtime: number; size: number; path: string }
  | { type: "symlink"; name: string; mtime: number; target: string }
  /** A hard link to an earlier entry of the same archive. */
  | { type: "link"; name: string; mode: number; mtime: number; target: string };

const BLOCK = 512;
const MAX_OCTAL_11 = 0o77777777777; // 8 GiB - 1: what 11 octal digits hold

function octal(value: number, width: number): string {
  // width includes the terminating NUL, as GNU tar and Go's archive/tar write it.
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function putString(buf: Buffer, offset: number, width: number, value: string): void {
  const bytes = Buffer.from(value, "utf8");
  if (bytes.length > width) throw new Error(`tar field overflow: ${value}`);
  bytes.copy(buf, offset);
}

/** Split a name into ustar's (prefix, name) at a slash, or throw if it cannot fit. */
function splitName(name: string): [string, string] {
  const bytes = Buffer.byteLength(name, "utf8");
  if (bytes <= 100) return ["", name];
  for (let i = name.indexOf("/"); i !== -1; i = name.indexOf("/", i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix, "utf8") <= 155 && Buffer.byteLength(rest, "utf8") <= 100 && rest !== "") return [prefix, rest];
  }
  throw badInput(`path ${name} is too long for a ustar archive (at most 100 bytes after a slash-split 155-byte prefix)`);
}

const TYPEFLAG = { file: "0", link: "1", symlink: "2", dir: "5" } as const;

/** One 512-byte ustar header. */
export function tarHeader(entry: TarEntry): Buffer {
  const h = Buffer.alloc(BLOCK);
  const [prefix, name] = splitName(entry.name);
  const size = entry.type === "file" ? entry.size : 0;
  if (size > MAX_OCTAL_11) throw badInput(`${entry.name} is ${size} bytes; a ustar entry holds less than 8 GiB`);
  if (!Number.isInteger(entry.mtime) || entry.mtime < 0 || entry.mtime > MAX_OCTAL_11) {
    throw badInput(`tar mtime must be whole seconds between 0 and ${MAX_OCTAL_11}, got ${entry.mtime}`);
  }
  const mode = entry.type === "symlink" ? 0o777 : entry.mode & 0o7777;
  putString(h, 0, 100, name);
  putString(h, 100, 8, octal(mode, 8));
  putString(h, 108, 8, octal(0, 8)); // uid
  putString(h, 116, 8, octal(0, 8)); // gid
  putString(h, 124, 12, octal(size, 12));
  putString(h, 136, 12, octal(entry.mtime, 12));
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  putString(h, 156, 1, TYPEFLAG[entry.type]);
  if (entry.type === "symlink" || entry.type === "link") {
    if (Buffer.byteLength(entry.target, "utf8") > 100) throw badInput(`link target ${entry.target} of ${entry.name} is longer than 100 bytes`);
    putString(h, 157, 100, entry.target);
  }
  putString(h, 257, 6, "ustar\0");
  putString(h, 263, 2, "00");
  // uname/gname (265, 297) stay empty: numeric ids only, nothing from the host's passwd.
  putString(h, 329, 8, octal(0, 8)); // devmajor
  putString(h, 337, 8, octal(0, 8)); // devminor
  putString(h, 345, 155, prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  putString(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

function padding(size: number): Buffer | undefined {
  const rest = size % BLOCK;
  return rest === 0 ? undefined : Buffer.alloc(BLOCK - rest);
}

/** The archive as a stream of buffers; files given by path are streamed, never held whole. */
export async function* tarStream(entries: Iterable<TarEntry>): AsyncGenerator<Buffer> {
  for (const entry of entries) {
    yield tarHeader(entry);
    if (entry.type !== "file") continue;
    if ("data" in entry) {
      if (entry.data.length !== entry.size) throw new Error(`tar entry ${entry.name}: size ${entry.size} but ${entry.data.length} bytes`);
      yield entry.data;
    } else {
      let seen = 0;
      for await (const chunk of createReadStream(entry.path, { highWaterMark: 1 << 20 })) {
        const buf = chunk as Buffer;
        seen += buf.length;
        if (seen > entry.size) break;
        yield buf;
      }
      if (seen !== entry.size) throw failure(`${entry.path} changed size while being archived (${entry.size} bytes expected, ${seen} read)`);
    }
    const pad = padding(entry.size);
    if (pad) yield pad;
  }
  // End of archive: two zero blocks.
  yield Buffer.alloc(2 * BLOCK);
}
