/**
 * Uploading paths to a cache: each path's blobs first (only those the cache
 * lacks), its info last, references before referrers — so an interrupted
 * upload never leaves an info pointing at a missing blob, and the cache
 * always holds closures.
 */
import fs from "node:fs";
import path from "node:path";
import { removeTree, type Store } from "../store/index.js";
import type { CacheBackend } from "./backend.js";
import { compressToFile } from "./compress.js";
import { cacheError } from "./errors.js";
import { signEntry, type BlobRef, type CacheEntry } from "./info.js";
import type { SecretKey } from "./keys.js";
import { packTree } from "./pack.js";

export type UploadEvent =
  | { type: "path"; base: string; status: "uploaded"; blobs: number; bytes: number; present: number }
  | { type: "path"; base: string; status: "present" }
  | { type: "path"; base: string; status: "differs"; theirs: string };

export interface UploadReport {
  readonly uploaded: string[];
  readonly present: string[];
  readonly differs: string[];
  readonly blobsUploaded: number;
  readonly blobsPresent: number;
  /** Compressed bytes sent. */
  readonly bytesUploaded: number;
}

/** The paths and their closure, references before referrers. */
export function closureInOrder(store: Store, bases: readonly string[]): string[] {
  const all = store.closure(bases);
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (b: string) => {
    if (seen.has(b)) return;
    seen.add(b);
    for (const r of store.info(b)!.references) if (r !== b) visit(r);
    out.push(b);
  };
  for (const b of all) visit(b);
  return out;
}

export async function upload(
  store: Store,
  backend: CacheBackend,
  bases: readonly string[],
  options: { signKey?: SecretKey; signal?: AbortSignal; onEvent?: (e: UploadEvent) => void; concurrency?: number } = {},
): Promise<UploadReport> {
  const signal = options.signal ?? new AbortController().signal;
  const report = { uploaded: [] as string[], present: [] as string[], differs: [] as string[], blobsUploaded: 0, blobsPresent: 0, bytesUploaded: 0 };
  const sent = new Map<string, BlobRef>(); // blake3 → stored ref, this run
  await backend.prepareUpload?.();
  const tmp = store.makeTempDir("upload");
  let n = 0;
  try {
    for (const base of closureInOrder(store, bases)) {
      const info = store.info(base)!;
      const existing = await backend.getEntry(base.slice(0, 32), signal).catch((err: unknown) => {
        // An unreadable info is overwritten below; anything else stops the upload.
        if ((err as Error).message.includes("not a valid path info")) return undefined;
        throw err;
      });
      if (existing && existing.base === base) {
        if (existing.contentHash === info.contentHash) {
          // There already, but maybe not signed by this key (uploaded unsigned, or by another
          // key): the signature is added when the entry says what this store says of the path.
          const sameReferences = [...existing.references].sort().join(" ") === [...info.references].sort().join(" ");
          if (options.signKey && sameReferences) {
            const signed = signEntry(existing, options.signKey);
            if (signed.signatures.join(" ") !== existing.signatures.join(" ")) {
              await backend.putEntry(signed, signal);
              store.setSignatures(base, [...new Set([...info.signatures, ...signed.signatures])]);
            }
          }
          report.present.push(base);
          options.onEvent?.({ type: "path", base, status: "present" });
        } else {
          report.differs.push(base);
          options.onEvent?.({ type: "path", base, status: "differs", theirs: existing.contentHash });
        }
        continue;
      }
      const packed = await packTree(store.realPath(base));
      if (packed.contentHash !== info.contentHash || packed.size !== info.size) {
        throw cacheError(`${store.realPath(base)} was modified in the store (it hashes to blake3:${packed.contentHash}, registered as blake3:${info.contentHash}): not uploading it`, { hint: "run `ukb store verify`" });
      }
      let blobs = 0;
      let bytes = 0;
      let present = 0;
      const put = async (blake3: string, size: number, source: string | Buffer): Promise<BlobRef> => {
        const known = sent.get(blake3);
        if (known) return known;
        let ref: BlobRef = { blake3, size, compressedSize: 0 };
        if (!backend.addressesByDigest) {
          const have = await backend.blobSize(ref, signal);
          if (have !== undefined) {
            present++;
            ref = { ...ref, compressedSize: have };
            sent.set(blake3, ref);
            return ref;
          }
        }
        const file = path.join(tmp, `${n++}.zst`);
        try {
          const c = await compressToFile(source, file);
          if (c.blake3 !== blake3 || c.size !== size) throw cacheError(`a file of ${base} changed while it was being uploaded`);
          ref = { blake3, size, compressedSize: c.compressedSize, ...(backend.addressesByDigest ? { digest: `sha256:${c.sha256}` } : {}) };
          if (backend.addressesByDigest && (await backend.blobSize(ref, signal)) !== undefined) {
            present++;
          } else {
            await backend.putBlob(ref, file, signal);
            blobs++;
            bytes += c.compressedSize;
          }
        } finally {
          await fs.promises.rm(file, { force: true });
        }
        sent.set(blake3, ref);
        return ref;
      };
      const externals = [...packed.externals].sort(([a], [b]) => (a < b ? -1 : 1));
      const refs: BlobRef[] = new Array(externals.length);
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(options.concurrency ?? 4, externals.length) }, async () => {
          while (next < externals.length) {
            const i = next++;
            const [h, { file, size }] = externals[i]!;
            refs[i] = await put(h, size, file);
          }
        }),
      );
      const { blake3Hex } = await import("../graph/index.js");
      const manifest = await put(blake3Hex(packed.manifest), packed.manifest.length, packed.manifest);
      let entry: CacheEntry = {
        base,
        contentHash: info.contentHash,
        size: info.size,
        references: info.references,
        ...(info.deriver ? { deriver: info.deriver } : {}),
        ...(info.ca ? { ca: info.ca } : {}),
        signatures: info.signatures,
        manifest,
        blobs: refs,
      };
      if (options.signKey) {
        entry = signEntry(entry, options.signKey);
        store.setSignatures(base, [...info.signatures, ...entry.signatures]);
      }
      await backend.putEntry(entry, signal);
      report.uploaded.push(base);
      report.blobsUploaded += blobs;
      report.blobsPresent += present;
      report.bytesUploaded += bytes;
      options.onEvent?.({ type: "path", base, status: "uploaded", blobs, bytes, present });
    }
  } finally {
    await removeTree(tmp);
  }
  return report;
}
