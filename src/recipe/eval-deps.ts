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
 * host's figures in `node:os`, a native addon loaded (its reads are not
 * seen). Left out on purpose: `performance.now()` and `process.hrtime()`
 * (durations a recipe times itself with).
 *
 * Only calls made by the user's code count (the first frame of the stack
 * outside Node and ukb): esbuild copying the whole environment to start its
 * service, or the loader reading a recipe, would otherwise make every change
 * of the shell's environment a new evaluation.
 */
import fs from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import path from "node:path";
import { types } from "node:util";
import { fileURLToPath } from "node:url";
import { callerLocation, isOwnCode, OWN_TREES, PACKAGE_ROOT } from "./location.js";

/**
 * What ukb's own recipe functions record (hostTools, local()), shared by every copy of this
 * module in the process (the CLI's bundle and the recipe API's). A relative path (a `.` in
 * PATH) ties the evaluation to the working folder.
 */
const shared = ((globalThis as Record<symbol, unknown>)[Symbol.for("ukb.evalDeps.3")] ??= { files: new Set<string>(), relative: false, env: new Set<string>() }) as {
  files: Set<string>;
  relative: boolean;
  env: Set<string>;
};
const files = shared.files;

export function recordDependency(file: string): void {
  if (!path.isAbsolute(file)) shared.relative = true;
  files.add(path.resolve(file));
}

/**
 * A native addon the recipe's require resolved to (`entry`: the resolver,
 * below which the caller is looked for). Noted at resolution, not only at
 * `process.dlopen`: an addon this process loaded already (better-sqlite3's,
 * for ukb's store) is taken from Node's module cache and never loaded again.
 */
export function recordNativeAddon(entry: (...args: never[]) => unknown): void {
  active?.noteVolatile(NATIVE_ADDON, entry as AnyFn, CHILD, "through");
}

/** An environment variable ukb's own recipe functions read for the recipe (hostTools: PATH). */
export function recordEnvDependency(key: string): void {
  shared.env.add(key);
}

/**
 * ukb's own code and its dependencies, transitively, where Node would find
 * them (an `npm install ukb` hoists them beside it): their reads are not the
 * recipe's. Found once, when a recording first needs to know (20–40 ms of
 * package.json reads, which most evaluations never need), with the
 * recording paused: those reads are ukb's.
 */
let own: string[] | undefined;
function ownTrees(): string[] {
  if (own) return own;
  const recording = active;
  active = undefined;
  try {
    return (own = findOwnTrees());
  } finally {
    active = recording;
  }
}

function findOwnTrees(): string[] {
  const found = new Set<string>([...OWN_TREES, ownModules(), ownBin()]);
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
  return [...found];
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
 * Whether the user's code is behind a call, looking through Node's frames
 * (`util.promisify(readFile)`, `path.resolve` asking for the working folder)
 * and packages' (the user's own, and ukb's dependencies: a recipe running
 * zx's `$` or glob):
 * - a frame of the user's own files (a recipe, a module it imports): yes;
 * - a frame of ukb's own code: no (what it does for a recipe, hostTools
 *   reading a program or the loader starting esbuild, it records itself),
 *   unless a frame of one of the user's packages came first: ukb's frame is
 *   then its require of that package, which was loading;
 * - Node's module loader, with `atLoad: "stop"`: no. A package reading the
 *   clock as it loads (lodash does) did it for itself, not for the recipe.
 *   A package reading a file as it loads (its data, its configuration) does
 *   read it for the recipe that imports it: reads pass `"through"`;
 * - the end of the stack with a frame of one of the user's packages on it:
 *   yes, a package's own continuation (an asynchronous walk, a process
 *   started on the next tick) of what the recipe asked for. Not with only
 *   ukb's dependencies' frames: their timers (a test runner's, esbuild's)
 *   run on ukb's behalf.
 */
