/**
 * Builders that ukb runs itself instead of a program in the sandbox
 * (`builder: "builtin:<name>"`): host tools, and — layered on top — fetchers
 * and artifact writers register here.
 */
import fs from "node:fs";
import path from "node:path";
import { UkbError } from "../errors/index.js";
import { hasDotSegment, VIRTUAL_STORE, type DrvRecord } from "../graph/index.js";
import type { Store } from "../store/index.js";

export interface BuiltinContext {
  readonly drv: DrvRecord;
  /** Output name → the real path the output must be written to (does not exist yet). */
  readonly outputs: Readonly<Record<string, string>>;
  /** The real path of an input given by its virtual store path (or a path inside it), resolved inside the store (see `resolveInStore`). */
  realInput(virtualPath: string): string;
  /** The build's SOURCE_DATE_EPOCH. */
  readonly epoch: number;
  /** A scratch directory that is removed after the build. */
  readonly scratch: string;
  /** Appends a line to the build's log. */
  log(line: string): void;
  readonly signal: AbortSignal;
  /** Options from the command line that a builtin may need (offline, mirrors…). */
  readonly options: Readonly<Record<string, unknown>>;
  /** The store being built into: a builtin may copy content it already holds (fetches served offline). */
  readonly store: Store;
}

export type Builtin = (ctx: BuiltinContext) => Promise<void>;

/** How many symlinks one path may go through, as the kernel allows. */
const MAX_LINKS = 40;

/**
 * Where a store path (`/ukb/store/<base>/rest`) that a builtin reads is on
 * disk, resolved as a build in a sandbox would see it: a symlink that stays in
 * the store is followed there, one that leads out of it is refused. A builtin
 * runs in ukb itself, with the whole host in reach, and its inputs come from
 * builders: `ln -s /etc/shadow $out` must not bring a host file into an
 * image. Segments "." and ".." in the path given are refused too.
 */
export function resolveInStore(storeDir: string, virtualPath: string): string {
  const refuse = (why: string) => new UkbError("build", `${virtualPath} ${why}: a builtin takes only what is in the store`);
  if (!virtualPath.startsWith(`${VIRTUAL_STORE}/`)) throw refuse("is not a store path");
  const segments = (p: string) => p.split("/").filter((s) => s !== "" && s !== ".");
  if (hasDotSegment(virtualPath)) throw refuse('holds a "." or ".." segment');
  let pending = segments(virtualPath.slice(VIRTUAL_STORE.length + 1));
  const resolved: string[] = [];
  for (let links = 0; pending.length > 0; ) {
    const name = pending.shift()!;
    if (name === "..") {
      if (resolved.length === 0) throw refuse("leads out of the store through a symlink's \"..\"");
      resolved.pop();
      continue;
    }
    const real = path.join(storeDir, ...resolved, name);
    let target: string | undefined;
    try {
      target = fs.lstatSync(real).isSymbolicLink() ? fs.readlinkSync(real) : undefined;
    } catch {
      // Missing: the builtin's own read says so, naming the file.
      return path.join(real, ...pending);
    }
    if (target === undefined) {
      resolved.push(name);
      continue;
    }
    if (++links > MAX_LINKS) throw refuse("goes through too many symlinks");
    if (path.isAbsolute(target)) {
      if (!target.startsWith(`${VIRTUAL_STORE}/`)) throw refuse(`leads out of the store, to ${target}`);
      resolved.length = 0;
      pending = [...segments(target.slice(VIRTUAL_STORE.length + 1)), ...pending];
    } else {
      pending = [...segments(target), ...pending];
    }
  }
  return path.join(storeDir, ...resolved);
}

const builtins = new Map<string, Builtin>();

export function registerBuiltin(name: string, fn: Builtin): void {
  builtins.set(name, fn);
}

/** Builtins that live in other layers, loaded when first used (never on the no-op path). */
const lazyBuiltins: Record<string, () => Promise<Builtin>> = {
  fetchurl: async () => (await import("../fetch/builtin.js")).fetchurlBuiltin,
  fetchzip: async () => (await import("../fetch/builtin.js")).fetchzipBuiltin,
  local: async () => (await import("../fetch/builtin.js")).localBuiltin,
  rootfs: async () => (await import("../artifacts/builtin.js")).rootfsBuiltin,
  cpio: async () => (await import("../artifacts/builtin.js")).cpioBuiltin,
  "oci-image": async () => (await import("../artifacts/builtin.js")).ociImageBuiltin,
};

export async function getBuiltin(builder: string): Promise<Builtin> {
  const name = builder.slice("builtin:".length);
  const fn = builtins.get(name) ?? (await lazyBuiltins[name]?.());
  if (!fn) throw new UkbError("build", `unknown builtin builder '${builder}'`);
  return fn;
}

registerBuiltin("host-tools", async (ctx) => {
  const bin = path.join(ctx.outputs.out!, "bin");
  await fs.promises.mkdir(bin, { recursive: true });
  for (const tool of ctx.drv.hostTools ?? []) {
    await fs.promises.symlink(tool.path, path.join(bin, tool.name));
    ctx.log(`${tool.name} -> ${tool.path} (blake3 ${tool.blake3})`);
  }
});
