/** `ukb show <recipe.ts> [-A attr]`: the canonical derivation graph as JSON. */
import { parseArgs } from "node:util";
import { ExitCode, UkbError } from "../errors/index.js";
import { canonicalForm, topoOrder } from "../graph/index.js";
import fs from "node:fs";
import path from "node:path";
import { loadRecipe, type LoadedRecipe } from "../recipe/load.js";
import { loadWithCache, openStore, pickOutputs, storeRoot } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function showCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { attr: { type: "string", short: "A" }, store: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UkbError("usage", "usage: ukb show <recipe.ts> [-A attr]", { exitCode: ExitCode.badInput });
  // show builds nothing: with no store yet, it evaluates without the eval cache rather than make one.
  const root = storeRoot(values.store);
  if (!fs.existsSync(path.join(root, "ukb.sqlite"))) return printGraph(await loadRecipe(positionals[0]!), values.attr);
  const store = openStore(values.store);
  try {
    return printGraph(await loadWithCache(store, positionals[0]!), values.attr);
  } finally {
    store.close();
  }
}

function printGraph(recipe: LoadedRecipe, attr: string | undefined): number {
  const { drv: target, outputs } = pickOutputs(recipe, attr);
  const derivations: Record<string, unknown> = {};
  for (const d of topoOrder(recipe.graph, [target.hash])) {
    // The hashed fields exactly (their BLAKE3, over canonical JSON, is the key), then what follows
    // from them and is not hashed itself: the output paths and which derivations the inputs are of.
    derivations[d.hash] = { ...JSON.parse(canonicalForm(d)), outputPaths: d.outputs, inputDrvs: d.inputDrvs };
  }
  writeStdout(`${JSON.stringify({ root: target.hash, outputs, derivations }, null, 2)}\n`);
  return ExitCode.ok;
}
