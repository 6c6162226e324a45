/**
 * What a cache holds about one store path (ukb's narinfo): identity and
 * content hash (signed), and where the bytes are (unsigned: whatever they
 * are, the consumer checks the restored tree against the signed hash).
 *
 * The bytes of a path are a manifest — its canonical archive with every file
 * of EXTERNAL_MIN bytes or more replaced by the file's BLAKE3 — plus one blob
 * per distinct such file. All are zstd-compressed and named by the BLAKE3 of
 * their uncompressed bytes, so a file shared by two paths, or unchanged
 * between two builds, is stored and uploaded once.
 */
import { VIRTUAL_STORE } from "../graph/index.js";
import type { PathInfo } from "../store/index.js";
import { cacheError } from "./errors.js";
import { checkSignatures, fingerprint, sign, type PublicKey, type SecretKey } from "./keys.js";

/** Files at least this large are stored as blobs of their own. */
export const EXTERNAL_MIN = 32 << 10;

export interface BlobRef {
  /** BLAKE3 (hex) of the uncompressed bytes: the blob's name. */
  readonly blake3: string;
  /** Uncompressed size. */
  readonly size: number;
  /** Size as stored (zstd). */
  readonly compressedSize: number;
  /** `sha256:<hex>` of the stored bytes, for backends that address blobs so (OCI). */
  readonly digest?: string;
}

/** A path's info in a cache: the store's facts about it (references sorted), signed, and where its bytes are. */
export interface CacheEntry extends Pick<PathInfo, "base" | "contentHash" | "size" | "references" | "deriver" | "ca"> {
  readonly signatures: readonly string[];
  readonly manifest: BlobRef;
  /** The external files' blobs, each once, sorted by name. */
  readonly blobs: readonly BlobRef[];
}

const BASE = /^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$/;
const HEX64 = /^[0-9a-f]{64}$/;
const MAX_SIZE = Number.MAX_SAFE_INTEGER;

export const INFO_MEDIA_TYPE = "application/vnd.ukb.path-info.v1+json";

export function entryFingerprint(e: Pick<CacheEntry, "base" | "contentHash" | "size" | "references">): string {
  return fingerprint(e.base, e.contentHash, e.size, e.references);
}

/** The info file's bytes (JSON, stable key order). */
export function encodeEntry(e: CacheEntry): Buffer {
  const blob = (b: BlobRef) => ({ blake3: b.blake3, size: b.size, compressedSize: b.compressedSize, ...(b.digest ? { digest: b.digest } : {}) });
  const json = {
    ukb: "path-info-1",
    path: `${VIRTUAL_STORE}/${e.base}`,
    contentHash: `blake3:${e.contentHash}`,
    size: e.size,
    references: [...e.references].sort(),
    ...(e.deriver ? { deriver: e.deriver } : {}),
    ...(e.ca ? { ca: e.ca } : {}),
    signatures: [...e.signatures],
    compression: "zstd",
    manifest: blob(e.manifest),
    blobs: e.blobs.map(blob),
  };
  return Buffer.from(JSON.stringify(json, null, 1) + "\n");
}

function isSize(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_SIZE;
}

function parseBlob(v: unknown, what: string): BlobRef {
  const b = v as Record<string, unknown>;
  if (typeof b !== "object" || b === null || typeof b.blake3 !== "string" || !HEX64.test(b.blake3) || !isSize(b.size) || !isSize(b.compressedSize)) {
    throw new Error(`${what} is not a blob reference`);
  }
  if (b.digest !== undefined && (typeof b.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(b.digest))) throw new Error(`${what} has a bad digest`);
  return { blake3: b.blake3, size: b.size, compressedSize: b.compressedSize, ...(typeof b.digest === "string" ? { digest: b.digest } : {}) };
}

