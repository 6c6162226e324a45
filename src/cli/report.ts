/**
 * `ukb report <recipe.ts>... [--boot N] [--json | --html FILE]`: compare
 * images — kernel, initrd and image sizes, derivations and build times, the
 * critical path, and (with --boot) time from QEMU start to the first HTTP 200.
 */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { collectReport, renderHtml, renderText, type ImageReport } from "../report/index.js";
import { openStore, parseCount, realiseExport, requireRecipeFiles } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function reportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      attr: { type: "string", short: "A", multiple: true },
      boot: { type: "string" },
      json: { type: "boolean" },
      html: { type: "string" },
      store: { type: "string" },
    },
  });
  if (positionals.length === 0) throw new UsageError("usage: ukb report <recipe.ts>... [-A attr]... [--boot N] [--json | --html FILE]");
  const boots = values.boot === undefined ? 0 : parseCount(values.boot, "--boot", 3);
  requireRecipeFiles(positionals);
  const store = openStore(values.store);
  try {
    const reports: ImageReport[] = [];
    for (const [i, recipe] of positionals.entries()) {
      const attr = values.attr?.[i];
      const { drv, recipe: loaded } = await realiseExport(store, recipe, attr);
      reports.push(await collectReport(store, recipe, attr ?? "default", loaded.graph, drv, { boots }));
    }
    if (values.html) {
      fs.writeFileSync(values.html, renderHtml(reports));
      writeStdout(`${values.html}\n`);
    } else if (values.json) writeStdout(`${JSON.stringify(reports, null, 2)}\n`);
    else writeStdout(renderText(reports));
    return ExitCode.ok;
  } finally {
    store.close();
  }
}
