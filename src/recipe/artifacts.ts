/**
 * The last steps of every unikernel build, as derivations: a rootfs tree, its
 * initrd (newc cpio), and an OCI image that urunc (and, optionally, kraftkit)
 * runs. Each is written by ukb itself, byte-identical whoever builds it.
 */
import { RecipeError, isUkbError } from "../errors/index.js";
import { hasDotSegment, type Json } from "../graph/index.js";
import { checkImageOptions } from "../artifacts/oci-inputs.js";
import { checkMode, imagePath } from "../artifacts/rootfs.js";
import { checkTag } from "../artifacts/reference.js";
import { callerLocation } from "./location.js";
import { checkName, isDerivation, isOutputRef, makeDerivation, type Derivation, type OutputRef } from "./derivation.js";

type Input = Derivation | OutputRef;

function isInput(v: unknown): v is Input {
  return isDerivation(v) || isOutputRef(v);
}

/** Recipe-time checks reuse the writers' own rules; their errors become recipe errors with a line. */
function early<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (isUkbError(err)) throw new RecipeError(`${what}: ${err.message}`, callerLocation());
    throw err;
  }
}

/** One entry of a {@link rootfs}. */
export type RootfsFile =
  | string
  | Input
  | { readonly text: string; readonly mode?: number }
  | { readonly path: Input | string; readonly mode?: number }
  | { readonly symlink: string }
  | { readonly mkdir: true; readonly mode?: number };

/**
 * A tree for an image, from strings, files and other derivations' outputs:
 * `rootfs({ files: { "/nginx/conf/nginx.conf": confText, "/nginx/html": site } })`.
 * A string is the file's content; a derivation is copied (a file or a tree);
 * `{ path: \`${nginx}/bin/nginx\` }` copies a file or tree inside an output.
 */
export function rootfs(spec: { name?: string; files: Readonly<Record<string, RootfsFile>> }): Derivation {
  const name = checkName(spec?.name ?? "rootfs", "rootfs");
  if (!spec.files || typeof spec.files !== "object") throw new RecipeError(`rootfs '${name}' needs files: { "/path": content }`, callerLocation());
  const entries: Record<string, Json> = {};
  const inputs: Input[] = [];
  for (const [target, value] of Object.entries(spec.files)) {
    // What the builtin would refuse after the builds before it (not absolute, "." or "..", "//"...):
    // said now, with the recipe's line.
    early(`rootfs '${name}'`, () => imagePath(target));
    const given = typeof value === "object" && value !== null && "mode" in value ? (value as { mode?: unknown }).mode : undefined;
    if (given !== undefined) early(`rootfs '${name}'`, () => checkMode(given, target));
    const mode = typeof given === "number" ? { mode: given } : {};
    if (typeof value === "string") entries[target] = { text: value };
    else if (isInput(value)) {
      inputs.push(value);
      entries[target] = { input: value.toString() };
    } else if (value && typeof value === "object" && "text" in value && typeof value.text === "string") entries[target] = { text: value.text, ...mode };
    else if (value && typeof value === "object" && "path" in value && (isInput(value.path) || typeof value.path === "string")) {
      if (isInput(value.path)) inputs.push(value.path);
      else if (!value.path.startsWith("/ukb/store/") || hasDotSegment(value.path)) throw new RecipeError(`rootfs '${name}': '${target}': path must be inside a derivation's output (\`\${drv}/…\`), not ${value.path}`, callerLocation());
      entries[target] = { input: value.path.toString(), ...mode };
    } else if (value && typeof value === "object" && "symlink" in value && typeof value.symlink === "string") entries[target] = { symlink: value.symlink };
    else if (value && typeof value === "object" && "mkdir" in value && value.mkdir === true) entries[target] = { mkdir: true, ...mode };
    else throw new RecipeError(`rootfs '${name}': '${target}' must be a string, a derivation, { text }, { path }, { symlink } or { mkdir: true }`, callerLocation());
  }
  return makeDerivation({ kind: "builtin", name, builder: "builtin:rootfs", args: [], env: {}, outputNames: ["out"], params: { files: entries } }, inputs);
}

