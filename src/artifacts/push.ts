/**
 * Push an OCI image layout to a registry (distribution API v2).
 *
 * Per blob (layers, then config): HEAD it; if absent, try a cross-repository
 * mount when the caller names a `from` repository on the same registry, else
 * upload in two steps, POST /v2/<name>/blobs/uploads/ then PUT
 * <location>&digest=<digest> with the bytes (Debian's registry 2.8 accepts a
 * one-step POST with a digest but stores nothing). Then the manifest, under
 * the tag, with its own media type; skipped when the tag already points at
 * the same digest. The result says which blobs were uploaded, mounted or
 * already present, so pushing twice can be seen to upload nothing twice.
 */
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { sha256Hex } from "./digest.js";
import { resolveCredentials, type RegistryCredentials } from "./credentials.js";
import { badInput, failure, show } from "./errors.js";
import type { Descriptor } from "./oci-layout.js";
import { checkRepository, checkTag, parseReference } from "./reference.js";
import { RegistryClient } from "./registry-client.js";

export type BlobStatus = "present" | "mounted" | "uploaded";

export type PushEvent =
  | { type: "blob"; digest: string; size: number; mediaType: string; status: BlobStatus }
  | { type: "manifest"; digest: string; tag: string; status: "present" | "pushed" };

export interface PushOptions {
  /** OCI image layout directory (e.g. from writeOciLayout). */
  layout: string;
  /** "host[:port]/repository:tag". */
  reference: string;
  /** Talk plain http to the registry (and only then). */
  insecure?: boolean;
  credentials?: RegistryCredentials;
  /** A repository on the same registry that may hold the blobs: they are mounted from it, not uploaded. */
  from?: string;
  /** Which manifest of the layout to push, by its ref.name; default: the only one, else the reference's tag. */
  tag?: string;
  onEvent?: (event: PushEvent) => void;
  /** Docker config.json to read credentials from (default $DOCKER_CONFIG or ~/.docker). */
  dockerConfig?: string;
  /** Environment for UKB_REGISTRY_USER / UKB_REGISTRY_PASSWORD (default process.env). */
  env?: Record<string, string | undefined>;
  /** fetch to use (default the global one). */
  fetch?: typeof fetch;
}

export interface PushResult {
  manifestDigest: string;
  manifest: "present" | "pushed";
  uploaded: string[];
  mounted: string[];
  present: string[];
  /** Where the manifest is: https://host/v2/<repository>/manifests/<tag>. */
  url: string;
}

interface IndexEntry extends Descriptor {
  annotations?: Record<string, string>;
}

interface Manifest {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

const REF_NAME = "org.opencontainers.image.ref.name";
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-fA-F0-9]{32,})$/;
const IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

function blobPath(layout: string, digest: string): string {
  const m = DIGEST_RE.exec(digest);
  if (!m) throw badInput(`layout ${layout} names a blob with an invalid digest ${show(digest)}`);
  return path.join(layout, "blobs", m[1]!, m[2]!);
}

async function readJson<T>(file: string, what: string): Promise<T> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw badInput(`${what} ${file} does not exist`);
    throw badInput(`${what} ${file} is not valid JSON`);
  }
}

/** Pick the manifest to push and read what it references. */
async function readLayout(layout: string, wanted: string | undefined, fallbackTag: string) {
  await readJson<unknown>(path.join(layout, "oci-layout"), "OCI layout marker");
  const index = await readJson<{ manifests?: IndexEntry[] }>(path.join(layout, "index.json"), "OCI layout index");
  const manifests = index.manifests ?? [];
  let entry: IndexEntry | undefined;
  if (wanted !== undefined) entry = manifests.find((m) => m.annotations?.[REF_NAME] === wanted);
  else if (manifests.length === 1) entry = manifests[0];
  else entry = manifests.find((m) => m.annotations?.[REF_NAME] === fallbackTag);
  if (!entry) {
    const names = manifests.map((m) => m.annotations?.[REF_NAME] ?? m.digest).join(", ");
    throw badInput(`layout ${layout} has no manifest ${wanted ?? fallbackTag} to push (it has: ${names || "none"})`);
  }
  const mediaType = entry.mediaType ?? IMAGE_MANIFEST;
  if (mediaType !== IMAGE_MANIFEST && mediaType !== "application/vnd.docker.distribution.manifest.v2+json") {
    throw badInput(`layout ${layout}: ${entry.digest} is a ${mediaType}; ukb pushes single image manifests`);
  }
  const manifestBytes = await readFile(blobPath(layout, entry.digest)).catch(() => {
    throw badInput(`layout ${layout} lacks the manifest blob ${entry.digest}`);
  });
  if (entry.digest.startsWith("sha256:") && `sha256:${sha256Hex(manifestBytes)}` !== entry.digest) {
    throw badInput(`layout ${layout}: manifest blob ${entry.digest} does not match its digest`);
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(manifestBytes.toString("utf8")) as Manifest;
  } catch {
    throw badInput(`layout ${layout}: manifest blob ${entry.digest} is not JSON`);
  }
  if (manifest.config === undefined || !Array.isArray(manifest.layers)) {
    throw badInput(`layout ${layout}: manifest ${entry.digest} has no config or no layers`);
  }
  const blobs = [...manifest.layers, manifest.config];
  for (const blob of blobs) {
    const file = blobPath(layout, blob.digest);
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) throw badInput(`layout ${layout} lacks the blob ${blob.digest}`);
    if (st.size !== blob.size) throw badInput(`layout ${layout}: blob ${blob.digest} is ${st.size} bytes, the manifest says ${blob.size}`);
  }
  return { digest: entry.digest, mediaType, manifestBytes, blobs };
}

