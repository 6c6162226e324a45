/**
 * Downloads one file by URL into a destination path, hashing as it streams.
 *
 * Guarantees: the destination appears only complete, fsynced and (when a hash
 * was pinned) verified; on any failure no temporary file is left. Transient
 * failures — 5xx, 408/429, resets, stalls, truncated bodies — are retried on
 * the same URL with exponential backoff; a 404 or any other definite answer
 * moves on to the next URL at once, since mirrors are listed for exactly
 * that. Concurrency is bounded by a shared `Limiter`.
 */
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { HashMismatchError, UkbError } from "../errors/index.js";
import { DigestSink, HASH_CHUNK, describeExpected, findMismatch, normaliseExpected, type ExpectedHashes, type FileDigests } from "./digest.js";
import { downloadLimiter, type Limiter } from "./limiter.js";
import { resolveUrls, type MirrorMap } from "./mirrors.js";

export interface DownloadProgress {
  /** The URL being read (as tried, before redirects). */
  url: string;
  /** Bytes received so far in this attempt. */
  bytes: number;
  /** Content-Length, when the server sent one. */
  total?: number;
  /** Average bytes per second since the attempt started. */
  rate: number;
}

export interface DownloadOptions {
  /** URLs tried in order; `mirror://NAME/path` expands through `mirrors`. */
  urls: readonly string[];
  /** Where the file lands; a temporary file beside it is renamed over it. */
  dest: string;
  /** Digests to verify (hex, `algo:HEX` or SRI). Without any, the content is taken as is (prefetch). */
  expect?: ExpectedHashes;
  mirrors?: MirrorMap;
  /** Time allowed until response headers arrive (covers DNS, connect, TLS, server think time). Default 30 s. */
  connectTimeoutMs?: number;
  /** A body that delivers no byte for this long is abandoned (and retried). Default 60 s. */
  idleTimeoutMs?: number;
  /** Extra attempts per URL after a transient failure. Default 3. */
  retries?: number;
  /** First backoff; doubles each retry, with ±25% jitter. Default 500 ms. */
  backoffMs?: number;
  /** Ceiling on one backoff, including a server's Retry-After. Default 15 s. */
  maxBackoffMs?: number;
  onProgress?: (event: DownloadProgress) => void;
  /** Minimum time between progress events. Default 200 ms. */
  progressIntervalMs?: number;
  signal?: AbortSignal;
  /** Never touch the network: only `file://` URLs are tried; otherwise fail, naming what was needed. */
  offline?: boolean;
  /** Bounds concurrent downloads; default the shared `downloadLimiter` (4). */
  limiter?: Limiter;
  /** Extra request headers (e.g. an authorization token for a private mirror). */
  headers?: Record<string, string>;
}

export interface DownloadResult extends FileDigests {
  /** The URL, from the expanded list, that served the content. */
  url: string;
  /** Where redirects ended. */
  finalUrl: string;
}

export const DOWNLOAD_DEFAULTS = {
  connectTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  retries: 3,
  backoffMs: 500,
  maxBackoffMs: 15_000,
  progressIntervalMs: 200,
} as const;

const USER_AGENT = "ukb (+https://unikraft.org)";
const STORE_ADD_HINT = "fetch the file another way and run `ukb store add FILE`, or configure a mirror (UKB_MIRRORS)";

/** One attempt's failure. `transient`: worth retrying the same URL. */
class AttemptFailure extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

const secs = (ms: number): string => (ms >= 1000 ? `${+(ms / 1000).toFixed(1)} s` : `${ms} ms`);

/** Names a fetch() rejection the way a user reads it: reset, refused, host not found… */
function describeNetworkError(error: unknown): { text: string; transient: boolean } {
  const err = error as { message?: string; code?: string; cause?: { message?: string; code?: string } };
  const code = err?.cause?.code ?? err?.code;
  const detail = err?.cause?.message ?? err?.message ?? String(error);
  switch (code) {
    case "ECONNRESET":
      return { text: "connection reset", transient: true };
    case "ECONNREFUSED":
      return { text: "connection refused", transient: true };
    case "EPIPE":
    case "UND_ERR_SOCKET":
      return { text: "connection closed by the server", transient: true };
    case "ETIMEDOUT":
    case "UND_ERR_CONNECT_TIMEOUT":
      return { text: "connection timed out", transient: true };
    case "EAI_AGAIN":
      return { text: "DNS lookup failed (temporary)", transient: true };
    case "ENOTFOUND":
      return { text: "host not found", transient: false };
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return { text: `network unreachable (${code})`, transient: true };
  }
  if (typeof code === "string" && /CERT|SSL|TLS/.test(code)) return { text: `TLS error: ${detail}`, transient: false };
  // Bad URLs and unsupported schemes are definite; anything else unknown is
  // most likely a dropped connection (msw's HttpResponse.error() lands here).
  if (/Failed to parse URL|not implemented|Invalid URL|unknown scheme|bad port/i.test(detail)) return { text: detail, transient: false };
  return { text: `network error: ${detail}`, transient: true };
}

