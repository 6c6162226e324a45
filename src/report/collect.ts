/**
 * What `ukb report` compares: per image, the sizes of what boots and of the
 * image, the derivations behind it with their build times (from the store),
 * the critical path through them, and optionally boot-to-first-200 times.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { baseName, topoOrder, type DrvRecord, type Graph } from "../graph/index.js";
import type { Store } from "../store/index.js";
import { boot, freePort, readBootableImage, waitForHttp } from "../run/index.js";

export interface DerivationTiming {
  readonly name: string;
  readonly drv: string;
  readonly kind: string;
  /** Milliseconds the last build took (undefined if substituted or added). */
  readonly buildMs?: number;
  /** When it finished, ms since the epoch. */
  readonly finishedAt?: number;
  readonly critical: boolean;
}

export interface ImageReport {
  readonly recipe: string;
  readonly attr: string;
  readonly image: string;
  readonly unikernelType: string;
  readonly kernelBytes: number;
  readonly initrdBytes?: number;
  /** Sum of the layout's blobs. */
  readonly imageBytes: number;
  readonly derivations: readonly DerivationTiming[];
  /** Sum of build times along the critical path. */
  readonly criticalPathMs: number;
  /** Sum of all build times. */
  readonly totalBuildMs: number;
  /** Boot to first HTTP 200, one entry per boot. */
  readonly bootMs?: readonly number[];
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    total += st.isDirectory() ? dirBytes(p) : st.size;
  }
  return total;
}

/** The longest chain of build times through the graph (what parallelism cannot shorten). */
function criticalPath(order: readonly DrvRecord[], ms: (d: DrvRecord) => number): { total: number; path: Set<string> } {
  const best = new Map<string, { total: number; via?: string }>();
  for (const d of order) {
    let via: string | undefined;
    let longest = 0;
    for (const input of Object.keys(d.inputDrvs)) {
      const b = best.get(input);
      if (b && b.total > longest) {
        longest = b.total;
        via = input;
      }
    }
    best.set(d.hash, { total: longest + ms(d), ...(via ? { via } : {}) });
  }
  let end: string | undefined;
  for (const [h, b] of best) if (!end || b.total > best.get(end)!.total) end = h;
  const onPath = new Set<string>();
  for (let h = end; h; h = best.get(h)?.via) onPath.add(h);
  return { total: end ? best.get(end)!.total : 0, path: onPath };
}

export async function collectReport(
  store: Store,
  recipe: string,
  attr: string,
  graph: Graph,
  target: DrvRecord,
  options: { boots?: number } = {},
): Promise<ImageReport> {
  const imageDir = store.realPath(target.outputs.out!);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "ukb-report-"));
  try {
    const image = await readBootableImage(imageDir, scratch);
    const order = topoOrder(graph, [target.hash]);
    const info = (d: DrvRecord) => store.info(baseName(d.outputs.out ?? Object.values(d.outputs)[0]!));
    const ms = (d: DrvRecord) => info(d)?.buildMs ?? 0;
    const critical = criticalPath(order, ms);
    const derivations: DerivationTiming[] = order.map((d) => {
      const i = info(d);
      return {
        name: d.name,
        drv: d.hash,
        kind: d.kind,
        ...(i?.buildMs !== undefined ? { buildMs: i.buildMs } : {}),
        ...(i ? { finishedAt: i.registeredAt } : {}),
        critical: critical.path.has(d.hash),
      };
    });
    let bootMs: number[] | undefined;
    if (options.boots && options.boots > 0) {
      bootMs = [];
      for (let i = 0; i < options.boots; i++) {
        const port = await freePort();
        const vm = boot({ image, port });
        try {
          bootMs.push((await waitForHttp(port, vm, 180_000)).ms);
        } finally {
          await vm.stop();
        }
      }
    }
    return {
      recipe,
      attr,
      image: imageDir,
      unikernelType: image.unikernelType,
      kernelBytes: fs.statSync(image.kernel).size,
      ...(image.initrd ? { initrdBytes: fs.statSync(image.initrd).size } : {}),
      imageBytes: dirBytes(imageDir),
      derivations,
      criticalPathMs: critical.total,
      totalBuildMs: derivations.reduce((s, d) => s + (d.buildMs ?? 0), 0),
      ...(bootMs ? { bootMs } : {}),
    };
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
