/**
 * File-tree helpers the store needs: normalising a build's output, scanning
 * it for references, deleting read-only trees.
 */
import fs from "node:fs";
import path from "node:path";
import { UkbError } from "../errors/index.js";

/**
 * Makes a tree what the store keeps: every mtime = `epoch`, files 0444 or 0555
 * (executable), directories 0555, no setuid/setgid/sticky, no group/other
 * write. Refuses what the store cannot hold (devices, fifos, sockets).
 */
export async function normaliseTree(root: string, epoch: number): Promise<void> {
  const walk = async (p: string): Promise<void> => {
    const st = await fs.promises.lstat(p);
    if (st.isSymbolicLink()) {
      await fs.promises.lutimes(p, epoch, epoch);
      return;
    }
    if (st.isDirectory()) {
      await fs.promises.chmod(p, 0o755);
      for (const name of await fs.promises.readdir(p)) await walk(path.join(p, name));
      await fs.promises.chmod(p, 0o555);
    } else if (st.isFile()) {
      await fs.promises.chmod(p, st.mode & 0o100 ? 0o555 : 0o444);
    } else {
      throw new UkbError("build", `output holds ${path.basename(p)}, which is neither a file, a directory nor a symlink`);
    }
    await fs.promises.utimes(p, epoch, epoch);
  };
  await walk(root);
}

/** Deletes a tree even where it was made read-only. */
export async function removeTree(p: string): Promise<void> {
  try {
    const st = await fs.promises.lstat(p);
    if (st.isDirectory()) {
      await fs.promises.chmod(p, 0o755);
      for (const name of await fs.promises.readdir(p)) await removeTree(path.join(p, name));
    }
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
  const walk = async (p: string): Promise<void> => {
    const st = await fs.promises.lstat(p);
    if (st.isSymbolicLink()) return check(Buffer.from(await fs.promises.readlink(p)));
    if (st.isDirectory()) {
      for (const name of await fs.promises.readdir(p)) await walk(path.join(p, name));
      return;
    }
    // Read in overlapping windows so a hash split across two chunks is still seen.
    if (st.size === 0) return;
    const fd = await fs.promises.open(p, "r");
    try {
      const chunk = Math.min(1 << 20, st.size);
      const overlap = 32;
      const buf = Buffer.allocUnsafe(chunk + overlap);
      let carried = 0;
      for (;;) {
        const { bytesRead } = await fd.read(buf, carried, chunk, null);
        if (bytesRead === 0) break;
        const view = buf.subarray(0, carried + bytesRead);
        check(view);
        carried = Math.min(overlap, view.length);
        view.copy(buf, 0, view.length - carried);
      }
    } finally {
      await fd.close();
    }
  };
  await walk(root);
  return found;
}
