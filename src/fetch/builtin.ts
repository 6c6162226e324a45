/**
 * The builtins behind `fetchurl`, `fetchzip` and `local`: they put a fixed
 * output's content in place; the build layer then checks its hash before
 * anything is registered. Content the store already holds under another name
 * is copied, not fetched: that is how `ukb store add` and mirrors of any kind
 * serve recipes offline.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { UkbError } from "../errors/index.js";
import type { BuiltinContext } from "../build/builtins.js";
import { isNoSpace, type ContentKind } from "../store/index.js";
import { describeSource, fetchSource, type SourceDescriptor } from "./source.js";
import { loadMirrors } from "./mirrors.js";
import { unpackArchive } from "./unpack.js";

/** Options the CLI passes to fetch builtins. */
export interface FetchBuiltinOptions {
  offline?: boolean;
  onProgress?: (e: { name: string; url: string; bytes: number; total?: number; rate: number }) => void;
}

/** Copies a store path (file or tree) to `dest`, keeping symlinks and exec bits. */
async function copyContent(from: string, dest: string): Promise<void> {
  await fs.promises.cp(from, dest, { recursive: true, verbatimSymlinks: true, preserveTimestamps: false });
}

/** Serves the output from content already in the store, if any. */
async function fromStore(ctx: BuiltinContext, kind: ContentKind, hash: string): Promise<boolean> {
  const base = ctx.store.findContent(kind, hash);
  if (!base) return false;
  // Kept while it is copied (a concurrent gc may have invalidated it since it was found).
  ctx.store.protect([base]);
  if (!ctx.store.isValid(base)) return fromStore(ctx, kind, hash);
  ctx.log(`using ${base} from the store (same ${kind} content)`);
  await copyContent(ctx.store.realPath(base), ctx.outputs.out!);
  return true;
}

function sourcesOf(ctx: BuiltinContext): SourceDescriptor[] {
  const sources = (ctx.drv.sources ?? []) as unknown as SourceDescriptor[];
  if (!Array.isArray(sources) || sources.length === 0) throw new UkbError("fetch", `'${ctx.drv.name}' has no source to fetch from`);
  return sources;
}

/** Tries each source in turn; the first one that delivers (and verifies, when `expect`) wins. */
async function fetchFirst(ctx: BuiltinContext, dest: string, expect: { sha256?: string; blake3?: string } | undefined): Promise<string> {
  const options = ctx.options as FetchBuiltinOptions;
  const mirrors = loadMirrors();
  const failures: string[] = [];
  let mismatch: unknown;
  for (const source of sourcesOf(ctx)) {
    try {
      const r = await fetchSource(source, {
        dest,
        ...(expect ? { expect } : {}),
        mirrors,
        signal: ctx.signal,
        ...(options.offline ? { offline: true } : {}),
        ...(options.onProgress ? { onProgress: (e: { url: string; bytes: number; total?: number; rate: number }) => options.onProgress!({ name: ctx.drv.name, ...e }) } : {}),
      });
      ctx.log(`fetched ${r.origin} (${r.size} bytes, sha256 ${r.sha256})`);
      return r.origin;
    } catch (err) {
      // Another source would find the disk as full: the build layer says so (see store/space.ts).
      if (ctx.signal.aborted || isNoSpace(err)) throw err;
      const message = err instanceof Error ? err.message : String(err);
      ctx.log(`${describeSource(source)}: ${message}`);
      failures.push(message);
      if (err instanceof UkbError && err.kind === "hash-mismatch") mismatch ??= err;
    }
  }
  if (mismatch) throw mismatch;
  const fixed = ctx.drv.fixed!;
  throw new UkbError("fetch", `cannot fetch '${ctx.drv.name}' (${fixed.algo} ${fixed.hash}): ${failures.join("; ")}`, {
    hint: options.offline
      ? `add the file with 'ukb store add FILE' (it is found by its hash), or drop --offline`
      : `if you have the file, 'ukb store add FILE' serves it by its hash`,
  });
}

/** `fetchurl`: one file, verified against its declared hash while it streams. */
export async function fetchurlBuiltin(ctx: BuiltinContext): Promise<void> {
  const fixed = ctx.drv.fixed!;
  const out = ctx.outputs.out!;
  if (!(await fromStore(ctx, `file-${fixed.algo}`, fixed.hash))) {
    await fetchFirst(ctx, out, { [fixed.algo]: fixed.hash });
  }
  await fs.promises.chmod(out, fixed.executable ? 0o755 : 0o644);
}

/** `fetchzip`: an archive unpacked safely; its tree hash is checked by the build layer. */
export async function fetchzipBuiltin(ctx: BuiltinContext): Promise<void> {
  const fixed = ctx.drv.fixed!;
  if (await fromStore(ctx, "tree-blake3", fixed.hash)) return;
  const archive = path.join(ctx.scratch, "archive");
  const origin = await fetchFirst(ctx, archive, undefined);
  const stripRoot = (ctx.drv.params as { stripRoot?: boolean } | null)?.stripRoot ?? true;
  try {
    const r = await unpackArchive({ archive, dest: ctx.outputs.out!, stripRoot });
    ctx.log(`unpacked ${r.format} from ${origin}: ${r.entries} entries, ${r.bytes} bytes`);
  } finally {
    await fs.promises.rm(archive, { force: true });
  }
}

/** `local`: files next to the recipe. */
export async function localBuiltin(ctx: BuiltinContext): Promise<void> {
  const fixed = ctx.drv.fixed!;
  if (await fromStore(ctx, "tree-blake3", fixed.hash)) return;
  const [source] = sourcesOf(ctx);
  const file = source?.kind === "url" ? source.urls[0] : undefined;
  if (!file?.startsWith("file://")) throw new UkbError("fetch", `'${ctx.drv.name}' has no local path`);
  const from = fileURLToPath(file);
  if (!fs.existsSync(from)) throw new UkbError("fetch", `${from} is gone since the recipe was evaluated`);
  await copyContent(from, ctx.outputs.out!);
}
