/**
 * File-tree helpers the store needs: normalising a build's output, scanning
 * it for references, deleting read-only trees.
 */
import fs from "node:fs";
import path from "node:path";
import { UkbError } from "../errors/index.js";

/** A file name as a person can read it: bytes that are not printable UTF-8 as \xNN. */
function printableName(raw: Buffer): string {
  return [...raw].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`)).join("");
}

/**
 * The names in a folder. A name that is not UTF-8 is refused, with where it
 * is: Node names files by strings, so such a file could be neither hashed nor
 * copied (an lstat of the decoded name fails with ENOENT).
 */
export function namesIn(dir: string, root: string, what: string): string[] {
  return fs.readdirSync(dir, { encoding: "buffer" }).map((raw) => {
    const name = raw.toString("utf8");
    if (!Buffer.from(name).equals(raw)) {
      const where = path.relative(root, dir);
      throw new UkbError("build", `${what} holds a file name that is not UTF-8, '${printableName(raw)}'${where ? ` in ${where}/` : ""}: the store keeps UTF-8 names only`);
    }
    return name;
  });
}

/** A symlink's target, refused when it is not UTF-8 (read as a string, it would be changed silently). */
export function linkTargetOf(link: string, root: string, what: string): string {
  const raw = fs.readlinkSync(link, { encoding: "buffer" });
  const target = raw.toString("utf8");
  if (!Buffer.from(target).equals(raw)) {
    throw new UkbError("build", `${what} holds a symlink whose target is not UTF-8, '${printableName(raw)}' (${path.relative(root, link) || path.basename(link)}): the store keeps UTF-8 names only`);
  }
  return target;
}

// Tree walks use synchronous fs calls on purpose: on a local disk each async
// call costs ~0.2 ms of promise machinery, which made a 50,000-file tree take
// minutes; these walks only ever touch the store's own disk.

/**
 * Makes a tree what the store keeps: every mtime = `epoch`, files 0444 or 0555
 * (executable), directories 0555, no setuid/setgid/sticky, no group/other
 * write. Refuses what the store cannot hold (devices, fifos, sockets).
 */
export async function normaliseTree(root: string, epoch: number): Promise<void> {
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) {
      linkTargetOf(p, root, "the output");
      fs.lutimesSync(p, epoch, epoch);
      return;
    }
    if (st.isDirectory()) {
      fs.chmodSync(p, 0o755);
      for (const name of namesIn(p, root, "the output")) walk(path.join(p, name));
      fs.chmodSync(p, 0o555);
    } else if (st.isFile()) {
      fs.chmodSync(p, st.mode & 0o100 ? 0o555 : 0o444);
    } else {
      const kind = st.isFIFO() ? "a named pipe" : st.isSocket() ? "a socket" : "a device";
      const what = p === root ? `the output is ${kind}` : `the output holds ${kind}, ${path.relative(root, p)}`;
      throw new UkbError("build", `${what}: the store keeps files, folders and symlinks only`);
    }
    fs.utimesSync(p, epoch, epoch);
  };
  walk(root);
}

/**
 * Copies a file or tree into `dest` (which must not exist) as the store keeps
 * it, in one pass: normalised modes and times, symlinks kept as they are.
 */
export function importTree(src: string, dest: string, epoch: number): void {
  const st = fs.lstatSync(src);
  if (st.isSymbolicLink()) {
    fs.symlinkSync(linkTargetOf(src, src, src), dest);
    fs.lutimesSync(dest, epoch, epoch);
    return;
  }
  if (st.isDirectory()) {
    fs.mkdirSync(dest, { mode: 0o755 });
    for (const name of namesIn(src, src, src)) importTree(path.join(src, name), path.join(dest, name), epoch);
    fs.chmodSync(dest, 0o555);
  } else if (st.isFile()) {
    fs.copyFileSync(src, dest);
    fs.chmodSync(dest, st.mode & 0o100 ? 0o555 : 0o444);
  } else {
    throw new UkbError("store", `${src} is neither a file, a directory nor a symlink: the store holds nothing else`);
  }
  fs.utimesSync(dest, epoch, epoch);
}

/**
 * Deletes a tree even where it was made read-only. The deletion runs on
 * libuv's threads (fs.promises.rm), not on the event loop: a build's scratch
 * folder is removed while the next builds start. Only when that is refused
 * (a read-only folder, for a user without CAP_DAC_OVERRIDE) are the folders
 * made writable first.
 */
export async function removeTree(p: string): Promise<void> {
  try {
    await fs.promises.rm(p, { recursive: true, force: true });
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EACCES" && code !== "EPERM" && code !== "ENOTEMPTY") throw err;
  }
  const makeWritable = (q: string): void => {
    const st = fs.lstatSync(q);
    if (!st.isDirectory()) return;
    fs.chmodSync(q, 0o755);
    for (const name of fs.readdirSync(q)) makeWritable(path.join(q, name));
  };
  try {
    makeWritable(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  await fs.promises.rm(p, { recursive: true, force: true });
}

/**
 * Which of `candidates` (32-char store hash parts) appear in the tree's file
 * contents or symlink targets: the output's references.
 */
export async function scanReferences(root: string, candidates: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  if (candidates.length === 0) return found;
  const needles = candidates.map((c) => ({ hash: c, bytes: Buffer.from(c) }));
  const check = (buf: Buffer): void => {
    for (const n of needles) if (!found.has(n.hash) && buf.includes(n.bytes)) found.add(n.hash);
  };
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) return check(Buffer.from(fs.readlinkSync(p)));
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p)) walk(path.join(p, name));
      return;
    }
    // Read in overlapping windows so a hash split across two chunks is still seen.
    if (st.size === 0) return;
    const fd = fs.openSync(p, "r");
    try {
      const chunk = Math.min(1 << 20, st.size);
      const overlap = 32;
      const buf = Buffer.allocUnsafe(chunk + overlap);
      let carried = 0;
      for (;;) {
        const bytesRead = fs.readSync(fd, buf, carried, chunk, null);
        if (bytesRead === 0) break;
        const view = buf.subarray(0, carried + bytesRead);
        check(view);
        carried = Math.min(overlap, view.length);
        view.copy(buf, 0, view.length - carried);
      }
    } finally {
      fs.closeSync(fd);
    }
  };
  walk(root);
  return found;
}

/** Whether `p` is a symlink (false when nothing is there). */
export function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
