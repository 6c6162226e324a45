/** `ukb show <recipe.ts> [-A attr]`: the canonical derivation graph as JSON. */
import { parseArgs } from "node:util";
import { ExitCode, UkbError } from "../errors/index.js";
import { canonicalForm, topoOrder } from "../graph/index.js";
import { loadWithCache, openStore, pickOutputs } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function showCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { attr: { type: "string", short: "A" }, store: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UkbError("usage", "usage: ukb show <recipe.ts> [-A attr]", { exitCode: ExitCode.badInput });
  const store = openStore(values.store);
  try {
    const recipe = await loadWithCache(store, positionals[0]!);
    const { drv: target, outputs } = pickOutputs(recipe, values.attr);
    const derivations: Record<string, unknown> = {};
    for (const d of topoOrder(recipe.graph, [target.hash])) {
      derivations[d.hash] = { ...JSON.parse(canonicalForm(d)), outputs: d.outputs, inputDrvs: d.inputDrvs };
    }
    writeStdout(`${JSON.stringify({ root: target.hash, outputs, derivations }, null, 2)}\n`);
    return ExitCode.ok;
  } finally {
    store.close();
  }
}
