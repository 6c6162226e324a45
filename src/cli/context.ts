/**
 * What every command shares: the store, recipe loading with the eval cache,
 * and the selection of an export.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ExitCode, RecipeError, UkbError, UsageError } from "../errors/index.js";
import type { DrvRecord } from "../graph/index.js";
import { SELF, Store } from "../store/index.js";
import { loadRecipe, mainOutputPath, selectExport, selectExportOutputs, type LoadedRecipe } from "../recipe/load.js";
import { PACKAGE_ROOT, RUNNING_FROM_SOURCE } from "../recipe/location.js";

/** Where the store is: `--store`, else $UKB_STORE, else ./cache (relative to `cwd`). */
export function storeRoot(flag: string | undefined, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  // Empty is unset, as the launcher takes it (src/client/ukb.c store_of): the two must name one store.
  return path.resolve(cwd, flag || env.UKB_STORE || "cache");
}

/** Refuses a recipe file that is not there, before any store is opened (or made) for it. */
export function requireRecipeFiles(files: readonly string[]): void {
  for (const file of files) if (!fs.existsSync(file)) throw new RecipeError("no such recipe file", { file });
}

/**
 * Opens the store (`--store`, UKB_STORE, ./cache). `existing`: a command that
 * only reads it refuses a folder that holds no store, rather than making an
 * empty one (`ukb store verify --store /typo` said "all valid").
 */
export function openStore(flag: string | undefined, options: { useReserve?: boolean; existing?: boolean } = {}): Store {
  const root = storeRoot(flag);
  if (options.existing && !fs.existsSync(path.join(root, "ukb.sqlite"))) {
    throw new UkbError("usage", `there is no store at ${root} (no ukb.sqlite)`, { exitCode: ExitCode.badInput, hint: "name it with --store DIR or UKB_STORE; 'ukb realise' makes one" });
  }
  return Store.open(root, { ...(options.useReserve ? { useReserve: true } : {}) });
}

/**
 * Changes to ukb itself, to the system, to Node or to the host PATH invalidate cached evaluations.
 * PATH is in the key, not only among the variables an evaluation read: a recipe has one entry per
 * key, and the usual recipe (hostTools searching PATH) run from two shells whose PATHs differ (an
 * editor's and a terminal's) would otherwise be evaluated on every switch; with PATH in the key,
 * each keeps its own entry.
 */
function evalSalt(hostPath: string | undefined): string {
  // ukb's code: the bundles' content hash (scripts/bundle.mjs), or, run from its sources (tests),
  // the times and sizes of the modules that make and load derivations.
  const stamps = RUNNING_FROM_SOURCE ? sourceStamps() : [buildId()];
  // An unset PATH (hostTools then searches /usr/bin:/bin) is not an empty one (it finds nothing).
  // A recipe may ask which system and Node run it (process.platform, process.arch, a newer API).
  return `${stamps.join(",")}\0${process.platform}-${process.arch}-${process.version}\0${hostPath === undefined ? "\0unset" : hostPath}`;
}

function buildId(): string {
  try {
    return fs.readFileSync(path.join(PACKAGE_ROOT, "dist/bundle/build-id"), "utf8").trim();
  } catch {
    return "?";
  }
}

function sourceStamps(): string[] {
  const own = path.join(PACKAGE_ROOT, "src/cli");
  return ["../graph/derivation", "../recipe/derivation", "../recipe/load", "../recipe/host-tools", "../recipe/fetchers", "../recipe/artifacts"].map((f) => {
    for (const ext of [".js", ".ts"]) {
      try {
        const st = fs.statSync(path.join(own, f + ext));
        return `${st.mtimeMs}:${st.size}`;
      } catch {
        // try the other extension
      }
    }
    return "?";
  });
}

export interface LoadOptions {
  /** Read and write the store's eval cache (default true). */
  useCache?: boolean;
  /** Called when the recipe must be evaluated (not cached), before. */
  onEvaluate?: (why: string) => void;
  /** The environment whose PATH host tools are looked up in (the ukb server passes its client's). */
  env?: NodeJS.ProcessEnv;
  /** The working folder a cached evaluation is checked against (the ukb server passes its client's). */
  cwd?: string;
}

