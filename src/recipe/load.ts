/**
 * The recipe loader: evaluates a recipe module and turns its exports into a
 * derivation graph. `import … from "ukb"` in a recipe resolves to the running
 * ukb, so a user's repository needs no install of its own.
 *
 * A recipe and the files it imports by relative path are bundled into one
 * CommonJS module by esbuild (its service: ~50 ms) and compiled in-process,
 * `ukb` being the API this process already has loaded; an inline source map
 * keeps stack traces, error lines and `local("./x")` on the original files.
 * A recipe that needs real ES module semantics (top-level await,
 * `import.meta`) goes through tsx and Node's loader hooks instead, which cost
 * ~400 ms more (a loader thread, one transform per file).
 *
 * Evaluated graphs are cached (by the caller's cache, keyed on the recipe's
 * path) together with the files the evaluation read; a later load whose files
 * are unchanged returns the cached graph without loading tsx at all.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { types } from "node:util";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isUkbError, onStrayError, RecipeError } from "../errors/index.js";
import type { DrvRecord, Graph } from "../graph/index.js";
import { closureOf, isDerivation, isOutputRef } from "./derivation.js";
import { ENV_KEYS, envKeys, isKernelFile, isUsers, recordNativeAddon, startRecording, type Recorded } from "./eval-deps.js";
import { extendsChain } from "./tsconfig.js";
import { callerLocation, isOwnCode, PACKAGE_ROOT, RUNNING_FROM_SOURCE } from "./location.js";

/** A recipe, evaluated. */
export interface LoadedRecipe {
  readonly file: string;
  /** Export name → hash of the derivation it holds. */
  readonly exports: Readonly<Record<string, string>>;
  /** Every derivation the exports reach (from the cache: read on first use). */
  readonly graph: Graph;
  /** The exported derivations themselves, by hash. */
  readonly roots: Readonly<Record<string, DrvRecord>>;
  /** Files the evaluation depended on. */
  readonly deps: readonly string[];
  /** Environment variables the recipe's code read, with their values (null: unset). */
  readonly env: Readonly<Record<string, string | null>>;
  /** The working folder, when the recipe's code depended on it. */
  readonly cwd?: string;
  /** Of `deps`, those whose metadata the recipe's code read (a stat). */
  readonly statted?: readonly string[];
  /** Why this evaluation was not cached (a child process it ran, the clock it read, and where), if so. */
  readonly volatile?: string;
  /** Whether this came from the cache. */
  readonly cached: boolean;
  /** A file the recipe read that changed while it was evaluated: this evaluation is not cached. */
  readonly changedWhileRead?: string;
  /**
   * Set when an earlier evaluation in this process left modules of the user's loaded (Node's
   * module cache): this one took them without resolving or reading them, so its list of files
   * is short of theirs, and it is not cached (`ukb report a.ts b.ts`).
   */
  readonly sharesModules?: true;
}

/** Where cached evaluations live (the store's database). */
export interface EvalCacheStorage {
  get(key: string): string | undefined;
  put(key: string, value: string): void;
}

/**
 * What a file the evaluation read looked like. `kind` is what the path
 * leads to (`f` a file, `d` a folder, whose `blake3` is over its sorted
 * names, `l` a dangling link, `m` nothing at all); `link` is its own target when the path itself
 * is a symlink; `mode` catches a changed executable bit, which local() hashes.
 */
/** `s`: a device, fifo or socket, or a file of /proc, /sys or /dev: stamped by its kind and mode, never read. */
interface DepStamp {
  path: string;
  /** The recipe read its metadata (a stat): a new time or size is a change even with the same bytes. */
  meta?: true;
  kind: "f" | "d" | "l" | "m" | "s";
  link?: string;
  mode?: number;
  size: number;
  mtimeMs: number;
  /**
   * The inode's change time, which no one can set: a file rewritten in place with the same size
   * and its old mtime put back (`touch -r`, `cp -p`, tar) is still seen. (Absent in older entries:
   * such a stamp is checked by content once, then renewed.)
   */
  ctimeMs?: number;
  ino: number;
  blake3: string;
}

/**
 * A cached evaluation is two rows: this small one (what was read, the exports
 * and the exported derivations' own records) and the whole graph under
 * `key + "\0graph"`, parsed only if asked for — a no-op realise whose
 * target is valid never reads it (1000 derivations are ~40 ms of JSON here).
 */
interface CacheEntry {
  deps: DepStamp[];
  /** Environment variables read, and their values then: a different value is a new evaluation. */
  env?: Record<string, string | null>;
  /** The working folder, when the evaluation depended on it: another one is a new evaluation. */
  cwd?: string;
  exports: Record<string, string>;
  roots: Record<string, DrvRecord>;
}

/**
 * Node's own require and import() for what the bundle leaves outside (tsx,
 * node:module). The bundle itself never calls import(): bin/ukb.cjs compiles
 * it from a V8 code cache, where import() finds no loader on Node 20.
 */
const nodeRequire = createRequire(import.meta.url);
const importEsm = (specifier: string): Promise<unknown> =>
  (nodeRequire(path.join(PACKAGE_ROOT, "src/recipe/import-esm.cjs")) as (s: string) => Promise<unknown>)(specifier);

/** The recipe API that `import "ukb"` resolves to. */
const apiUrl = pathToFileURL(path.join(PACKAGE_ROOT, RUNNING_FROM_SOURCE ? "src/recipe/index.ts" : "dist/recipe/index.js")).href;