/** Push the layout's image to the registry. See the module comment. */
export async function pushLayout(options: PushOptions): Promise<PushResult> {
  const ref = parseReference(options.reference);
  if (options.tag !== undefined) checkTag(options.tag);
  if (options.from !== undefined) checkRepository(options.from, "from repository");
  const image = await readLayout(options.layout, options.tag, ref.tag);
  const credentials = await resolveCredentials(ref.host, {
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
    ...(options.dockerConfig === undefined ? {} : { dockerConfig: options.dockerConfig }),
    ...(options.env === undefined ? {} : { env: options.env }),
  });
  const scopes = [`repository:${ref.repository}:pull,push`];
  if (options.from !== undefined && options.from !== ref.repository) scopes.push(`repository:${options.from}:pull`);
  const client = new RegistryClient(ref.host, options.insecure ?? false, credentials, scopes, options.fetch ?? fetch);
  const name = ref.repository;
  const emit = options.onEvent ?? (() => undefined);
  const result: PushResult = {
    manifestDigest: image.digest,
    manifest: "pushed",
    uploaded: [],
    mounted: [],
    present: [],
    url: `${client.base}/v2/${name}/manifests/${ref.tag}`,
  };

  for (const blob of image.blobs) {
    const status = await pushBlob(client, name, blob, options.layout, options.from);
    result[status === "present" ? "present" : status === "mounted" ? "mounted" : "uploaded"].push(blob.digest);
    emit({ type: "blob", digest: blob.digest, size: blob.size, mediaType: blob.mediaType, status });
  }

  const head = await client.request({ method: "HEAD", url: `/v2/${name}/manifests/${ref.tag}`, headers: { accept: image.mediaType } });
  await head.body?.cancel();
  if (head.ok && head.headers.get("docker-content-digest") === image.digest) {
    result.manifest = "present";
  } else {
    const put = await client.request({
      method: "PUT",
      url: `/v2/${name}/manifests/${ref.tag}`,
      headers: { "content-type": image.mediaType, "content-length": String(image.manifestBytes.length) },
      body: () => image.manifestBytes,
    });
    if (put.status !== 201 && put.status !== 200) throw await client.unexpected(put, `pushing manifest ${name}:${ref.tag}`);
    await put.body?.cancel();
    const stored = put.headers.get("docker-content-digest");
    if (stored !== null && stored !== image.digest) {
      throw failure(`registry ${ref.host} stored manifest ${name}:${ref.tag} as ${stored}, not ${image.digest}`);
    }
  }
  emit({ type: "manifest", digest: image.digest, tag: ref.tag, status: result.manifest });
  return result;
}

async function pushBlob(client: RegistryClient, name: string, blob: Descriptor, layout: string, from: string | undefined): Promise<BlobStatus> {
  const head = await client.request({ method: "HEAD", url: `/v2/${name}/blobs/${blob.digest}` });
  await head.body?.cancel();
  if (head.ok) return "present";
  if (head.status !== 404) throw await client.unexpected(head, `checking blob ${blob.digest}`);

  let start: Response;
  if (from !== undefined && from !== name) {
    const mount = `/v2/${name}/blobs/uploads/?mount=${encodeURIComponent(blob.digest)}&from=${encodeURIComponent(from)}`;
    start = await client.request({ method: "POST", url: mount, headers: { "content-length": "0" } });
    if (start.status === 201) {
      await start.body?.cancel();
      return "mounted";
    }
    // 202: the registry could not mount and opened an ordinary upload instead.
  } else {
    start = await client.request({ method: "POST", url: `/v2/${name}/blobs/uploads/`, headers: { "content-length": "0" } });
  }
  if (start.status !== 202) throw await client.unexpected(start, `starting the upload of blob ${blob.digest}`);
  await start.body?.cancel();
  const location = start.headers.get("location");
  if (!location) throw failure(`registry ${client.host} opened an upload for ${blob.digest} without a Location`);
  // Append rather than re-serialise the query: the upload state in it is opaque
  // and some registries sign the exact URL.
  const resolved = new URL(location, client.base).toString();
  const target = `${resolved}${resolved.includes("?") ? "&" : "?"}digest=${encodeURIComponent(blob.digest)}`;

  const file = blobPath(layout, blob.digest);
  const put = await client.request({
    method: "PUT",
    url: target,
    headers: { "content-type": "application/octet-stream", "content-length": String(blob.size) },
    body: () => createReadStream(file, { highWaterMark: 1 << 20 }),
  });
  if (put.status !== 201) throw await client.unexpected(put, `uploading blob ${blob.digest}`);
  await put.body?.cancel();
  return "uploaded";
}
