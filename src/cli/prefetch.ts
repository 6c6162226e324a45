/** `ukb prefetch URL [--unpack]`: download, add to the store, print the hash a recipe pins. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { download, loadMirrors, unpackArchive } from "../fetch/index.js";
import { addToStore, checkStoreName, explainNoSpace, removeTree } from "../store/index.js";
import { openStore } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function prefetchCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { unpack: { type: "boolean" }, "strip-root": { type: "boolean", default: true }, name: { type: "string" }, store: { type: "string" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1) throw new UsageError("usage: ukb prefetch URL [--unpack] [--name N]");
  const url = positionals[0]!;
  // The name becomes a file name in the store's scratch folder: "../../ukb.sqlite" must not.
  if (values.name !== undefined) checkStoreName(values.name);
  const store = openStore(values.store);
  const tmp = store.makeTempDir("prefetch");
  try {
    const fileName = values.name ?? (decodeURIComponent(url.split(/[?#]/)[0]!.split("/").pop() || "download").replace(/[^A-Za-z0-9+._?=-]/g, "_") || "download");
    const file = path.join(tmp, fileName);
    const got = await download({ urls: [url], dest: file, mirrors: loadMirrors() });
    const result: Record<string, string | number> = { url: got.url, sha256: got.sha256, blake3: got.blake3, size: got.size };
    result.path = (await addToStore(store, file, { name: fileName })).path;
    if (values.unpack) {
      const tree = path.join(tmp, "tree");
      await unpackArchive({ archive: file, dest: tree, stripRoot: values["strip-root"] });
      const name = fileName.replace(/\.(tar\.(gz|xz|bz2|zst)|tgz|zip|tar)$/, "") + "-source";
      const added = await addToStore(store, tree, { name });
      result.hash = `blake3:${added.treeHash}`;
      result.treePath = added.path;
    }
    if (values.json) writeStdout(`${JSON.stringify(result)}\n`);
    else {
      writeStdout(`${result.path}\n  sha256 ${result.sha256}\n  blake3 ${result.blake3}\n`);
      if (result.hash) writeStdout(`${result.treePath}\n  fetchzip hash: "${result.hash}"\n`);
    }
    return ExitCode.ok;
  } catch (err) {
    throw explainNoSpace(err, store.root, `prefetching ${url}`);
  } finally {
    await removeTree(tmp);
    fs.rmSync(tmp, { recursive: true, force: true });
    store.close();
  }
}
