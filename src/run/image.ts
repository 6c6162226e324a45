/**
 * Reading an OCI image the way urunc does: the config's Cmd, Env and
 * `com.urunc.unikernel.*` labels, the kernel and initrd from the layer.
 */
import fs from "node:fs";
import path from "node:path";
import { x as extractTar } from "tar";
import { UkbError } from "../errors/index.js";

export interface BootableImage {
  readonly kernel: string;
  readonly initrd?: string;
  /** The whole argv; urunc drops Cmd[0] (the program's name). */
  readonly cmd: readonly string[];
  readonly env: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly unikernelType: string;
  readonly unikernelVersion?: string;
  readonly hypervisor: string;
}

const URUNC = "com.urunc.unikernel.";

function readJson<T>(file: string, what: string): T {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch (err) {
    throw new UkbError("artifact", `${what}: cannot read ${file}: ${(err as Error).message}`);
  }
}

function blob(layout: string, digest: string): string {
  return path.join(layout, "blobs", ...digest.split(":"));
}

/** Unpacks what a VM needs from an image layout into `dir`. */
export async function readBootableImage(layout: string, dir: string, tag?: string): Promise<BootableImage> {
  const index = readJson<{ manifests: { digest: string; annotations?: Record<string, string> }[] }>(path.join(layout, "index.json"), "image index");
  const entry = tag ? index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag) : index.manifests[0];
  if (!entry) throw new UkbError("artifact", `${layout} has no image${tag ? ` tagged ${tag}` : ""}`);
  const manifest = readJson<{ config: { digest: string }; layers: { digest: string }[] }>(blob(layout, entry.digest), "image manifest");
  const config = readJson<{ config?: { Cmd?: string[]; Env?: string[]; Labels?: Record<string, string> } }>(blob(layout, manifest.config.digest), "image config");
  const labels = config.config?.Labels ?? {};
  const binary = labels[`${URUNC}binary`];
  if (!labels[`${URUNC}unikernelType`] || !binary) throw new UkbError("artifact", `${layout} is not a urunc image: no ${URUNC}unikernelType / binary labels`);
  fs.mkdirSync(dir, { recursive: true });
  for (const layer of manifest.layers) await extractTar({ file: blob(layout, layer.digest), cwd: dir, preservePaths: false });
  const inside = (p: string) => path.join(dir, p.replace(/^\/+/, ""));
  const initrdLabel = labels[`${URUNC}initrd`];
  const kernel = inside(binary);
  if (!fs.existsSync(kernel)) throw new UkbError("artifact", `${layout}: the kernel ${binary} is not in the image`);
  return {
    kernel,
    ...(initrdLabel ? { initrd: inside(initrdLabel) } : {}),
    cmd: config.config?.Cmd ?? [],
    env: config.config?.Env ?? [],
    labels,
    unikernelType: labels[`${URUNC}unikernelType`]!,
    ...(labels[`${URUNC}unikernelVersion`] ? { unikernelVersion: labels[`${URUNC}unikernelVersion`]! } : {}),
    hypervisor: labels[`${URUNC}hypervisor`] ?? "qemu",
  };
}
