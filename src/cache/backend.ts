/**
 * One interface for every kind of binary cache. A backend stores two kinds
 * of things: path infos (by the path's 32-character hash part) and blobs
 * (zstd bytes, by the BLAKE3 of what they decompress to). Writers put every
 * blob a path needs before its info, so a reader that finds an info finds
 * its blobs (unless the cache lost them: then the fetch fails, is reported,
 * and the path is built locally).
 */
import type { BlobRef, CacheEntry } from "./info.js";

export interface CacheBackend {
  /** The URL as the user wrote it (for messages). */
  readonly url: string;
  /**
   * True when a blob's address is the digest of its compressed bytes (OCI),
   * so that checking for it means compressing it first.
   */
  readonly addressesByDigest: boolean;
  /** The info stored under `hashPart`, undefined when there is none. Throws on any other answer. */
  getEntry(hashPart: string, signal: AbortSignal): Promise<CacheEntry | undefined>;
  /** The stored (compressed) bytes of a blob. */
  openBlob(ref: BlobRef, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** The stored size of a blob the cache has, undefined when it has none. */
  blobSize(ref: BlobRef, signal: AbortSignal): Promise<number | undefined>;
  /** Stores a blob from a file of compressed bytes. */
  putBlob(ref: BlobRef, file: string, signal: AbortSignal): Promise<void>;
  /** Makes ready to receive uploads (a folder cache creates its folder). */
  prepareUpload?(): Promise<void>;
  /** Stores an info, last: after every blob it names. */
  putEntry(entry: CacheEntry, signal: AbortSignal): Promise<void>;
}

/** A cache's URL as ukb shows it: the user and password in it (`http://user:secret@host`) stay out of messages and logs. */
export function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return url;
  }
}

/** Opens the backend a URL names: file:///dir, http(s)://host/prefix, oci://host/repo. */
export async function openCache(url: string): Promise<CacheBackend> {
  const { cacheError } = await import("./errors.js");
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw cacheError(`'${url}' is not a cache URL`, { hint: "use file:///path, http(s)://host/prefix or oci://registry/repository" });
  }
  switch (u.protocol) {
    case "file:":
      return new (await import("./file-backend.js")).FileBackend(url);
    case "http:":
    case "https:":
      return new (await import("./http-backend.js")).HttpBackend(url);
    case "oci:":
    case "oci+http:":
      return (await import("./oci-backend.js")).OciBackend.open(url);
    default:
      throw cacheError(`'${url}': unknown cache scheme ${u.protocol}`, { hint: "use file:///path, http(s)://host/prefix or oci://registry/repository" });
  }
}