function reachedFromUser(entry: AnyFn, atLoad: "stop" | "through"): boolean {
  let inUsersPackage = false;
  for (const file of callerFiles(entry)) {
    if (file.startsWith("node:internal/modules/") && atLoad === "stop") return false;
    if (file.startsWith("node:")) continue;
    if (isOwnCode(file) || file.startsWith(ownBin())) return inUsersPackage;
    if (!path.isAbsolute(file)) continue;
    if (!isUsers(file)) continue;
    if (file.includes(`${path.sep}node_modules${path.sep}`)) {
      inUsersPackage = true;
      continue;
    }
    return true;
  }
  return inUsersPackage;
}

/** Whether `file` is the user's (a recipe, a package of theirs), not ukb's own code nor one of its dependencies, wherever installed. */
export function isUsers(file: string): boolean {
  if (!path.isAbsolute(file)) return false;
  // ukb's own files and its node_modules, without finding where else its dependencies are (most
  // evaluations never need to know: only a hoisted install has them elsewhere).
  if (isOwnCode(file) || file.startsWith(ownBin()) || file.startsWith(ownModules())) return false;
  return !ownTrees().some((t) => file.startsWith(t));
}

const ownBin = () => path.join(PACKAGE_ROOT, "bin") + path.sep;
const ownModules = () => path.join(PACKAGE_ROOT, "node_modules") + path.sep;

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
  /** Of `files`, those whose metadata was read (stat): any change of it is a change, not only of content. */
  readonly statted: string[];
  /** The first thing done whose result no stamp can check, and where: the evaluation must not be cached. */
  readonly volatile?: string;
  /** Of `files`, one that changed between the recipe's first read of it and the recording's end: what it read may be neither version. */
  readonly changedWhileRead?: string;
}

/** What a file's stat says of its version (no change without one of these changing), or "missing". */
function versionOf(stat: (p: string) => fs.Stats, file: string): string {
  try {
    const st = stat(file);
    return `${st.mtimeMs}:${st.ctimeMs}:${st.size}:${st.ino}`;
  } catch {
    return "missing";
  }
}

type AnyFn = (...args: unknown[]) => unknown;

/**
 * Starts a new recording and returns a function that ends it. Until then,
 * `process.env`, `process.cwd`, the reading functions of `node:fs` and the
 * volatile functions (child processes, network, clock, chance, `node:os`)
 * note what the user's code does.
 */