/** What `require("ukb")` gives: the CLI's CommonJS bundle of the API, or its sources when ukb runs from them (tests). */
const apiCjs = RUNNING_FROM_SOURCE ? fileURLToPath(apiUrl) : path.join(PACKAGE_ROOT, "dist/bundle/api.cjs");

let hooksRegistered = false;
let requireAliased = false;
/** Files that CommonJS recipes resolved while being evaluated. */
const requiredFiles = new Set<string>();

/**
 * Makes `require("ukb")` give this ukb's API from anywhere (a recipe, or a
 * library of recipes in node_modules), and notes the files required.
 */
function aliasInRequire(): void {
  if (requireAliased) return;
  requireAliased = true;
  const Module = nodeRequire("node:module") as { _resolveFilename: (request: string, ...rest: unknown[]) => string };
  const original = Module._resolveFilename;
  const resolveForRecipes = function (this: unknown, request: string, ...rest: unknown[]): string {
    if (request === "ukb") return apiCjs;
    let resolved: string;
    try {
      resolved = original.call(this, request, ...rest);
    } catch (err) {
      // An optional package not installed (`try { require("x") } catch {}`): where Node looked is
      // stamped as missing, so installing it is a change.
      const parent = rest[0] as { paths?: string[] } | undefined;
      if (isBarePackage(request)) for (const dir of parent?.paths ?? []) requiredFiles.add(path.join(dir, packageName(request)));
      throw err;
    }
    // What ukb's own code requires for the recipe (blake3 when hostTools hashes a program), and
    // what that requires in turn, is ukb's: it changes with ukb, which the cache's key covers.
    const parentFile = (rest[0] as { filename?: string } | undefined)?.filename;
    if (parentFile && (isOwnCode(parentFile) || loadedForUkb.has(parentFile))) {
      loadedForUkb.add(resolved);
      return resolved;
    }
    if (path.isAbsolute(resolved)) requiredFiles.add(resolved);
    if (resolved.endsWith(".node")) recordNativeAddon(resolveForRecipes);
    if (isBarePackage(request)) notePackageSearch(request, resolved, (rest[0] as { paths?: string[] } | undefined)?.paths ?? []);
    return resolved;
  };
  Module._resolveFilename = resolveForRecipes;
}

function isBarePackage(request: string): boolean {
  return !request.startsWith(".") && !path.isAbsolute(request) && !request.startsWith("node:");
}

const packageName = (request: string) => (request.startsWith("@") ? request.split("/").slice(0, 2).join("/") : request.split("/")[0]!);

/**
 * What decided which copy of a package a require found: the node_modules
 * folders Node looked in first, where it is not (stamped missing: installing
 * it in a nearer one is a change), and the package.json of the one found
 * (its "main" or "exports" may point elsewhere with every file the same).
 */
function notePackageSearch(request: string, resolved: string, searched: readonly string[]): void {
  const name = packageName(request);
  for (const dir of searched) {
    const candidate = path.join(dir, name);
    if (!fs.existsSync(candidate)) {
      requiredFiles.add(candidate);
      continue;
    }
    requiredFiles.add(path.join(candidate, "package.json"));
    return;
  }
  // Found elsewhere (NODE_PATH, a global folder): its own package.json, above the file.
  for (let dir = path.dirname(resolved); path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "package.json"))) return void requiredFiles.add(path.join(dir, "package.json"));
  }
}

/** Whether an evaluation of this process went through Node's ES module loader (tsx), whose modules stay loaded. */
let usedModuleLoader = false;

/** Modules first required by ukb's own code (or by one of those), not by the recipe. */
const loadedForUkb = new Set<string>();

/** Makes `import … from "ukb"` resolve to this ukb in Node's ES module loader too (a loader thread: tsx's path only). */
function registerAlias(): void {
  aliasInRequire();
  if (hooksRegistered) return;
  hooksRegistered = true;
  const { register } = nodeRequire("node:module") as typeof import("node:module");
  const hooks = `
    let target;
    export async function initialize(data) { target = data.url; }
    export async function resolve(specifier, context, next) {
      if (specifier === "ukb") return { url: target, shortCircuit: true };
      return next(specifier, context);
    }`;
  register(`data:text/javascript,${encodeURIComponent(hooks)}`, { data: { url: apiUrl } });
}

/** Whether Node treats a .ts file as an ES module: the nearest package.json says "type": "module". */
function isEsm(file: string): boolean {
  if (file.endsWith(".mts")) return true;
  if (file.endsWith(".cts")) return false;
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg)) {
      try {
        return (JSON.parse(fs.readFileSync(pkg, "utf8")) as { type?: string }).type === "module";
      } catch {
        return false;
      }
    }
    if (dir === path.dirname(dir)) return false;
  }
}

/** Whether a file belongs to the user's recipes (not to ukb or its dependencies). */
function isRecipeFile(p: string): boolean {
  return !p.includes(`${path.sep}node_modules${path.sep}`) && !isOwnCode(p);
}

type Esbuild = typeof import("esbuild");

/** Bundled evaluations under way (esbuild's service stops when none is). */
let bundling = 0;

/** Thrown inside a bundled evaluation when a package it requires needs Node's ES module loader. */
class NeedsModuleLoader extends Error {}

/** Errors of require() that Node's ES module loader (tsx's path) would not have. */
const ESM_ONLY = new Set(["ERR_REQUIRE_ESM", "ERR_PACKAGE_PATH_NOT_EXPORTED", "ERR_UNKNOWN_FILE_EXTENSION", "ERR_REQUIRE_ASYNC_MODULE"]);

