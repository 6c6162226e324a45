/**
 * The options of writeOciLayout, checked: every rule urunc, the OCI spec and
 * kraftkit impose is applied here, before a single byte is written, so that
 * bad input fails with a message that names the option and the value.
 */
import { stat } from "node:fs/promises";
import path from "node:path";
import { MACHINES_FOR_ARCH, machineName, readKernelHeader } from "./elf.js";
import { badInput, show, wrap } from "./errors.js";
import { checkTag } from "./reference.js";
import { checkBootArgsLength, checkCmd, checkEnv, checkUnikernel, URUNC_PREFIX, uruncAnnotations, type Hypervisor, type UnikernelType } from "./urunc.js";
import { byteOrder } from "./walk.js";

export type Architecture = "amd64" | "arm64";

export interface KraftkitOptions {
  /** Lines of the kernel's .config (CONFIG_X=y); blank and # lines are skipped. */
  kconfig?: string[];
}

export interface WriteOciLayoutOptions {
  /** Directory to create; must not exist yet. */
  out: string;
  /** The unikernel: an ELF (or, for unikernelType linux, a bzImage) for `architecture`. */
  kernel: string;
  /** Initrd file (e.g. a cpio from writeCpio), packaged at /.boot/rootfs. */
  initrd?: string;
  /** Whole argv, program name first: ["nginx", "-c", "/nginx/conf/nginx.conf"]. */
  cmd: string[];
  env?: string[] | Record<string, string>;
  unikernelType: UnikernelType;
  unikernelVersion?: string;
  hypervisor: Hypervisor;
  architecture: Architecture;
  /** Extra config labels (not com.urunc.unikernel.*, which ukb writes). */
  labels?: Record<string, string>;
  /** Tag recorded in index.json as org.opencontainers.image.ref.name. */
  tag: string;
  /** SOURCE_DATE_EPOCH, in seconds. */
  created: number;
  /** Also lay the image out the way `kraft pkg` does (paths, annotations, Kconfig as os.features). */
  kraftkit?: boolean | KraftkitOptions;
  /** urunc's mountRootfs: mount the container rootfs into the guest (default false). */
  mountRootfs?: boolean;
  /**
   * Layer compression (default gzip). "none" gives digests that do not depend
   * on Node's bundled zlib (see gzip.ts), at the cost of size.
   */
  compression?: "gzip" | "none";
}

export const KRAFTKIT_KERNEL = "/unikraft/bin/kernel";
export const KRAFTKIT_INITRD = "/unikraft/bin/initrd";
/** Kconfig options that hold host paths (kraftkit drops them too). */
const KCONFIG_HOST_SPECIFIC = new Set(["CONFIG_UK_APP", "CONFIG_UK_BASE"]);
const KCONFIG_RE = /^CONFIG_[A-Za-z0-9_]+=/;
export const KRAFTKIT_ARCH: Record<Architecture, string> = { amd64: "x86_64", arm64: "arm64" };
export const KRAFTKIT_PLAT: Partial<Record<Hypervisor, string>> = { qemu: "qemu", firecracker: "fc" };
const MAX_CREATED = 253402300799; // 9999-12-31T23:59:59Z

/** Seconds since the epoch as RFC 3339 in UTC, without fractional seconds. */
export function rfc3339(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.000Z$/, "Z");
}

/** A map with its keys in byte order, so JSON.stringify is canonical for it. */
export function sorted(map: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(map).sort(byteOrder)) out[key] = map[key]!;
  return out;
}

async function regularFile(file: unknown, what: string): Promise<{ path: string; size: number }> {
  if (typeof file !== "string" || file === "") throw badInput(`${what} must be a file path`);
  try {
    const st = await stat(file);
    if (!st.isFile()) throw badInput(`${what} ${file} is not a regular file`);
    return { path: path.resolve(file), size: st.size };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw badInput(`${what} ${file} does not exist`);
    throw wrap(`reading ${what} ${file}`, err);
  }
}

async function checkKernel(file: string, architecture: Architecture, type: UnikernelType): Promise<void> {
  const header = await readKernelHeader(file);
  if (header.format === "bzImage" && type === "linux") return;
  if (header.format !== "elf") {
    throw badInput(`kernel ${file} is not an ELF file (no \\x7fELF magic)`, "pass the unikernel image itself (e.g. .unikraft/build/nginx_qemu-x86_64), not a cpio, an archive or a script");
  }
  // EM_NONE (0) or a truncated header (a test's fake kernel) says nothing
  // about the architecture, so only a machine that is set and wrong is refused.
  const machines = MACHINES_FOR_ARCH[architecture]!;
  if (header.machine !== undefined && header.machine !== 0 && !machines.includes(header.machine)) {
    throw badInput(`kernel ${file} is an ELF for ${machineName(header.machine!)}, but the image architecture is ${architecture}`);
  }
}

