/**
 * A cache on any static HTTP server that takes PUT (nginx with WebDAV, a
 * bucket, …), in the folder layout of file-backend.ts below the URL's path:
 *   GET/PUT  <prefix>/info/<hash part>.json
 *   GET/HEAD/PUT <prefix>/blob/<blake3>.zst
 * Credentials in the URL (https://user:password@host/prefix) are sent as
 * Basic auth, never in the URL itself.
 */
import fs from "node:fs";
import type { CacheBackend } from "./backend.js";
import { cacheError, describe, guardedBody } from "./errors.js";
import { decodeEntry, encodeEntry, type BlobRef, type CacheEntry } from "./info.js";

const MAX_INFO = 4 << 20;

/** Drops a response's body without waiting: some fetch stacks never settle cancel() of an unread body. */
function discard(res: Response): void {
  res.body?.cancel().catch(() => undefined);
}

export class HttpBackend implements CacheBackend {
  readonly addressesByDigest = false;
  private readonly base: string;
  private readonly headers: Record<string, string> = {};
  readonly url: string;

  constructor(url: string) {
    const u = new URL(url);
    if (u.username || u.password) {
      this.headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString("base64")}`;
      u.username = "";
      u.password = "";
    }
    u.search = "";
    u.hash = "";
    this.base = u.toString().replace(/\/+$/, "");
    this.url = this.base;
  }

  private async request(method: string, rel: string, signal: AbortSignal, init: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
    const target = `${this.base}/${rel}`;
    try {
      const options: RequestInit & { duplex?: "half" } = { method, headers: { ...this.headers, ...init.headers }, signal, redirect: "follow" };
      if (init.body !== undefined) {
        options.body = init.body as BodyInit;
        options.duplex = "half";
      }
      // globalThis.fetch at call time, so that a test's interceptor (msw) sees it.
      return await globalThis.fetch(target, options);
    } catch (err) {
      if (signal.aborted) throw cacheError(`${this.base}: ${method} ${rel}: ${describe(signal.reason)}`);
      throw cacheError(`${this.base}: ${method} ${rel}: ${describe(err)}`);
    }
  }

  private async fail(res: Response, what: string): Promise<never> {
    discard(res);
    throw cacheError(`${this.base}: ${what}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`);
  }

  async getEntry(hashPart: string, signal: AbortSignal): Promise<CacheEntry | undefined> {
    const rel = `info/${hashPart}.json`;
    const res = await this.request("GET", rel, signal);
    if (res.status === 404 || res.status === 410) {
      discard(res);
      return undefined;
    }
    if (res.status !== 200) return this.fail(res, `GET ${rel}`);
    const chunks: Buffer[] = [];
    let n = 0;
    try {
      for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
        n += c.length;
        if (n > MAX_INFO) throw cacheError(`${this.base}: ${rel} is larger than ${MAX_INFO} bytes`);
        chunks.push(Buffer.from(c));
      }
    } catch (err) {
      if ((err as { kind?: string }).kind === "cache") throw err;
      throw cacheError(`${this.base}: GET ${rel}: ${signal.aborted ? describe(signal.reason) : describe(err)}`);
    }
    // The Response held until its body is read (see guardedBody: a collected Response's body ends empty).
    void res.bodyUsed;
    return decodeEntry(Buffer.concat(chunks), `${this.base}/${rel}`);
  }

  async openBlob(ref: BlobRef, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const rel = `blob/${ref.blake3}.zst`;
    const res = await this.request("GET", rel, signal);
    if (res.status === 404) {
      discard(res);
      throw cacheError(`${this.base} has lost the blob ${ref.blake3}`);
    }
    if (res.status !== 200 || !res.body) return this.fail(res, `GET ${rel}`);
    return guardedBody(res, `${this.base}: GET ${rel}`, signal);
  }

  async blobSize(ref: BlobRef, signal: AbortSignal): Promise<number | undefined> {
    const rel = `blob/${ref.blake3}.zst`;
    const res = await this.request("HEAD", rel, signal);
    discard(res);
    if (res.status === 200) return Number(res.headers.get("content-length") ?? 0);
    if (res.status === 404 || res.status === 410) return undefined;
    return this.fail(res, `HEAD ${rel}`);
  }

  private async put(rel: string, body: unknown, length: number, signal: AbortSignal): Promise<void> {
    const res = await this.request("PUT", rel, signal, { body, headers: { "content-type": "application/octet-stream", "content-length": String(length) } });
    if (res.status !== 200 && res.status !== 201 && res.status !== 204) return this.fail(res, `PUT ${rel}`);
    discard(res);
  }

  async putBlob(ref: BlobRef, file: string, signal: AbortSignal): Promise<void> {
    const { size } = await fs.promises.stat(file);
    await this.put(`blob/${ref.blake3}.zst`, fs.createReadStream(file, { highWaterMark: 1 << 20 }), size, signal);
  }

  async putEntry(entry: CacheEntry, signal: AbortSignal): Promise<void> {
    const bytes = encodeEntry(entry);
    await this.put(`info/${entry.base.slice(0, 32)}.json`, bytes, bytes.length, signal);
  }
}
