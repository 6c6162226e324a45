/**
 * The one place that writes an archive's entries to disk, shared by the tar
 * and zip readers, so every format gets the same refusals:
 *
 * - names with `..`, absolute names, NUL bytes;
 * - symlinks whose target is absolute or leaves the tree — checked lexically
 *   per link, then again at the end through chains of links (`r -> .` then
 *   `t -> r/..` is lexically inside but really outside);
 * - hard links to anything but an earlier regular file of the tree;
 * - writes through a symlink: no entry may have a symlink among its parents,
 *   and files are created with O_EXCL so an existing link is never followed;
 * - device nodes, fifos, sockets;
 * - more bytes or entries than the limits (decompression bombs).
 *
 * Modes keep the permission bits (owner rw/rwx forced so the tree stays
 * removable) and drop setuid, setgid and sticky. Owners and times are not
 * kept: the store normalises them anyway.
 *
 * It tracks what it created in memory rather than asking the filesystem:
 * the tree lives in a fresh private temp dir that nothing else writes.
 *
 * Metadata operations and small files use synchronous calls on purpose:
 * each async fs call is a thread-pool round trip (~0.2 ms here), and source
 * trees are thousands of small files — musl took 3–5 s async, a tenth of
 * that sync. Large files stream asynchronously in big chunks.
 */
