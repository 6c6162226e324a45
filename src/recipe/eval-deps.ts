/**
 * What an evaluation depended on: recipe modules, host tools, local files,
 * and what the recipe's own code read of the host: files and folders through
 * `node:fs`, environment variables through `process.env`, the working folder
 * (`process.cwd()`, a relative path read). The loader keys its cache of
 * evaluated graphs on them, so a recipe is evaluated again exactly when one
 * of them changes (Nix forbids such reads in pure evaluation; ukb allows them
 * and remembers them instead).
 *
 * What no stamp can check makes an evaluation volatile, and the loader then
 * never caches it: a child process (`git describe` reads anything), the
 * network, the clock, chance (`Math.random`, `crypto.randomUUID`), the
 * host's figures in `node:os`. Left out on purpose: `performance.now()` and
 * `process.hrtime()` (durations a recipe times itself with), and reads by
 * native addons or child processes, which no wrapper here can see.
 *
 * Only calls made by the user's code count (the first frame of the stack
 * outside Node and ukb): esbuild copying the whole environment to start its
 * service, or the loader reading a recipe, would otherwise make every change
 * of the shell's environment a new evaluation.
 */
import fs from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { callerLocation, OWN_TREES, PACKAGE_ROOT } from "./location.js";

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
  for (const file of callerFiles(entry)) {
    if (file.startsWith("node:")) return false;
    return isUsers(file);
  }
  return false;
}

/**
 * Whether the user's code is behind a call: the first frame, looking through
 * Node's own (`util.promisify(exec)`, `path.resolve` asking for the working
 * folder) and ukb's dependencies' (a recipe running zx's `$`), that is not
 * one of them. ukb's own code stops the search: what it does for a recipe
 * (hostTools reading a program, the loader starting esbuild) it hashes or
 * records itself.
 */
function reachedFromUser(entry: AnyFn): boolean {
  for (const file of callerFiles(entry)) {
    if (file.startsWith("node:")) continue;
    if (OWN_TREES.some((t) => file.startsWith(t)) || file.startsWith(ownBin())) return false;
    if (isUsers(file)) return true;
  }
  return false;
}

function isUsers(file: string): boolean {
  return path.isAbsolute(file) && !ownTrees().some((t) => file.startsWith(t));
}

const ownBin = () => path.join(PACKAGE_ROOT, "bin") + path.sep;

/** The files of the frames below `entry`, nearest first (frames without one skipped; `file:` URLs as paths). */
function callerFiles(entry: AnyFn): string[] {
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  let sites: NodeJS.CallSite[] = [];
  try {
    Error.prepareStackTrace = (_err, callSites) => callSites;
    Error.stackTraceLimit = 24;
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, entry);
    sites = holder.stack as NodeJS.CallSite[];
  } finally {
    Error.prepareStackTrace = prepare;
    Error.stackTraceLimit = limit;
  }
  const files: string[] = [];
  for (const site of sites) {
    const name = site.getFileName();
    if (name) files.push(name.startsWith("file://") ? fileURLToPath(name) : name);
  }
  return files;
}

/** What a recording saw. */
export interface Recorded {
  /** Files and folders read (sorted, absolute). */
  readonly files: string[];
  /** Environment variables read: their values, or null when unset. */
  readonly env: Record<string, string | null>;
  /** The working folder, when the code depended on it (`process.cwd()`, a relative path read). */
  readonly cwd?: string;
  /** The first thing done whose result no stamp can check, and where: the evaluation must not be cached. */
  readonly volatile?: string;
}

type AnyFn = (...args: unknown[]) => unknown;

/**
 * Starts a new recording and returns a function that ends it. Until then,
 * `process.env`, `process.cwd`, the reading functions of `node:fs` and the
 * volatile functions (child processes, network, clock, chance, `node:os`)
 * note what the user's code does.
 */
