/**
 * A full disk, whoever reports it: a system call's ENOSPC (no room) or EDQUOT
 * (over quota), or SQLite's SQLITE_FULL when the database or its WAL cannot
 * grow. Deep code lets such errors rise; the store's operations turn them into
 * one {@link NoSpaceError} that says which filesystem, how much is free and
 * what ukb was doing, once they have put the store back as it was.
 */
import fs from "node:fs";
import { UkbError } from "../errors/index.js";

const NO_SPACE_CODES = new Set(["ENOSPC", "EDQUOT", "SQLITE_FULL"]);

/** The no-space code `err` (or an error it wraps) carries, if any. */
function noSpaceCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof NoSpaceError) return e.overQuota ? "EDQUOT" : "ENOSPC";
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && NO_SPACE_CODES.has(code)) return code;
  }
  return undefined;
}

/** True when `err` (or an error it wraps) says the disk is full. */
export function isNoSpace(err: unknown): boolean {
  return noSpaceCode(err) !== undefined;
}

/** Bytes an unprivileged writer may still use on the filesystem holding `dir`; undefined if it cannot be told. */
export function freeBytes(dir: string): number | undefined {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/** Below this, a failed build is likely to have failed for want of room. */
const NEARLY_FULL = 1 << 20;

/** True when the filesystem holding `dir` has (almost) no room left. */
export function nearlyFull(dir: string): boolean {
  const free = freeBytes(dir);
  return free !== undefined && free < NEARLY_FULL;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export const NO_SPACE_HINT = "free some space ('ukb store gc' removes what no root reaches) and run the command again";

export const OVER_QUOTA_HINT = "free some space ('ukb store gc' removes what no root reaches) or ask for a larger disk quota, and run the command again";

/**
 * The store's filesystem is full, or the user's quota on it used up: what
 * ukb was doing, where, and (for a full filesystem) how much is free now.
 */
export class NoSpaceError extends UkbError {
  /** EDQUOT: the filesystem may have room; this user may not use it. */
  readonly overQuota: boolean;

  constructor(
    readonly root: string,
    doing: string,
    cause?: unknown,
    hint?: string,
  ) {
    const overQuota = noSpaceCode(cause) === "EDQUOT";
    // statfs does not see quotas: over quota, its free figure would say there is room.
    const free = overQuota ? undefined : freeBytes(root);
    // "free now": what failed may have been cleaned up already, giving room back.
    const what = overQuota ? `disk quota exceeded on the filesystem of the store ${root}` : `no space left on the filesystem of the store ${root}`;
    super("store", `${what} while ${doing}${free === undefined ? "" : ` (${formatBytes(free)} free now)`}`, {
      hint: hint ?? (overQuota ? OVER_QUOTA_HINT : NO_SPACE_HINT),
      ...(cause === undefined ? {} : { cause }),
    });
    this.overQuota = overQuota;
  }
}

/** `err` as a {@link NoSpaceError} when the disk is full, else unchanged. */
export function explainNoSpace(err: unknown, root: string, doing: string): unknown {
  return isNoSpace(err) && !(err instanceof NoSpaceError) ? new NoSpaceError(root, doing, err) : err;
}
