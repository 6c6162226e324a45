/**
 * A directory tree on disk as a sorted list of entries: the one view of a
 * tree that the cpio, rootfs and archive writers share.
 *
 * Order: byte order of the UTF-8 relative path. A parent's path is a prefix
 * of its children's, so parents always come before children, and the order
 * does not depend on the filesystem's readdir order or on the locale.
 */
import { lstat, readdir, readlink, stat } from "node:fs/promises";
import path from "node:path";
import { badInput, show } from "./errors.js";

export type EntryType = "file" | "dir" | "symlink";

export interface TreeEntry {
  /** Relative path with `/` separators, no leading `./`, never empty. */
  rel: string;
  /** Absolute path on disk. */
  abs: string;
  type: EntryType;
  /** Full st_mode as read (type and permission bits). */
  mode: number;
  /** Bytes of a regular file; 0 otherwise. */
  size: number;
  /** Target of a symlink. */
  target?: string;
}

/** Compare two relative paths by their UTF-8 bytes. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function decodeName(raw: Buffer, dir: string): string {
  const name = raw.toString("utf8");
  // A name that does not survive UTF-8 decoding would be archived under a
  // different name than it has on disk: refuse it rather than rename it.
  if (!Buffer.from(name, "utf8").equals(raw)) {
    throw badInput(`file name ${show(raw.toString("latin1"))} in ${dir} is not valid UTF-8`);
  }
  return name;
}

/**
 * List every entry below `root` (not `root` itself), sorted. Regular files,
 * directories and symlinks only: anything else (devices, fifos, sockets) has
 * no place in an initrd or an image layer built by ukb, so it is an error.
 */
export async function walkTree(root: string): Promise<TreeEntry[]> {
  // The root itself may be a symlink to a directory (a store path, ./result);
  // below it nothing is followed.
  const rootStat = await stat(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") throw badInput(`${root} does not exist`);
    throw err;
  });
  if (!rootStat.isDirectory()) throw badInput(`${root} is not a directory`);

  const entries: TreeEntry[] = [];
  const pending: Array<{ abs: string; rel: string }> = [{ abs: root, rel: "" }];
  while (pending.length > 0) {
    const { abs: dir, rel: dirRel } = pending.pop()!;
    const names = await readdir(dir, { encoding: "buffer" });
    for (const raw of names) {
      const name = decodeName(raw, dir);
      const abs = path.join(dir, name);
      const rel = dirRel === "" ? name : `${dirRel}/${name}`;
      const st = await lstat(abs);
      if (st.isDirectory()) {
        entries.push({ rel, abs, type: "dir", mode: st.mode, size: 0 });
        pending.push({ abs, rel });
      } else if (st.isFile()) {
        entries.push({ rel, abs, type: "file", mode: st.mode, size: st.size });
      } else if (st.isSymbolicLink()) {
        entries.push({ rel, abs, type: "symlink", mode: st.mode, size: 0, target: await readlink(abs) });
      } else {
        throw badInput(`${abs} is neither a regular file, a directory nor a symlink`, "remove devices, fifos and sockets from the tree");
      }
    }
  }
  entries.sort((a, b) => byteOrder(a.rel, b.rel));
  return entries;
}
