/**
 * Typed errors with a user-facing message.
 *
 * Every failure that reaches the user is a `UkbError`: its `message` is one or
 * two lines that say what went wrong and where, and `exitCode` tells the CLI
 * how to exit (1: a build or fetch failed, 2: bad recipe or usage). Deep code
 * throws these values; only the CLI prints them.
 */

/** Exit codes shared by every command. */
export const ExitCode = {
  ok: 0,
  buildFailed: 1,
  badInput: 2,
} as const;

export type ErrorKind =
  | "recipe"
  | "usage"
  | "build"
  | "fetch"
  | "hash-mismatch"
  | "unpack"
  | "store"
  | "artifact"
  | "cache"
  | "internal";

const BRAND = Symbol.for("ukb.error");

export class UkbError extends Error {
  /** Marks ukb's errors across copies of this module (a recipe may load its own copy of the API). */
  readonly [BRAND] = true;
  readonly kind: ErrorKind;
  readonly exitCode: number;
  /** A command the user can run to fix the problem, printed after the message. */
  readonly hint?: string;

  constructor(kind: ErrorKind, message: string, options: { exitCode?: number; hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "UkbError";
    this.kind = kind;
    this.exitCode = options.exitCode ?? (kind === "recipe" || kind === "usage" ? ExitCode.badInput : ExitCode.buildFailed);
    if (options.hint !== undefined) this.hint = options.hint;
  }
}

/** A recipe that cannot be loaded or evaluated: names the file and, where known, the line. */
export class RecipeError extends UkbError {
  readonly file: string | undefined;
  readonly line: number | undefined;
  constructor(message: string, where: { file?: string; line?: number } = {}, cause?: unknown) {
    const at = where.file ? `${where.file}${where.line ? `:${where.line}` : ""}: ` : "";
    super("recipe", `${at}${message}`, { exitCode: ExitCode.badInput, cause });
    this.file = where.file;
    this.line = where.line;
  }
}

/** Wrong command-line usage. */
export class UsageError extends UkbError {
  constructor(message: string, hint?: string) {
    super("usage", message, hint === undefined ? { exitCode: ExitCode.badInput } : { exitCode: ExitCode.badInput, hint });
  }
}

/** Content whose hash is not the one that was declared. */
export class HashMismatchError extends UkbError {
  readonly expected: string;
  readonly actual: string;
  constructor(what: string, expected: string, actual: string, hint?: string) {
    super("hash-mismatch", `hash mismatch for ${what}\n  expected: ${expected}\n  actual:   ${actual}`, hint === undefined ? {} : { hint });
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * A file this user may not read or write (a store another user made, a folder
 * given to `store add`) as ukb reports it, one line and a hint; undefined for
 * any other error. `doing` says what ukb was doing, where the caller knows.
 */
export function permissionDenied(err: unknown, doing?: string): UkbError | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== "EACCES" && code !== "EPERM") return undefined;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  // Node's message repeats the code's words ("EACCES: permission denied, scandir '/x'"): the call and the path say the rest.
  const detail = e.path ? `${e.syscall ?? "open"} ${e.path}${e.dest ? ` -> ${e.dest}` : ""}` : e.message.replace(/^E[A-Z]+: [^,]*, /, "");
  return new UkbError("store", `${doing ? `${doing}: ` : ""}permission denied: ${detail}`, {
    hint: "run ukb as the user who owns the store and the files it reads, or give --store a folder of your own",
    cause: err,
  });
}

/** True for any ukb error, also one made by another copy of this module. */
export function isUkbError(value: unknown): value is UkbError {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}
export { catchStrayErrors, onStrayError, reportLateErrors } from "./stray.js";