export function startRecording(): () => Recorded {
  // Before fs is wrapped: finding them reads package.json files.
  ownTrees();
  files.clear();
  const env = new Map<string, string | null>();
  let cwd: string | undefined;
  let volatile: string | undefined;
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

  const restore: (() => void)[] = [];
  /**
   * Replaces `owner[name]` with `make(original)` until the recording ends. The wrapper keeps the
   * original's own properties (`realpathSync.native`), and promisify's custom form is wrapped
   * too: `promisify(execFile)` calls that, not execFile.
   */
  const replace = (owner: object, name: string, make: (original: AnyFn) => AnyFn) => {
    const target = owner as Record<string, unknown>;
    const original = target[name] as AnyFn | undefined;
    if (typeof original !== "function") return;
    const wrapper = make(original);
    for (const key of Reflect.ownKeys(original)) {
      if (key === "length" || key === "name" || key === "prototype" || Object.hasOwn(wrapper, key)) continue;
      const property = Object.getOwnPropertyDescriptor(original, key)!;
      if (key === PROMISIFY_CUSTOM && typeof property.value === "function") property.value = make(property.value as AnyFn);
      Object.defineProperty(wrapper, key, property);
    }
    // Defined, not assigned: some are getters (node:crypto's getRandomValues).
    const own = Object.getOwnPropertyDescriptor(owner, name);
    if (own && !own.configurable) return;
    Object.defineProperty(owner, name, { value: wrapper, writable: true, configurable: true, enumerable: own?.enumerable ?? false });
    restore.push(() => (own ? Object.defineProperty(owner, name, own) : delete target[name]));
  };

  // The working folder, when the user's code asks for it or reads a path relative to it.
  replace(process, "cwd", (original) => {
    const wrapper = function (this: unknown) {
      const here = original.call(this) as string;
      if (cwd === undefined && reachedFromUser(wrapper)) cwd = here;
      return here;
    };
    return wrapper;
  });

  // The reading functions, each noting its first argument when it is a path the user's code passed.
  const reading = (original: AnyFn): AnyFn => {
    const wrapper = function (this: unknown, ...args: unknown[]) {
      const p = args[0];
      if ((typeof p === "string" || p instanceof URL) && calledByUser(wrapper)) {
        const file = p instanceof URL ? fileURLToPath(p) : p;
        if (!path.isAbsolute(file)) cwd ??= process.cwd();
        files.add(path.resolve(file));
      }
      return original.apply(this, args);
    };
    return wrapper;
  };
  for (const name of ["readFileSync", "readFile", "readdirSync", "readdir", "existsSync", "exists", "statSync", "stat", "lstatSync", "lstat", "openSync", "open", "accessSync", "access", "readlinkSync", "readlink", "realpathSync", "realpath", "opendirSync", "opendir", "createReadStream"]) {
    replace(fs, name, reading);
  }
  for (const name of ["readFile", "readdir", "stat", "lstat", "open", "access", "readlink", "realpath", "opendir"]) replace(fs.promises, name, reading);

  // What no stamp can check: the first such call from the user's code makes the evaluation volatile.
  const noteVolatile = (what: string, entry: AnyFn) => {
    if (volatile === undefined && reachedFromUser(entry)) volatile = `${what} at ${whereInRecipe()}`;
  };
  const noting =
    (what: string) =>
    (original: AnyFn): AnyFn => {
      const wrapper = function (this: unknown, ...args: unknown[]) {
        noteVolatile(what, wrapper);
        return original.apply(this, args);
      };
      return wrapper;
    };
  // Required here, not imported: a no-op realise loads this module but never records.
  const builtin = createRequire(import.meta.url);
  const childProcess = builtin("node:child_process") as typeof import("node:child_process");
  const net = builtin("node:net") as typeof import("node:net");
  const dns = builtin("node:dns") as typeof import("node:dns");
  const crypto = builtin("node:crypto") as typeof import("node:crypto");
  const os = builtin("node:os") as typeof import("node:os");
  for (const name of ["spawn", "spawnSync", "exec", "execSync", "execFile", "execFileSync", "fork"]) replace(childProcess, name, noting(`runs a child process (${name})`));
  // http, https, tls and net all connect through a net.Socket, synchronously with the user's call.
  replace(net.Socket.prototype, "connect", noting("uses the network (a socket's connect)"));
  // fetch connects later, on its own stack: the call itself is the read. Node defines it lazily
  // (its first read loads undici): the getter is kept, and read only when the recipe calls fetch.
  const fetchProperty = Object.getOwnPropertyDescriptor(globalThis, "fetch");
  if (fetchProperty) {
    const realFetch = (): AnyFn => (fetchProperty.get ? fetchProperty.get.call(globalThis) : fetchProperty.value) as AnyFn;
    const fetchWrapper = function (this: unknown, ...args: unknown[]) {
      noteVolatile("uses the network (fetch)", fetchWrapper);
      return realFetch().apply(this, args);
    };
    Object.defineProperty(globalThis, "fetch", { value: fetchWrapper, writable: true, configurable: true, enumerable: fetchProperty.enumerable ?? false });
    restore.push(() => Object.defineProperty(globalThis, "fetch", fetchProperty));
  }
  for (const name of ["lookup", "resolve", "resolve4", "resolve6", "resolveAny", "resolveTxt", "resolveSrv", "resolveMx", "resolveCname", "reverse"]) {
    replace(dns, name, noting(`uses the network (dns.${name})`));
    replace(dns.promises, name, noting(`uses the network (dns.${name})`));
  }
  replace(Date, "now", noting("reads the clock (Date.now)"));
  // `new Date()` and `Date()` read the clock; `new Date(0)` does not.
  const RealDate = Date;
  const dateTraps: ProxyHandler<DateConstructor> = {
    construct(target, args, newTarget) {
      if (args.length === 0) noteVolatile("reads the clock (new Date())", dateTraps.construct as AnyFn);
      return Reflect.construct(target, args, newTarget) as object;
    },
    apply(target, self, args) {
      noteVolatile("reads the clock (Date())", dateTraps.apply as AnyFn);
      return Reflect.apply(target, self, args) as unknown;
    },
  };
  globalThis.Date = new Proxy(RealDate, dateTraps);
  restore.push(() => (globalThis.Date = RealDate));
  replace(Math, "random", noting("draws a random number (Math.random)"));
  for (const name of ["randomUUID", "randomBytes", "randomInt", "randomFillSync", "randomFill", "getRandomValues"]) replace(crypto, name, noting(`draws random bytes (crypto.${name})`));
  for (const name of ["randomUUID", "getRandomValues"]) {
    replace(globalThis.crypto, name, (original) => noting(`draws random bytes (crypto.${name})`)((...args: unknown[]) => original.apply(globalThis.crypto, args)));
  }
  for (const name of ["cpus", "freemem", "totalmem", "uptime", "loadavg", "networkInterfaces", "hostname", "userInfo", "homedir", "tmpdir", "release", "version", "availableParallelism", "getPriority"]) {
    replace(os, name, noting(`asks the host (os.${name})`));
  }
  // `import { readFileSync } from "node:fs"` in an ES module recipe sees the wrapped functions too.
  syncBuiltinESMExports();

  return () => {
    process.env = realEnv;
    for (const undo of restore.reverse()) undo();
    syncBuiltinESMExports();
    return {
      files: [...files].sort(),
      env: Object.fromEntries([...env].sort(([a], [b]) => (a < b ? -1 : 1))),
      ...(cwd !== undefined ? { cwd } : {}),
      ...(volatile !== undefined ? { volatile } : {}),
    };
  };
}

const PROMISIFY_CUSTOM = Symbol.for("nodejs.util.promisify.custom");

/** The recipe's file and line the current call came from (source-mapped), for a message. */
function whereInRecipe(): string {
  // Deep enough to get through Node's own frames (http.get to a socket's connect is a dozen).
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 50;
  let at: ReturnType<typeof callerLocation>;
  try {
    at = callerLocation();
  } finally {
    Error.stackTraceLimit = limit;
  }
  return at.file ? `${at.file}${at.line ? `:${at.line}` : ""}` : "the recipe";
}
