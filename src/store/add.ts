/**
 * `ukb store add`: content from anywhere enters the store under the path a
 * fixed-output derivation with the same hash and name would have, and into
 * the content index, so any later fetch of that content is served offline.
 */
import fs from "node:fs";
import path from "node:path";
import { UkbError } from "../errors/index.js";
import { baseName, MAX_NAME, NAME_PATTERN, outputPath, type FixedOutput } from "../graph/index.js";
import { hashTree } from "./archive.js";
import { contentKeys } from "./digest.js";
import { importTree, removeTree } from "./fsutil.js";
import { explainNoSpace } from "./space.js";
import type { Store } from "./store.js";

export interface AddedPath {
  readonly path: string;
  readonly name: string;
  readonly mode: "flat" | "tree";
  readonly sha256?: string;
  readonly blake3?: string;
  readonly treeHash: string;
  readonly size: number;
}

/** A name a store path may have (`--name`); a usage error otherwise. */
export function checkStoreName(name: string): string {
  if (!NAME_PATTERN.test(name) || name.length > MAX_NAME) throw new UkbError("usage", `'${name.slice(0, 80)}' is not a valid store name (letters, digits and +-._?=, at most ${MAX_NAME}); give one with --name`, { exitCode: 2 });
  return name;
}

export async function addToStore(store: Store, source: string, options: { name?: string } = {}): Promise<AddedPath> {
  let st: fs.Stats;
  try {
    st = fs.statSync(source);
  } catch {
    throw new UkbError("store", `${source}: no such file or directory`, { exitCode: 2 });
  }
  const name = checkStoreName(options.name ?? path.basename(path.resolve(source)).replace(/[^A-Za-z0-9+._?=-]/g, "_").replace(/^\.+/, ""));
  // A symlink given is what it points at (its target is what the user means to add, not a link
  // to a host file): resolved once, here.
  source = fs.realpathSync(source);
  const mode = st.isDirectory() ? "tree" : "flat";
  const tmp = store.makeTempDir("add");
  try {
    const staged = path.join(tmp, "content");
    importTree(path.resolve(source), staged, 1);
    const tree = await hashTree(staged);
    const keys = await contentKeys(staged, tree.blake3);
    const sha256 = keys.find((k) => k.kind === "file-sha256")?.hash;
    const blake3 = keys.find((k) => k.kind === "file-blake3")?.hash;
    const executable = mode === "flat" && (fs.statSync(staged).mode & 0o100) !== 0;
    const fixed: FixedOutput = mode === "flat" ? { mode, algo: "sha256", hash: sha256!, ...(executable ? { executable } : {}) } : { mode, algo: "blake3", hash: tree.blake3 };
    const target = baseName(outputPath("", name, "out", fixed));
    const release = await store.locks.acquire([target]);
    try {
      if (!store.isValid(target)) {
        await store.discard(target);
        if (fs.statSync(staged).isDirectory()) fs.chmodSync(staged, 0o755);
        fs.renameSync(staged, store.realPath(target));
        try {
          if (fs.statSync(store.realPath(target)).isDirectory()) fs.chmodSync(store.realPath(target), 0o555);
          store.register([{ base: target, contentHash: tree.blake3, size: tree.size, references: [], ca: `${fixed.algo}:${fixed.hash}`, content: keys }]);
        } catch (err) {
          // Not registered: not left in the store folder either.
          await store.discard(target).catch(() => undefined);
          throw err;
        }
      }
    } finally {
      release();
    }
    return { path: store.realPath(target), name, mode, ...(sha256 ? { sha256 } : {}), ...(blake3 ? { blake3 } : {}), treeHash: tree.blake3, size: tree.size };
  } catch (err) {
    throw explainNoSpace(err, store.root, `adding ${source}`);
  } finally {
    await removeTree(tmp);
  }
}

