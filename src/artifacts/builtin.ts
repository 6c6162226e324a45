/** The builtins behind the recipe API's `rootfs`, `cpio` and `ociImage`. */
import fs from "node:fs";
import type { BuiltinContext } from "../build/builtins.js";
import { badInput } from "./errors.js";
import { writeCpio } from "./cpio.js";
import { writeRootfsTree, type RootfsEntry } from "./rootfs.js";
import { writeOciLayout, type Architecture } from "./oci-layout.js";
import type { Hypervisor, UnikernelType } from "./urunc.js";

type RootfsParam = { text: string; mode?: number } | { input: string; mode?: number } | { symlink: string } | { mkdir: true; mode?: number };

export async function rootfsBuiltin(ctx: BuiltinContext): Promise<void> {
  const { files } = ctx.drv.params as { files: Record<string, RootfsParam> };
  const entries: Record<string, RootfsEntry> = {};
  for (const [target, p] of Object.entries(files)) {
    const mode = "mode" in p && p.mode !== undefined ? { mode: p.mode } : {};
    if ("input" in p) {
      const real = ctx.realInput(p.input);
      entries[target] = fs.statSync(real).isDirectory() ? { dir: real } : { file: real, ...mode };
    } else if ("text" in p) entries[target] = { text: p.text, ...mode };
    else if ("symlink" in p) entries[target] = { symlink: p.symlink };
    else entries[target] = { mkdir: true, ...mode };
  }
  const r = await writeRootfsTree({ out: ctx.outputs.out!, files: entries });
  ctx.log(`rootfs: ${r.paths.length} paths`);
}

export async function cpioBuiltin(ctx: BuiltinContext): Promise<void> {
  const p = ctx.drv.params as { root: string; gzip: boolean; modes: Record<string, number> };
  const r = await writeCpio({ root: ctx.realInput(p.root), out: ctx.outputs.out!, mtime: ctx.epoch, gzip: p.gzip, fromStore: true, modes: p.modes });
  ctx.log(`cpio: ${r.size} bytes, sha256 ${r.sha256}`);
}

/** A kernel's .config, as lines: a folder or a binary given instead is said to be one. */
function readKconfig(real: string, given: string): string[] {
  if (!fs.statSync(real).isFile()) throw badInput(`ociImage: kconfig ${given} is not a file (give the kernel build's .config)`);
  const text = fs.readFileSync(real, "utf8");
  if (text.includes("\0")) throw badInput(`ociImage: kconfig ${given} is not text (a kernel's .config is; was the kernel given instead?)`);
  return text.split("\n");
}

export async function ociImageBuiltin(ctx: BuiltinContext): Promise<void> {
  const p = ctx.drv.params as {
    kernel: string;
    initrd?: string;
    cmd: string[];
    env: string[];
    unikernelType: UnikernelType;
    unikernelVersion?: string;
    hypervisor: Hypervisor;
    architecture: Architecture;
    labels: Record<string, string>;
    tag: string;
    kraftkit: false | { kconfig?: string };
    mountRootfs: boolean;
    compression: "gzip" | "none";
  };
  const kconfig = p.kraftkit && p.kraftkit.kconfig ? readKconfig(ctx.realInput(p.kraftkit.kconfig), p.kraftkit.kconfig) : undefined;
  const r = await writeOciLayout({
    out: ctx.outputs.out!,
    kernel: ctx.realInput(p.kernel),
    ...(p.initrd ? { initrd: ctx.realInput(p.initrd) } : {}),
    cmd: p.cmd,
    env: p.env,
    unikernelType: p.unikernelType,
    ...(p.unikernelVersion ? { unikernelVersion: p.unikernelVersion } : {}),
    hypervisor: p.hypervisor,
    architecture: p.architecture,
    labels: p.labels,
    tag: p.tag,
    created: ctx.epoch,
    ...(p.kraftkit ? { kraftkit: kconfig ? { kconfig } : true } : {}),
    mountRootfs: p.mountRootfs,
    compression: p.compression,
  });
  ctx.log(`oci image: manifest ${r.manifestDigest}, layer ${r.layerDigest}`);
}
