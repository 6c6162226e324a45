/** `ukb store verify|gc|info`: look after the store. */
import { parseArgs } from "node:util";
import { ExitCode, UkbError, UsageError } from "../errors/index.js";
import { addToStore, collectGarbage, repairStore, verifyStore, type RepairReport } from "../store/index.js";
import { openStore, storeRoot } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export const usage = `ukb store add FILE|DIR [--name N] [--store DIR]
ukb store verify [--store DIR]
ukb store gc [--dry-run] [--store DIR]
ukb store repair [--json] [--store DIR]
ukb store info PATH [--json] [--store DIR]`;

const SUBCOMMANDS = new Set(["add", "verify", "gc", "repair", "info"]);

export async function storeCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  // Said before any store is opened: `ukb store`, `ukb store verfy` or `ukb store --store X` must not make one.
  if (sub === undefined || !SUBCOMMANDS.has(sub)) throw new UsageError(`${sub === undefined ? "ukb store needs a command" : `unknown store command '${sub}'`}\nusage:\n${usage}`);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { store: { type: "string" }, "dry-run": { type: "boolean" }, json: { type: "boolean" }, name: { type: "string" } },
  });
  // repair works on the files: the database it replaces may not open at all.
  if (sub === "repair") {
    if (positionals.length > 0) throw new UsageError("usage: ukb store repair [--json] [--store DIR]");
    const report = await repairStore(storeRoot(values.store));
    if (values.json) writeStdout(`${JSON.stringify(report)}\n`);
    else writeStdout(describeRepair(report));
    return ExitCode.ok;
  }
  // gc is what frees room on a full disk: it may use the store's reserve to open it.
  // Only add makes a store; the others read one (a typo in --store is not an empty store).
  const store = openStore(values.store, { useReserve: sub === "gc" && !values["dry-run"], existing: sub === "verify" || sub === "gc" || sub === "info" });
  try {
    switch (sub) {
      case "add": {
        if (positionals.length === 0) throw new UsageError("usage: ukb store add FILE|DIR... [--name N]");
        if (values.name && positionals.length > 1) throw new UsageError("--name needs a single FILE|DIR");
        for (const source of positionals) {
          const added = await addToStore(store, source, values.name ? { name: values.name } : {});
          if (values.json) {
            writeStdout(`${JSON.stringify(added)}\n`);
          } else {
            writeStdout(`${added.path}\n`);
            if (added.sha256) writeStdout(`  sha256 ${added.sha256}\n  blake3 ${added.blake3}\n`);
            else writeStdout(`  tree hash blake3:${added.treeHash}\n`);
          }
        }
        return ExitCode.ok;
      }
      case "verify": {
        const report = await verifyStore(store);
        for (const p of report.problems) writeStdout(`${p.problem}: ${p.base}: ${p.detail}\n`);
        for (const l of report.leftovers) writeStdout(`leftover: ${l}: in the store folder but not valid (an interrupted build; its next build or gc removes it)\n`);
        for (const d of report.deadTemps) writeStdout(`leftover: tmp/${d}: scratch of a ukb that died (gc or the next build removes it)\n`);
        const left = report.leftovers.length + report.deadTemps.length;
        const leftovers = left > 0 ? ` (${left} leftover${left === 1 ? "" : "s"} for gc)` : "";
        writeStdout(`checked ${report.checked} paths: ${report.problems.length === 0 ? "all valid" : `${report.problems.length} problems`}${leftovers}\n`);
        return report.problems.length === 0 ? ExitCode.ok : ExitCode.buildFailed;
      }
      case "gc": {
        // Each batch is printed once gone: what an interrupted gc deleted is on the screen.
        let printed = 0;
        const report = await collectGarbage(store, {
          dryRun: Boolean(values["dry-run"]),
          onProgress: (batch) => {
            for (const b of batch) writeStdout(`deleted ${store.realPath(b)}\n`);
            printed += batch.length;
          },
        });
        for (const b of report.deleted.slice(printed)) writeStdout(`${values["dry-run"] ? "would delete" : "deleted"} ${store.realPath(b)}\n`);
        writeStdout(`${report.roots} roots keep ${report.kept} paths; ${report.deleted.length} ${values["dry-run"] ? "would be " : ""}deleted, ${(report.freedBytes / 1e6).toFixed(2)} MB\n`);
        return ExitCode.ok;
      }
      case "info": {
        if (positionals.length !== 1) throw new UsageError("usage: ukb store info PATH");
        const base = store.parse(positionals[0]!);
        const info = base ? store.info(base) : undefined;
        if (!info) throw new UkbError("store", `${positionals[0]} is not a valid path in the store at ${store.root}`, { exitCode: ExitCode.badInput });
        const drv = info.deriver ? store.getDrv(info.deriver) : undefined;
        const view = {
          path: store.realPath(info.base),
          contentHash: `blake3:${info.contentHash}`,
          size: info.size,
          references: info.references.map((r) => store.realPath(r)),
          deriver: info.deriver ? `${drv?.name ?? "?"} (${info.deriver})` : null,
          ca: info.ca ?? null,
          buildMs: info.buildMs ?? null,
          registeredAt: new Date(info.registeredAt).toISOString(),
          signatures: info.signatures,
        };
        if (values.json) writeStdout(`${JSON.stringify(view, null, 2)}\n`);
        else for (const [k, v] of Object.entries(view)) writeStdout(`${k.padEnd(13)} ${Array.isArray(v) ? v.join("\n              ") || "(none)" : v ?? "-"}\n`);
        return ExitCode.ok;
      }
      default:
        throw new UsageError(`unknown store command '${sub ?? ""}'\nusage:\n${usage}`);
    }
  } finally {
    store.close();
  }
}

/** What `store repair` did, for people. */
function describeRepair(r: RepairReport): string {
  const lines = [`repaired the database of the store ${r.root}:`];
  const files = r.fromFilesOnly.length;
  lines.push(`  ${r.registered} paths registered: ${r.asRecorded} as the old database recorded them, ${files} from their files alone${files > 0 ? " (no readable record to check them against; 'ukb check' rebuilds one and compares)" : ""}`);
  for (const s of r.skipped) lines.push(`  not registered: ${s.base}: ${s.reason} (gc removes it)`);
  const partial = Object.entries(r.salvaged).filter(([, v]) => !v.whole);
  const read = Object.entries(r.salvaged).map(([table, v]) => `${v.rows} ${table}`).join(", ");
  lines.push(`  read from the old database: ${read}${partial.length > 0 ? `; damaged or unreadable: ${partial.map(([t]) => t).join(", ")}` : ""}`);
  if (r.rootsFromFolder.added > 0) lines.push(`  ${r.rootsFromFolder.added} gc roots the database had lost were taken from the store's roots/ folder`);
  // roots/ holds every root once it says so (see store/roots.ts): else a damaged table may have lost some.
  if (!r.salvaged.roots.whole && !r.rootsFromFolder.complete) lines.push("  gc roots may be lost (their table could not be read whole): realise what you keep links to again before 'ukb store gc'");
  if (r.damagedCopy) lines.push(`  the old database is kept as ${r.damagedCopy}`);
  return `${lines.join("\n")}\n`;
}