function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A name beside `dest`, hidden, unique, recognisably ours. */
export function tempPathBeside(dest: string, tag = "part"): string {
  return join(dirname(dest), `.${basename(dest)}.${tag}-${randomBytes(6).toString("hex")}`);
}

/** Makes a rename durable: the directory entry, not just the file, must reach the disk. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the data itself was synced.
  } finally {
    await fh?.close();
  }
}

interface AttemptContext {
  url: string;
  tmp: string;
  signal: AbortSignal | undefined;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  headers: Record<string, string>;
  progress: (bytes: number, total: number | undefined, final: boolean) => void;
}

/** A failure on our side (disk full, permissions): retrying or another URL will not help. */
class LocalIoError extends Error {
  constructor(readonly error: unknown) {
    super((error as Error)?.message ?? String(error));
  }
}

/** Writes chunks to the temp file while hashing them. */
class TempWriter {
  readonly sink = new DigestSink();
  private constructor(private readonly fh: FileHandle) {}
  static async create(path: string): Promise<TempWriter> {
    // "w": a retry starts the same temp file from zero.
    return new TempWriter(await open(path, "w", 0o644));
  }
  async write(chunk: Uint8Array): Promise<void> {
    this.sink.update(chunk);
    try {
      let off = 0;
      while (off < chunk.length) off += (await this.fh.write(chunk, off, chunk.length - off)).bytesWritten;
    } catch (e) {
      throw new LocalIoError(e);
    }
  }
  async finish(): Promise<FileDigests> {
    try {
      await this.fh.sync();
      await this.fh.close();
    } catch (e) {
      throw new LocalIoError(e);
    }
    return this.sink.digest();
  }
  async abandon(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

async function attemptFile(ctx: AttemptContext): Promise<{ digests: FileDigests; finalUrl: string }> {
  let path: string;
  try {
    path = fileURLToPath(ctx.url);
  } catch (e) {
    throw new AttemptFailure(`invalid file URL (${(e as Error).message})`, false);
  }
  const out = await TempWriter.create(ctx.tmp);
  try {
    const input = createReadStream(path, { highWaterMark: HASH_CHUNK, ...(ctx.signal ? { signal: ctx.signal } : {}) });
    for await (const chunk of input as AsyncIterable<Buffer>) {
      await out.write(chunk);
      ctx.progress(out.sink.size, undefined, false);
    }
  } catch (e) {
    await out.abandon();
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    if (e instanceof LocalIoError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new AttemptFailure("not found", false);
    throw new AttemptFailure(`cannot read ${path}: ${(e as Error).message}`, false);
  }
  ctx.progress(out.sink.size, out.sink.size, true);
  return { digests: await out.finish(), finalUrl: ctx.url };
}

async function attemptHttp(ctx: AttemptContext): Promise<{ digests: FileDigests; finalUrl: string }> {
  const ctrl = new AbortController();
  const signal = ctx.signal ? AbortSignal.any([ctx.signal, ctrl.signal]) : ctrl.signal;
  let connectTimedOut = false;
  const connectTimer = setTimeout(() => {
    connectTimedOut = true;
    ctrl.abort();
  }, ctx.connectTimeoutMs);

  let res: Response;
  try {
    res = await fetch(ctx.url, {
      signal,
      redirect: "follow",
      // Identity: a server that gzips a .tar.gz on the fly would otherwise
      // hand us different bytes than the ones upstream hashed.
      headers: { "accept-encoding": "identity", "user-agent": USER_AGENT, ...ctx.headers },
    });
  } catch (e) {
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    if (connectTimedOut) throw new AttemptFailure(`no response within ${secs(ctx.connectTimeoutMs)}`, true);
    const { text, transient } = describeNetworkError(e);
    throw new AttemptFailure(text, transient);
  } finally {
    clearTimeout(connectTimer);
  }

  if (!res.ok) {
    // Not awaited: cancelling a body can wait on the peer (msw's tee'd bodies never settle).
    void res.body?.cancel().catch(() => undefined);
    const what = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
    const transient = res.status >= 500 || res.status === 408 || res.status === 425 || res.status === 429;
    throw new AttemptFailure(what, transient, parseRetryAfter(res.headers.get("retry-after")));
  }

  // Content-Length describes the encoded body; only comparable when there is no encoding.
  const encoding = res.headers.get("content-encoding");
  // Sent encoded though identity was asked for (Apache's AddEncoding on a .tar.gz, say): fetch
  // decodes it, and the bytes that arrive are not the file upstream hashed. Refused, so that no
  // one pins the hash of the decoded bytes; a mirror or the next URL may serve the file as it is.
  if (encoding && encoding.toLowerCase() !== "identity") {
    void res.body?.cancel().catch(() => undefined);
    throw new AttemptFailure(`the server sent it with Content-Encoding: ${encoding} (decoded in transit, so not the file's own bytes)`, false);
  }
  const lengthHeader = res.headers.get("content-length");
  const total = lengthHeader !== null && /^\d+$/.test(lengthHeader) && (!encoding || encoding === "identity") ? Number(lengthHeader) : undefined;

  let out: TempWriter;
  try {
    out = await TempWriter.create(ctx.tmp);
  } catch (e) {
    void res.body?.cancel().catch(() => undefined);
    throw new LocalIoError(e);
  }
  const reader = res.body?.getReader();
  // One watchdog per attempt rather than a timer per chunk: chunks can
  // arrive tens of thousands of times a second.
  let lastByteAt = Date.now();
  let stalled = false;
  let rejectStall: (e: Error) => void = () => undefined;
  const stall = new Promise<never>((_, reject) => (rejectStall = reject));
  stall.catch(() => undefined);
  const onUserAbort = (): void => rejectStall(ctx.signal?.reason);
  ctx.signal?.addEventListener("abort", onUserAbort, { once: true });
  const watchdog = setInterval(
    () => {
      if (Date.now() - lastByteAt >= ctx.idleTimeoutMs) {
        stalled = true;
        rejectStall(new Error("stalled"));
        void reader?.cancel().catch(() => undefined);
        ctrl.abort();
      }
    },
    Math.max(5, Math.min(1000, ctx.idleTimeoutMs / 4)),
  );

  try {
    if (reader) {
      for (;;) {
        const { done, value } = await Promise.race([reader.read(), stall]);
        if (done) break;
        // Before and after the write: time spent on our disk is not the server's silence.
        lastByteAt = Date.now();
        await out.write(value);
        lastByteAt = Date.now();
        ctx.progress(out.sink.size, total, false);
      }
      // The Response held until its body is read: Node 20's fetch cancels the body of a collected one.
      void res.bodyUsed;
    }
  } catch (e) {
    await out.abandon();
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    if (e instanceof LocalIoError) throw e;
    const got = out.sink.size;
    if (stalled) throw new AttemptFailure(`stalled: no data for ${secs(ctx.idleTimeoutMs)} after ${got}${total !== undefined ? ` of ${total}` : ""} bytes`, true);
    if (total !== undefined && got < total) throw new AttemptFailure(`truncated: connection closed after ${got} of ${total} bytes`, true);
    const { text } = describeNetworkError(e);
    throw new AttemptFailure(`${text} after ${got} bytes`, true);
  } finally {
    clearInterval(watchdog);
    ctx.signal?.removeEventListener("abort", onUserAbort);
  }

  const got = out.sink.size;
  if (total !== undefined && got !== total) {
    await out.abandon();
    throw new AttemptFailure(got < total ? `truncated: received ${got} of ${total} bytes` : `received ${got} bytes, more than the announced ${total}`, true);
  }
  ctx.progress(got, total, true);
  return { digests: await out.finish(), finalUrl: res.url || ctx.url };
}

function offlineError(urls: readonly string[], expect: ExpectedHashes, dest: string): UkbError {
  const first = urls[0] ?? "(no URL)";
  const more = urls.length > 1 ? ` (or one of ${urls.length - 1} other URL${urls.length > 2 ? "s" : ""})` : "";
  return new UkbError("fetch", `offline: ${basename(dest)} is not available without the network\n  would download ${first}${more}, ${describeExpected(expect)}`, {
    hint: `download it on a connected machine and run \`ukb store add FILE\`, or run without --offline`,
  });
}

/**
 * Downloads the first URL that serves the expected content to `dest`.
 * Throws `HashMismatchError` when a URL served other content (and no later
 * URL served the right one), `UkbError` kind "fetch" when none could be read.
 */
export async function download(options: DownloadOptions): Promise<DownloadResult> {
  const expect = normaliseExpected(options.expect);
  const urls = resolveUrls(options.urls, options.mirrors ?? {}, expect.sha256);
  if (urls.length === 0) throw new UkbError("recipe", `download of ${basename(options.dest)}: no URL given`);
  const candidates = options.offline ? urls.filter((u) => u.startsWith("file:")) : urls;
  if (candidates.length === 0) throw offlineError(urls, expect, options.dest);

  const d = { ...DOWNLOAD_DEFAULTS, ...definedOnly(options) };
  const limiter = options.limiter ?? downloadLimiter;
  const signal = options.signal;
  const tmp = tempPathBeside(options.dest);
  const failures: string[] = [];
  let mismatch: HashMismatchError | undefined;

  try {
    for (const url of candidates) {
      let lastEmit = 0;
      let started = Date.now();
      const ctx: AttemptContext = {
        url,
        tmp,
        signal,
        connectTimeoutMs: d.connectTimeoutMs,
        idleTimeoutMs: d.idleTimeoutMs,
        headers: options.headers ?? {},
        progress: (bytes, total, final) => {
          if (!options.onProgress) return;
          const now = Date.now();
          if (!final && now - lastEmit < d.progressIntervalMs) return;
          lastEmit = now;
          const rate = bytes / Math.max(0.001, (now - started) / 1000);
          options.onProgress(total === undefined ? { url, bytes, rate } : { url, bytes, total, rate });
        },
      };
      for (let attempt = 0; ; attempt++) {
        try {
          started = Date.now();
          const { digests, finalUrl } = await limiter.run(() => (url.startsWith("file:") ? attemptFile(ctx) : attemptHttp(ctx)), signal);
          const bad = findMismatch(expect, digests);
          if (bad) {
            mismatch = new HashMismatchError(url, `${bad.algo}:${bad.expected}`, `${bad.algo}:${bad.actual}`, `if upstream changed the file on purpose, update the recipe's hash (\`ukb prefetch ${url}\` prints it); otherwise try another mirror`);
            failures.push(`${url}: content has ${bad.algo}:${bad.actual}`);
            break;
          }
          await rename(tmp, options.dest);
          await fsyncDir(dirname(options.dest));
          return { url, finalUrl, ...digests };
        } catch (e) {
          if (signal?.aborted) throw signal.reason;
          if (!(e instanceof AttemptFailure)) {
            // Our own side failed (disk full, permissions): no other URL will do better.
            if (e instanceof UkbError) throw e;
            const cause = e instanceof LocalIoError ? e.error : e;
            throw new UkbError("fetch", `${url}: cannot save to ${options.dest}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
          }
          if (e.transient && attempt < d.retries) {
            const backoff = Math.min(d.maxBackoffMs, e.retryAfterMs ?? d.backoffMs * 2 ** attempt * (0.75 + Math.random() / 2));
            await sleep(backoff, signal);
            continue;
          }
          failures.push(`${url}: ${e.message}${attempt > 0 ? ` (${attempt + 1} attempts)` : ""}`);
          break;
        }
      }
    }
  } finally {
    await rm(tmp, { force: true });
  }

  if (mismatch) throw mismatch;
  // Offline, file mirrors were all we could try: what the user needs to know is the network URL.
  if (options.offline) throw offlineError(urls.filter((u) => !u.startsWith("file:")), expect, options.dest);
  const message =
    failures.length === 1
      ? `cannot download ${failures[0]}`
      : `cannot download ${basename(options.dest)} from any of ${failures.length} URLs:\n  ${failures.join("\n  ")}`;
  throw new UkbError("fetch", message, { hint: STORE_ADD_HINT });
}

/** Drops undefined fields so they do not override defaults (exactOptionalPropertyTypes-friendly). */
function definedOnly(o: DownloadOptions): Partial<Record<keyof typeof DOWNLOAD_DEFAULTS, number>> {
  const out: Partial<Record<keyof typeof DOWNLOAD_DEFAULTS, number>> = {};
  for (const k of Object.keys(DOWNLOAD_DEFAULTS) as (keyof typeof DOWNLOAD_DEFAULTS)[]) {
    const v = o[k];
    if (typeof v === "number") out[k] = v;
  }
  return out;
}