/** How a recipe is bundled (its entry and folder aside). */
function bundleOptions(esm: boolean) {
  return {
    bundle: true,
    // Packages (ukb itself, node: modules, anything in node_modules) stay outside, required at run time.
    packages: "external",
    format: "cjs",
    platform: "node",
    target: "node20",
    // ES modules are strict; a CommonJS recipe is not.
    ...(esm ? { banner: { js: '"use strict";' } } : {}),
    // A package.json's "sideEffects": false must not drop a recipe's own imports.
    ignoreAnnotations: true,
    write: false,
    metafile: true,
    sourcemap: "inline",
    sourcesContent: false,
    logLevel: "silent",
    plugins: [ukbApiPlugin],
  } as const satisfies import("esbuild").BuildOptions;
}

/**
 * Evaluates a recipe bundled by esbuild (see the top of this file); undefined
 * when the recipe needs what only a real module loader gives, which tsx then
 * does: top-level await, `import.meta`, a file's own `__dirname`, packages
 * that are ES modules only or TypeScript sources, or anything esbuild cannot
 * bundle (tsx then reports the error, with its line).
 */
async function importBundled(file: string, imported: Set<string>): Promise<Record<string, unknown> | undefined> {
  if (process.env.UKB_RECIPE_LOADER === "tsx") return undefined;
  const esbuild = nodeRequire("esbuild") as Esbuild;
  const dir = path.dirname(file);
  const esm = isEsm(file);
  let result: Awaited<ReturnType<Esbuild["build"]>>;
  bundling++;
  resolutionDeps.clear();
  try {
    result = await esbuild.build({ entryPoints: [file], absWorkingDir: dir, ...bundleOptions(esm) });
  } catch (err) {
    // A name imported that no module exports: undefined at run time in a CommonJS recipe (Node's
    // own semantics for a .ts file outside "type": "module"), so said here, with its line.
    const missing = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors?.find((e) => /^No matching export in/.test(e.text));
    if (missing) {
      const name = /for import "([^"]+)"/.exec(missing.text)?.[1] ?? "?";
      const from = /No matching export in "(?:ukb-api:)?([^"]+)"/.exec(missing.text)?.[1] ?? "?";
      throw new RecipeError(`"${from}" has no export named '${name}'`, missing.location ? { file: path.relative(process.cwd(), path.resolve(dir, missing.location.file)), line: missing.location.line } : { file });
    }
    return undefined;
  } finally {
    // The service would otherwise live as long as ukb does; evaluations in one process may overlap.
    if (--bundling === 0) void esbuild.stop();
  }
  // A name imported that no module exports would be undefined in a bundle, where Node's loader
  // throws: tsx then reports it, with its line.
  if (result.warnings.some((w) => w.text.includes("import.meta") || /no matching export/i.test(w.text))) return undefined;
  // Files that import each other: a bundle hoists their bindings (a `const` read before its
  // line is undefined there), Node's loader throws ("Cannot access 'a' before initialization").
  if (hasImportCycle(result.metafile!)) return undefined;
  for (const dep of resolutionDeps) imported.add(dep);
  const metaInputs = Object.entries(result.metafile!.inputs);
  const inputs = metaInputs.filter(([input]) => !input.startsWith("ukb-api:")).map(([input]) => path.resolve(dir, input));
  // In one bundle, every file would see the recipe's own module: its folder, its require.
  const ownModule = /\b__(dirname|filename)\b|\brequire\.resolve\b|\bmodule\.(filename|path|paths|id|require)\b|\brequire\(\s*[^'"`\s)]/;
  if (inputs.some((input) => input !== file && ownModule.test(fs.readFileSync(input, "utf8")))) return undefined;
  // The strictness of an ES module recipe covers the whole bundle: a sloppy CommonJS file it imports needs tsx.
  if (esm && metaInputs.some(([, meta]) => meta.format === "cjs")) return undefined;
  for (const input of inputs) imported.add(input);
  // Stack traces through the source map: error lines and local("./x") name the files as written.
  process.setSourceMapsEnabled(true);
  aliasInRequire();
  const Module = nodeRequire("node:module") as unknown as CjsModuleClass;
  const mod = new Module(file, undefined);
  mod.filename = file;
  mod.paths = Module._nodeModulePaths(dir);
  const requireFromRecipe = mod.require.bind(mod);
  // Noted, not only thrown: a recipe may catch the error and go on with another value.
  let needsLoader = false;
  mod.require = (id: string) => {
    let value: unknown;
    try {
      value = requireFromRecipe(id);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A package whose sources are TypeScript (a linked workspace): Node cannot compile it.
      const typescript = err instanceof SyntaxError && /\.[cm]?tsx?$/.test(tryResolve(mod, id));
      if ((code && ESM_ONLY.has(code)) || typescript) {
        needsLoader = true;
        throw new NeedsModuleLoader(id);
      }
      throw err;
    }
    // An ES module package, which Node 20.19+ requires as its namespace: the bundle's default
    // import would then be the namespace, not the module's default. Node's loader imports it right.
    if (types.isModuleNamespaceObject(value)) {
      needsLoader = true;
      throw new NeedsModuleLoader(id);
    }
    return value;
  };
  try {
    mod._compile(result.outputFiles![0]!.text, file);
  } catch (err) {
    if (needsLoader) return undefined;
    throw err;
  }
  if (needsLoader) return undefined;
  return mod.exports as Record<string, unknown>;
}

/**
 * For the server's started CLI (src/server/warm-child.ts): esbuild's
 * service up and the recipe API loaded before a recipe comes. The service
 * then stays up through the evaluation; the function returned (called
 * once) lets it stop.
 */
export async function warmEvaluation(): Promise<() => void> {
  const esbuild = nodeRequire("esbuild") as Esbuild;
  bundling++;
  const release = () => {
    if (--bundling === 0) void esbuild.stop();
  };
  try {
    // A first bundle, through the plugin as a recipe's goes (which loads the recipe API): esbuild's
    // first build with it takes ~15 ms more than the next ones.
    await esbuild.build({ stdin: { contents: 'import { derivation } from "ukb";\nexport default derivation;\n', loader: "ts", resolveDir: PACKAGE_ROOT, sourcefile: "warm.ts" }, ...bundleOptions(false) });
  } catch {
    // No service: the evaluation starts its own, as the CLI does.
  }
  return release;
}

/** Marks esbuild's own resolution, asked from within the plugin, so that the plugin does not ask again. */
const RESOLVING = Symbol("ukb-resolving");
/** Paths an evaluation's imports depend on beyond the files esbuild bundled (see noteRelativeImport). */
const resolutionDeps = new Set<string>();
const EXTENSIONS = [".tsx", ".ts", ".jsx", ".js", ".css", ".json"];

/**
 * What a relative import's resolution depended on, beyond the file found:
 * - the path as written (`./lib/x.ts`), stamped through any symlink on the
 *   way (esbuild names the file by its real path: retargeting `lib` would
 *   go unseen);
 * - every candidate esbuild tries before the one it took, stamped missing:
 *   `./x` found as `x/index.ts` becomes `x.ts` once that file is made, and
 *   `./x.js` found as `x.ts` becomes `x.js`.
 */
function noteRelativeImport(resolveDir: string, specifier: string): void {
  const asked = path.resolve(resolveDir, specifier);
  const ext = path.extname(asked);
  const candidates =
    /^\.[cm]?jsx?$/.test(ext) ? [asked, asked.slice(0, -ext.length) + ext.replace("js", "ts"), asked.slice(0, -ext.length) + ext.replace("js", "tsx")]
    : EXTENSIONS.includes(ext) || ext === ".mts" || ext === ".cts" ? [asked]
    : [asked, ...EXTENSIONS.map((e) => asked + e), ...EXTENSIONS.map((e) => path.join(asked, `index${e}`))];
  for (const candidate of candidates) {
    resolutionDeps.add(candidate);
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(candidate);
    } catch {
      continue;
    }
    if (st.isFile()) return;
  }
}