export function startRecording(): () => Recorded {
  files.clear();
  shared.env.clear();
  shared.relative = false;
  let cwd: string | undefined;
  let volatile: string | undefined;
  const realEnv = process.env;
  // Values as the process started with them: a variable the recipe (or dotenv) sets, then reads, was not read of the host.
  const initialEnv: Record<string, string | undefined> = { ...realEnv };
  const env = new Map<string, string | null>();
  const recordEnv = (key: string) => {
    if (!env.has(key)) env.set(key, initialEnv[key] ?? null);
  };
  // What Node read at its start, for every recipe: the time zone and the locale that local dates and
  // Intl format with (which no wrapper sees being read).
  // (ICU takes its default locale from LC_ALL, then LC_MESSAGES, then LANG.)
  for (const key of ["TZ", "LANG", "LC_ALL", "LC_TIME", "LC_MESSAGES"]) recordEnv(key);
  const noteEnv = (key: string | symbol, trap: AnyFn) => {
    if (typeof key === "string" && !env.has(key) && calledByUser(trap)) recordEnv(key);
  };
  const traps: ProxyHandler<NodeJS.ProcessEnv> = {
    get(target, key) {
      active?.noteEnv(key, traps.get as AnyFn);
      return Reflect.get(target, key);
    },
    has(target, key) {
      active?.noteEnv(key, traps.has as AnyFn);
      return Reflect.has(target, key);
    },
    getOwnPropertyDescriptor(target, key) {
      active?.noteEnv(key, traps.getOwnPropertyDescriptor as AnyFn);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
    ownKeys(target) {
      active?.noteAllEnv(traps.ownKeys as AnyFn);
      return Reflect.ownKeys(target);
    },
  };
  // Enumerated by the user (`{ ...process.env }`, a filter of its keys): every variable is read, and
  // which ones there are (ENV_KEYS: a new one is a change too).
  const noteAllEnv = (trap: AnyFn) => {
    if (env.has(ENV_KEYS) || !calledByUser(trap)) return;
    for (const key of Object.keys(initialEnv)) recordEnv(key);
    env.set(ENV_KEYS, envKeys(initialEnv));
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
      active?.noteCwd(here, wrapper);
      return here;
    };
    return wrapper;
  });

  // The reading functions, each noting its first argument when it is a path the user's code passed.
  const statted = new Set<string>();
  /** Each file the user's code read, as it was when first read (before the recording wraps statSync). */
  const stat = fs.statSync;
  const versionAtRead = new Map<string, string>();
  /** Descriptors the user's code opened, to the paths they name: a stat of one is a stat of its file. */
  const opened = new Map<number, string>();
  const noteRead = (p: unknown, entry: AnyFn, how: { meta: boolean; tree: boolean; content: boolean }) => {
    // A descriptor: one the recipe opened is its file, read already; stdin (`echo x | ukb realise`),
    // or one ukb's parent passed down, is a stream no stamp can check.
    if (typeof p === "number") {
      const file = opened.get(p);
      if (file !== undefined) {
        if (how.meta) statted.add(file);
      } else if (how.content || how.meta) noteVolatile(`reads file descriptor ${p}`, entry, HOST, "through");
      return;
    }
    if (!(typeof p === "string" || p instanceof URL || Buffer.isBuffer(p)) || !reachedFromUser(entry, "through")) return;
    const given = p instanceof URL ? fileURLToPath(p) : p.toString();
    if (!path.isAbsolute(given)) cwd ??= process.cwd();
    const file = path.resolve(given);
    // /proc, /sys and devices change with no trace in their stat, and a device may have no end:
    // what the recipe reads of them is the moment's. Whether they are there is stamped.
    if (how.content && isKernelFile(file)) noteVolatile(`reads ${file}`, entry, HOST);
    files.add(file);
    if (!versionAtRead.has(file)) versionAtRead.set(file, versionOf(stat, file));
    if (how.meta) statted.add(file);
    // A recursive listing, or a copy of a folder: every folder and file below it was read.
    if (how.tree) for (const below of treeBelow(file)) files.add(below);
  };
  /**
   * A wrapper that tells the recording under way of each call (with the call's arguments and
   * itself, where the stack walk starts), then does what the original does.
   */
  const watching =
    (onCall: (args: unknown[], wrapper: AnyFn) => void) =>
    (original: AnyFn): AnyFn => {
      const wrapper = function (this: unknown, ...args: unknown[]) {
        onCall(args, wrapper);
        return original.apply(this, args);
      };
      return wrapper;
    };
  const reading = (how: { meta?: boolean; tree?: (args: unknown[]) => boolean; content?: boolean } = {}) =>
    watching((args, wrapper) => active?.noteRead(args[0], wrapper, { meta: how.meta ?? false, tree: how.tree?.(args) ?? false, content: how.content ?? false }));
  const recursive = (args: unknown[]) => typeof args[1] === "object" && args[1] !== null && (args[1] as { recursive?: unknown }).recursive === true;
  const always = () => true;
  const fsPromises = fs.promises as unknown as Record<string, unknown>;
  for (const name of ["readFileSync", "readFile", "open", "opendirSync", "opendir", "createReadStream", "openAsBlob"]) replace(fs, name, reading({ content: true }));
  replace(fs, "openSync", (original) => {
    const wrapper = function (this: unknown, ...args: unknown[]) {
      active?.noteRead(args[0], wrapper, { meta: false, tree: false, content: true });
      const fd = original.apply(this, args) as number;
      if (typeof args[0] === "string" || args[0] instanceof URL || Buffer.isBuffer(args[0])) {
        const given = args[0] instanceof URL ? fileURLToPath(args[0]) : args[0].toString();
        opened.set(fd, path.resolve(given));
      }
      return fd;
    };
    return wrapper;
  });
  // A descriptor's contents and metadata: its file's (opened above), or a stream's.
  for (const name of ["fstatSync", "fstat", "readSync", "read"]) replace(fs, name, reading({ meta: name.includes("stat"), content: !name.includes("stat") }));
  for (const name of ["readFile", "open", "opendir"]) replace(fsPromises, name, reading({ content: true }));
  for (const name of ["existsSync", "exists", "accessSync", "access", "readlinkSync", "readlink", "realpathSync", "realpath"]) replace(fs, name, reading());
  for (const name of ["access", "readlink", "realpath"]) replace(fsPromises, name, reading());
  // What a stat returns (a time, a size) may go into the graph: any change of it is a change.
  for (const name of ["statSync", "stat", "lstatSync", "lstat"]) replace(fs, name, reading({ meta: true }));
  for (const name of ["stat", "lstat"]) replace(fsPromises, name, reading({ meta: true }));
  for (const name of ["readdirSync", "readdir"]) replace(fs, name, reading({ tree: recursive, content: true }));
  replace(fsPromises, "readdir", reading({ tree: recursive, content: true }));
  // A copy reads its source: the recipe may read the copy.
  for (const name of ["copyFileSync", "copyFile", "cpSync", "cp"]) replace(fs, name, reading({ tree: always, content: true }));
  for (const name of ["copyFile", "cp"]) replace(fsPromises, name, reading({ tree: always, content: true }));

  // What no stamp can check makes the evaluation volatile. The reason told is the strongest seen
  // (zx draws a random id before it starts a process: the process is what the user should hear of).
  let volatileRank = 0;
  const noteVolatile = (what: string, entry: AnyFn, rank: number, atLoad: "stop" | "through" = "stop") => {
    if (rank > volatileRank && reachedFromUser(entry, atLoad)) {
      volatile = `${what} at ${whereInRecipe()}`;
      volatileRank = rank;
    }
  };
  // The wrappers report to whichever recording is under way: a package keeps the functions it found
  // as it loaded (lodash keeps Math.random), and calls them in later evaluations of this process.
  active = {
    noteEnv,
    noteAllEnv,
    noteEnvRead: (keys, entry) => {
      if (reachedFromUser(entry, "through")) for (const key of keys) recordEnv(key);
    },
    noteCwd: (here, entry) => {
      if (cwd === undefined && reachedFromUser(entry, "stop")) cwd = here;
    },
    noteRead,
    noteVolatile,
  };
  const noting = (what: string, rank: number) => watching((_args, wrapper) => active?.noteVolatile(what, wrapper, rank));
  // Required here, not imported: a no-op realise loads this module but never records.
  const builtin = createRequire(import.meta.url);
  const childProcess = builtin("node:child_process") as typeof import("node:child_process");
  const net = builtin("node:net") as typeof import("node:net");
  const dns = builtin("node:dns") as typeof import("node:dns");
  const crypto = builtin("node:crypto") as typeof import("node:crypto");
  const os = builtin("node:os") as typeof import("node:os");
  const workers = builtin("node:worker_threads") as typeof import("node:worker_threads");
  for (const name of ["spawn", "spawnSync", "exec", "execSync", "execFile", "execFileSync", "fork"]) replace(childProcess, name, noting(`runs a child process (${name})`, CHILD));
  replace(childProcess.ChildProcess.prototype, "spawn", noting("runs a child process (ChildProcess.spawn)", CHILD));
  // A worker's reads happen on another thread, where nothing is recorded.
  // A class: a Proxy keeps its prototype, `instanceof` and subclasses.
  const RealWorker = workers.Worker;
  const workerTraps: ProxyHandler<typeof RealWorker> = {
    construct(target, args, newTarget) {
      active?.noteVolatile("starts a worker thread (its reads are not seen)", workerTraps.construct as AnyFn, CHILD);
      return Reflect.construct(target, args, newTarget === WorkerProxy ? target : newTarget) as object;
    },
  };
  const WorkerProxy = new Proxy(RealWorker, workerTraps);
  const workerProperty = Object.getOwnPropertyDescriptor(workers, "Worker");
  if (workerProperty?.configurable) {
    Object.defineProperty(workers, "Worker", { ...workerProperty, ...("value" in workerProperty ? { value: WorkerProxy } : { get: () => WorkerProxy }) });
    restore.push(() => Object.defineProperty(workers, "Worker", workerProperty));
  }
  // A native addon's code reads what it likes, unseen (a first load; one already loaded is seen
  // where the recipe's require resolves it, recordNativeAddon).
  // Node's loader calls it for the recipe's require: the caller that counts is the one below it.
  replace(process, "dlopen", watching((_args, wrapper) => active?.noteVolatile(NATIVE_ADDON, wrapper, CHILD, "through")));
  // http, https, tls and net all connect through a net.Socket, synchronously with the user's call.
  replace(net.Socket.prototype, "connect", noting("uses the network (a socket's connect)", NETWORK));
  // fetch connects later, on its own stack: the call itself is the read. Node defines it lazily
  // (its first read loads undici): the getter is kept, and read only when the recipe calls fetch.
  const fetchProperty = Object.getOwnPropertyDescriptor(globalThis, "fetch");
  if (fetchProperty) {
    const realFetch = (): AnyFn => (fetchProperty.get ? fetchProperty.get.call(globalThis) : fetchProperty.value) as AnyFn;
    const fetchWrapper = function (this: unknown, ...args: unknown[]) {
      active?.noteVolatile("uses the network (fetch)", fetchWrapper, NETWORK);
      return realFetch().apply(this, args);
    };
    Object.defineProperty(globalThis, "fetch", { value: fetchWrapper, writable: true, configurable: true, enumerable: fetchProperty.enumerable ?? false });
    restore.push(() => Object.defineProperty(globalThis, "fetch", fetchProperty));
  }
  // Name resolution: the module's functions and both Resolver classes' methods (what the module's call).
  const dnsNames = ["lookup", "lookupService", "resolve", "resolve4", "resolve6", "resolveAny", "resolveCaa", "resolveCname", "resolveMx", "resolveNaptr", "resolveNs", "resolvePtr", "resolveSoa", "resolveSrv", "resolveTxt", "reverse"];
  for (const owner of [dns, dns.promises, dns.Resolver.prototype, dns.promises.Resolver.prototype]) {
    for (const name of dnsNames) replace(owner, name, noting(`uses the network (dns.${name})`, NETWORK));
  }
  replace(Date, "now", noting("reads the clock (Date.now)", HOST));
  // `new Date()` and `Date()` read the clock; `new Date(0)` does not. Dates made meanwhile name the
  // proxy as their constructor (`d.constructor === Date` holds; `new d.constructor()` is seen).
  const RealDate = Date;
  const dateTraps: ProxyHandler<DateConstructor> = {
    construct(target, args, newTarget) {
      if (args.length === 0) active?.noteVolatile("reads the clock (new Date())", dateTraps.construct as AnyFn, HOST);
      return Reflect.construct(target, args, newTarget === DateProxy ? target : newTarget) as object;
    },
    apply(target, self, args) {
      active?.noteVolatile("reads the clock (Date())", dateTraps.apply as AnyFn, HOST);
      return Reflect.apply(target, self, args) as unknown;
    },
  };
  const DateProxy = new Proxy(RealDate, dateTraps);
  const dateConstructor = Object.getOwnPropertyDescriptor(RealDate.prototype, "constructor")!;
  globalThis.Date = DateProxy;
  Object.defineProperty(RealDate.prototype, "constructor", { ...dateConstructor, value: DateProxy });
  restore.push(() => {
    globalThis.Date = RealDate;
    Object.defineProperty(RealDate.prototype, "constructor", dateConstructor);
  });
  // Formatting "now": Intl's format() with no date reads the clock.
  const dateTimeFormat = Intl.DateTimeFormat.prototype as unknown as Record<string, unknown>;
  const formatGetter = Object.getOwnPropertyDescriptor(dateTimeFormat, "format");
  if (formatGetter?.get && formatGetter.configurable) {
    const getFormat = formatGetter.get;
    const formats = new WeakMap<object, (date?: Date | number) => string>();
    Object.defineProperty(dateTimeFormat, "format", {
      ...formatGetter,
      get(this: Intl.DateTimeFormat) {
        // One per formatter, as Node's own (`f.format === f.format`).
        let format = formats.get(this);
        if (!format) {
          const bound = getFormat.call(this) as (date?: Date | number) => string;
          const wrapper = (date?: Date | number) => {
            if (date === undefined) active?.noteVolatile("reads the clock (Intl.DateTimeFormat format())", wrapper as AnyFn, HOST);
            return bound(date);
          };
          formats.set(this, (format = wrapper));
        }
        return format;
      },
    });
    restore.push(() => Object.defineProperty(dateTimeFormat, "format", formatGetter));
  }
  replace(
    dateTimeFormat,
    "formatToParts",
    watching((args, wrapper) => args[0] === undefined && active?.noteVolatile("reads the clock (Intl.DateTimeFormat formatToParts())", wrapper, HOST)),
  );
  replace(Math, "random", noting("draws a random number (Math.random)", HOST));
  // Every name of the same functions (pseudoRandomBytes, prng and rng are randomBytes), and keys, which are random too.
  const randomNames = ["randomUUID", "randomBytes", "pseudoRandomBytes", "prng", "rng", "randomInt", "randomFillSync", "randomFill", "getRandomValues", "generateKeyPair", "generateKeyPairSync", "generateKey", "generateKeySync", "generatePrime", "generatePrimeSync", "createECDH", "createDiffieHellman", "createDiffieHellmanGroup", "getDiffieHellman"];
  for (const name of randomNames) replace(crypto, name, noting(`draws random bytes (crypto.${name})`, HOST));
  for (const name of ["randomUUID", "getRandomValues"]) {
    replace(globalThis.crypto, name, (original) => noting(`draws random bytes (crypto.${name})`, HOST)((...args: unknown[]) => original.apply(globalThis.crypto, args)));
  }
  const subtle = globalThis.crypto.subtle;
  for (const name of ["generateKey", "deriveKey", "deriveBits"]) {
    replace(subtle, name, (original) => noting(`draws random bytes (crypto.subtle.${name})`, HOST)((...args: unknown[]) => original.apply(subtle, args)));
  }
  // structuredClone cannot clone a Proxy: it gets the variables themselves (all of them read).
  replace(globalThis, "structuredClone", (original) => {
    const wrapper = function (this: unknown, value: unknown, ...rest: unknown[]) {
      if (value === process.env) {
        active?.noteAllEnv(wrapper as AnyFn);
        return original.call(this, { ...realEnv }, ...rest);
      }
      return original.call(this, value, ...rest);
    };
    return wrapper as AnyFn;
  });
  // util.inspect shows a Proxy's target without its traps: what it prints of process.env is every
  // variable, read. format() and formatWithOptions() inspect their arguments the same way.
  const util = builtin("node:util") as typeof import("node:util");
  for (const name of ["inspect", "format", "formatWithOptions"]) replace(util, name, watching((args, wrapper) => holdsEnv(args) && active?.noteAllEnv(wrapper)));
  for (const name of ["cpus", "freemem", "totalmem", "uptime", "loadavg", "networkInterfaces", "hostname", "userInfo", "release", "version", "availableParallelism", "getPriority"]) {
    replace(os, name, noting(`asks the host (os.${name})`, HOST));
  }
  // The process's own clocks and figures: the moment's, like Date.now. hrtime.bigint is wrapped
  // first, so that the wrapped hrtime carries the wrapped bigint.
  replace(performance, "now", noting("reads the clock (performance.now)", HOST));
  replace(process.hrtime, "bigint", noting("reads the clock (process.hrtime.bigint)", HOST));
  replace(process, "hrtime", noting("reads the clock (process.hrtime)", HOST));
  for (const name of ["uptime", "cpuUsage", "resourceUsage", "memoryUsage"]) replace(process, name, noting(`asks the host (process.${name})`, HOST));
  // Values, not functions: a getter for the evaluation's time stands for them.
  const valueGetters: [object, string, string][] = [
    [process, "pid", "asks the host (process.pid)"],
    [process, "ppid", "asks the host (process.ppid)"],
    // How ukb was run (`--jobs 4` or `-A kernel`) is no file's: a recipe that looks at it is evaluated each time.
    [process, "argv", "reads ukb's command line (process.argv)"],
    [performance, "timeOrigin", "reads the clock (performance.timeOrigin)"],
  ];
  for (const [owner, name, what] of valueGetters) {
    let holder: object | null = owner;
    while (holder && !Object.hasOwn(holder, name)) holder = Object.getPrototypeOf(holder) as object | null;
    const property = holder && Object.getOwnPropertyDescriptor(holder, name);
    if (!property?.configurable) continue;
    const read = property.get ? () => property.get!.call(owner) : () => property.value;
    const getter = function () {
      active?.noteVolatile(what, getter, HOST);
      return read();
    };
    // An assignment (Node's own `process.argv[1] = …` is a write to the array, not to this) is kept.
    const setter = function (value: unknown) {
      Object.defineProperty(owner, name, { value, writable: true, configurable: true, enumerable: property.enumerable ?? true });
    };
    Object.defineProperty(owner, name, { get: getter, set: setter, configurable: true, enumerable: property.enumerable ?? true });
    restore.push(() => (holder === owner ? Object.defineProperty(owner, name, property) : delete (owner as Record<string, unknown>)[name]));
  }
  // These only read environment variables (and the user's passwd entry, when HOME is unset).
  const envBacked: [string, string[]][] = [
    ["homedir", ["HOME"]],
    ["tmpdir", ["TMPDIR", "TMP", "TEMP"]],
  ];
  for (const [name, keys] of envBacked) replace(os, name, watching((_args, wrapper) => active?.noteEnvRead(keys, wrapper)));
  // `import { readFileSync } from "node:fs"` in an ES module recipe sees the wrapped functions too.
  syncBuiltinESMExports();

  return () => {
    active = undefined;
    process.env = realEnv;
    for (const undo of restore.reverse()) undo();
    syncBuiltinESMExports();
    if (shared.relative) cwd ??= process.cwd();
    for (const key of shared.env) recordEnv(key);
    // Edited while the recipe ran (an editor saving, a generator writing): the stamps taken now
    // would describe a version the recipe may not have read.
    const changedWhileRead = [...versionAtRead].find(([file, version]) => versionOf(stat, file) !== version)?.[0];
    return {
      ...(changedWhileRead !== undefined ? { changedWhileRead } : {}),
      files: [...files].sort(),
      env: Object.fromEntries([...env].sort(([a], [b]) => (a < b ? -1 : 1))),
      ...(cwd !== undefined ? { cwd } : {}),
      statted: [...statted].sort(),
      ...(volatile !== undefined ? { volatile } : {}),
    };
  };
}

