/** `ukb realise <recipe.ts> [-A attr]`: build what a recipe exports and print its output paths. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, onStrayError, UkbError, UsageError } from "../errors/index.js";
// Only the plan is needed when everything is valid; the executor and the UI load on demand.
import { makePlan, planSubstitutions, type Plan } from "../schedule/plan.js";
import { explainNoSpace, type Store } from "../store/index.js";
import type { CacheFlags, CacheSet } from "../cache/index.js";
import { defaultJobs, loadWithCache, openStore, parseCount, pickOutputs, requireRecipeFiles } from "./context.js";
import { mainOutputPath, setRecipeOutput } from "../recipe/load.js";
import { writeStdout } from "../ui/stdout.js";
import { launcherFoundNoServer } from "./launcher-note.js";

export const usage = `ukb realise <recipe.ts> [-A attr] [--out-link PATH | --no-out-link] [--jobs N] [--cores M]
             [--keep-going] [--dry-run] [--offline] [--json] [--store DIR] [--no-eval-cache]
             [--substituters URL...] [--trusted-keys NAME:KEY...] [--no-verify]`;

/** The options of `realise`, parsed (parse errors are Node's ERR_PARSE_ARGS TypeErrors). */
export function parseRealiseArgs(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      attr: { type: "string", short: "A" },
      "out-link": { type: "string", short: "o" },
      "no-out-link": { type: "boolean" },
      jobs: { type: "string", short: "j" },
      cores: { type: "string" },
      "keep-going": { type: "boolean", short: "k" },
      "dry-run": { type: "boolean" },
      json: { type: "boolean" },
      store: { type: "string" },
      "no-eval-cache": { type: "boolean" },
      offline: { type: "boolean" },
      substituters: { type: "string", multiple: true },
      "trusted-keys": { type: "string", multiple: true },
      "no-verify": { type: "boolean" },
    },
  });
  if (positionals.length !== 1) throw new UkbError("usage", `realise takes one recipe file\nusage: ${usage}`, { exitCode: ExitCode.badInput });
  if (values["out-link"] !== undefined && values["no-out-link"]) throw new UsageError("--out-link and --no-out-link contradict each other: give one");
  return { values, recipe: positionals[0]!, jobs: parseCount(values.jobs, "--jobs", defaultJobs()), cores: parseCount(values.cores, "--cores", 1) };
}
export type RealiseArgs = ReturnType<typeof parseRealiseArgs>;

/** What a realise whose target is valid leaves behind. */
export interface RealiseResult {
  /** The out-link to make (absolute: resolved against the caller's folder), unless --no-out-link. */
  link?: string;
  /** The real path it points at: the main output. */
  linkTarget: string;
  /** What to print: the output paths, one per line. */
  stdout: string;
}

/**
 * The end of a realise whose target is valid, as data: the CLI makes the link
 * and registers it as a root; the ukb server registers the root and lets
 * its launcher make the link, with the launcher's own rights and view.
 */
export function realiseResult(store: Store, outputs: Readonly<Record<string, string>>, values: RealiseArgs["values"], cwd = process.cwd()): RealiseResult {
  const outPaths = Object.values(outputs).map((p) => store.realPath(p));
  // The link points where `${drv}` does: `out` when there is one.
  const result: RealiseResult = { linkTarget: store.realPath(mainOutputPath(outputs)), stdout: outPaths.map((p) => `${p}\n`).join("") };
  if (!values["no-out-link"]) result.link = path.resolve(cwd, values["out-link"] ?? "result");
  return result;
}

