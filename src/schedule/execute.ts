/**
 * The executor: runs a plan with at most `jobs` builds at once, each starting
 * as soon as its inputs are valid. A failure skips what depends on it and,
 * unless `keepGoing`, cancels the builds still running.
 */
import { dependents, type DrvRecord } from "../graph/index.js";
import { buildDerivation, BuildCancelledError, BuildFailedError } from "../build/index.js";
import { UkbError } from "../errors/index.js";
import type { Store } from "../store/index.js";
import type { Plan } from "./plan.js";
import type { Listener } from "./events.js";

export interface ExecuteOptions {
  jobs: number;
  cores: number;
  keepGoing?: boolean;
  listener?: Listener;
  signal?: AbortSignal;
  builtinOptions?: Readonly<Record<string, unknown>>;
}

export interface ExecuteResult {
  readonly built: readonly DrvRecord[];
  readonly failed: readonly { drv: DrvRecord; error: UkbError }[];
  readonly skipped: readonly DrvRecord[];
  readonly ms: number;
}

export async function execute(store: Store, plan: Plan, opts: ExecuteOptions): Promise<ExecuteResult> {
  const started = performance.now();
  const emit = opts.listener ?? (() => undefined);
  const drvs = new Map(plan.toBuild.map((d) => [d.hash, d]));
  const users = dependents(plan.toBuild);
  const waitingOn = new Map<string, number>();
  for (const d of plan.toBuild) waitingOn.set(d.hash, Object.keys(d.inputDrvs).filter((h) => drvs.has(h)).length);
  const ready: DrvRecord[] = plan.toBuild.filter((d) => waitingOn.get(d.hash) === 0);
  const built: DrvRecord[] = [];
  const failed: { drv: DrvRecord; error: UkbError }[] = [];
  const skipped: DrvRecord[] = [];
  const cancel = new AbortController();
  const onOuterAbort = () => cancel.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  let running = 0;
  let stopping = false;

  const skipDependents = (hash: string, reason: string) => {
    for (const u of users.get(hash) ?? []) {
      if (waitingOn.get(u) === -1) continue;
      waitingOn.set(u, -1);
      const d = drvs.get(u)!;
      skipped.push(d);
      emit({ type: "skipped", name: d.name, drv: d.hash, reason });
      skipDependents(u, reason);
    }
  };

  await new Promise<void>((resolveAll) => {
    const pump = () => {
      while (!stopping && running < opts.jobs && ready.length > 0) {
        const d = ready.shift()!;
        running++;
        const path = d.outputs.out ?? Object.values(d.outputs)[0]!;
        emit({ type: "start", name: d.name, drv: d.hash, path });
        buildDerivation(store, d, {
          cores: opts.cores,
          signal: cancel.signal,
          onWait: () => emit({ type: "waiting", name: d.name, drv: d.hash, reason: "another ukb process is building it" }),
          ...(opts.builtinOptions ? { builtinOptions: opts.builtinOptions } : {}),
        }).then(
          (result) => {
            built.push(d);
            emit({ type: "done", name: d.name, drv: d.hash, path, ms: result.ms, builtHere: result.built });
            for (const u of users.get(d.hash) ?? []) {
              const left = waitingOn.get(u)! - 1;
              waitingOn.set(u, left);
              if (left === 0) ready.push(drvs.get(u)!);
            }
          },
          (err: unknown) => {
            const error = err instanceof UkbError ? err : new UkbError("internal", `building '${d.name}': ${(err as Error)?.stack ?? String(err)}`);
            if (error instanceof BuildCancelledError) {
              skipped.push(d);
              emit({ type: "skipped", name: d.name, drv: d.hash, reason: "cancelled" });
            } else {
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
            skipDependents(d.hash, `its input '${d.name}' failed`);
            if (!opts.keepGoing && !stopping) {
              stopping = true;
              cancel.abort(new UkbError("build", "cancelled after a failure"));
            }
          },
        ).finally(() => {
          running--;
          pump();
        });
      }
      if (running === 0 && (stopping || ready.length === 0)) resolveAll();
    };
    pump();
  });
  opts.signal?.removeEventListener("abort", onOuterAbort);
  // Whatever never became ready (stopped early) counts as skipped.
  const accounted = new Set([...built, ...failed.map((f) => f.drv), ...skipped].map((d) => d.hash));
  for (const d of plan.toBuild) {
    if (!accounted.has(d.hash)) {
      skipped.push(d);
      emit({ type: "skipped", name: d.name, drv: d.hash, reason: "not started after a failure" });
    }
  }
  const ms = Math.round(performance.now() - started);
  emit({ type: "finish", built: built.length, failed: failed.length, skipped: skipped.length, ms });
  return { built, failed, skipped, ms };
}