import { chmodSync, closeSync, fchmodSync, linkSync, mkdirSync, openSync, symlinkSync, unlinkSync, writeSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { UkbError } from "../errors/index.js";

export interface UnpackLimits {
  /** Total bytes of file contents. */
  maxBytes: number;
  /** Total entries (files, directories, links). */
  maxEntries: number;
}

type Kind = "dir" | "file" | "symlink";

const MAX_SYMLINK_HOPS = 40;
const UNSAFE_HINT = "the archive cannot be unpacked safely; if you trust it, fetch it with fetchurl (no unpacking) and unpack it in a build step";

/** Files up to this size are gathered in memory and written in one synchronous go. */
const SMALL_FILE = 1 << 20;

function writeAllSync(fd: number, chunk: Uint8Array): void {
  let off = 0;
  while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
}

export class TreeWriter {
  private readonly kinds = new Map<string, Kind>([["", "dir"]]);
  private readonly links = new Map<string, { raw: string; target: string }>();
  private aborted = false;
  private rejectAborted: (e: Error) => void = () => undefined;
  /** Rejects on abort(): a reader waiting for data that will never come is released by it. */
  private readonly abortedPromise = new Promise<never>((_, reject) => (this.rejectAborted = reject));
  entries = 0;
  bytes = 0;
  /** With stripRoot: the name of the single top-level directory, once seen. */
  root: string | undefined;

  constructor(
    private readonly dir: string,
    private readonly archive: string,
    private readonly limits: UnpackLimits,
    private readonly stripRoot: boolean,
  ) {
    this.abortedPromise.catch(() => undefined);
  }

  /** An error naming the archive and the entry. */
  refuse(raw: string, why: string, hint = UNSAFE_HINT): UkbError {
    return new UkbError("unpack", `${this.archive}: refused entry '${raw}': ${why}`, { hint });
  }

  /** Stops all further writes (the caller is about to delete the tree). */
  abort(): void {
    this.aborted = true;
    this.rejectAborted(new UkbError("unpack", `${this.archive}: unpacking was aborted`));
  }

  /** The chunks of `data`, ending early (with an error) if abort() is called meanwhile. */
  private async *guarded(data: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    const it = data[Symbol.asyncIterator]();
    try {
      for (;;) {
        const r = await Promise.race([it.next(), this.abortedPromise]);
        if (r.done) return;
        yield r.value;
      }
    } finally {
      void it.return?.()?.catch(() => undefined);
    }
  }

  private count(raw: string): void {
    if (this.aborted) throw new UkbError("unpack", `${this.archive}: unpacking was aborted`);
    if (++this.entries > this.limits.maxEntries) {
      throw this.refuse(raw, `the archive has more than ${this.limits.maxEntries} entries (decompression bomb?)`, "raise maxEntries if the archive is genuine");
    }
  }

  private addBytes(raw: string, n: number): void {
    this.bytes += n;
    if (this.bytes > this.limits.maxBytes) {
      throw this.refuse(raw, `the archive unpacks to more than ${this.limits.maxBytes} bytes (decompression bomb?)`, "raise maxBytes if the archive is genuine");
    }
  }

  /** Splits a name into checked segments (without `.` and empty ones); the raw name is for messages. */
  private segments(raw: string, name: string, what: string): string[] {
    if (name.includes("\0")) throw this.refuse(raw, `${what} contains a NUL byte`);
    if (name.startsWith("/")) throw this.refuse(raw, `${what} is an absolute path ('${name}')`);
    const parts = name.split("/").filter((p) => p !== "" && p !== ".");
    if (parts.includes("..")) throw this.refuse(raw, `${what} contains '..' ('${name}')`);
    return parts;
  }

  /**
   * The path of an entry inside the output tree, as segments; [] is the
   * root itself. With stripRoot the single top-level directory is dropped.
   */
  private map(raw: string): string[] {
    const parts = this.segments(raw, raw, "its name");
    if (!this.stripRoot || parts.length === 0) return parts;
    const [top, ...rest] = parts as [string, ...string[]];
    if (this.root === undefined) this.root = top;
    else if (top !== this.root) {
      throw new UkbError("unpack", `${this.archive}: cannot strip the top-level directory: the archive has more than one top-level entry ('${this.root}', '${top}')`, {
        hint: "unpack it with stripRoot: false",
      });
    }
    return rest;
  }

  /** The root entry of a stripped archive must be the directory being stripped. */
  private notRoot(raw: string, parts: string[]): string {
    if (parts.length === 0) {
      if (this.stripRoot) {
        throw new UkbError("unpack", `${this.archive}: cannot strip the top-level directory: top-level entry '${raw}' is not a directory`, { hint: "unpack it with stripRoot: false" });
      }
      throw this.refuse(raw, "names the root of the tree");
    }
    return parts.join("/");
  }

  /** Creates missing parent directories; refuses symlinks and files among the parents. */
  private parents(raw: string, parts: string[]): void {
    let p = "";
    for (let i = 0; i < parts.length - 1; i++) {
      p = p === "" ? parts[i]! : `${p}/${parts[i]}`;
      const kind = this.kinds.get(p);
      if (kind === "symlink") throw this.refuse(raw, `its parent '${p}' is a symlink: writing through it could leave the tree`);
      if (kind === "file") throw this.refuse(raw, `its parent '${p}' is a file`);
      if (kind === undefined) {
        mkdirSync(join(this.dir, p), { mode: 0o755 });
        this.kinds.set(p, "dir");
      }
    }
  }

  /** Clears the way for a new entry at rel: an earlier file or link is replaced (tar semantics), a directory never. */
  private replace(raw: string, rel: string, next: Kind): "keep" | "new" {
    const existing = this.kinds.get(rel);
    if (existing === undefined) return "new";
    if (existing === "dir") {
      if (next === "dir") return "keep";
      throw this.refuse(raw, "would replace a directory of the same name");
    }
    if (next === "dir") throw this.refuse(raw, `would replace an earlier ${existing === "file" ? "file" : "symlink"} of the same name with a directory`);
    unlinkSync(join(this.dir, rel));
    this.kinds.delete(rel);
    this.links.delete(rel);
    return "new";
  }

  async directory(raw: string, mode: number | undefined): Promise<void> {
    this.count(raw);
    const parts = this.map(raw);
    if (parts.length === 0) return; // the (stripped) root: it is the temp dir itself
    this.parents(raw, parts);
    const rel = parts.join("/");
    const abs = join(this.dir, rel);
    if (this.replace(raw, rel, "dir") === "new") mkdirSync(abs);
    chmodSync(abs, ((mode ?? 0o755) & 0o777) | 0o700);
    this.kinds.set(rel, "dir");
  }

  async file(raw: string, mode: number | undefined, size: number | undefined, data: AsyncIterable<Uint8Array>): Promise<void> {
    this.count(raw);
    const parts = this.map(raw);
    const rel = this.notRoot(raw, parts);
    // Refuse a declared bomb before reading a byte of it.
    if (size !== undefined && this.bytes + size > this.limits.maxBytes) this.addBytes(raw, size);
    this.parents(raw, parts);
    this.replace(raw, rel, "file");
    const abs = join(this.dir, rel);
    // Explicit chmod: open()'s mode is filtered by the umask, fchmod is not.
    const perms = ((mode ?? 0o644) & 0o777) | 0o600;
    if (size !== undefined && size <= SMALL_FILE) {
      const chunks: Uint8Array[] = [];
      for await (const chunk of this.guarded(data)) {
        this.addBytes(raw, chunk.length);
        chunks.push(chunk);
      }
      if (this.aborted) return;
      // "wx": O_CREAT|O_EXCL never follows a symlink, should one be there.
      const fd = openSync(abs, "wx", 0o600);
      this.kinds.set(rel, "file");
      try {
        for (const chunk of chunks) writeAllSync(fd, chunk);
        fchmodSync(fd, perms);
      } finally {
        closeSync(fd);
      }
      return;
    }
    const fh = await open(abs, "wx", 0o600);
    this.kinds.set(rel, "file");
    try {
      for await (const chunk of this.guarded(data)) {
        this.addBytes(raw, chunk.length);
        let off = 0;
        while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
      await fh.chmod(perms);
    } finally {
      await fh.close();
    }
  }

  async symlink(raw: string, target: string): Promise<void> {
    this.count(raw);
    const parts = this.map(raw);
    const rel = this.notRoot(raw, parts);
    if (target === "") throw this.refuse(raw, "is a symlink with an empty target");
    if (target.includes("\0")) throw this.refuse(raw, "is a symlink whose target contains a NUL byte");
    if (target.startsWith("/")) throw this.refuse(raw, `is a symlink to an absolute path ('${target}')`);
    if (!this.inside(parts.slice(0, -1), target, false)) throw this.refuse(raw, `is a symlink to '${target}', outside the tree`);
    this.parents(raw, parts);
    this.replace(raw, rel, "symlink");
    symlinkSync(target, join(this.dir, rel));
    this.kinds.set(rel, "symlink");
    this.links.set(rel, { raw, target });
  }

  /** A hard link; `target` is a name in the archive (tar: relative to the archive root). */
  async hardlink(raw: string, target: string): Promise<void> {
    this.count(raw);
    const parts = this.map(raw);
    const rel = this.notRoot(raw, parts);
    const tparts = this.segments(raw, target, "its hard link target");
    if (this.stripRoot) {
      if (tparts[0] !== this.root || tparts.length < 2) throw this.refuse(raw, `is a hard link to '${target}', outside the tree`);
      tparts.shift();
    }
    const trel = tparts.join("/");
    const kind = this.kinds.get(trel);
    if (kind !== "file") {
      throw this.refuse(raw, `is a hard link to '${target}', which is ${kind === undefined ? "not an earlier file of the archive" : `a ${kind === "dir" ? "directory" : "symlink"}`}`);
    }
    if (trel === rel) return; // a link to itself: already there
    this.parents(raw, parts);
    this.replace(raw, rel, "file");
    linkSync(join(this.dir, trel), join(this.dir, rel));
    this.kinds.set(rel, "file");
  }

  /** Device nodes, fifos and sockets have no place in a source tree, and some are dangerous. */
  special(raw: string, what: string): UkbError {
    return this.refuse(raw, `is a ${what}; only files, directories and links are unpacked`);
  }

  /**
   * Whether `target`, resolved from directory `from`, stays inside the tree.
   * With `follow`, symlinks met on the way are expanded (a final pass, once
   * every link exists); without, the check is purely lexical.
   */
  private inside(from: string[], target: string, follow: boolean): boolean {
    const stack = [...from];
    const queue = target.split("/");
    let hops = 0;
    while (queue.length > 0) {
      const seg = queue.shift()!;
      if (seg === "" || seg === ".") continue;
      if (seg === "..") {
        if (stack.length === 0) return false;
        stack.pop();
        continue;
      }
      stack.push(seg);
      if (!follow) continue;
      const hit = this.links.get(stack.join("/"));
      if (hit) {
        // Past the kernel's limit a path fails with ELOOP, but other tools (Python's realpath,
        // coreutils') follow on: a chain that long is refused, not taken as staying inside.
        if (++hops > MAX_SYMLINK_HOPS) return false;
        stack.pop();
        if (hit.target.startsWith("/")) return false;
        queue.unshift(...hit.target.split("/"));
      }
      // Anything else (a directory, a file, nothing yet) continues lexically,
      // which also covers names a build might create later.
    }
    return true;
  }

  /** Final checks once every entry is written. */
  finish(): void {
    for (const [rel, { raw, target }] of this.links) {
      const from = rel.split("/").slice(0, -1);
      if (!this.inside(from, target, true)) throw this.refuse(raw, `is a symlink to '${target}', which through other symlinks leads outside the tree`);
    }
    if (this.stripRoot && this.root === undefined) {
      throw new UkbError("unpack", `${this.archive}: cannot strip the top-level directory: the archive is empty`, { hint: "unpack it with stripRoot: false" });
    }
  }
}