export async function realiseCommand(argv: string[]): Promise<number> {
  const { values, recipe: recipeFile, jobs, cores } = parseRealiseArgs(argv);
  const cacheFlags: CacheFlags = { substituters: values.substituters, trustedKeys: values["trusted-keys"], noVerify: values["no-verify"] };
  requireRecipeFiles([recipeFile]);
  // With --json, stderr is one event a line: what the recipe prints as it is evaluated too.
  // (Written through stderr's own write: while a recipe is evaluated, process.stderr.write is the diversion.)
  const writeStderr = process.stderr.write.bind(process.stderr);
  if (values.json) setRecipeOutput((text) => {
    for (const line of text.replace(/\n$/, "").split("\n")) writeStderr(`${JSON.stringify({ type: "log", text: line, time: Date.now() })}\n`);
  });
  const store = openStore(values.store);
  try {
    // An evaluation takes a few hundred ms of one core: sandboxes for the first builds start on the other meanwhile.
    const warm = values["dry-run"] ? undefined : () => void import("../build/sandbox-pool.js").then((m) => m.sandboxPool(store.root).warm(jobs));
    const recipe = await loadWithCache(store, recipeFile, { useCache: !values["no-eval-cache"], ...(warm ? { onEvaluate: warm } : {}) });
    // Every realise of such a recipe pays for an evaluation: the user is told why, and where.
    if (recipe.volatile !== undefined) {
      const message = `${path.relative(process.cwd(), recipe.file) || recipe.file} is evaluated on every run, not cached: it ${recipe.volatile}`;
      process.stderr.write(values.json ? `${JSON.stringify({ type: "note", message, time: Date.now() })}\n` : `ukb: note: ${message}\n`);
    }
    const { drv: target, outputs } = pickOutputs(recipe, values.attr);
    // A valid target needs nothing else (a valid path's closure is valid): the no-op realise stops here,
    // without reading the rest of the graph.
    // Protected (a temp root) before it is checked: a concurrent gc cannot delete it before the out-link is made.
    store.protect(Object.values(outputs));
    const targetValid = Object.values(outputs).every((p) => store.isValid(p));
    let plan: Plan = targetValid ? { targets: [target], valid: [target], toBuild: [], toSubstitute: [], graph: recipe.graph } : makePlan(store, recipe.graph, [target]);

    if (values["dry-run"]) {
      const out = process.stdout;
      if (plan.toBuild.length > 0) {
        plan = (await withSubstitutions(store, plan, cacheFlags, Boolean(values.offline), (_cache, message) => process.stderr.write(`ukb: warning: ${message}\n`))).plan;
      }
      if (values.json) {
        out.write(
          `${JSON.stringify({
            valid: plan.valid.map((d) => d.name),
            validOutputs: plan.valid.map((d) => ({ name: d.name, drv: d.hash, outputs: Object.fromEntries(Object.entries(d.outputs).map(([o, p]) => [o, store.realPath(p)])) })),
            build: plan.toBuild.map((d) => ({ name: d.name, drv: d.hash, outputs: Object.fromEntries(Object.entries(d.outputs).map(([o, p]) => [o, store.realPath(p)])) })),
            substitute: plan.toSubstitute.map((s) => ({ name: s.drv.name, drv: s.drv.hash, paths: s.hits.map((h) => ({ path: store.realPath(h.base), cache: h.cache, size: h.entry.size })) })),
          })}\n`,
        );
      } else {
        const mainOutput = (d: { outputs: Readonly<Record<string, string>> }) => store.realPath(mainOutputPath(d.outputs));
        if (plan.toBuild.length === 0 && plan.toSubstitute.length === 0) out.write("nothing to build: every output is valid\n");
        if (plan.toBuild.length > 0) out.write(`${plan.toBuild.length === 1 ? "this derivation" : `these ${plan.toBuild.length} derivations`} will be built:\n`);
        for (const d of plan.toBuild) out.write(`  ${mainOutput(d)}\n`);
        const fetches = plan.toSubstitute.flatMap((s) => s.hits);
        if (fetches.length > 0) out.write(`these ${fetches.length} paths will be fetched (${(fetches.reduce((n, h) => n + h.entry.size, 0) / 1e6).toFixed(2)} MB unpacked):\n`);
        for (const h of fetches) out.write(`  ${store.realPath(h.base)} from ${h.cache}\n`);
        // What is valid already, as far as the plan looked (a valid derivation's inputs are not needed).
        if (plan.valid.length > 0) out.write(`${plan.valid.length === 1 ? "this derivation is" : `these ${plan.valid.length} derivations are`} valid already:\n`);
        for (const d of plan.valid) out.write(`  ${mainOutput(d)}\n`);
      }
      return ExitCode.ok;
    }

    const result = realiseResult(store, outputs, values);
    if (plan.toBuild.length > 0) {
      // An out-link that cannot be made is known now, not after a build of minutes.
      if (result.link) checkOutLink(result.link);
      // What a killed ukb left in tmp/ goes while this one builds (on libuv's threads): a user who
      // never runs gc does not keep a killed build's scratch for ever.
      const cleaned = store.cleanDeadTemps().catch(() => 0);
      const code = await buildPlan(store, plan, { jobs, cores, keepGoing: Boolean(values["keep-going"]), json: Boolean(values.json), offline: Boolean(values.offline), cacheFlags });
      await cleaned;
      if (code !== ExitCode.ok) return code;
    }

    // Valid, but deleted by hand since: said, not linked.
    store.assertPresent(Object.values(outputs));
    if (result.link) {
      // The root first (as the server does): a link that exists but is no root would let gc delete
      // what it points at; a root whose link could not be made is forgotten by the next gc.
      store.addRoot(result.link);
      makeOutLink(result.link, result.linkTarget);
    }
    writeStdout(result.stdout);
    // Run by the launcher, which found no server: one starts for the next no-op (a recipe evaluated
    // on every run gets nothing from it).
    if (launcherFoundNoServer() && recipe.volatile === undefined) await (await import("./server.js")).startServerForLauncher(store.root);
    return ExitCode.ok;
  } catch (err) {
    throw explainNoSpace(err, store.root, `realising ${recipeFile}`);
  } finally {
    store.close();
  }
}