/** An initrd in the newc cpio format from a tree; `gzip` compresses it (deterministically). */
export function cpio(spec: { name?: string; root: Input; gzip?: boolean }): Derivation {
  if (!spec || !isInput(spec.root)) throw new RecipeError("cpio() needs root: a derivation (a tree, e.g. from rootfs())", callerLocation());
  const name = checkName(spec.name ?? `${spec.root.toString().split("/").pop()!.slice(33)}.cpio${spec.gzip ? ".gz" : ""}`, "cpio");
  // The modes a rootfs() declared (a 0600 secret, a 1777 /tmp): the store keeps only the executable
  // bit of what it holds, so the archive takes them from the recipe, not from the disk.
  const modes: Record<string, number> = {};
  if (isDerivation(spec.root) && spec.root.drv.builder === "builtin:rootfs") {
    const files = (spec.root.drv.params as { files: Record<string, { mode?: number }> }).files;
    for (const [target, entry] of Object.entries(files)) if (typeof entry.mode === "number") modes[target.replace(/^\/+/, "")] = entry.mode;
  }
  return makeDerivation(
    { kind: "builtin", name, builder: "builtin:cpio", args: [], env: {}, outputNames: ["out"], params: { root: spec.root.toString(), gzip: Boolean(spec.gzip), modes } },
    [spec.root],
  );
}

/** What {@link ociImage} takes. */
export interface OciImageSpec {
  name?: string;
  /** The kernel: an ELF (or a bzImage for unikernelType "linux"). */
  kernel: Input;
  /** An initrd, packaged at /.boot/rootfs and named in the `initrd` label. */
  initrd?: Input;
  /** The whole argv, program name first: `["nginx", "-c", "/nginx/conf/nginx.conf"]` (urunc drops Cmd[0]). */
  cmd: readonly string[];
  env?: Readonly<Record<string, string>> | readonly string[];
  unikernelType: "unikraft" | "rumprun" | "mirage" | "mewz" | "hermit" | "linux" | "freebsd";
  unikernelVersion?: string;
  hypervisor: "qemu" | "firecracker" | "cloud-hypervisor" | "hvt" | "spt" | "hyperlight";
  architecture?: "amd64" | "arm64";
  labels?: Readonly<Record<string, string>>;
  /** Recorded as org.opencontainers.image.ref.name. */
  tag: string;
  /** Also carry kraftkit's shape; `{ kconfig }` is a derivation holding the kernel's .config. */
  kraftkit?: boolean | { kconfig?: Input };
  mountRootfs?: boolean;
  /** Layer compression; gzip (default) is deterministic on every machine. */
  compression?: "gzip" | "none";
}

/**
 * An OCI image layout directory that urunc runs as it runs bunny's images:
 * kernel at /.boot/kernel, initrd at /.boot/rootfs, /urunc.json, the
 * `com.urunc.unikernel.*` labels and annotations, byte-identical builds.
 */
export function ociImage(spec: OciImageSpec): Derivation {
  const name = checkName(spec?.name ?? "image", "ociImage");
  const what = `ociImage '${name}'`;
  if (!isInput(spec.kernel)) throw new RecipeError(`${what}: kernel must be a derivation`, callerLocation());
  if (spec.initrd !== undefined && !isInput(spec.initrd)) throw new RecipeError(`${what}: initrd must be a derivation`, callerLocation());
  const { cmd, env } = early(what, () =>
    checkImageOptions({
      architecture: spec.architecture ?? "amd64",
      cmd: spec.cmd as string[],
      env: (spec.env ?? []) as string[] | Record<string, string>,
      ...(spec.labels !== undefined ? { labels: spec.labels as Record<string, string> } : {}),
      ...(spec.mountRootfs !== undefined ? { mountRootfs: spec.mountRootfs } : {}),
      ...(spec.compression !== undefined ? { compression: spec.compression } : {}),
      unikernelType: spec.unikernelType,
      hypervisor: spec.hypervisor,
      ...(spec.unikernelVersion !== undefined ? { unikernelVersion: spec.unikernelVersion } : {}),
    }),
  );
  const tag = early(what, () => checkTag(spec.tag));
  const inputs: Input[] = [spec.kernel, ...(spec.initrd ? [spec.initrd] : [])];
  const kconfig = typeof spec.kraftkit === "object" && spec.kraftkit.kconfig ? spec.kraftkit.kconfig : undefined;
  if (kconfig) inputs.push(kconfig);
  const params: Json = {
    kernel: spec.kernel.toString(),
    ...(spec.initrd ? { initrd: spec.initrd.toString() } : {}),
    cmd,
    env,
    unikernelType: spec.unikernelType,
    ...(spec.unikernelVersion ? { unikernelVersion: spec.unikernelVersion } : {}),
    hypervisor: spec.hypervisor,
    architecture: spec.architecture ?? "amd64",
    labels: { ...(spec.labels ?? {}) },
    tag,
    kraftkit: spec.kraftkit ? { ...(kconfig ? { kconfig: kconfig.toString() } : {}) } : false,
    mountRootfs: Boolean(spec.mountRootfs),
    compression: spec.compression ?? "gzip",
  };
  return makeDerivation({ kind: "builtin", name, builder: "builtin:oci-image", args: [], env: {}, outputNames: ["out"], params }, inputs);
}
