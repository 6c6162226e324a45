/**
 * `ukb check <recipe.ts> [-A attr]`: realise, then rebuild every derivation of
 * the closure that ukb builds (not fetches: those are checked by their hash)
 * and report, per derivation, identical or the first differing file and byte.
 */
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { topoOrder } from "../graph/index.js";
import { checkDerivation } from "../build/index.js";
import { defaultJobs, openStore, parseCount, realiseExport, requireRecipeFiles } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function checkCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { attr: { type: "string", short: "A" }, store: { type: "string" }, cores: { type: "string" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1) throw new UsageError("usage: ukb check <recipe.ts> [-A attr]");
  const cores = parseCount(values.cores, "--cores", defaultJobs());
  requireRecipeFiles(positionals);
  const store = openStore(values.store);
  try {
    // What is checked must be valid first: realise it (a failed build throws, exit 1).
    const { drv: target, recipe } = await realiseExport(store, positionals[0]!, values.attr);
    let differing = 0;
    for (const drv of topoOrder(recipe.graph, [target.hash])) {
      if (drv.kind === "fixed" || drv.kind === "host-tools") continue;
      const result = await checkDerivation(store, drv, { cores, drvs: recipe.graph.drvs });
      for (const [output, diff] of Object.entries(result.differences)) {
        const label = output === "out" ? drv.name : `${drv.name}.${output}`;
        if (values.json) writeStdout(`${JSON.stringify({ name: label, drv: drv.hash, identical: !diff, ...(diff ? { difference: diff } : {}), ms: result.ms })}\n`);
        else writeStdout(diff ? `differs    ${label}: ${diff.file}: ${diff.detail}\n` : `identical  ${label} (${(result.ms / 1000).toFixed(2)} s)\n`);
        if (diff) differing++;
      }
    }
    if (!values.json) writeStdout(differing === 0 ? "every rebuilt output is bit-identical\n" : `${differing} outputs differ\n`);
    return differing === 0 ? ExitCode.ok : ExitCode.buildFailed;
  } finally {
    store.close();
  }
}
