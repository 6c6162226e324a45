/**
 * The plan: for every derivation the targets need, is it valid already or
 * must it be built? Valid derivations' inputs are not looked at: what is
 * valid does not need its inputs again.
 */
import { topoOrder, type DrvRecord, type Graph } from "../graph/index.js";
import type { Store } from "../store/index.js";

export interface Plan {
  readonly targets: readonly DrvRecord[];
  /** Derivations whose outputs are all valid. */
  readonly valid: readonly DrvRecord[];
  /** Derivations to build, inputs before their users. */
  readonly toBuild: readonly DrvRecord[];
}

export function makePlan(store: Store, graph: Graph, targets: readonly DrvRecord[]): Plan {
  // topoOrder also rejects cycles and dangling inputs, whatever the graph's source.
  const order = topoOrder(graph, targets.map((t) => t.hash));
  const needed = new Set<string>();
  const valid: DrvRecord[] = [];
  const isValid = (d: DrvRecord) => Object.values(d.outputs).every((p) => store.isValid(p));
  const todo = targets.map((t) => t.hash);
  const seen = new Set<string>();
  while (todo.length > 0) {
    const h = todo.pop()!;
    if (seen.has(h)) continue;
    seen.add(h);
    const d = graph.drvs[h]!;
    if (isValid(d)) {
      valid.push(d);
      continue;
    }
    needed.add(h);
    todo.push(...Object.keys(d.inputDrvs));
  }
  return { targets, valid, toBuild: order.filter((d) => needed.has(d.hash)) };
}
