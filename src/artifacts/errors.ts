/**
 * Error helpers for the artifact writers.
 *
 * Bad input (a missing file, a name urunc cannot carry, a bad tag) is the
 * caller's to fix: exit code 2. A failure while writing or talking to a
 * registry is a failed build step: exit code 1.
 */
import { ExitCode, UkbError } from "../errors/index.js";

/** Input the caller must fix; thrown before anything is written. */
export function badInput(message: string, hint?: string): UkbError {
  return new UkbError("artifact", message, hint === undefined ? { exitCode: ExitCode.badInput } : { exitCode: ExitCode.badInput, hint });
}

/** A step that failed while running (I/O, a registry answering an error). */
export function failure(message: string, cause?: unknown, hint?: string): UkbError {
  const options: { exitCode: number; cause?: unknown; hint?: string } = { exitCode: ExitCode.buildFailed };
  if (cause !== undefined) options.cause = cause;
  if (hint !== undefined) options.hint = hint;
  return new UkbError("artifact", message, options);
}

/** Re-throw UkbErrors as they are; wrap anything else with what we were doing. */
export function wrap(what: string, err: unknown): UkbError {
  if (err instanceof UkbError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return failure(`${what}: ${detail}`, err);
}

/** Quote a value for a message so that spaces and control characters show; a long one is cut (a binary given as text would fill the screen). */
export function show(value: string): string {
  const max = 100;
  return value.length > max ? `${JSON.stringify(value.slice(0, max))}... (${value.length} characters)` : JSON.stringify(value);
}
