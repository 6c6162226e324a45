/**
 * Build a directory tree (a rootfs, the content of an initrd) from a map of
 * image paths to contents:
 *
 *   writeRootfsTree({ out, files: {
 *     "/nginx/conf/nginx.conf": { file: "recipes/nginx/nginx.conf" },
 *     "/nginx/html/index.html": { text: "<h1>hello</h1>\n" },
 *     "/nginx/logs": { mkdir: true },
 *     "/etc": { dir: "recipes/nginx/etc" },
 *     "/bin/sh": { symlink: "/bin/busybox" },
 *   } })
 *
 * Modes are normalised the way Nix does: what a recipe says, else 0755 for
 * directories and executables (owner-x set on the host) and 0644 for other
 * files, whatever the host's umask or copy left. Missing parents are created.
 * Every path is checked and every conflict found before anything is written,
 * and the tree appears at `out` atomically.
 */
import { constants } from "node:fs";
import { chmod, copyFile, mkdir, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { assertAbsent, writeAtomically } from "./atomic.js";
import { badInput, show, wrap } from "./errors.js";
import { byteOrder, walkTree } from "./walk.js";

export type RootfsEntry =
  /** A file with this UTF-8 text. */
  | { text: string; mode?: number }
  /** A copy of this host file (symlinks on the host are followed). */
  | { file: string; mode?: number }
  /** A copy of this host directory's tree (symlinks inside are kept as symlinks). */
  | { dir: string }
  /** A symlink with this target (absolute targets are resolved inside the image). */
  | { symlink: string }
  /** An empty directory. */
  | { mkdir: true; mode?: number };

export interface RootfsModes {
  /** Directories, created or copied (default 0o755). */
  dir?: number;
  /** Non-executable files (default 0o644). */
  file?: number;
  /** Files executable on the host (default 0o755). */
  exec?: number;
}

export interface WriteRootfsTreeOptions {
  /** Directory to create; must not exist yet. */
  out: string;
  /** Absolute image path → content. */
  files: Record<string, RootfsEntry>;
  /** Default modes, for entries that do not give their own. */
  mode?: RootfsModes;
}

export interface RootfsResult {
  /** Every path created below `out`, relative, in byte order (parents first). */
  paths: string[];
}

type Planned =
  | { kind: "dir"; mode: number; by: string; implicit: boolean }
  | { kind: "text"; mode: number; by: string; text: string }
  | { kind: "copy"; mode: number; by: string; from: string }
  | { kind: "symlink"; by: string; target: string };

const MAX_COMPONENT = 255;
const MAX_PATH = 4095;

export function checkMode(mode: unknown, where: string): number {
  if (typeof mode !== "number" || !Number.isInteger(mode) || mode < 0 || mode > 0o1777) {
    throw badInput(`mode of ${where} must be a permission number such as 0o644 (at most 0o1777: no setuid/setgid), got ${String(mode)}`);
  }
  return mode;
}

/** "/a/b" → "a/b", refusing anything that could escape or alias another path. */
export function imagePath(key: string): string {
  const bad = (why: string) => badInput(`rootfs path ${show(key)} ${why}`);
  if (typeof key !== "string" || !key.startsWith("/")) throw bad("must be absolute (start with /)");
  if (key === "/") throw bad("is the root itself; give paths below it");
  if (key.endsWith("/")) throw bad("must not end with /");
  if (Buffer.byteLength(key, "utf8") > MAX_PATH) throw bad(`is longer than ${MAX_PATH} bytes`);
  if (Buffer.from(key, "utf8").toString("utf8") !== key || /[\u0000-\u001f\u007f]/.test(key)) {
    throw bad("contains control characters or invalid Unicode");
  }
  const parts = key.slice(1).split("/");
  for (const part of parts) {
    if (part === "") throw bad("contains an empty component (//)");
    if (part === "." || part === "..") throw bad(`contains ${show(part)}: paths must be plain, with no . or ..`);
    if (Buffer.byteLength(part, "utf8") > MAX_COMPONENT) throw bad(`has a component longer than ${MAX_COMPONENT} bytes`);
  }
  return parts.join("/");
}

function describe(p: Planned): string {
  switch (p.kind) {
    case "dir":
      return p.implicit ? `a directory (parent of ${p.by})` : `a directory (${p.by})`;
    case "symlink":
      return `a symlink (${p.by})`;
    default:
      return `a file (${p.by})`;
  }
}

class Plan {
  readonly nodes = new Map<string, Planned>();
  constructor(private readonly modes: Required<RootfsModes>) {}

  private parents(rel: string, by: string): void {
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const existing = this.nodes.get(parent);
      if (existing === undefined) this.nodes.set(parent, { kind: "dir", mode: this.modes.dir, by, implicit: true });
      else if (existing.kind !== "dir") throw badInput(`rootfs path /${rel} (${by}) is inside /${parent}, which is ${describe(existing)}`);
    }
  }

  add(rel: string, node: Planned): void {
    this.parents(rel, node.by);
    const existing = this.nodes.get(rel);
    if (existing === undefined) {
      this.nodes.set(rel, node);
    } else if (existing.kind === "dir" && existing.implicit && node.kind === "dir") {
      // A directory first created as a parent, now declared: the declaration decides its mode.
      this.nodes.set(rel, node);
    } else if (existing.kind === "dir" && node.kind === "dir" && node.implicit) {
      // Already there.
    } else {
      throw badInput(`rootfs path /${rel} is declared twice: as ${describe(existing)} and as ${describe(node)}`);
    }
  }
}

