/**
 * Builders that ukb runs itself instead of a program in the sandbox
 * (`builder: "builtin:<name>"`): host tools, and — layered on top — fetchers
 * and artifact writers register here.
 */
import fs from "node:fs";
import path from "node:path";
import { UkbError } from "../errors/index.js";
import type { DrvRecord } from "../graph/index.js";
import type { Store } from "../store/index.js";

export interface BuiltinContext {
  readonly drv: DrvRecord;
  /** Output name → the real path the output must be written to (does not exist yet). */
  readonly outputs: Readonly<Record<string, string>>;
  /** The real path of an input given by its virtual store path (or a path inside it). */
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