/**
 * `import … from "ukb"` as an ES module whose exports esbuild knows (the API's
 * own names, read from the loaded API): a name the API lacks is then reported
 * at bundling, not undefined at run time. The module itself requires the API.
 * Relative imports also note what their resolution depended on
 * (noteRelativeImport).
 */
const ukbApiPlugin: import("esbuild").Plugin = {
  name: "ukb-api",
  setup(build) {
    build.onResolve({ filter: /^\.{0,2}\// }, async (args) => {
      if (args.pluginData === RESOLVING || args.namespace !== "file") return undefined;
      const found = await build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: RESOLVING });
      // Not found: esbuild's own resolution says so, with the importer's line.
      if (found.errors.length > 0) return undefined;
      noteRelativeImport(args.resolveDir, args.path);
      return { path: found.path, namespace: found.namespace, external: found.external, sideEffects: found.sideEffects, suffix: found.suffix };
    });
    build.onResolve({ filter: /^ukb$/ }, (args) => (args.namespace === "ukb-api" ? { path: "ukb", external: true } : { path: "ukb", namespace: "ukb-api" }));
    build.onLoad({ filter: /.*/, namespace: "ukb-api" }, () => {
      const names = Object.keys(nodeRequire(apiCjs) as object).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n) && n !== "default");
      return { contents: `const api = require("ukb");\n${names.map((n) => `export const ${n} = api.${n};`).join("\n")}\n`, loader: "js" };
    });
  },
};

/** Whether the recipe's own files (what esbuild bundled) import each other in a cycle. */
function hasImportCycle(metafile: import("esbuild").Metafile): boolean {
  const edges = new Map<string, string[]>();
  for (const [input, meta] of Object.entries(metafile.inputs)) edges.set(input, meta.imports.filter((i) => !i.external && i.path in metafile.inputs).map((i) => i.path));
  const state = new Map<string, "open" | "done">();
  for (const start of edges.keys()) {
    if (state.has(start)) continue;
    // Depth first with a stack of its own; a node still open when reached again closes a cycle.
    const stack: { node: string; next: number }[] = [{ node: start, next: 0 }];
    state.set(start, "open");
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const out = edges.get(top.node) ?? [];
      if (top.next >= out.length) {
        state.set(top.node, "done");
        stack.pop();
        continue;
      }
      const to = out[top.next++]!;
      const seen = state.get(to);
      if (seen === "open") return true;
      if (seen === undefined) {
        state.set(to, "open");
        stack.push({ node: to, next: 0 });
      }
    }
  }
  return false;
}

/** Where `id` resolves from `mod`, or "" when it does not. */
function tryResolve(mod: CjsModule, id: string): string {
  try {
    return (nodeRequire("node:module") as unknown as { _resolveFilename(id: string, parent: CjsModule): string })._resolveFilename(id, mod);
  } catch {
    return "";
  }
}

