/** `ukb log PATH | <recipe.ts> [-A attr]`: print a build's log. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UkbError, UsageError } from "../errors/index.js";
import { baseName } from "../graph/index.js";
import { loadWithCache, openStore, pick } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function logCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { attr: { type: "string", short: "A" }, store: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UsageError("usage: ukb log PATH | ukb log <recipe.ts> [-A attr]");
  const store = openStore(values.store, { existing: true });
  try {
    const arg = positionals[0]!;
    const isRecipe = /\.[cm]?[jt]s$/.test(arg);
    let base = isRecipe && fs.existsSync(arg) ? undefined : store.parse(arg);
    if (!base && !isRecipe) throw new UkbError("usage", `${arg} is neither a recipe (.ts) nor a path of the store at ${store.root}`, { exitCode: ExitCode.badInput });
    if (!base) {
      const recipe = await loadWithCache(store, arg);
      const drv = pick(recipe, values.attr);
      base = baseName(drv.outputs.out ?? Object.values(drv.outputs)[0]!);
    }
    // A failed build has a log but no valid path: look for the log by name.
    const drv = store.drvOf(base);
    const main = drv ? baseName(drv.outputs.out ?? Object.values(drv.outputs)[0]!) : base;
    const file = path.join(store.logDir, `${main}.log`);
    if (!fs.existsSync(file)) throw new UkbError("store", `no build log for ${base} in ${store.root} (it was never built here, or was substituted)`, { exitCode: ExitCode.buildFailed });
    writeStdout(fs.readFileSync(file));
    return ExitCode.ok;
  } finally {
    store.close();
  }
}
