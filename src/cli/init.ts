/**
 * `ukb init [DIR]`: makes a folder of recipes one an editor type-checks.
 * Running a recipe needs nothing (the loader gives `import … from "ukb"` the
 * running ukb); an editor needs to find the API's types. It finds them as
 * it finds any package's: `node_modules/ukb`, here a link to this ukb, and a
 * tsconfig.json that resolves packages as ukb's bundler does and knows
 * Node's types (recipes use node:fs, node:path).
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { PACKAGE_ROOT } from "../recipe/location.js";

export const usage = "ukb init [DIR]   link node_modules/ukb to this ukb and write a tsconfig.json (if there is none): recipes in DIR type-check in an editor";

/** What a folder of recipes needs for an editor, as this ukb would write it. */
export const RECIPE_TSCONFIG = {
  compilerOptions: {
    target: "es2022",
    // As ukb bundles a recipe: ES modules, packages resolved through their "exports".
    module: "esnext",
    moduleResolution: "bundler",
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    // Node's types: from the project's own @types/node, else from the ukb linked in node_modules.
    typeRoots: ["./node_modules/@types", "./node_modules/ukb/node_modules/@types"],
    types: ["node"],
  },
};

export async function initCommand(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length > 1) throw new UsageError(`usage: ${usage}`);
  const dir = path.resolve(positionals[0] ?? ".");
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new UsageError(`cannot make ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  process.stderr.write(`${linkUkb(dir)}\n${writeTsconfig(dir)}\n`);
  return ExitCode.ok;
}

/** `dir/node_modules/ukb` → this ukb, unless a ukb of its own is installed there. */
function linkUkb(dir: string): string {
  const link = path.join(dir, "node_modules", "ukb");
  let current: fs.Stats | undefined;
  try {
    current = fs.lstatSync(link);
  } catch {
    current = undefined;
  }
  if (current && !current.isSymbolicLink()) return `${link} is an install of its own: left as it is`;
  if (current && path.resolve(path.dirname(link), fs.readlinkSync(link)) === PACKAGE_ROOT) return `${link} already links to ${PACKAGE_ROOT}`;
  try {
    fs.mkdirSync(path.dirname(link), { recursive: true });
    // A new link renamed over the old one: an editor never sees no ukb at all.
    const tmp = `${link}.${process.pid}.tmp`;
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(PACKAGE_ROOT, tmp, "dir");
    fs.renameSync(tmp, link);
  } catch (err) {
    throw new UsageError(`cannot link ${link}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return `${link} -> ${PACKAGE_ROOT}`;
}

/** A tsconfig.json for recipes, where the folder has no tsconfig.json or jsconfig.json of its own. */
function writeTsconfig(dir: string): string {
  const file = path.join(dir, "tsconfig.json");
  for (const existing of [file, path.join(dir, "jsconfig.json")]) {
    if (fs.existsSync(existing)) return `${existing} exists: left as it is (for ukb's API and Node's types, see what 'ukb init' writes in an empty folder)`;
  }
  try {
    fs.writeFileSync(file, `${JSON.stringify(RECIPE_TSCONFIG, null, 2)}\n`, { flag: "wx" });
  } catch (err) {
    throw new UsageError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return `wrote ${file}`;
}
