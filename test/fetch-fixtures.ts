/**
 * Fixtures for the fetch tests: temp dirs, a command runner, hand-made tar
 * and zip archives (so each attack is exactly the bytes we mean, without
 * depending on what a tool is willing to write), and a tree listing to
 * compare unpacked trees.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, mkdtemp, readFile, readdir, readlink, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { crc32 } from "node:zlib";
import type { ExecutionContext } from "ava";
import { Header } from "tar";

const execFileP = promisify(execFile);

export async function tempDir(t: ExecutionContext, prefix = "ukb-fetch-"): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs a program without a shell; throws with its stderr on failure. */
export async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { ...(opts.cwd ? { cwd: opts.cwd } : {}), maxBuffer: 64 << 20, encoding: "utf8" });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.stderr ?? ""} ${e.message}`);
  }
}

export type TarType = "File" | "Directory" | "SymbolicLink" | "Link" | "CharacterDevice" | "BlockDevice" | "FIFO" | "SparseFile" | "GlobalExtendedHeader";

const WITH_DATA = new Set<TarType>(["File", "SparseFile", "GlobalExtendedHeader"]);

/** One pax record, "LEN key=value\n", whose length counts itself. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (`${len}${body}`.length !== len) len++;
  return `${len}${body}`;
}

export interface TarSpec {
  path: string;
  type?: TarType;
  data?: string | Buffer;
  mode?: number;
  linkpath?: string;
  /** Declared size, when it should differ from the data's (truncation tests). */
  size?: number;
}

/** A tar archive of exactly these entries, in this order (no normalisation of names). */
export function makeTar(entries: TarSpec[], options: { end?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? "File";
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    const h = new Header({
      path: e.path,
      mode: e.mode ?? (type === "Directory" ? 0o755 : 0o644),
      uid: 0,
      gid: 0,
      size: e.size ?? (WITH_DATA.has(type) ? data.length : 0),
      mtime: new Date(0),
      type,
      ...(e.linkpath !== undefined ? { linkpath: e.linkpath } : {}),
      uname: "root",
      gname: "root",
    });
    h.encode();
    blocks.push(h.block!);
    if (data.length > 0) {
      blocks.push(data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad) blocks.push(Buffer.alloc(pad));
    }
  }
  if (options.end !== false) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export interface ZipSpec {
  name: string;
  data?: string | Buffer;
  /** Full Unix st_mode, type bits included (e.g. 0o100644, 0o120777 for a symlink, 0o020644 for a char device). */
  mode?: number;
}

/** A zip (stored, no compression) made by "Unix", with these entries in this order. */
export function makeZip(entries: ZipSpec[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, "utf8");
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    const crc = crc32(data) >>> 0;
    const mode = e.mode ?? (e.name.endsWith("/") ? 0o040755 : 0o100644);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by Unix
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE((mode << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/**
 * One line per entry, sorted: path, type, exec bit, then content hash or
 * link target — what the store's canonical hash looks at.
 */
export async function listTree(root: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    const names = (await readdir(path.join(root, rel))).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = await lstat(abs);
      if (st.isSymbolicLink()) out.push(`${r} symlink -> ${await readlink(abs)}`);
      else if (st.isDirectory()) {
        out.push(`${r} dir`);
        await walk(r);
      } else if (st.isFile()) {
        const sha = createHash("sha256").update(await readFile(abs)).digest("hex").slice(0, 16);
        out.push(`${r} file ${st.mode & 0o100 ? "x" : "-"} ${sha}`);
      } else out.push(`${r} other`);
    }
  }
  await walk("");
  return out;
}

/** Names in a directory, sorted, for "nothing left behind" checks. */
export async function entriesOf(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}
