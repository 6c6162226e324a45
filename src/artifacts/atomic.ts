/**
 * Write-then-rename, so that a reader (or the store) never sees half an
 * artifact: the output appears complete or not at all, even if we crash.
 */
import { randomBytes } from "node:crypto";
import { lstat, rename, rm } from "node:fs/promises";
import path from "node:path";
import { badInput } from "./errors.js";

/** A hidden temporary path in the same directory as `out` (same filesystem, so rename is atomic). */
export function tempBeside(out: string): string {
  const dir = path.dirname(path.resolve(out));
  return path.join(dir, `.${path.basename(out)}.ukb-tmp-${randomBytes(6).toString("hex")}`);
}

/** Refuse to overwrite: a derivation output is written once, into a path nobody else holds. */
export async function assertAbsent(out: string, what: string): Promise<void> {
  try {
    await lstat(out);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  throw badInput(`${what} ${out} already exists; remove it or choose another output path`);
}

/**
 * Run `write(tmp)`, then rename tmp to `out`. On any failure the temporary
 * path is removed and the error is re-thrown, so nothing is left behind.
 */
export async function writeAtomically<T>(out: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = tempBeside(out);
  try {
    const result = await write(tmp);
    await rename(tmp, out);
    return result;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
