/**
 * Reproducible OCI image layouts that urunc runs the way it runs bunny's.
 *
 * One layer holds /.boot/kernel, /.boot/rootfs (the initrd, when there is
 * one) and /urunc.json; the urunc keys are also the config's Labels and the
 * manifest's annotations (see urunc.ts). The config's Cmd is the whole argv,
 * program name first, because urunc drops the first element of Cmd and
 * passes the rest to the application; Env is the config's Env.
 *
 * Same inputs, same bytes: the layer tar is written entry by entry by us
 * (sorted, owners 0, mtime = `created`), gzipped deterministically, every
 * JSON document is built in a fixed key order with sorted maps and no
 * whitespace, and `created` (SOURCE_DATE_EPOCH) is the only time anywhere,
 * at the top of the config, in every history entry (umoci stat needs one)
 * and as org.opencontainers.image.created.
 *
 * Everything is checked before anything is written; the layout is built in a
 * temporary directory beside `out` and renamed into place.
 */
import { chmod, mkdir, open, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { assertAbsent, writeAtomically } from "./atomic.js";
import { DigestTap, sha256Hex } from "./digest.js";
import { wrap } from "./errors.js";
import { deterministicGzip } from "./gzip.js";
import { KRAFTKIT_ARCH, KRAFTKIT_INITRD, KRAFTKIT_KERNEL, KRAFTKIT_PLAT, plan, sorted, type Plan, type WriteOciLayoutOptions } from "./oci-inputs.js";
import { tarStream, type TarEntry } from "./tar.js";
import { INITRD_PATH, KERNEL_PATH, URUNC_JSON_PATH, uruncJson } from "./urunc.js";
import { byteOrder } from "./walk.js";

export type { Architecture, KraftkitOptions, WriteOciLayoutOptions } from "./oci-inputs.js";
export { rfc3339 } from "./oci-inputs.js";

export const MEDIA_TYPES = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
} as const;

export interface OciLayoutResult {
  /** "sha256:<hex>" of the manifest: the image's identity, what a registry reports after a push. */
  manifestDigest: string;
  configDigest: string;
  /** Digest of the layer blob as stored (compressed when gzip). */
  layerDigest: string;
  /** Digest of the uncompressed layer tar (the config's diff_ids entry). */
  diffId: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}

/** The layer's entries, in byte order of their names. */
function layerEntries(p: Plan): TarEntry[] {
  const mtime = p.created;
  const rel = (abs: string) => abs.slice(1);
  const entries: TarEntry[] = [
    { type: "dir", name: ".boot/", mode: 0o755, mtime },
    { type: "file", name: rel(KERNEL_PATH), mode: 0o755, mtime, size: p.kernel.size, path: p.kernel.path },
  ];
  if (p.initrd) entries.push({ type: "file", name: rel(INITRD_PATH), mode: 0o644, mtime, size: p.initrd.size, path: p.initrd.path });
  const json = uruncJson(p.annotations);
  entries.push({ type: "file", name: rel(URUNC_JSON_PATH), mode: 0o644, mtime, size: json.length, data: json });
  if (p.kraftkit) {
    // Hard links, not copies: kraftkit's paths cost no second copy of the kernel.
    entries.push({ type: "dir", name: "unikraft/", mode: 0o755, mtime }, { type: "dir", name: "unikraft/bin/", mode: 0o755, mtime });
    entries.push({ type: "link", name: rel(KRAFTKIT_KERNEL), mode: 0o755, mtime, target: rel(KERNEL_PATH) });
    if (p.initrd) entries.push({ type: "link", name: rel(KRAFTKIT_INITRD), mode: 0o644, mtime, target: rel(INITRD_PATH) });
  }
  return entries.sort((a, b) => byteOrder(a.name, b.name));
}