/** The parts of Node's CommonJS Module class that compiling a bundle in-process uses. */
interface CjsModuleClass {
  new (id: string, parent: undefined): CjsModule;
  _nodeModulePaths(dir: string): string[];
}
interface CjsModule {
  filename: string;
  paths: string[];
  exports: unknown;
  require(id: string): unknown;
  _compile(code: string, filename: string): void;
}

/** Imports a recipe module with tsx: as ESM, or through require() (which keeps line numbers in stack traces). */
async function importRecipe(file: string, imported: Set<string>): Promise<Record<string, unknown>> {
  // Node's ES module loader keeps what it loaded, out of reach: later evaluations share it.
  usedModuleLoader = true;
  if (isEsm(file)) {
    const { tsImport } = (await importEsm("tsx/esm/api")) as typeof import("tsx/esm/api");
    return (await tsImport(pathToFileURL(file).href, {
      parentURL: import.meta.url,
      onImport: (url: string) => {
        if (url.startsWith("file:")) imported.add(fileURLToPath(url.split("?")[0]!));
      },
    })) as Record<string, unknown>;
  }
  const { require: tsxRequire } = nodeRequire("tsx/cjs/api") as typeof import("tsx/cjs/api");
  requiredFiles.clear();
  try {
    return tsxRequire(file, import.meta.url) as Record<string, unknown>;
  } finally {
    for (const f of requiredFiles) imported.add(f);
  }
}

/**
 * What `file` looks like now. `previous`, its stamp in the entry this one
 * replaces: when its metadata is the same (what depUnchanged trusts), its
 * hash is taken, not computed again (an edit changes one file, and the host
 * tools and dpkg's database are most of a recipe's bytes).
 */
function stamp(file: string, blake3: (data: Uint8Array) => string, meta = false, previous?: DepStamp): DepStamp {
  let link: string | undefined;
  try {
    link = fs.lstatSync(file).isSymbolicLink() ? fs.readlinkSync(file) : undefined;
  } catch {
    // Not there (a recipe checked that it is not): its coming is a change.
    return { path: file, kind: "m", size: 0, mtimeMs: 0, ino: 0, blake3: "" };
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return { path: file, kind: "l", ...(link !== undefined ? { link } : {}), size: 0, mtimeMs: 0, ino: 0, blake3: "" };
  }
  const kind = kindOf(file, st);
  if (kind === "s") return { path: file, kind, ...(link !== undefined ? { link } : {}), mode: st.mode, size: 0, mtimeMs: 0, ino: 0, blake3: "" };
  const same =
    previous !== undefined && previous.kind === kind && previous.link === link && previous.mode === st.mode &&
    previous.size === st.size && previous.mtimeMs === st.mtimeMs && previous.ctimeMs === st.ctimeMs && previous.ino === st.ino;
  const hash = same ? previous.blake3 : blake3(contentOf(file, kind));
  return { path: file, ...(meta ? { meta: true as const } : {}), kind, ...(link !== undefined ? { link } : {}), mode: st.mode, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, blake3: hash };
}

function kindOf(file: string, st: fs.Stats): "f" | "d" | "s" {
  if (isKernelFile(file) || !(st.isFile() || st.isDirectory())) return "s";
  return st.isDirectory() ? "d" : "f";
}

/**
 * What a stamp hashes: a file's bytes, or a folder's names, each with its
 * kind (a file replaced by a folder of its name is a change); what is in it
 * has stamps of its own.
 */
function contentOf(file: string, kind: "f" | "d"): Uint8Array {
  if (kind === "f") return fs.readFileSync(file);
  const entries = fs.readdirSync(file, { withFileTypes: true }).map((e) => `${e.name}/${e.isDirectory() ? "d" : e.isSymbolicLink() ? "l" : e.isFile() ? "f" : "s"}`);
  return Buffer.from(entries.sort().join("\0"));
}

/**
 * The stamps again when every file is as it was (a changed stat with
 * unchanged content still counts as unchanged, and its stamp is renewed so
 * that the next check need not hash it: a `touch` or a git checkout would
 * otherwise cost a hash at every no-op), with `renewed` set; else undefined.
 */
async function depsUnchanged(deps: DepStamp[]): Promise<{ deps: DepStamp[]; renewed: boolean } | { changed: string }> {
  const current: DepStamp[] = [];
  let renewed = false;
  for (const dep of deps) {
    const same = await depUnchanged(dep);
    if (same === undefined) return { changed: dep.path };
    current.push(same);
    renewed ||= same !== dep;
  }
  return { deps: current, renewed };
}

/** The stamp (`dep` itself if its stat is unchanged, a renewed one if only the stat changed), or undefined if it changed. */
async function depUnchanged(dep: DepStamp): Promise<DepStamp | undefined> {
  let link: string | undefined;
  try {
    link = fs.lstatSync(dep.path).isSymbolicLink() ? fs.readlinkSync(dep.path) : undefined;
  } catch {
    return dep.kind === "m" ? dep : undefined;
  }
  if (dep.kind === "m") return undefined;
  if (link !== dep.link) return undefined;
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dep.path);
  } catch {
    st = undefined;
  }
  if (!st) return dep.kind === "l" ? dep : undefined;
  const kind = kindOf(dep.path, st);
  if (kind !== dep.kind || st.mode !== dep.mode) return undefined;
  if (kind === "s") return dep;
  if (st.size === dep.size && st.mtimeMs === dep.mtimeMs && st.ctimeMs === dep.ctimeMs && st.ino === dep.ino) return dep;
  if (dep.meta || (kind === "f" && st.size !== dep.size)) return undefined;
  const { blake3Hex } = await import("../graph/hash.js");
  if (blake3Hex(contentOf(dep.path, kind)) !== dep.blake3) return undefined;
  return { ...dep, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
}