/** Parses and checks the shape of an info file; `source` names it in errors. */
export function decodeEntry(bytes: Buffer | string, source: string): CacheEntry {
  try {
    if (bytes.length > 4 << 20) throw new Error("larger than 4 MiB");
    const j = JSON.parse(bytes.toString()) as Record<string, unknown>;
    if (typeof j !== "object" || j === null || j.ukb !== "path-info-1") throw new Error("not a ukb path info");
    const p = j.path;
    if (typeof p !== "string" || !p.startsWith(`${VIRTUAL_STORE}/`) || !BASE.test(p.slice(VIRTUAL_STORE.length + 1))) throw new Error("bad path");
    const ch = j.contentHash;
    if (typeof ch !== "string" || !ch.startsWith("blake3:") || !HEX64.test(ch.slice(7))) throw new Error("bad contentHash");
    if (!isSize(j.size)) throw new Error("bad size");
    if (!Array.isArray(j.references) || !j.references.every((r) => typeof r === "string" && BASE.test(r))) throw new Error("bad references");
    if (!Array.isArray(j.signatures) || !j.signatures.every((s) => typeof s === "string" && s.length < 1024)) throw new Error("bad signatures");
    if (j.compression !== "zstd") throw new Error(`unknown compression ${JSON.stringify(j.compression)}`);
    if (j.deriver !== undefined && (typeof j.deriver !== "string" || !HEX64.test(j.deriver))) throw new Error("bad deriver");
    if (j.ca !== undefined && (typeof j.ca !== "string" || j.ca.length > 200)) throw new Error("bad ca");
    if (!Array.isArray(j.blobs)) throw new Error("bad blobs");
    return {
      base: p.slice(VIRTUAL_STORE.length + 1),
      contentHash: ch.slice(7),
      size: j.size,
      references: [...(j.references as string[])].sort(),
      ...(typeof j.deriver === "string" ? { deriver: j.deriver } : {}),
      ...(typeof j.ca === "string" ? { ca: j.ca } : {}),
      signatures: j.signatures as string[],
      manifest: parseBlob(j.manifest, "manifest"),
      blobs: j.blobs.map((b, i) => parseBlob(b, `blobs[${i}]`)),
    };
  } catch (err) {
    throw cacheError(`${source}: not a valid path info (${(err as Error).message})`);
  }
}

/** Adds a signature by `key` (keeping others by other keys). */
export function signEntry<T extends CacheEntry>(e: T, key: SecretKey): T {
  const s = sign(key, entryFingerprint(e));
  return { ...e, signatures: [...new Set([...e.signatures.filter((x) => !x.startsWith(`${key.name}:`)), s])].sort() };
}

export interface Trust {
  /** Check signatures (false: --no-verify; hashes are checked all the same). */
  readonly verify: boolean;
  readonly keys: readonly PublicKey[];
}

/**
 * Refuses an entry that is not for `base` (an info replayed under another
 * name), or, when verifying, is not signed by a trusted key. `cache` names
 * the cache in messages.
 */
export function checkEntry(e: CacheEntry, base: string, trust: Trust, cache: string): void {
  if (e.base !== base) {
    throw cacheError(`${cache} answered for ${base} with the info of ${e.base}: refused (a replayed or misfiled path info)`);
  }
  if (!trust.verify) return;
  const r = checkSignatures(entryFingerprint(e), e.signatures, trust.keys);
  if (r.ok) return;
  const hint = "trust the producer's public key with --trusted-keys or UKB_TRUSTED_KEYS, or accept unsigned paths explicitly with --no-verify";
  if (r.reason === "unsigned") throw cacheError(`${base} from ${cache} is not signed: refused`, { hint });
  if (r.reason === "untrusted") throw cacheError(`${base} from ${cache} is signed by ${r.names.join(", ")}, not by a trusted key: refused`, { hint });
  throw cacheError(`${base} from ${cache} has a signature by ${r.names.join(", ")} that does not match its content: refused (tampered path info?)`);
}
