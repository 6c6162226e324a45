/**
 * Building one derivation: lock its outputs, run the builder (in the sandbox,
 * or in-process for builtins), then normalise, scan, hash and register each
 * output atomically. Whatever fails, nothing half-built becomes valid.
 */
import fs from "node:fs";
import path from "node:path";
import { spawner, type Exit } from "./spawner.js";
import { UkbError } from "../errors/index.js";
import { baseName, hashPart, type DrvRecord } from "../graph/index.js";
import { damagedDbError, explainNoSpace, formatBytes, isDamagedDb, freeBytes, hashTree, isSymlink, nearlyFull, NO_SPACE_HINT, normaliseTree, removeTree, scanReferences, type ContentKind, type Store } from "../store/index.js";
import { BUILD_TOP, findBwrap, sandboxArgs } from "./sandbox.js";
import { hostToolsOf, hostViewFor, type HostView } from "./host-view.js";
import { getBuiltin, resolveInStore } from "./builtins.js";
import { sandboxPool } from "./sandbox-pool.js";

/** A build that failed: what, how, and the end of its log. */
export class BuildFailedError extends UkbError {
  constructor(
    readonly drvName: string,
    readonly reason: string,
    readonly logFile: string | undefined,
    readonly logTail: readonly string[],
    hint?: string,
  ) {
    super("build", `build of '${drvName}' failed: ${reason}`, hint === undefined ? {} : { hint });
  }
}

/** What builders print when a write finds the disk full (strerror of ENOSPC and EDQUOT). */
const NO_SPACE_MESSAGES = /No space left on device|Disk quota exceeded/;

/**
 * A failed build on a full disk says so: the builder's own message is in its
 * log, but "exit status 1" alone would send the user looking in the recipe.
 */
export function withSpaceHint(err: BuildFailedError, root: string): BuildFailedError {
  if (err.hint !== undefined || !(nearlyFull(root) || err.logTail.some((l) => NO_SPACE_MESSAGES.test(l)))) return err;
  const free = freeBytes(root);
  const hint = `the store's filesystem${free === undefined ? "" : ` has ${formatBytes(free)} free`}: ${NO_SPACE_HINT}`;
  return new BuildFailedError(err.drvName, err.reason, err.logFile, err.logTail, hint);
}

/** A build stopped because the run was cancelled (another build failed, or the user interrupted). */
export class BuildCancelledError extends UkbError {
  constructor(readonly drvName: string) {
    super("build", `build of '${drvName}' was cancelled`);
  }
}

export interface BuildOptions {
  /** Threads a build may use (UKB_CORES). */
  cores: number;
  signal?: AbortSignal;
  /** Called if another process holds the lock and this build waits for it. */
  onWait?: (holder: string) => void;
  /** Options passed to builtins. */
  builtinOptions?: Readonly<Record<string, unknown>>;
  /**
   * Waits for a job slot and resolves with its release. Asked once the
   * sandbox is set up, right before the builder runs; the slot goes back as
   * soon as the builder exits (hashing and registering happen outside it).
   * Without it, the builder runs at once.
   */
  slot?: (signal?: AbortSignal) => Promise<() => void>;
  /** Called when the builder starts running. */
  onStart?: () => void;
  /**
   * The evaluation's derivations by hash: which host tools a build's inputs
   * were made with decides what it sees of the host (host-view.ts). Without
   * it, or for a hash it lacks, the store's record.
   */
  drvs?: Readonly<Record<string, DrvRecord>>;
}

export interface BuildResult {
  /** False when another process built it while this one waited. */
  readonly built: boolean;
  readonly ms: number;
}

const DEFAULT_EPOCH = 1;
const LOG_TAIL_LINES = 25;

function epochOf(drv: DrvRecord): number {
  const v = Number(drv.env.SOURCE_DATE_EPOCH ?? DEFAULT_EPOCH);
  return Number.isFinite(v) && v >= 0 ? Math.floor(v) : DEFAULT_EPOCH;
}