/**
 * The file and line of the user's recipes an exception points at (an
 * imported file included), from esbuild's message or the stack; else the
 * recipe itself.
 */
function locate(err: unknown, file: string): { file: string; line?: number } {
  return locateInRecipes(err) ?? { file: path.relative(process.cwd(), file) || file };
}

/** The file and line of the user's recipes an exception points at; undefined if it points at none. */
function locateInRecipes(err: unknown): { file: string; line?: number } | undefined {
  let text = err instanceof Error ? `${err.message}\n${err.stack ?? ""}` : String(err);
  // A binding read before its definition ran (files that import each other): the first frames
  // are the transform's getters for it, in the defining file; the line to name is the reader's.
  const early = /Cannot access '([\w$]+)' before initialization/.exec(text)?.[1];
  if (early) text = text.split("\n").filter((l) => !l.includes(`Object.${early} (`) && !l.includes(`[as ${early}] (`)).join("\n");
  for (const m of text.matchAll(/((?:file:\/\/)?\/[^\s():?]+)(?:\?[^\s():]*)?:(\d+)(?::\d+)?/g)) {
    const found = m[1]!.startsWith("file://") ? fileURLToPath(m[1]!) : m[1]!;
    if (isRecipeFile(found) && fs.existsSync(found)) return { file: path.relative(process.cwd(), found) || found, line: Number(m[2]) };
  }
  return undefined;
}

/**
 * An error thrown by a recipe's code as ukb reports it (`note` says when), if
 * its stack points into a recipe this process evaluated; else undefined.
 */
export function recipeErrorOf(err: unknown, note: string): RecipeError | undefined {
  // A value that is no Error (`throw "x"`, `Promise.reject(42)`) has no stack; ukb's own code throws only Errors.
  const where = err instanceof Error ? locateInRecipes(err) : {};
  return where ? new RecipeError(`${firstLine(err)} ${note}`, where, err) : undefined;
}

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // esbuild: "Transform failed with 1 error:\n/path/x.ts:3:4: ERROR: Expected ..."
  const esbuild = /ERROR: (.*)/.exec(msg);
  if (esbuild) return `syntax error: ${esbuild[1]}`;
  const line = msg.split("\n").find((l) => l.trim() !== "") ?? "unknown error";
  return err instanceof SyntaxError ? `syntax error: ${line}` : line;
}

/** Where a recipe called process.exit: its line, else the recipe. */
function exitCaller(file: string): { file: string; line?: number } {
  const at = callerLocation();
  return at.file ? { file: at.file, ...(at.line ? { line: at.line } : {}) } : { file: path.relative(process.cwd(), file) || file };
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}

const writeStderr = process.stderr.write.bind(process.stderr);
/** Where what a recipe prints as it is evaluated goes (console.log, console.error): see {@link setRecipeOutput}. */
let recipeOutput: (text: string) => void = (text) => void writeStderr(text);

/**
 * Sends what a recipe prints while it is evaluated to `sink` (by default
 * stderr, as Nix's `trace:`): stdout carries ukb's own answer (the paths a
 * realise prints, the graph `show` prints), which a recipe's `console.log`
 * must not corrupt; with `--json` every line of stderr is an event.
 */
export function setRecipeOutput(sink: (text: string) => void): void {
  recipeOutput = sink;
}

/** Runs `body` with process.stdout and process.stderr writing to the recipe's output. */
async function divertOutput<T>(body: () => Promise<T>): Promise<T> {
  const streams = [process.stdout, process.stderr];
  const writes = streams.map((s) => s.write);
  const divert = function (chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error) => void), done?: (err?: Error) => void): boolean {
    recipeOutput(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
    (typeof encoding === "function" ? encoding : done)?.();
    return true;
  } as typeof process.stdout.write;
  for (const s of streams) s.write = divert;
  try {
    return await body();
  } finally {
    streams.forEach((s, i) => (s.write = writes[i]!));
  }
}

/** Evaluations of this process, one after the other: what one records (process.env, fs) is global. */
let evaluations: Promise<unknown> = Promise.resolve();

/** Evaluates a recipe (no cache). */
export function evaluateRecipe(recipeFile: string): Promise<LoadedRecipe> {
  const turn = evaluations.then(() => evaluateAlone(recipeFile));
  evaluations = turn.catch(() => undefined);
  return turn;
}