const PROMISIFY_CUSTOM = Symbol.for("nodejs.util.promisify.custom");

/**
 * Whether what util.inspect is given shows the environment: process.env or
 * process, or an array, object, Map or Set holding one, as deep as the call
 * asks inspect to print (its `depth` option, default 2). Bounded, so that
 * inspecting a large Buffer or array costs what inspect itself does: typed
 * arrays and buffers are skipped, 100 entries of each collection looked at,
 * 5000 values in all; data properties only, no getter run, no other Proxy's
 * traps. (A getter printed with `getters: true` is not followed.)
 */
function holdsEnv(values: unknown[]): boolean {
  let maxDepth = 3;
  for (const v of values) {
    if (typeof v !== "object" || v === null || Array.isArray(v) || types.isProxy(v)) continue;
    const depth = Object.getOwnPropertyDescriptor(v, "depth")?.value as unknown;
    if (depth === null || depth === Infinity) maxDepth = 20;
    else if (typeof depth === "number") maxDepth = Math.max(maxDepth, Math.min(20, depth + 1));
  }
  const queue: [object, number][] = [];
  let found = false;
  const consider = (value: unknown, depth: number) => {
    if (value === process.env || value === process) found = true;
    else if (typeof value === "object" && value !== null && depth <= maxDepth && queue.length < 5000) queue.push([value, depth]);
  };
  for (const v of values) consider(v, 0);
  const seen = new Set<object>();
  for (let i = 0; i < queue.length && !found; i++) {
    const [value, depth] = queue[i]!;
    if (seen.has(value) || types.isProxy(value) || ArrayBuffer.isView(value) || types.isAnyArrayBuffer(value)) continue;
    seen.add(value);
    if (types.isMap(value) || types.isSet(value)) {
      let n = 0;
      // The prototype's iterator: a subclass's own is not run.
      const entries = types.isMap(value) ? Map.prototype.entries.call(value) : Set.prototype.values.call(value);
      for (const entry of entries as Iterable<unknown>) {
        if (n++ >= 100) break;
        if (types.isMap(value)) for (const part of entry as [unknown, unknown]) consider(part, depth + 1);
        else consider(entry, depth + 1);
      }
      continue;
    }
    const keys = Array.isArray(value) ? Array.from({ length: Math.min(value.length, 100) }, (_, k) => String(k)) : Object.keys(value).slice(0, 100);
    for (const key of keys) {
      const property = Object.getOwnPropertyDescriptor(value, key);
      if (property && "value" in property) consider(property.value, depth + 1);
    }
  }
  return found;
}