async function hostStat(file: string, key: string) {
  try {
    return await stat(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw badInput(`rootfs path ${key}: host path ${file} does not exist`);
    throw wrap(`rootfs path ${key}: reading ${file}`, err);
  }
}

async function plan(files: Record<string, RootfsEntry>, modes: Required<RootfsModes>): Promise<Plan> {
  if (files === null || typeof files !== "object" || Array.isArray(files)) throw badInput("rootfs files must be an object mapping image paths to contents");
  const result = new Plan(modes);
  const keys = Object.keys(files).map((key) => ({ key, rel: imagePath(key) }));
  keys.sort((a, b) => byteOrder(a.rel, b.rel));
  // Keys are canonical (imagePath refuses any other spelling), so two keys never
  // name one path; a clash can only come from a copied directory: Plan.add finds it.
  for (const { key, rel } of keys) {
    const entry = files[key] as Record<string, unknown> | undefined;
    if (entry === null || typeof entry !== "object") throw badInput(`rootfs path ${key} must map to { text }, { file }, { dir }, { symlink } or { mkdir: true }`);
    const kinds = ["text", "file", "dir", "symlink", "mkdir"].filter((k) => k in entry);
    if (kinds.length !== 1) {
      throw badInput(`rootfs path ${key} must have exactly one of text, file, dir, symlink, mkdir; got ${kinds.length === 0 ? "none" : kinds.join(", ")}`);
    }
    const by = key;
    const explicitMode = "mode" in entry && entry.mode !== undefined ? checkMode(entry.mode, key) : undefined;
    if ("mode" in entry && entry.mode !== undefined && (kinds[0] === "dir" || kinds[0] === "symlink")) {
      throw badInput(`rootfs path ${key}: mode applies to text, file and mkdir entries only`);
    }

    if ("text" in entry) {
      if (typeof entry.text !== "string") throw badInput(`rootfs path ${key}: text must be a string`);
      result.add(rel, { kind: "text", mode: explicitMode ?? modes.file, by, text: entry.text });
    } else if ("file" in entry) {
      if (typeof entry.file !== "string" || entry.file === "") throw badInput(`rootfs path ${key}: file must be a host path`);
      const st = await hostStat(entry.file, key);
      if (!st.isFile()) throw badInput(`rootfs path ${key}: host path ${entry.file} is not a regular file`);
      const mode = explicitMode ?? ((st.mode & 0o100) !== 0 ? modes.exec : modes.file);
      result.add(rel, { kind: "copy", mode, by, from: path.resolve(entry.file) });
    } else if ("symlink" in entry) {
      const target = entry.symlink;
      if (typeof target !== "string" || target === "" || target.includes("\0")) throw badInput(`rootfs path ${key}: symlink target must be a non-empty string without NUL`);
      result.add(rel, { kind: "symlink", by, target });
    } else if ("mkdir" in entry) {
      if (entry.mkdir !== true) throw badInput(`rootfs path ${key}: mkdir must be true`);
      result.add(rel, { kind: "dir", mode: explicitMode ?? modes.dir, by, implicit: false });
    } else {
      if (typeof entry.dir !== "string" || entry.dir === "") throw badInput(`rootfs path ${key}: dir must be a host directory`);
      const st = await hostStat(entry.dir, key);
      if (!st.isDirectory()) throw badInput(`rootfs path ${key}: host path ${entry.dir} is not a directory`);
      result.add(rel, { kind: "dir", mode: modes.dir, by, implicit: false });
      for (const e of await walkTree(entry.dir)) {
        const child = `${rel}/${e.rel}`;
        const from = `${key} (from ${e.abs})`;
        if (e.type === "dir") result.add(child, { kind: "dir", mode: modes.dir, by: from, implicit: false });
        else if (e.type === "symlink") result.add(child, { kind: "symlink", by: from, target: e.target! });
        else result.add(child, { kind: "copy", mode: (e.mode & 0o100) !== 0 ? modes.exec : modes.file, by: from, from: e.abs });
      }
    }
  }
  return result;
}

/** Create the tree described by `files` at `out`. See the module comment. */
export async function writeRootfsTree(options: WriteRootfsTreeOptions): Promise<RootfsResult> {
  const modes: Required<RootfsModes> = {
    dir: checkMode(options.mode?.dir ?? 0o755, "directories"),
    file: checkMode(options.mode?.file ?? 0o644, "files"),
    exec: checkMode(options.mode?.exec ?? 0o755, "executables"),
  };
  await assertAbsent(options.out, "rootfs output");
  const planned = await plan(options.files, modes);
  const paths = [...planned.nodes.keys()].sort(byteOrder);

  await writeAtomically(options.out, async (tmp) => {
    await mkdir(tmp, { mode: 0o700 });
    const dirs: Array<[string, number]> = [];
    for (const rel of paths) {
      const node = planned.nodes.get(rel)!;
      const dest = path.join(tmp, rel);
      try {
        switch (node.kind) {
          case "dir":
            await mkdir(dest, { mode: 0o700 });
            dirs.push([dest, node.mode]);
            break;
          case "text":
            await writeFile(dest, node.text, { flag: "wx" });
            await chmod(dest, node.mode);
            break;
          case "copy":
            await copyFile(node.from, dest, constants.COPYFILE_EXCL);
            await chmod(dest, node.mode);
            break;
          case "symlink":
            await symlink(node.target, dest);
            break;
        }
      } catch (err) {
        throw wrap(`writing rootfs path /${rel} (${node.by})`, err);
      }
    }
    // Directory modes last, deepest first: a read-only directory must still be filled.
    for (const [dest, mode] of dirs.reverse()) await chmod(dest, mode);
    await chmod(tmp, modes.dir);
  });
  return { paths };
}
