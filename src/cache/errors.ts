/** Errors of the cache layer: kind "cache", a one- or two-line message, exit code 1. */
import { UkbError } from "../errors/index.js";

export function cacheError(message: string, options: { hint?: string; cause?: unknown } = {}): UkbError {
  return new UkbError("cache", message, options);
}

/** The message of anything thrown, for a warning. */
export function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    if (err.name === "TimeoutError" || err.name === "AbortError") return err.message;
    if (err.message === "fetch failed" && cause) return `network error: ${cause.code ?? cause.message ?? "unknown"}`;
    return err.message;
  }
  return String(err);
}

/**
 * A response's body whose failures (a reset, a stall that aborted `signal`)
 * surface as cache errors saying `what` failed, for a warning and a local build.
 * The Response itself is held until the body is read: Node 20's fetch (undici)
 * cancels the body of a Response that is garbage-collected, and the body then
 * ends with no bytes (seen: a 38-byte manifest read as empty, depending on when
 * a collection came).
 */
export async function* guardedBody(res: Response, what: string, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    yield* res.body as unknown as AsyncIterable<Uint8Array>;
  } catch (err) {
    throw cacheError(`${what}: ${signal.aborted ? describe(signal.reason) : describe(err)}`);
  } finally {
    // Read after the body: the Response stays reachable for as long as its body is.
    void res.bodyUsed;
  }
}
