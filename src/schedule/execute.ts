/**
 * The executor: runs a plan with at most `jobs` jobs at once — builds, and
 * substitutions from binary caches — each starting as soon as what it needs
 * is valid. A job holds one of the `jobs` slots only while its builder runs
 * (or its download transfers); up to as many jobs again are on either side
 * of their slot, their sandbox being set up or their output hashed and
 * registered, so a slot never waits for ukb's own work. A failed substitution is reported (a warning) and the derivation
 * is built instead, its inputs first. A failed build skips what depends on
 * it and, unless `keepGoing`, cancels the jobs still running.
 */
import { setMaxListeners } from "node:events";
import { baseName, type DrvRecord } from "../graph/index.js";
import { buildCleanups, buildDerivation, BuildCancelledError, BuildFailedError, readySandboxes } from "../build/index.js";
import { isUkbError, permissionDenied, UkbError } from "../errors/index.js";
import { explainNoSpace, isNoSpace, type Store } from "../store/index.js";
import type { CacheSet } from "../cache/index.js";
import type { Plan, PlannedSubstitution } from "./plan.js";
import type { Listener } from "./events.js";
import { Slots } from "./slots.js";

export interface ExecuteOptions {
  jobs: number;
  cores: number;
  keepGoing?: boolean;
  listener?: Listener;
  signal?: AbortSignal;
  builtinOptions?: Readonly<Record<string, unknown>>;
  /** The caches the plan's substitutions come from (needed when it has any). */
  caches?: CacheSet;
}

export interface ExecuteResult {
  readonly built: readonly DrvRecord[];
  readonly substituted: readonly DrvRecord[];
  readonly failed: readonly { drv: DrvRecord; error: UkbError }[];
  readonly skipped: readonly DrvRecord[];
  readonly ms: number;
}

type State = "waiting" | "ready" | "running" | "done" | "failed" | "skipped";

/** Why a job waits for its lock: another build or fetch of the same paths, in this process or another. */
const LOCK_HELD = "another build or fetch of its outputs holds their lock";

interface Job {
  readonly drv: DrvRecord;
  sub: PlannedSubstitution | undefined;
  /** Jobs this one waits for. */
  readonly deps: Set<string>;
  /** Jobs waiting for this one. */
  readonly users: Set<string>;
  state: State;
}

const mainPath = (d: DrvRecord) => d.outputs.out ?? Object.values(d.outputs)[0]!;