/** Where the symlink `link` points now (undefined: there is none); refuses anything else of that name. */
function currentLink(link: string): string | undefined {
  try {
    if (!fs.lstatSync(link).isSymbolicLink()) throw new UkbError("usage", `${link} exists and is not a symlink: not replacing it (use --out-link or --no-out-link)`, { exitCode: ExitCode.badInput });
    return fs.readlinkSync(link);
  } catch (err) {
    if (err instanceof UkbError) throw err;
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw outLinkError(link, err as NodeJS.ErrnoException);
    return undefined;
  }
}

/** Refuses, before anything is built, an out-link that {@link makeOutLink} would refuse after. */
function checkOutLink(link: string): void {
  currentLink(link);
  try {
    fs.accessSync(path.dirname(link), fs.constants.W_OK);
  } catch (err) {
    throw outLinkError(link, err as NodeJS.ErrnoException);
  }
}

/**
 * Points `link` at `target`, replacing an older link atomically; refuses to
 * replace anything but a symlink. (src/client/ukb.c does the same for a
 * no-op the server answers; a case it does not handle it leaves to this.)
 */
function makeOutLink(link: string, target: string): void {
  if (currentLink(link) === target) return;
  const tmp = `${link}.tmp-${process.pid}`;
  let made = false;
  try {
    fs.symlinkSync(target, tmp);
    made = true;
    fs.renameSync(tmp, link);
  } catch (err) {
    // Only our own link: a file of that name that was there before is not ours to remove.
    if (made) fs.rmSync(tmp, { force: true });
    throw outLinkError(link, err as NodeJS.ErrnoException);
  }
}

function outLinkError(link: string, err: NodeJS.ErrnoException): UkbError {
  return new UkbError("usage", `cannot make the out-link ${link} (${err.code ?? err.message})`, { exitCode: ExitCode.badInput, hint: "use --out-link PATH or --no-out-link" });
}

/**
 * The plan with what the substituters (flags, UKB_SUBSTITUTERS, config) have
 * moved from building to fetching. Offline, only file:// caches are asked.
 */
async function withSubstitutions(store: Store, plan: Plan, flags: CacheFlags, offline: boolean, onWarning: (cache: string, message: string) => void): Promise<{ plan: Plan; caches?: CacheSet }> {
  const { cacheSettings, openSubstituters } = await import("../cache/index.js");
  const settings = cacheSettings(flags);
  const urls = offline ? settings.substituters.filter((u) => u.startsWith("file:")) : settings.substituters;
  if (urls.length === 0) return { plan };
  const caches = await openSubstituters({ ...settings, substituters: urls }, { onWarning });
  return { plan: await planSubstitutions(store, plan, caches), caches };
}

/** Runs the builds of a plan with a progress display; Ctrl-C cancels them cleanly. */
async function buildPlan(store: Store, planned: Plan, o: { jobs: number; cores: number; keepGoing: boolean; json: boolean; offline: boolean; cacheFlags: CacheFlags }): Promise<number> {
  const { execute } = await import("../schedule/execute.js");
  const { chooseMode, makeListener } = await import("../ui/index.js");
  const listener = makeListener(chooseMode(process.stderr, o.json));
  const abort = new AbortController();
  const onSignal = () => abort.abort(new UkbError("build", "interrupted"));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const stopWatching = onStrayError(() => abort.abort(new UkbError("build", "cancelled: the recipe's code threw")));
  try {
    const { plan, caches } = await withSubstitutions(store, planned, o.cacheFlags, o.offline, (cache, message) => listener({ type: "cache-warning", cache, message }));
    const mainPath = (d: { outputs: Readonly<Record<string, string>> }) => store.realPath(d.outputs.out ?? Object.values(d.outputs)[0]!);
    listener({
      type: "plan",
      valid: plan.valid.length,
      toBuild: plan.toBuild.map((d) => ({ name: d.name, path: mainPath(d) })),
      ...(plan.toSubstitute.length > 0 ? { toSubstitute: plan.toSubstitute.map((s) => ({ name: s.drv.name, path: mainPath(s.drv), cache: s.hits[s.hits.length - 1]!.cache })) } : {}),
    });
    const result = await execute(store, plan, {
      jobs: o.jobs,
      cores: o.cores,
      keepGoing: o.keepGoing,
      listener,
      signal: abort.signal,
      builtinOptions: {
        offline: o.offline,
        onProgress: (e: { name: string; url: string; bytes: number; total?: number; rate: number }) => listener({ type: "progress", ...e }),
      },
      ...(caches ? { caches } : {}),
    });
    return result.failed.length > 0 || abort.signal.aborted ? ExitCode.buildFailed : ExitCode.ok;
  } finally {
    listener.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    stopWatching();
  }
}
