/**
 * The host's system directories, the only part of the host a build may see
 * (read-only, and only the packages its tools need: src/build/host-view.ts),
 * and the user's cache folder, where what ukb learns of the host is kept.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** Host directories a build can see (a symlink stays a symlink, as /bin → usr/bin on merged-/usr systems); a host tool must live in one. */
export const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] as const;

/** Whether `file` lies in one of the system directories. */
export function inSystemDirs(file: string): boolean {
  return SYSTEM_DIRS.some((d) => file === d || file.startsWith(`${d}/`));
}

/** A file of ukb's in the user's cache folder (XDG_CACHE_HOME, else ~/.cache). */
export function userCacheFile(...parts: string[]): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "ukb", ...parts);
}

/** Writes `value` as JSON to `file` by rename, so a reader sees all or nothing; a folder ukb may not write, or a full disk, only loses the cache. */
export function writeCacheFile(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(value));
    fs.renameSync(tmp, file);
  } catch {
    // made again next time
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