function checkLabels(labels: unknown): Record<string, string> {
  if (labels === undefined) return {};
  if (labels === null || typeof labels !== "object" || Array.isArray(labels)) throw badInput("labels must be an object of strings");
  for (const [key, value] of Object.entries(labels)) {
    if (key === "" || /[\s]/.test(key)) throw badInput(`label name ${show(key)} must be non-empty, without whitespace`);
    if (key.startsWith(URUNC_PREFIX)) throw badInput(`label ${key} is written by ukb from the image options; set unikernelType, hypervisor... instead`);
    if (typeof value !== "string") throw badInput(`label ${key} must be a string`);
  }
  return labels as Record<string, string>;
}

function checkKconfig(kconfig: unknown): string[] {
  if (kconfig === undefined) return [];
  if (!Array.isArray(kconfig)) throw badInput("kraftkit.kconfig must be a list of CONFIG_X=value lines");
  const features = new Set<string>();
  kconfig.forEach((line: unknown, i) => {
    if (typeof line !== "string") throw badInput(`kraftkit.kconfig[${i}] must be a string`);
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    if (!KCONFIG_RE.test(trimmed)) throw badInput(`kraftkit.kconfig[${i}] ${show(line)} is not a CONFIG_NAME=value line`);
    if (KCONFIG_HOST_SPECIFIC.has(trimmed.slice(0, trimmed.indexOf("=")))) return;
    features.add(trimmed);
  });
  return [...features].sort(byteOrder);
}

function checkCreated(created: unknown): number {
  if (typeof created !== "number" || !Number.isInteger(created) || created < 0 || created > MAX_CREATED) {
    throw badInput(`created must be SOURCE_DATE_EPOCH, whole seconds since 1970, got ${String(created)}`);
  }
  return created;
}

export interface Plan {
  kernel: { path: string; size: number };
  initrd?: { path: string; size: number };
  cmd: string[];
  env: string[];
  created: number;
  createdText: string;
  architecture: Architecture;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  kraftkit: { kconfig: string[] } | undefined;
  compression: "gzip" | "none";
  tag: string;
  unikernelVersion: string | undefined;
  hypervisor: Hypervisor;
}

/** What an image's options must be, checked before anything is built: the recipe's ociImage() asks as it is evaluated, the builtin again. */
export function checkImageOptions(
  o: Pick<WriteOciLayoutOptions, "architecture" | "cmd" | "env" | "labels" | "mountRootfs" | "compression" | "unikernelType" | "hypervisor" | "unikernelVersion">,
): { cmd: string[]; env: string[]; labels: Record<string, string> } {
  if (o.architecture !== "amd64" && o.architecture !== "arm64") {
    throw badInput(`architecture ${show(String(o.architecture))} is not supported; use amd64 or arm64`);
  }
  checkUnikernel(o.unikernelType, o.hypervisor, o.unikernelVersion);
  const cmd = checkCmd(o.cmd);
  const env = checkEnv(o.env);
  checkBootArgsLength(cmd, env);
  const labels = checkLabels(o.labels);
  if (o.mountRootfs !== undefined && typeof o.mountRootfs !== "boolean") throw badInput("mountRootfs must be true or false");
  if (o.compression !== undefined && o.compression !== "gzip" && o.compression !== "none") {
    throw badInput(`compression ${show(String(o.compression))} must be "gzip" or "none"`);
  }
  return { cmd, env, labels };
}

export async function plan(o: WriteOciLayoutOptions): Promise<Plan> {
  if (o === null || typeof o !== "object") throw badInput("ociImage options must be an object");
  if (typeof o.out !== "string" || o.out === "") throw badInput("out must be a directory path");
  const tag = checkTag(o.tag);
  const created = checkCreated(o.created);
  const { cmd, env, labels: userLabels } = checkImageOptions(o);
  const kraftkit =
    o.kraftkit === undefined || o.kraftkit === false
      ? undefined
      : { kconfig: checkKconfig(o.kraftkit === true ? undefined : o.kraftkit.kconfig) };

  const kernel = await regularFile(o.kernel, "kernel");
  await checkKernel(kernel.path, o.architecture, o.unikernelType);
  const initrd = o.initrd === undefined ? undefined : await regularFile(o.initrd, "initrd");

  const annotations = uruncAnnotations({
    unikernelType: o.unikernelType,
    hypervisor: o.hypervisor,
    cmd,
    env,
    hasInitrd: initrd !== undefined,
    mountRootfs: o.mountRootfs ?? false,
    ...(o.unikernelVersion === undefined ? {} : { unikernelVersion: o.unikernelVersion }),
  });
  const result: Plan = {
    kernel,
    cmd,
    env,
    created,
    createdText: rfc3339(created),
    architecture: o.architecture,
    annotations,
    labels: sorted({ ...userLabels, ...annotations }),
    kraftkit,
    compression: o.compression ?? "gzip",
    tag,
    unikernelVersion: o.unikernelVersion,
    hypervisor: o.hypervisor,
  };
  if (initrd !== undefined) result.initrd = initrd;
  return result;
}
