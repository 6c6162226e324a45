/** `ukb push <recipe.ts|oci-dir> <registry/repo:tag | oci-archive:FILE>`: publish an image. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { pushLayout, writeOciArchive } from "../artifacts/index.js";
import { makePlan, execute } from "../schedule/index.js";
import { chooseMode, makeListener } from "../ui/index.js";
import { defaultJobs, loadWithCache, openStore, pick } from "./context.js";

export const usage = "ukb push <recipe.ts [-A attr] | oci-dir> <host[:port]/repo:tag | oci-archive:FILE> [--insecure] [--from REPO]";

/** The OCI layout to push: a directory given as is, or a recipe's export, realised first. */
async function layoutFrom(source: string, attr: string | undefined, storeFlag: string | undefined): Promise<string> {
  if (fs.existsSync(path.join(source, "oci-layout"))) return path.resolve(source);
  if (!/\.[cm]?ts$/.test(source)) throw new UsageError(`${source} is neither an OCI layout directory nor a recipe (.ts)\nusage: ${usage}`);
  const store = openStore(storeFlag);
  try {
    const recipe = await loadWithCache(store, source);
    const target = pick(recipe, attr);
    const plan = makePlan(store, recipe.graph, [target]);
    if (plan.toBuild.length > 0) {
      const listener = makeListener(chooseMode(process.stderr, false));
      listener({ type: "plan", valid: plan.valid.length, toBuild: plan.toBuild.map((d) => ({ name: d.name, path: d.outputs.out ?? "" })) });
      const result = await execute(store, plan, { jobs: defaultJobs(), cores: 1, listener });
      listener.close();
      if (result.failed.length > 0) throw result.failed[0]!.error;
    }
    const dir = store.realPath(target.outputs.out ?? Object.values(target.outputs)[0]!);
    if (!fs.existsSync(path.join(dir, "oci-layout"))) throw new UsageError(`${source}${attr ? ` -A ${attr}` : ""} is not an OCI image (no oci-layout in ${dir})`);
    return dir;
  } finally {
    store.close();
  }
}

export async function pushCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { attr: { type: "string", short: "A" }, insecure: { type: "boolean" }, from: { type: "string" }, store: { type: "string" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 2) throw new UsageError(`usage: ${usage}`);
  const [source, destination] = positionals as [string, string];
  const layout = await layoutFrom(source, values.attr, values.store);
  if (destination.startsWith("oci-archive:")) {
    const file = path.resolve(destination.slice("oci-archive:".length));
    const r = await writeOciArchive(layout, file);
    process.stdout.write(`${file}\n  sha256 ${r.sha256} (${r.size} bytes)\n`);
    return ExitCode.ok;
  }
  const result = await pushLayout({
    layout,
    reference: destination,
    ...(values.insecure ? { insecure: true } : {}),
    ...(values.from ? { from: values.from } : {}),
    onEvent: (e) => {
      if (values.json) process.stderr.write(`${JSON.stringify(e)}\n`);
      else if (e.type === "blob") process.stderr.write(`${e.status.padEnd(8)} ${e.digest} (${e.size} bytes)\n`);
    },
  });
  process.stdout.write(`${result.url}\n  ${result.manifestDigest} (uploaded ${result.uploaded.length} blobs, ${result.mounted.length} mounted, ${result.present.length} already there)\n`);
  return ExitCode.ok;
}
