/**
 * Graph walks over derivation records: closures and a topological order that
 * reports a cycle by naming the derivations on it.
 */
import { UkbError } from "../errors/index.js";
import type { DrvRecord } from "./derivation.js";

/** All derivations as data, keyed by hash: what `ukb show` prints and the eval cache stores. */
export interface Graph {
  readonly drvs: Readonly<Record<string, DrvRecord>>;
}

export class CycleError extends UkbError {
  constructor(readonly names: string[]) {
    super("recipe", `dependency cycle: ${names.join(" -> ")}`, { exitCode: 2 });
  }
}

/** Derivations reachable from `roots` (by hash), inputs before the derivations that use them. */
export function topoOrder(graph: Graph, roots: readonly string[]): DrvRecord[] {
  const order: DrvRecord[] = [];
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (hash: string): void => {
    const s = state.get(hash);
    if (s === "done") return;
    const drv = graph.drvs[hash];
    if (!drv) throw new UkbError("recipe", `derivation ${hash} is referenced but not part of the graph`, { exitCode: 2 });
    if (s === "visiting") {
      const from = stack.indexOf(hash);
      throw new CycleError([...stack.slice(from), hash].map((h) => graph.drvs[h]?.name ?? h));
    }
    state.set(hash, "visiting");
    stack.push(hash);
    for (const input of Object.keys(drv.inputDrvs).sort()) visit(input);
    stack.pop();
    state.set(hash, "done");
    order.push(drv);
  };
  for (const r of roots) visit(r);
  return order;
}

/** Hash → hashes of the derivations that take it as an input (within `drvs`). */
export function dependents(drvs: readonly DrvRecord[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const d of drvs) out.set(d.hash, []);
  for (const d of drvs) for (const i of Object.keys(d.inputDrvs)) out.get(i)?.push(d.hash);
  return out;
}