async function evaluateAlone(recipeFile: string): Promise<LoadedRecipe> {
  const file = path.resolve(recipeFile);
  if (!fs.existsSync(file)) throw new RecipeError(`no such recipe file`, { file: recipeFile });
  const sharesModules = usedModuleLoader || Object.keys(nodeRequire.cache).some((f) => !loadedForUkb.has(f) && isUsers(f));
  const imported = new Set<string>([file]);
  const stopRecording = startRecording();
  requiredFiles.clear();
  let mod: Record<string, unknown>;
  let recorded: Recorded | undefined;
  // A recipe that exits would end ukb with its status (0 with nothing done, or anything): an error.
  const exit = process.exit;
  process.exit = ((code?: number | string | null) => {
    throw new RecipeError(`called process.exit(${code ?? ""}) while being evaluated: a recipe only declares derivations`, exitCaller(file));
  }) as typeof process.exit;
  // Nor may it move ukb to another folder: every relative path after it (the out-link, a cached
  // evaluation's working folder) would be another.
  const chdir = process.chdir;
  process.chdir = ((to: string) => {
    throw new RecipeError(`called process.chdir(${JSON.stringify(to)}) while being evaluated: a recipe names paths from its own folder instead (import.meta.dirname, local("./x"))`, exitCaller(file));
  }) as typeof process.chdir;
  try {
    mod = await divertOutput(async () => (await importBundled(file, imported)) ?? (registerAlias(), await importRecipe(file, imported)));
  } catch (err) {
    recorded = stopRecording();
    if (isUkbError(err)) throw err;
    const where = locate(err, file);
    // What a reader of "Cannot access 'a' before initialization" needs to know to fix it.
    const cycle = /before initialization/.test(firstLine(err)) ? " (recipe files import each other in a cycle, and one reads it before the other has defined it)" : "";
    // As Node does, a .ts file is CommonJS unless its package.json says otherwise: say how to make it an ES module.
    const topLevelAwait = /Top-level await is currently not supported with the "cjs" output format/.test(firstLine(err)) ? ' (this .ts file is CommonJS: name it .mts, or put "type": "module" in its package.json)' : "";
    throw new RecipeError(firstLine(err) + cycle + topLevelAwait, where, err);
  } finally {
    process.exit = exit;
    process.chdir = chdir;
  }
  const { files: readFiles, env, cwd, statted, volatile, changedWhileRead } = recorded ?? stopRecording();
  // Packages the recipe required (a library of recipes in node_modules, say) are its files too.
  for (const f of requiredFiles) imported.add(f);
  // How the recipe's own files are read: as a module or a script ("type" in package.json), through
  // which paths ("imports" there, "paths" in tsconfig.json). Missing ones are stamped as missing.
  for (const f of [...imported]) {
    if (f.includes(`${path.sep}node_modules${path.sep}`)) continue;
    for (let dir = path.dirname(f); ; dir = path.dirname(dir)) {
      for (const name of ["package.json", "tsconfig.json", "jsconfig.json"]) imported.add(path.join(dir, name));
      if (path.dirname(dir) === dir) break;
    }
  }
  // A config's settings may come from the configs it extends, in the folder or in a package.
  for (const f of [...imported]) if (/^[tj]sconfig\.json$/.test(path.basename(f))) for (const link of extendsChain(f)) imported.add(link);
  // A recipe loaded as CommonJS arrives wrapped: its exports object is the namespace's default.
  const inner = mod.default as Record<string, unknown> | undefined;
  if (inner && typeof inner === "object" && !isDerivation(inner) && !isOutputRef(inner) && "__esModule" in inner) mod = inner;
  const exports: Record<string, string> = {};
  const roots: Record<string, DrvRecord> = {};
  for (const [name, value] of Object.entries(mod)) {
    const drv = isDerivation(value) ? value.drv : isOutputRef(value) ? value.derivation.drv : undefined;
    if (!drv && isThenable(value)) {
      // Said now, with how to fix it; its rejection, if it comes, is this error's, not an unhandled one.
      value.then(undefined, () => undefined);
      throw new RecipeError(`export '${name}' is a Promise, not a derivation (await it at the top level: export default await ...)`, { file: path.relative(process.cwd(), file) || file });
    }
    if (!drv) continue;
    // An output of a derivation (`m.output("dev")`) is exported as `hash#output`: -A picks that output.
    exports[name] = isOutputRef(value) ? `${drv.hash}#${value.name}` : drv.hash;
    roots[drv.hash] = drv;
  }
  if (Object.keys(roots).length === 0) throw new RecipeError("exports no derivation", { file: path.relative(process.cwd(), file) || file });
  return {
    file,
    exports,
    roots,
    graph: { drvs: closureOf(Object.values(roots)) },
    deps: [...new Set([...imported, ...readFiles])].filter((f) => !isOwnCode(f)).sort(),
    env,
    ...(cwd !== undefined ? { cwd } : {}),
    statted,
    ...(volatile !== undefined ? { volatile } : {}),
    cached: false,
    ...(sharesModules ? { sharesModules } : {}),
    ...(changedWhileRead !== undefined ? { changedWhileRead } : {}),
  };
}