export async function execute(store: Store, plan: Plan, opts: ExecuteOptions): Promise<ExecuteResult> {
  const started = performance.now();
  const emit = opts.listener ?? (() => undefined);
  const jobs = new Map<string, Job>();
  const ready: Job[] = [];
  const built: DrvRecord[] = [];
  const substituted: DrvRecord[] = [];
  const failed: { drv: DrvRecord; error: UkbError }[] = [];
  const skipped: DrvRecord[] = [];
  const cancel = new AbortController();
  // Every job waiting for a slot or running listens to it: no "memory leak" warning past 10.
  setMaxListeners(0, cancel.signal);
  const onOuterAbort = () => cancel.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  let running = 0;
  let stopping = false;
  const slots = new Slots(opts.jobs);
  // Jobs under way at once: those holding a slot, plus as many being prepared or finished.
  const pipelines = 2 * Math.max(1, opts.jobs);
  const substitution = plan.toSubstitute.length > 0 ? await import("../cache/substitute.js") : undefined;
  if (plan.toSubstitute.length > 0 && !opts.caches) throw new UkbError("internal", "a plan with substitutions needs its caches");

  for (const d of plan.toBuild) jobs.set(d.hash, { drv: d, sub: undefined, deps: new Set(), users: new Set(), state: "waiting" });
  for (const s of plan.toSubstitute) jobs.set(s.drv.hash, { drv: s.drv, sub: s, deps: new Set(), users: new Set(), state: "waiting" });
  const link = (job: Job, dep: string) => {
    const d = jobs.get(dep);
    if (!d || d.state === "done") return;
    job.deps.add(dep);
    d.users.add(job.drv.hash);
  };
  for (const job of jobs.values()) for (const dep of job.sub ? job.sub.after : Object.keys(job.drv.inputDrvs)) link(job, dep);
  for (const d of [...plan.toSubstitute.map((s) => s.drv), ...plan.toBuild]) {
    const job = jobs.get(d.hash)!;
    if (job.deps.size === 0) {
      job.state = "ready";
      ready.push(job);
    }
  }

  const skipUsers = (job: Job, reason: string) => {
    for (const u of job.users) {
      const user = jobs.get(u)!;
      if (user.state !== "waiting" && user.state !== "ready") continue;
      if (user.state === "ready") ready.splice(ready.indexOf(user), 1);
      user.state = "skipped";
      skipped.push(user.drv);
      emit({ type: "skipped", name: user.drv.name, drv: user.drv.hash, reason });
      skipUsers(user, reason);
    }
  };

  const finished = (job: Job) => {
    job.state = "done";
    for (const u of job.users) {
      const user = jobs.get(u)!;
      user.deps.delete(job.drv.hash);
      if (user.deps.size === 0 && user.state === "waiting") {
        user.state = "ready";
        ready.push(user);
      }
    }
  };

  /**
   * Turns a substitution that failed into a build: its inputs become jobs
   * (built) unless valid or already planned. Returns false if one of them
   * already failed.
   */
  const fallBackToBuild = (job: Job): boolean => {
    job.sub = undefined;
    const ensure = (hash: string): Job | "valid" => {
      const existing = jobs.get(hash);
      if (existing) return existing;
      const d = plan.graph.drvs[hash]!;
      if (Object.values(d.outputs).every((p) => store.isValid(p))) return "valid";
      const j: Job = { drv: d, sub: undefined, deps: new Set(), users: new Set(), state: "waiting" };
      jobs.set(hash, j);
      for (const i of Object.keys(d.inputDrvs)) {
        const dep = ensure(i);
        if (dep !== "valid" && dep.state !== "done") {
          j.deps.add(i);
          dep.users.add(hash);
        }
      }
      if (j.deps.size === 0) {
        j.state = "ready";
        ready.push(j);
      }
      return j;
    };
    let ok = true;
    for (const i of Object.keys(job.drv.inputDrvs)) {
      const dep = ensure(i);
      if (dep === "valid" || dep.state === "done") continue;
      if (dep.state === "failed" || dep.state === "skipped") ok = false;
      job.deps.add(i);
      dep.users.add(job.drv.hash);
    }
    return ok;
  };

  /** A job that failed (or was cancelled): reported, its users skipped, the run stopped unless --keep-going. */
  const fail = (job: Job, error: UkbError): void => {
    const d = job.drv;
    if (error instanceof BuildCancelledError) {
      job.state = "skipped";
      skipped.push(d);
      emit({ type: "skipped", name: d.name, drv: d.hash, reason: "cancelled" });
    } else {
      job.state = "failed";
      failed.push({ drv: d, error });
      emit({
        type: "failed",
        name: d.name,
        drv: d.hash,
        message: error.message,
        ...(error.hint ? { hint: error.hint } : {}),
        ...(error instanceof BuildFailedError && error.logFile ? { logFile: error.logFile, logTail: error.logTail } : {}),
      });
    }
    skipUsers(job, error instanceof BuildCancelledError ? `its input '${d.name}' was cancelled` : `its input '${d.name}' failed`);
    if (!opts.keepGoing && !stopping) {
      stopping = true;
      cancel.abort(new UkbError("build", "cancelled after a failure"));
    }
  };

  /** The graph's fixed-output derivations by output base (made once, when a substitution first asks). */
  let fixedByBase: Map<string, DrvRecord> | undefined;
  const fixedOutputs = (): Map<string, DrvRecord> => {
    if (fixedByBase) return fixedByBase;
    fixedByBase = new Map();
    for (const drv of Object.values(plan.graph.drvs)) if (drv.fixed) for (const p of Object.values(drv.outputs)) fixedByBase.set(baseName(p), drv);
    return fixedByBase;
  };

  const runSubstitution = async (job: Job, sub: PlannedSubstitution): Promise<{ bytes: number }> => {
    const d = job.drv;
    const outputs = new Set(Object.values(d.outputs).map(baseName));
    const progress = { bytes: 0 };
    await substitution!.substitute(store, opts.caches!, sub.hits, {
      ...opts.caches!.options,
      drv: d,
      signal: cancel.signal,
      progress,
      // Locks first, then a slot, as for a build: a job that holds a slot never waits for a lock.
      slot: (signal) => slots.acquire(signal),
      onWait: (holder) => emit({ type: "waiting", name: d.name, drv: d.hash, reason: `${LOCK_HELD} (${holder})` }),
      check: async (base, staged, contentHash) => {
        // This derivation's own fixed output, or one of the graph's that comes along as a reference:
        // either way its content must be the pinned hash, whatever the cache's entry says of it
        // (with --no-verify no signature vouches for that entry).
        const pinned = d.fixed && outputs.has(base) ? d : fixedOutputs().get(base);
        if (!pinned) return [];
        const { checkFixedOutput, contentKeys } = await import("../build/fixed.js");
        await checkFixedOutput(pinned, staged, contentHash);
        return contentKeys(staged, contentHash);
      },
    });
    return progress;
  };

  // The first builds to run (inputs come first in toBuild): their sandboxes mount their views now.
  readySandboxes(store, plan.toBuild.filter((d) => !d.builder.startsWith("builtin:")).slice(0, opts.jobs), plan.graph.drvs);

  await new Promise<void>((resolveAll) => {
    const pump = () => {
      while (!stopping && running < pipelines && ready.length > 0) {
        const job = ready.shift()!;
        const d = job.drv;
        job.state = "running";
        running++;
        // Where the user finds it, as the plan event says: the store's real folder, not /ukb/store.
        const path = store.realPath(mainPath(d));
        const sub = job.sub;
        const begun = performance.now();
        let work: Promise<unknown>;
        if (sub) {
          const cache = sub.hits[sub.hits.length - 1]!.cache;
          emit({ type: "substitute-start", name: d.name, drv: d.hash, path, cache });
          work = runSubstitution(job, sub).then(
            ({ bytes }) => {
              substituted.push(d);
              emit({ type: "substituted", name: d.name, drv: d.hash, path, cache, ms: Math.round(performance.now() - begun), bytes });
              finished(job);
            },
            (err: unknown) => {
              if (cancel.signal.aborted) {
                job.state = "skipped";
                skipped.push(d);
                emit({ type: "skipped", name: d.name, drv: d.hash, reason: "cancelled" });
                skipUsers(job, `its input '${d.name}' was cancelled`);
                return;
              }
              // A full disk is no fault of the cache, and a local build would find it as full.
              if (isNoSpace(err)) return fail(job, explainNoSpace(err, store.root, `fetching '${d.name}' from ${cache}`) as UkbError);
              const message = isUkbError(err) ? err.message : `${(err as Error)?.message ?? String(err)}`;
              emit({ type: "cache-warning", cache, message: `${message}; building '${d.name}' locally`, name: d.name, drv: d.hash });
              job.state = "waiting";
              if (!fallBackToBuild(job)) {
                job.state = "skipped";
                skipped.push(d);
                emit({ type: "skipped", name: d.name, drv: d.hash, reason: "an input it now needs failed" });
                skipUsers(job, `its input '${d.name}' was skipped`);
              } else if (job.deps.size === 0) {
                job.state = "ready";
                ready.push(job);
              }
            },
          );
        } else {
          work = buildDerivation(store, d, {
            cores: opts.cores,
            drvs: plan.graph.drvs,
            signal: cancel.signal,
            slot: (signal) =>
              slots.acquire(signal).then((release) => () => {
                release();
                emit({ type: "registering", name: d.name, drv: d.hash });
              }),
            onStart: () => emit({ type: "start", name: d.name, drv: d.hash, path }),
            onWait: (holder) => emit({ type: "waiting", name: d.name, drv: d.hash, reason: `${LOCK_HELD} (${holder})` }),
            ...(opts.builtinOptions ? { builtinOptions: opts.builtinOptions } : {}),
          }).then(
            (result) => {
              built.push(d);
              emit({ type: "done", name: d.name, drv: d.hash, path, ms: result.ms, builtHere: result.built });
              finished(job);
            },
            (err: unknown) =>
              fail(job, err instanceof UkbError ? err : (permissionDenied(err, `building '${d.name}'`) ?? new UkbError("internal", `building '${d.name}': ${(err as Error)?.stack ?? String(err)}`))),
          );
        }
        work.finally(() => {
          running--;
          pump();
        });
      }
      if (running === 0 && (stopping || ready.length === 0)) resolveAll();
    };
    pump();
  });
  await buildCleanups();
  opts.signal?.removeEventListener("abort", onOuterAbort);
  // Whatever never became ready (stopped early) counts as skipped.
  for (const job of jobs.values()) {
    if (job.state === "waiting" || job.state === "ready") {
      job.state = "skipped";
      skipped.push(job.drv);
      emit({ type: "skipped", name: job.drv.name, drv: job.drv.hash, reason: "not started after a failure" });
    }
  }
  const ms = Math.round(performance.now() - started);
  emit({ type: "finish", built: built.length, failed: failed.length, skipped: skipped.length, ms, ...(substituted.length > 0 ? { substituted: substituted.length } : {}) });
  return { built, substituted, failed, skipped, ms };
}
