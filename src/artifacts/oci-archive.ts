/**
 * An OCI image layout as one reproducible tar file: the form that
 * `skopeo copy oci-archive:FILE ...`, `podman load` and `ctr images import`
 * read. Entries are the layout's files in byte order, relative, owners 0,
 * modes 0755/0644, one mtime, uncompressed (the blobs inside already are).
 */
import { open, readFile } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { assertAbsent, writeAtomically } from "./atomic.js";
import type { ArtifactDigest } from "./cpio.js";
import { DigestTap } from "./digest.js";
import { badInput, wrap } from "./errors.js";
import { tarStream, type TarEntry } from "./tar.js";
import { walkTree } from "./walk.js";

export interface WriteOciArchiveOptions {
  /** mtime of every entry, seconds (default 0). */
  mtime?: number;
}

/** Check that `dir` looks like an OCI image layout before archiving it. */
async function checkLayout(dir: string): Promise<void> {
  try {
    const layout = JSON.parse(await readFile(path.join(dir, "oci-layout"), "utf8")) as { imageLayoutVersion?: unknown };
    if (typeof layout.imageLayoutVersion !== "string") throw new Error("no imageLayoutVersion");
    JSON.parse(await readFile(path.join(dir, "index.json"), "utf8"));
  } catch (err) {
    throw badInput(`${dir} is not an OCI image layout (needs oci-layout and index.json): ${(err as Error).message}`);
  }
}

/** Write the layout at `layoutDir` as a tar at `outFile`, atomically. */
export async function writeOciArchive(layoutDir: string, outFile: string, options: WriteOciArchiveOptions = {}): Promise<ArtifactDigest> {
  const mtime = options.mtime ?? 0;
  await checkLayout(layoutDir);
  await assertAbsent(outFile, "OCI archive output");
  const entries: TarEntry[] = (await walkTree(layoutDir)).map((e) => {
    if (e.type === "dir") return { type: "dir", name: `${e.rel}/`, mode: 0o755, mtime };
    if (e.type === "file") return { type: "file", name: e.rel, mode: 0o644, mtime, size: e.size, path: e.abs };
    throw badInput(`${e.abs} is a symlink; an OCI layout to archive holds only files and directories`);
  });

  return writeAtomically(outFile, async (tmp) => {
    const tap = new DigestTap();
    // A folder that is not there is the user's to make: said as such, not as a stack.
    const handle = await open(tmp, "wx", 0o644).catch((err: NodeJS.ErrnoException) => {
      throw err.code === "ENOENT" ? badInput(`cannot write ${outFile}: the folder ${path.dirname(outFile)} does not exist`) : wrap(`writing OCI archive ${outFile}`, err);
    });
    try {
      await pipeline(tarStream(entries), tap, handle.createWriteStream());
    } catch (err) {
      throw wrap(`writing OCI archive ${outFile}`, err);
    }
    return { sha256: tap.sha256, size: tap.size };
  });
}