/** The environment a builder sees: only what is declared, plus ukb's fixed variables. */
export function buildEnv(drv: DrvRecord, cores: number): Record<string, string> {
  const env: Record<string, string> = {
    PATH: "/path-not-set",
    HOME: "/homeless-shelter",
    TMPDIR: "/tmp",
    TZ: "UTC",
    LC_ALL: "C",
    SOURCE_DATE_EPOCH: String(DEFAULT_EPOCH),
    ...drv.env,
    UKB_CORES: String(cores),
    UKB_BUILD_TOP: BUILD_TOP,
    PWD: BUILD_TOP,
  };
  for (const [o, p] of Object.entries(drv.outputs)) env[o] = p;
  return env;
}

/** The most of a log's end read for its tail: a log of gigabytes is not read whole. */
const TAIL_BYTES = 64 * 1024;
/** A line of the tail longer than this is cut (a minified file, a progress bar without newlines). */
const TAIL_LINE_CHARS = 300;

/**
 * The last lines of a build's log, fit for a terminal: each cut to a length,
 * control characters (escape sequences that would move the cursor, clear the
 * screen or retitle the window) shown as \xNN.
 */
function tail(file: string): string[] {
  let text: string;
  try {
    const fd = fs.openSync(file, "r");
    try {
      const size = fs.fstatSync(fd).size;
      const start = Math.max(0, size - TAIL_BYTES);
      const buf = Buffer.alloc(size - start);
      fs.readSync(fd, buf, 0, buf.length, start);
      text = buf.toString("utf8");
      // Cut inside the log: the first line is partial.
      if (start > 0) text = text.slice(text.indexOf("\n") + 1);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((l, i, all) => !(i === all.length - 1 && l === ""))
    .slice(-LOG_TAIL_LINES)
    .map((line) => {
      const shown = line.replace(/\r$/, "").replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
      return shown.length > TAIL_LINE_CHARS ? `${shown.slice(0, TAIL_LINE_CHARS)}… (${shown.length - TAIL_LINE_CHARS} more characters)` : shown;
    });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit status ${code}`;
}

/** Runs the builder of a command derivation in the sandbox; resolves on success. */
async function runSandboxed(store: Store, drv: DrvRecord, inputClosure: readonly string[], tmp: string, logFile: string, opts: BuildOptions): Promise<void> {
  const inputs = new Map<string, string>();
  for (const base of inputClosure) inputs.set(base, store.realPath(base));
  const { view, note } = hostViewFor(hostToolsOf(drv, (hash) => opts.drvs?.[hash] ?? store.getDrv(hash)));
  if (note) fs.appendFileSync(logFile, `${note}\n`);
  const spec = {
    storeDir: path.join(tmp, "store"),
    buildDir: path.join(tmp, "build"),
    inputs,
    env: buildEnv(drv, opts.cores),
    builder: drv.builder,
    args: drv.args,
    view,
  };
  // Set up behind a gate (a pooled sandbox where one can run, one bwrap for this build otherwise);
  // the builder starts once a job slot is ours.
  const gated =
    (await sandboxPool(store.root).prepare({ ...spec, log: logFile }, opts.signal)) ??
    (await spawner.runGated([findBwrap(), ...sandboxArgs(spec)], ["--block-fd", "3", "--info-fd", "4"], logFile, path.join(tmp, "builder.sh"), opts.signal));
  let release: () => void;
  try {
    release = await holdSlot(opts, drv);
  } catch (err) {
    // Cancelled while waiting: the sandbox is being killed; let it go before its folder does.
    await gated.exited;
    throw err;
  }
  let exit: Exit;
  try {
    opts.onStart?.();
    gated.go();
    exit = await gated.exited;
  } finally {
    release();
  }
  if (opts.signal?.aborted) throw new BuildCancelledError(drv.name);
  if (exit.code !== 0) throw describeExit(exit.code, exit.signal);
}

/**
 * Readies spare sandboxes for the first command builds of a plan (`drvs`, in
 * the order they will start; builtins run in ukb itself): each is given the
 * view of the system directories its build will see, which it mounts while
 * ukb is still planning.
 */
export function readySandboxes(store: Store, drvs: readonly DrvRecord[], lookup: Readonly<Record<string, DrvRecord>>): void {
  const views: HostView[] = [];
  for (const drv of drvs) {
    try {
      const { view } = hostViewFor(hostToolsOf(drv, (hash) => lookup[hash] ?? store.getDrv(hash)));
      if (view) views.push(view);
    } catch {
      // The build itself reports what is wrong, when it comes; the others' sandboxes are readied still.
    }
  }
  if (views.length > 0) sandboxPool(store.root).showViews(views);
}

/** Waits for a job slot (at once when the caller keeps none) and resolves with its release. */
async function holdSlot(opts: BuildOptions, drv: DrvRecord): Promise<() => void> {
  if (!opts.slot) return () => undefined;
  try {
    return await opts.slot(opts.signal);
  } catch (err) {
    if (opts.signal?.aborted) throw new BuildCancelledError(drv.name);
    throw err;
  }
}

/** A derivation's outputs, built and normalised in a staging folder, not yet in the store. */
export interface StagedOutputs {
  readonly infos: readonly { output: string; base: string; staged: string; contentHash: string; size: number; references: string[] }[];
}

/**
 * Runs a derivation's builder (sandboxed, or in-process for builtins) with
 * `tmp` as its scratch space, then normalises, scans and hashes every output
 * in `tmp/store`. Used to realise (then register) and to check (then compare).
 */
export async function buildInto(store: Store, drv: DrvRecord, tmp: string, logFile: string, opts: BuildOptions): Promise<StagedOutputs> {
  const outputBases = Object.values(drv.outputs).map(baseName);
  const inputClosure = store.closure(drv.inputPaths);
  store.assertPresent(inputClosure);
  const stagedStore = path.join(tmp, "store");
  fs.mkdirSync(stagedStore);
  fs.mkdirSync(path.join(tmp, "build"));
  const logFd = fs.openSync(logFile, "w");
  try {
    if (drv.builder.startsWith("builtin:")) {
      const outputs: Record<string, string> = {};
      for (const [o, p] of Object.entries(drv.outputs)) outputs[o] = path.join(stagedStore, baseName(p));
      const builtin = await getBuiltin(drv.builder);
      const release = await holdSlot(opts, drv);
      try {
        opts.onStart?.();
        await builtin({
          drv,
          outputs,
          realInput: (virtualPath) => resolveInStore(store.storeDir, virtualPath),
          epoch: epochOf(drv),
          scratch: path.join(tmp, "build"),
          log: (line) => fs.writeSync(logFd, line.endsWith("\n") ? line : `${line}\n`),
          signal: opts.signal ?? new AbortController().signal,
          options: opts.builtinOptions ?? {},
          store,
        });
      } finally {
        release();
      }
    } else {
      await runSandboxed(store, drv, inputClosure, tmp, logFile, opts);
    }
  } catch (err) {
    if (err instanceof BuildCancelledError) throw err;
    if (opts.signal?.aborted) throw new BuildCancelledError(drv.name);
    if (typeof err === "string") throw new BuildFailedError(drv.name, err, logFile, tail(logFile));
    if (err instanceof UkbError && err.kind !== "build") throw err;
    const reason = err instanceof UkbError ? err.message.replace(`build of '${drv.name}' `, "") : (err as Error).message;
    throw new BuildFailedError(drv.name, reason, logFile, tail(logFile));
  } finally {
    fs.closeSync(logFd);
  }

  // Normalise, scan and hash every output before any of them becomes visible.
  const candidates = new Map<string, string>();
  for (const b of inputClosure) candidates.set(hashPart(b), b);
  for (const b of outputBases) candidates.set(hashPart(b), b);
  const infos = [];
  for (const [output, virtualPath] of Object.entries(drv.outputs)) {
    const base = baseName(virtualPath);
    const staged = path.join(stagedStore, base);
    if (!fs.existsSync(staged) && !isSymlink(staged)) {
      throw new BuildFailedError(drv.name, `the builder succeeded but did not create its output '${output}' ($${output})`, logFile, tail(logFile));
    }
    try {
      await normaliseTree(staged, epochOf(drv));
    } catch (err) {
      // What the store cannot keep (a fifo, a name that is not UTF-8) is the build's failure, named.
      if (err instanceof UkbError && err.kind === "build") throw new BuildFailedError(drv.name, `${err.message.replace(/^the output/, `its output '${output}'`)}`, logFile, tail(logFile));
      throw err;
    }
    const refs = await scanReferences(staged, [...candidates.keys()]);
    const { blake3, size } = await hashTree(staged);
    infos.push({ output, base, staged, contentHash: blake3, size, references: [...refs].map((h) => candidates.get(h)!).sort() });
  }
  return { infos };
}

/**
 * Realises one derivation whose inputs are valid. Takes the lock of its
 * outputs first; if another process built them meanwhile, returns at once.
 */
export async function buildDerivation(store: Store, drv: DrvRecord, opts: BuildOptions): Promise<BuildResult> {
  const outputBases = Object.values(drv.outputs).map(baseName);
  let release: () => void;
  try {
    release = await store.locks.acquire(outputBases, opts.onWait, opts.signal);
  } catch (err) {
    if (opts.signal?.aborted) throw new BuildCancelledError(drv.name);
    // A lock is a row of the database: a full disk or a damaged file says so here first.
    throw isDamagedDb(err) ? damagedDbError(err, store.root) : explainNoSpace(err, store.root, `taking the lock to build '${drv.name}'`);
  }
  // The build's duration runs from its builder's start (not from waiting for a slot) to its registration.
  let started = performance.now();
  const onStart = () => {
    started = performance.now();
    opts.onStart?.();
  };
  let tmp: string | undefined;
  /** Outputs renamed into the store folder and not yet registered: removed if registration fails. */
  const moved: string[] = [];
  const mainBase = baseName(drv.outputs.out ?? drv.outputs[drv.outputNames[0]!]!);
  const logRel = path.join("logs", `${mainBase}.log`);
  const logFile = path.join(store.root, logRel);
  try {
    if (outputBases.every((b) => store.isValid(b))) return { built: false, ms: 0 };
    // Leftovers of a build that died between rename and registration.
    for (const b of outputBases) if (!store.isValid(b)) await store.discard(b);
    tmp = store.makeTempDir(drv.hash.slice(0, 12));
    const { infos } = await buildInto(store, drv, tmp, logFile, { ...opts, onStart });
    const content = new Map<string, { kind: ContentKind; hash: string }[]>();
    if (drv.fixed) {
      const { checkFixedOutput, contentKeys } = await import("./fixed.js");
      for (const i of infos) {
        await checkFixedOutput(drv, i.staged, i.contentHash);
        content.set(i.base, await contentKeys(i.staged, i.contentHash));
      }
    }
    // An output already valid (fetched from a cache with another output's closure) stays as it is:
    // the same path means the same derivation output.
    const fresh = infos.filter((i) => !store.isValid(i.base));
    for (const i of fresh) {
      await moveIntoStore(i.staged, store.realPath(i.base));
      moved.push(i.base);
    }
    const ms = Math.round(performance.now() - started);
    store.register(
      fresh.map((i) => ({
        base: i.base,
        contentHash: i.contentHash,
        size: i.size,
        references: i.references,
        deriver: drv.hash,
        buildMs: ms,
        log: logRel,
        ...(drv.fixed ? { ca: `${drv.fixed.algo}:${drv.fixed.hash}`, content: content.get(i.base) ?? [] } : {}),
      })),
      drv,
    );
    moved.length = 0;
    return { built: true, ms };
  } catch (err) {
    // Told before cleaning up, which frees room: the error says how full the disk was.
    const told =
      err instanceof BuildFailedError ? withSpaceHint(err, store.root) : isDamagedDb(err) ? damagedDbError(err, store.root) : explainNoSpace(err, store.root, `building '${drv.name}'`);
    // Nothing unregistered stays in the store folder, where `ukb store verify` would find it.
    for (const b of moved) if (!store.isValid(b)) await store.discard(b).catch(() => undefined);
    throw told;
  } finally {
    // Scratch folders go in the background: what depends on this build need not wait for them.
    if (tmp) forget(removeTree(tmp));
    release();
  }
}

const cleanups = new Set<Promise<unknown>>();
function forget(p: Promise<unknown>): void {
  const settled = p.catch(() => undefined).finally(() => cleanups.delete(settled));
  cleanups.add(settled);
}

/** Resolves once every scratch folder of finished builds is gone. */
export async function buildCleanups(): Promise<void> {
  while (cleanups.size > 0) await Promise.all([...cleanups]);
}

/** rename(2) of a directory to a new parent needs it writable; restore 0555 after. */
async function moveIntoStore(from: string, to: string): Promise<void> {
  const st = await fs.promises.lstat(from);
  if (st.isDirectory()) await fs.promises.chmod(from, 0o755);
  await fs.promises.rename(from, to);
  if (st.isDirectory()) await fs.promises.chmod(to, 0o555);
}