/** Loads a recipe through the store's eval cache. */
export async function loadWithCache(store: Store, recipe: string, options: LoadOptions = {}): Promise<LoadedRecipe> {
  const env = options.env ?? process.env;
  return loadRecipe(recipe, {
    ...(options.useCache === false ? {} : { cache: store.evalCache() }),
    salt: evalSalt(env.PATH),
    ...(options.onEvaluate ? { onEvaluate: options.onEvaluate } : {}),
    env,
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  });
}

export function pick(recipe: LoadedRecipe, attr: string | undefined): DrvRecord {
  return selectExport(recipe, attr);
}

/** The export's derivation and the outputs it names (one, for `m.output("dev")`). */
export { selectExportOutputs as pickOutputs };

export function parseCount(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} needs a positive whole number, not '${value}'`);
  return n;
}

export const defaultJobs = () => Math.max(1, os.availableParallelism());

/**
 * Realises a recipe's export (building what is missing, with a progress
 * display on stderr) and returns its record and main output's real path.
 */
export async function realiseExport(store: Store, recipeFile: string, attr: string | undefined, options: { jobs?: number; cores?: number } = {}): Promise<{ drv: DrvRecord; outputs: Readonly<Record<string, string>>; path: string; recipe: LoadedRecipe }> {
  const { makePlan, execute } = await import("../schedule/index.js");
  const { chooseMode, makeListener } = await import("../ui/index.js");
  const recipe = await loadWithCache(store, recipeFile);
  const { drv, outputs } = selectExportOutputs(recipe, attr);
  const plan = makePlan(store, recipe.graph, [drv]);
  if (plan.toBuild.length > 0) {
    const listener = makeListener(chooseMode(process.stderr, false));
    listener({ type: "plan", valid: plan.valid.length, toBuild: plan.toBuild.map((d) => ({ name: d.name, path: store.realPath(d.outputs.out ?? Object.values(d.outputs)[0]!) })) });
    const result = await execute(store, plan, { jobs: options.jobs ?? defaultJobs(), cores: options.cores ?? 1, listener });
    listener.close();
    if (result.failed.length > 0) throw result.failed[0]!.error;
  }
  return { drv, outputs, path: store.realPath(mainOutputPath(outputs)), recipe };
}

/**
 * A layout directory named by path (`./result`, say): when it is a path of
 * the store, protected from gc until this process exits, then checked to be
 * valid (in that order, as a realise does), so that a gc meanwhile cannot
 * delete the image under `ukb run` or `ukb push`.
 */
function protectLayoutDir(source: string, storeFlag: string | undefined): string {
  const dir = path.resolve(source);
  const storeDir = path.join(storeRoot(storeFlag), "store");
  let real = dir;
  try {
    real = fs.realpathSync(dir);
  } catch {
    // checked by the caller's own read
  }
  if (!real.startsWith(storeDir + path.sep)) return dir;
  const store = openStore(storeFlag);
  try {
    const base = store.parse(real);
    if (!base) return dir;
    store.protect([base], SELF);
    if (!store.isValid(base)) throw new UkbError("store", `${source} is in the store at ${store.root} but not a valid path there (deleted by gc, or never registered)`, { exitCode: ExitCode.badInput });
    return dir;
  } finally {
    store.close();
  }
}

/** An OCI layout directory given as is, or the image a recipe's export builds. */
export async function imageLayout(source: string, attr: string | undefined, storeFlag: string | undefined): Promise<string> {
  if (fs.existsSync(path.join(source, "oci-layout"))) return protectLayoutDir(source, storeFlag);
  if (!/\.[cm]?ts$/.test(source)) throw new UsageError(`${source} is neither an OCI layout directory nor a recipe (.ts)`);
  const store = openStore(storeFlag);
  try {
    const { path: dir } = await realiseExport(store, source, attr);
    // The caller reads the image after the store is closed: kept from gc until this process exits.
    store.protect([dir], SELF);
    if (!fs.existsSync(path.join(dir, "oci-layout"))) throw new UsageError(`${source}${attr ? ` -A ${attr}` : ""} is not an OCI image (no oci-layout in ${dir}); pick the image with -A`);
    return dir;
  } finally {
    store.close();
  }
}