export interface LoadRecipeOptions {
  /** Where evaluations are cached (none: always evaluate). */
  cache?: EvalCacheStorage;
  /** Goes into the cache key: ukb's version, the host PATH. */
  salt?: string;
  /** Called when the recipe must be evaluated (not cached), before, with why (what changed since the cached evaluation). */
  onEvaluate?: (why: string) => void;
  /** The caller's environment and working folder, compared with what the cached evaluation read (the ukb server passes its client's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * Loads a recipe, from the cache when nothing its last evaluation read has
 * changed: files, environment variables, the working folder. A volatile
 * evaluation (see eval-deps.ts) is not cached.
 */
export async function loadRecipe(recipeFile: string, options: LoadRecipeOptions = {}): Promise<LoadedRecipe> {
  const { cache, salt = "", onEvaluate, env = process.env, cwd = process.cwd() } = options;
  const file = path.resolve(recipeFile);
  const key = `${file}\0${salt}`;
  const graphKey = `${key}\0graph`;
  const hit = cache?.get(key);
  let why = "no evaluation of it is cached (for this ukb, Node and PATH)";
  /** The stamps of the evaluation this one replaces, by path. */
  const previous = new Map<string, DepStamp>();
  if (hit) {
    const entry = JSON.parse(hit) as Partial<CacheEntry> & { volatile?: string };
    for (const dep of entry.deps ?? []) previous.set(dep.path, dep);
    const otherEnv = Object.entries(entry.env ?? {}).find(([k, v]) => (k === ENV_KEYS ? envKeys(env) : (env[k] ?? null)) !== v)?.[0];
    const otherCwd = entry.cwd !== undefined && entry.cwd !== cwd;
    // (ENV_KEYS, the entry for the set of names, is the empty string: compared with undefined, not by truth.)
    const unchanged = otherEnv === undefined && !otherCwd && entry.roots && entry.deps && entry.exports ? await depsUnchanged(entry.deps) : undefined;
    why =
      entry.volatile !== undefined ? `it is evaluated on every run: it ${entry.volatile}`
      : otherEnv !== undefined ? (otherEnv === ENV_KEYS ? "the set of environment variables changed" : `the environment variable ${otherEnv} changed`)
      : otherCwd ? `the working folder is not ${entry.cwd}`
      : unchanged && "changed" in unchanged ? `${unchanged.changed} changed`
      : why;
    if (unchanged && !("changed" in unchanged) && entry.roots && entry.deps && entry.exports) {
      if (unchanged.renewed) cache!.put(key, JSON.stringify({ ...entry, deps: unchanged.deps }));
      let drvs: Record<string, DrvRecord> | undefined;
      const graph = {
        get drvs(): Record<string, DrvRecord> {
          if (drvs) return drvs;
          // The graph row is the closure of these roots, and names them: another process may have
          // cached another version of the recipe between the two rows.
          const text = cache!.get(graphKey);
          const stored = text ? (JSON.parse(text) as { roots?: string[]; drvs?: Record<string, DrvRecord> }) : undefined;
          if (!stored?.drvs || rootsTag(entry.roots!) !== stored.roots?.join(",")) {
            throw new RecipeError("its cached evaluation changed while it was read: run the command again (or with --no-eval-cache)", { file: recipeFile });
          }
          return (drvs = stored.drvs);
        },
      };
      return { file, exports: entry.exports, roots: entry.roots, graph, deps: entry.deps.map((d) => d.path), env: entry.env ?? {}, ...(entry.cwd !== undefined ? { cwd: entry.cwd } : {}), cached: true };
    }
  }
  onEvaluate?.(why);
  const loaded = await evaluateRecipe(file);
  // Volatile: the next evaluation may differ with every file the same. The entry says why, and
  // matches nothing (it has no stamps).
  if (cache && loaded.volatile !== undefined) cache.put(key, JSON.stringify({ volatile: loaded.volatile }));
  else if (cache && !loaded.sharesModules && loaded.changedWhileRead === undefined) {
    const { blake3Hex } = await import("../graph/hash.js");
    const statted = new Set(loaded.statted);
    const entry: CacheEntry = {
      deps: loaded.deps.map((d) => stamp(d, blake3Hex, statted.has(d), previous.get(d))),
      env: { ...loaded.env },
      ...(loaded.cwd !== undefined ? { cwd: loaded.cwd } : {}),
      exports: { ...loaded.exports },
      roots: { ...loaded.roots },
    };
    cache.put(graphKey, JSON.stringify({ roots: rootsTag(loaded.roots).split(","), drvs: loaded.graph.drvs }));
    cache.put(key, JSON.stringify(entry));
    // The evaluation left an error no one awaited (a promise it rejected, a timer that throws):
    // the command fails with it, and the next must evaluate again, and fail again.
    onStrayError(() => cache.put(key, JSON.stringify({ volatile: "leaves an error no one awaits" })));
  }
  return loaded;
}

/** The roots' hashes, sorted: they determine the graph (it is their closure). */
function rootsTag(roots: Readonly<Record<string, DrvRecord>>): string {
  return Object.keys(roots).sort().join(",");
}

/**
 * The export `attr` (default: `default`) of a loaded recipe: its derivation
 * and the outputs it names (all of them, or the one of an output export).
 */
export function selectExportOutputs(recipe: LoadedRecipe, attr: string | undefined): { drv: DrvRecord; outputs: Readonly<Record<string, string>> } {
  const drv = selectExport(recipe, attr);
  const output = recipe.exports[attr ?? "default"]!.split("#")[1];
  return { drv, outputs: output === undefined ? drv.outputs : { [output]: drv.outputs[output]! } };
}

/** The output a link to a derivation points at, as `${drv}` does: `out` when it has one, else its first. */
export function mainOutputPath(outputs: Readonly<Record<string, string>>): string {
  return outputs.out ?? Object.values(outputs)[0]!;
}

/** Picks the export `attr` (default: `default`) of a loaded recipe. */
export function selectExport(recipe: LoadedRecipe, attr: string | undefined): DrvRecord {
  const name = attr ?? "default";
  // Own exports only: `-A constructor` is not Object.prototype's.
  const hash = Object.hasOwn(recipe.exports, name) ? recipe.exports[name]?.split("#")[0] : undefined;
  const rel = path.relative(process.cwd(), recipe.file) || recipe.file;
  if (!hash) {
    const names = Object.keys(recipe.exports);
    throw new RecipeError(
      attr === undefined ? `has no default export (exports: ${names.join(", ")}); pick one with -A NAME` : `has no derivation export '${name}' (exports: ${names.join(", ")})`,
      { file: rel },
    );
  }
  return recipe.roots[hash] ?? recipe.graph.drvs[hash]!;
}