async function writeBlob(blobs: string, bytes: Buffer, mediaType: string): Promise<Descriptor> {
  const hex = sha256Hex(bytes);
  const file = path.join(blobs, hex);
  await writeFile(file, bytes, { mode: 0o644 });
  await chmod(file, 0o644);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

async function writeLayer(blobs: string, p: Plan): Promise<{ desc: Descriptor; diffId: string }> {
  const tmp = path.join(blobs, ".layer.tmp");
  const uncompressed = new DigestTap();
  const stored = new DigestTap();
  const handle = await open(tmp, "wx", 0o644);
  const sink = handle.createWriteStream();
  if (p.compression === "gzip") {
    await pipeline(tarStream(layerEntries(p)), uncompressed, deterministicGzip(), stored, sink);
  } else {
    await pipeline(tarStream(layerEntries(p)), uncompressed, stored, sink);
  }
  await chmod(tmp, 0o644);
  await rename(tmp, path.join(blobs, stored.sha256));
  const desc: Descriptor = {
    mediaType: p.compression === "gzip" ? MEDIA_TYPES.layerGzip : MEDIA_TYPES.layerTar,
    digest: `sha256:${stored.sha256}`,
    size: stored.size,
  };
  if (p.kraftkit) {
    const annotations: Record<string, string> = { "org.unikraft.kernel.image": KRAFTKIT_KERNEL };
    if (p.initrd) annotations["org.unikraft.kernel.initrd"] = KRAFTKIT_INITRD;
    desc.annotations = sorted(annotations);
  }
  return { desc, diffId: `sha256:${uncompressed.sha256}` };
}

function configJson(p: Plan, diffId: string): Buffer {
  const config: Record<string, unknown> = {};
  if (p.env.length > 0) config.Env = p.env;
  config.Cmd = p.cmd;
  config.Labels = p.labels;
  const image: Record<string, unknown> = {
    created: p.createdText,
    architecture: p.architecture,
    os: "linux",
  };
  // Kraftkit's Kconfig-as-features goes in the config only: left out of the
  // index's platform so that no platform matcher can turn the image down.
  if (p.kraftkit && p.kraftkit.kconfig.length > 0) image["os.features"] = p.kraftkit.kconfig;
  image.config = config;
  image.rootfs = { type: "layers", diff_ids: [diffId] };
  image.history = [{ created: p.createdText, created_by: "ukb ociImage", comment: "kernel, initrd and urunc.json" }];
  return Buffer.from(JSON.stringify(image), "utf8");
}

function manifestAnnotations(p: Plan): Record<string, string> {
  const annotations: Record<string, string> = { ...p.annotations, "org.opencontainers.image.created": p.createdText };
  if (p.kraftkit) {
    annotations["org.unikraft.kernel.image"] = KRAFTKIT_KERNEL;
    if (p.initrd) annotations["org.unikraft.kernel.initrd"] = KRAFTKIT_INITRD;
    annotations["org.unikraft.kernel.arch"] = KRAFTKIT_ARCH[p.architecture];
    const plat = KRAFTKIT_PLAT[p.hypervisor];
    if (plat !== undefined) annotations["org.unikraft.kernel.plat"] = plat;
    if (p.unikernelVersion !== undefined) annotations["org.unikraft.kernel.version"] = p.unikernelVersion;
  }
  return sorted(annotations);
}

/** Write an OCI image layout for urunc at `out`. See the module comment. */
export async function writeOciLayout(options: WriteOciLayoutOptions): Promise<OciLayoutResult> {
  const p = await plan(options);
  await assertAbsent(options.out, "OCI layout output");

  return writeAtomically(options.out, async (tmp) => {
    try {
      const blobs = path.join(tmp, "blobs", "sha256");
      await mkdir(blobs, { recursive: true, mode: 0o755 });
      for (const dir of [tmp, path.join(tmp, "blobs"), blobs]) await chmod(dir, 0o755);

      const layer = await writeLayer(blobs, p);
      const config = await writeBlob(blobs, configJson(p, layer.diffId), MEDIA_TYPES.config);
      const manifest = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.manifest,
        config,
        layers: [layer.desc],
        annotations: manifestAnnotations(p),
      };
      const manifestDesc = await writeBlob(blobs, Buffer.from(JSON.stringify(manifest), "utf8"), MEDIA_TYPES.manifest);
      const index = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.index,
        manifests: [
          {
            ...manifestDesc,
            annotations: { "org.opencontainers.image.ref.name": p.tag },
            platform: { architecture: p.architecture, os: "linux" },
          },
        ],
      };
      await writeFile(path.join(tmp, "index.json"), JSON.stringify(index), { mode: 0o644 });
      await writeFile(path.join(tmp, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }), { mode: 0o644 });
      for (const f of ["index.json", "oci-layout"]) await chmod(path.join(tmp, f), 0o644);
      return { manifestDigest: manifestDesc.digest, configDigest: config.digest, layerDigest: layer.desc.digest, diffId: layer.diffId };
    } catch (err) {
      throw wrap(`writing OCI layout ${options.out}`, err);
    }
  });
}
