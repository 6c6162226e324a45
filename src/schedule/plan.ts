/**
 * The plan: for every derivation the targets need, is it valid already, can
 * a binary cache substitute it, or must it be built? Valid derivations'
 * inputs are not looked at: what is valid does not need its inputs again;
 * nor are a substituted derivation's: it needs only the paths its outputs
 * refer to, fetched with them (or, where no cache has one, realised through
 * the derivation that makes it).
 *
 * makePlan is synchronous and never touches the network: when everything is
 * valid (the no-op realise) no cache is contacted. planSubstitutions is the
 * separate, asynchronous step that asks the caches about what is left to build.
 */
import { baseName, topoOrder, type DrvRecord, type Graph } from "../graph/index.js";
import type { Store } from "../store/index.js";
import type { CacheHit, CacheSet } from "../cache/index.js";

/** A derivation whose outputs come from a cache. */
export interface PlannedSubstitution {
  readonly drv: DrvRecord;
  /** What to fetch, references first: its outputs and the paths they refer to that are not valid here. */
  readonly hits: readonly CacheHit[];
  /** Planned derivations (built or substituted) whose outputs these refer to: they come first. */
  readonly after: readonly string[];
}

export interface Plan {
  readonly targets: readonly DrvRecord[];
  /** Derivations whose outputs are all valid. */
  readonly valid: readonly DrvRecord[];
  /** Derivations to build, inputs before their users. */
  readonly toBuild: readonly DrvRecord[];
  /** Derivations to substitute from caches, in the same order. */
  readonly toSubstitute: readonly PlannedSubstitution[];
  /** The graph planned over (a failed substitution falls back to building, and then needs the inputs). */
  readonly graph: Graph;
}

const isValidDrv = (store: Store, d: DrvRecord) => Object.values(d.outputs).every((p) => store.isValid(p));

export function makePlan(store: Store, graph: Graph, targets: readonly DrvRecord[]): Plan {
  // topoOrder also rejects cycles and dangling inputs, whatever the graph's source.
  const order = topoOrder(graph, targets.map((t) => t.hash));
  // Temp roots first, then the checks: whatever is valid now stays valid (gc leaves it) while this
  // process runs, and what it is about to build is kept once built.
  store.protect(order.flatMap((d) => Object.values(d.outputs)));
  const needed = new Set<string>();
  const valid: DrvRecord[] = [];
  const todo = targets.map((t) => t.hash);
  const seen = new Set<string>();
  while (todo.length > 0) {
    const h = todo.pop()!;
    if (seen.has(h)) continue;
    seen.add(h);
    const d = graph.drvs[h]!;
    if (isValidDrv(store, d)) {
      valid.push(d);
      continue;
    }
    needed.add(h);
    todo.push(...Object.keys(d.inputDrvs));
  }
  return { targets, valid, toBuild: order.filter((d) => needed.has(d.hash)), toSubstitute: [], graph };
}

/**
 * Asks the caches about every derivation the plan would build and returns
 * the plan with those whose outputs (and everything those refer to) can be
 * had from caches moved to `toSubstitute`. A substituted derivation's inputs
 * are built only if something else needs them. Caches that fail are warned
 * about (through the set) and left out: the plan then builds.
 */
export async function planSubstitutions(store: Store, plan: Plan, caches: CacheSet): Promise<Plan> {
  if (plan.toBuild.length === 0 || caches.size === 0) return plan;
  const graph = plan.graph;
  const order = topoOrder(graph, plan.targets.map((t) => t.hash));
  const position = new Map(order.map((d, i) => [d.hash, i]));
  const producer = new Map<string, DrvRecord>();
  for (const d of order) for (const p of Object.values(d.outputs)) producer.set(baseName(p), d);

  const hits = await caches.query(plan.toBuild.flatMap((d) => Object.values(d.outputs).map(baseName)));

  const decision = new Map<string, "valid" | "build" | PlannedSubstitution>();
  const visit = async (d: DrvRecord): Promise<void> => {
    if (decision.has(d.hash)) return;
    if (isValidDrv(store, d)) {
      decision.set(d.hash, "valid");
      return;
    }
    const outs = Object.values(d.outputs).map(baseName);
    const own = outs.map((b) => hits.get(b));
    if (own.every((h) => h !== undefined)) {
      // What the outputs refer to is fetched with them, as paths; what no cache has comes from its derivation.
      const refs = [...new Set(own.flatMap((h) => h!.entry.references))].filter((r) => !outs.includes(r));
      const { hits: closure, missing } = await caches.closure(refs, (b) => {
        // Kept from here on if valid now: the fetched outputs will refer to it.
        store.protect([b]);
        return store.isValid(b);
      });
      const after = new Set<string>();
      let ok = true;
      for (const m of missing) {
        const e = producer.get(m);
        // Only an input (transitively) can be referred to; anything else is a path this graph does not make.
        if (e && position.get(e.hash)! < position.get(d.hash)!) after.add(e.hash);
        else ok = false;
      }
      if (ok) {
        decision.set(d.hash, { drv: d, hits: [...closure, ...(own as CacheHit[])], after: [...after] });
        for (const e of after) await visit(graph.drvs[e]!);
        return;
      }
    }
    decision.set(d.hash, "build");
    for (const i of Object.keys(d.inputDrvs)) await visit(graph.drvs[i]!);
  };
  for (const t of plan.targets) await visit(t);

  const toBuild: DrvRecord[] = [];
  const toSubstitute: PlannedSubstitution[] = [];
  const valid: DrvRecord[] = [...plan.valid];
  for (const d of order) {
    const v = decision.get(d.hash);
    if (v === undefined) continue;
    if (v === "build") toBuild.push(d);
    else if (v === "valid") {
      if (!valid.includes(d)) valid.push(d);
    } else toSubstitute.push(v);
  }
  return { targets: plan.targets, valid, toBuild, toSubstitute, graph };
}
