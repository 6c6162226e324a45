/**
 * An OCI registry as a binary cache, through the distribution API (any
 * registry: distribution, Harbor, GHCR, ECR, …), with the registry's own
 * auth (UKB_REGISTRY_USER/PASSWORD or docker login), replication and GC.
 *
 *   blobs      the zstd blobs, addressed by the sha256 of their bytes
 *   a path     an OCI image manifest tagged with the path's hash part:
 *                artifactType  application/vnd.ukb.path-info.v1+json
 *                config        the path info (same JSON as the other backends)
 *                layers        the manifest blob, then every file blob, each
 *                              annotated with the BLAKE3 of what it holds
 *              so the registry's GC keeps exactly the blobs live paths use.
 *
 * oci://host/repo speaks https except to localhost and 127.0.0.0/8 (as
 * docker does); oci+http://host/repo forces plain http.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import crypto from "node:crypto";
import fs from "node:fs";
import { resolveCredentials } from "../artifacts/credentials.js";
import { checkRepository } from "../artifacts/reference.js";
import { RegistryClient } from "../artifacts/registry-client.js";
import { isUkbError } from "../errors/index.js";
import type { CacheBackend } from "./backend.js";
import { cacheError, describe, guardedBody } from "./errors.js";
import { decodeEntry, encodeEntry, INFO_MEDIA_TYPE, type BlobRef, type CacheEntry } from "./info.js";

const IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const MANIFEST_LAYER = "application/vnd.ukb.manifest.v1+zstd";
const FILE_LAYER = "application/vnd.ukb.file.v1+zstd";
const BLAKE3_ANNOTATION = "org.ukb.blake3";
const MAX_JSON = 4 << 20;

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

function sha256(b: Buffer): string {
  return `sha256:${crypto.createHash("sha256").update(b).digest("hex")}`;
}

export class OciBackend implements CacheBackend {
  readonly addressesByDigest = true;
  private constructor(
    readonly url: string,
    private readonly client: RegistryClient,
    private readonly repo: string,
    /** The signal of the exchange in progress, for the client's fetch. */
    private readonly signals: AsyncLocalStorage<AbortSignal>,
  ) {}

  static async open(url: string): Promise<OciBackend> {
    const u = new URL(url.replace(/^oci(\+http)?:/, "http:"));
    const host = u.host;
    const repo = u.pathname.replace(/^\/+|\/+$/g, "");
    try {
      checkRepository(repo, "cache repository");
    } catch (err) {
      throw cacheError(`${url}: ${(err as Error).message}`);
    }
    const local = u.hostname === "localhost" || /^127\./.test(u.hostname) || u.hostname === "[::1]";
    const insecure = url.startsWith("oci+http:") || local;
    const credentials = await resolveCredentials(host);
    const signals = new AsyncLocalStorage<AbortSignal>();
    // globalThis.fetch at call time (a test's interceptor sees it), with the exchange's signal.
    const fetchWithSignal = (input: string | URL | Request, init?: RequestInit) => {
      const signal = signals.getStore();
      return globalThis.fetch(input, signal ? { ...init, signal } : init);
    };
    const client = new RegistryClient(host, insecure, credentials, [`repository:${repo}:pull,push`], fetchWithSignal as typeof fetch);
    return new OciBackend(url, client, repo, signals);
  }

  /** Runs a registry exchange with `signal`, turning every failure into a cache error. */
  private async run<T>(what: string, signal: AbortSignal, f: () => Promise<T>): Promise<T> {
    try {
      return await this.signals.run(signal, f);
    } catch (err) {
      if (isUkbError(err) && err.kind === "cache") throw err;
      if (signal.aborted) throw cacheError(`${this.url}: ${what}: ${describe(signal.reason)}`);
      throw cacheError(`${this.url}: ${what}: ${describe(err)}`);
    }
  }

  private async readJson(res: Response, what: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
      n += c.length;
      if (n > MAX_JSON) throw cacheError(`${this.url}: ${what} is larger than ${MAX_JSON} bytes`);
      chunks.push(Buffer.from(c));
    }
    // The Response held until its body is read (see guardedBody: a collected Response's body ends empty).
    void res.bodyUsed;
    return Buffer.concat(chunks);
  }

  async getEntry(hashPart: string, signal: AbortSignal): Promise<CacheEntry | undefined> {
    return this.run(`looking up ${hashPart}`, signal, async () => {
      const res = await this.client.request({ method: "GET", url: `/v2/${this.repo}/manifests/${hashPart}`, headers: { accept: IMAGE_MANIFEST } });
      if (res.status === 404) {
        await res.body?.cancel();
        return undefined;
      }
      if (res.status !== 200) throw await this.client.unexpected(res, `reading the manifest ${hashPart}`);
      let manifest: { artifactType?: string; config?: Descriptor; layers?: Descriptor[] };
      try {
        manifest = JSON.parse((await this.readJson(res, `manifest ${hashPart}`)).toString()) as typeof manifest;
      } catch (err) {
        if (isUkbError(err)) throw err;
        throw cacheError(`${this.url}: manifest ${hashPart} is not JSON`);
      }
      const config = manifest.config;
      if (!config || config.mediaType !== INFO_MEDIA_TYPE || typeof config.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(config.digest)) {
        throw cacheError(`${this.url}: tag ${hashPart} is not a ukb path (artifactType ${manifest.artifactType ?? "none"})`);
      }
      const blob = await this.client.request({ method: "GET", url: `/v2/${this.repo}/blobs/${config.digest}` });
      if (blob.status !== 200) throw await this.client.unexpected(blob, `reading the path info of ${hashPart}`);
      const bytes = await this.readJson(blob, `path info ${hashPart}`);
      if (sha256(bytes) !== config.digest) throw cacheError(`${this.url}: the path info of ${hashPart} does not match its digest`);
      const entry = decodeEntry(bytes, `${this.url} ${hashPart}`);
      // Where each blob is: by the layers' annotations (the info may predate a re-upload).
      const where = new Map<string, string>();
      for (const l of manifest.layers ?? []) {
        const b3 = l.annotations?.[BLAKE3_ANNOTATION];
        if (typeof b3 === "string" && typeof l.digest === "string") where.set(b3, l.digest);
      }
      const locate = (r: BlobRef): BlobRef => {
        const digest = where.get(r.blake3) ?? r.digest;
        return digest ? { ...r, digest } : r;
      };
      return { ...entry, manifest: locate(entry.manifest), blobs: entry.blobs.map(locate) };
    });
  }

  private digestOf(ref: BlobRef): string {
    if (!ref.digest) throw cacheError(`${this.url}: no digest for the blob ${ref.blake3}`);
    return ref.digest;
  }

  async openBlob(ref: BlobRef, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const digest = this.digestOf(ref);
    const res = await this.run(`fetching blob ${digest}`, signal, async () => {
      const r = await this.client.request({ method: "GET", url: `/v2/${this.repo}/blobs/${digest}` });
      if (r.status === 404) {
        await r.body?.cancel();
        throw cacheError(`${this.url} has lost the blob ${digest}`);
      }
      if (r.status !== 200 || !r.body) throw await this.client.unexpected(r, `fetching blob ${digest}`);
      return r;
    });
    return guardedBody(res, `${this.url}: fetching blob ${digest}`, signal);
  }

  async blobSize(ref: BlobRef, signal: AbortSignal): Promise<number | undefined> {
    const digest = this.digestOf(ref);
    return this.run(`checking blob ${digest}`, signal, async () => {
      const res = await this.client.request({ method: "HEAD", url: `/v2/${this.repo}/blobs/${digest}` });
      await res.body?.cancel();
      if (res.status === 200) return Number(res.headers.get("content-length") ?? 0);
      if (res.status === 404) return undefined;
      throw await this.client.unexpected(res, `checking blob ${digest}`);
    });
  }

  private async upload(digest: string, size: number, body: () => Buffer | AsyncIterable<Uint8Array>): Promise<void> {
    const start = await this.client.request({ method: "POST", url: `/v2/${this.repo}/blobs/uploads/`, headers: { "content-length": "0" } });
    if (start.status !== 202) throw await this.client.unexpected(start, `starting the upload of ${digest}`);
    await start.body?.cancel();
    const location = start.headers.get("location");
    if (!location) throw cacheError(`${this.url}: the registry opened an upload without a Location`);
    const resolved = new URL(location, this.client.base).toString();
    const put = await this.client.request({
      method: "PUT",
      url: `${resolved}${resolved.includes("?") ? "&" : "?"}digest=${encodeURIComponent(digest)}`,
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      body,
    });
    if (put.status !== 201) throw await this.client.unexpected(put, `uploading ${digest}`);
    await put.body?.cancel();
  }

  async putBlob(ref: BlobRef, file: string, signal: AbortSignal): Promise<void> {
    const digest = this.digestOf(ref);
    const { size } = await fs.promises.stat(file);
    await this.run(`uploading blob ${digest}`, signal, () => this.upload(digest, size, () => fs.createReadStream(file, { highWaterMark: 1 << 20 })));
  }

  async putEntry(entry: CacheEntry, signal: AbortSignal): Promise<void> {
    const tag = entry.base.slice(0, 32);
    await this.run(`storing the path info of ${entry.base}`, signal, async () => {
      const config = encodeEntry(entry);
      const configDigest = sha256(config);
      const head = await this.client.request({ method: "HEAD", url: `/v2/${this.repo}/blobs/${configDigest}` });
      await head.body?.cancel();
      if (head.status !== 200) await this.upload(configDigest, config.length, () => config);
      const layers: Descriptor[] = [];
      const seen = new Set<string>();
      for (const [ref, mediaType] of [[entry.manifest, MANIFEST_LAYER], ...entry.blobs.map((b) => [b, FILE_LAYER] as const)] as const) {
        const digest = this.digestOf(ref);
        if (seen.has(digest)) continue;
        seen.add(digest);
        layers.push({ mediaType, digest, size: ref.compressedSize, annotations: { [BLAKE3_ANNOTATION]: ref.blake3 } });
      }
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: IMAGE_MANIFEST,
          artifactType: INFO_MEDIA_TYPE,
          config: { mediaType: INFO_MEDIA_TYPE, digest: configDigest, size: config.length },
          layers,
          annotations: { "org.ukb.path": `/ukb/store/${entry.base}` },
        }),
      );
      const put = await this.client.request({
        method: "PUT",
        url: `/v2/${this.repo}/manifests/${tag}`,
        headers: { "content-type": IMAGE_MANIFEST, "content-length": String(manifest.length) },
        body: () => manifest,
      });
      if (put.status !== 201 && put.status !== 200) throw await this.client.unexpected(put, `storing the path info of ${entry.base}`);
      await put.body?.cancel();
    });
  }
}