/** How strongly a volatile evaluation's reason is told: the strongest seen wins. */
const CHILD = 3;
const NETWORK = 2;
const HOST = 1;
const NATIVE_ADDON = "loads a native addon (what it reads is not seen)";

/** What the wrappers report to: the recording under way, if any. */
let active:
  | {
      noteEnv(key: string | symbol, trap: AnyFn): void;
      noteAllEnv(trap: AnyFn): void;
      noteEnvRead(keys: string[], entry: AnyFn): void;
      noteCwd(here: string, entry: AnyFn): void;
      noteRead(p: unknown, entry: AnyFn, how: { meta: boolean; tree: boolean; content: boolean }): void;
      noteVolatile(what: string, entry: AnyFn, rank: number, atLoad?: "stop" | "through"): void;
    }
  | undefined;

/** The recorded entry that stands for which variables there are (no variable's name is empty). */
export const ENV_KEYS = "";

/** The names of an environment's variables, as ENV_KEYS records them. */
export function envKeys(env: Record<string, string | undefined>): string {
  return Object.keys(env)
    .filter((k) => env[k] !== undefined)
    .sort()
    .join("\0");
}

/** Files of the kernel's (/proc, /sys) and devices (/dev): their stat says nothing of what reading them gives. */
export function isKernelFile(file: string): boolean {
  return /^\/(proc|sys|dev)(\/|$)/.test(file);
}

/** Every folder and file below `dir` (nothing for a file), for a recursive listing or copy. */
function treeBelow(dir: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      found.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return found;
}

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
