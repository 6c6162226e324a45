/**
 * What an evaluation depended on: recipe modules, host tools, local files,
 * and what the recipe's own code read of the host: files and folders through
 * `node:fs`, environment variables through `process.env`. The loader keys its
 * cache of evaluated graphs on them, so a recipe is evaluated again exactly
 * when one of them changes (Nix forbids such reads in pure evaluation; ukb
 * allows them and remembers them instead).
 *
 * Only reads made by the user's code count (the first frame of the stack
 * outside Node and ukb): esbuild copying the whole environment to start its
 * service, or the loader reading a recipe, would otherwise make every change
 * of the shell's environment a new evaluation.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { OWN_TREES, PACKAGE_ROOT } from "./location.js";

const files: Set<string> = ((globalThis as Record<symbol, unknown>)[Symbol.for("ukb.evalDeps")] ??= new Set<string>()) as Set<string>;

export function recordDependency(file: string): void {
  files.add(file);
}

/**
 * ukb's own code and its dependencies, transitively, where Node would find
 * them (an `npm install ukb` hoists them beside it): their reads are not the
 * recipe's. Found once, at the first recording.
 */
let own: string[] | undefined;
function ownTrees(): string[] {
  if (own) return own;
  const found = new Set<string>([...OWN_TREES, path.join(PACKAGE_ROOT, "node_modules") + path.sep, path.join(PACKAGE_ROOT, "bin") + path.sep]);
  const seen = new Set<string>();
  const visit = (packageDir: string) => {
    let manifest: { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
    try {
      manifest = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8"));
    } catch {
      return;
    }
    for (const name of Object.keys({ ...manifest.dependencies, ...manifest.optionalDependencies })) {
      // Node's own search: node_modules of the package's folder, then of each folder above.
      for (let dir = packageDir; ; dir = path.dirname(dir)) {
        const candidate = path.join(dir, "node_modules", name);
        if (fs.existsSync(candidate)) {
          const real = fs.realpathSync(candidate);
          if (!seen.has(real)) {
            seen.add(real);
            found.add(candidate + path.sep);
            found.add(real + path.sep);
            visit(real);
          }
          break;
        }
        if (path.dirname(dir) === dir) break;
      }
    }
  };
  visit(PACKAGE_ROOT);
  return (own = [...found]);
}

/**
 * Whether the code that called `entry` (a wrapper of fs, a trap of
 * process.env) is the user's: the nearest frame with a file below it, which
 * must be neither Node's own (its colour detection for a console.log, its
 * child_process copying the environment, its reading of source maps) nor
 * ukb's or its dependencies'. Builtins without a file (Array.prototype.map,
 * JSON.stringify) are looked through. Read from raw call sites: a formatted
 * stack goes through the source maps of every frame, 30 ms an evaluation.
 */
function calledByUser(entry: AnyFn): boolean {
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  let sites: NodeJS.CallSite[] = [];
  try {
    Error.prepareStackTrace = (_err, callSites) => callSites;
    Error.stackTraceLimit = 16;
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, entry);
    sites = holder.stack as NodeJS.CallSite[];
  } finally {
    Error.prepareStackTrace = prepare;
    Error.stackTraceLimit = limit;
  }
  for (const site of sites) {
    const name = site.getFileName();
    if (!name) continue;
    if (name.startsWith("node:")) return false;
    const file = name.startsWith("file://") ? fileURLToPath(name) : name;
    if (!path.isAbsolute(file)) return false;
    return !ownTrees().some((t) => file.startsWith(t));
  }
  return false;
}

/** What a recording saw: files (sorted) and environment variables (value, or null when unset). */
export interface Recorded {
  readonly files: string[];
  readonly env: Record<string, string | null>;
}

type AnyFn = (...args: unknown[]) => unknown;

/**
 * Starts a new recording and returns a function that ends it. Until then,
 * `process.env` and the reading functions of `node:fs` note what the user's
 * code reads.
 */
export function startRecording(): () => Recorded {
  // Before fs is wrapped: finding them reads package.json files.
  ownTrees();
  files.clear();
  const env = new Map<string, string | null>();
  const realEnv = process.env;
  const noteEnv = (key: string | symbol, trap: AnyFn) => {
    if (typeof key === "string" && !env.has(key) && calledByUser(trap)) env.set(key, realEnv[key] ?? null);
  };
  const traps: ProxyHandler<NodeJS.ProcessEnv> = {
    get(target, key) {
      noteEnv(key, traps.get as AnyFn);
      return Reflect.get(target, key);
    },
    has(target, key) {
      noteEnv(key, traps.has as AnyFn);
      return Reflect.has(target, key);
    },
    getOwnPropertyDescriptor(target, key) {
      noteEnv(key, traps.getOwnPropertyDescriptor as AnyFn);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
    ownKeys(target) {
      // Enumerated by the user (`{ ...process.env }`): every variable is read.
      if (calledByUser(traps.ownKeys as AnyFn)) for (const key of Object.keys(target)) if (!env.has(key)) env.set(key, target[key] ?? null);
      return Reflect.ownKeys(target);
    },
  };
  process.env = new Proxy(realEnv, traps);

  // The reading functions, each noting its first argument when it is a path the user's code passed.
  const patched: [object, string, AnyFn][] = [];
  const wrap = (owner: Record<string, unknown>, name: string) => {
    const original = owner[name] as AnyFn | undefined;
    if (typeof original !== "function") return;
    patched.push([owner, name, original]);
    const wrapper = function (this: unknown, ...args: unknown[]) {
      const p = args[0];
      if ((typeof p === "string" || p instanceof URL) && calledByUser(wrapper)) files.add(path.resolve(p instanceof URL ? fileURLToPath(p) : p));
      return original.apply(this, args);
    };
    owner[name] = wrapper;
  };
  const fsObject = fs as unknown as Record<string, unknown>;
  for (const name of ["readFileSync", "readFile", "readdirSync", "readdir", "existsSync", "statSync", "stat", "lstatSync", "lstat", "openSync", "open", "accessSync", "access", "readlinkSync", "readlink", "opendirSync", "opendir", "createReadStream"]) wrap(fsObject, name);
  for (const name of ["readFile", "readdir", "stat", "lstat", "open", "access", "readlink", "opendir"]) wrap(fs.promises as unknown as Record<string, unknown>, name);
  // `import { readFileSync } from "node:fs"` in an ES module recipe sees the wrapped functions too.
  syncBuiltinESMExports();

  return () => {
    process.env = realEnv;
    for (const [owner, name, original] of patched) (owner as Record<string, unknown>)[name] = original;
    syncBuiltinESMExports();
    return { files: [...files].sort(), env: Object.fromEntries([...env].sort(([a], [b]) => (a < b ? -1 : 1))) };
  };
}
