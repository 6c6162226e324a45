/**
 * `ukb copy --to URL [--sign-key FILE] <recipe.ts [-A attr] | path...>`: upload
 * paths and their closures to a binary cache (only what it lacks), signed.
 * `ukb copy --from URL <recipe.ts [-A attr] | path...>`: download them, verified.
 */
import { parseArgs } from "node:util";
import { ExitCode, UkbError, UsageError } from "../errors/index.js";
import { baseName } from "../graph/index.js";
import { explainNoSpace, type Store } from "../store/index.js";
import { loadWithCache, openStore, pickOutputs, realiseExport } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export const usage = `ukb copy --to URL [--sign-key FILE] <recipe.ts [-A attr] | PATH...>
ukb copy --from URL [--trusted-keys NAME:KEY...] [--no-verify] <recipe.ts [-A attr] | PATH...>
  URL: file:///dir, http(s)://host/prefix (a server that takes PUT), oci://registry/repository`;

const BASE = /^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$/;

function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(2)} MB`;
}

/** The store paths the arguments name: a recipe's export, or paths (real, virtual, basenames, ./result links). */
async function pathsOf(store: Store, args: string[], attr: string | undefined, mustBeValid: boolean): Promise<string[]> {
  if (args.length === 1 && /\.[cm]?ts$/.test(args[0]!)) {
    if (mustBeValid) {
      const { outputs } = await realiseExport(store, args[0]!, attr);
      return Object.values(outputs).map(baseName);
    }
    const recipe = await loadWithCache(store, args[0]!);
    return Object.values(pickOutputs(recipe, attr).outputs).map(baseName);
  }
  if (attr !== undefined) throw new UsageError("-A selects an export of a recipe; give one recipe file");
  return args.map((a) => {
    // A path in this store, a virtual /ukb/store path, a basename, or a path in another store (its basename).
    const base = store.parse(a) ?? (BASE.test(baseName(a)) ? baseName(a) : undefined);
    if (!base || !BASE.test(base)) throw new UsageError(`${a} is not a store path`);
    // Protected before it is checked: a concurrent gc cannot delete it mid-upload.
    if (mustBeValid) store.protect([base]);
    if (mustBeValid && !store.isValid(base)) throw new UkbError("store", `${a} is not valid in the store at ${store.root}`, { exitCode: ExitCode.badInput });
    return base;
  });
}

export async function copyCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      to: { type: "string" },
      from: { type: "string" },
      "sign-key": { type: "string" },
      "trusted-keys": { type: "string", multiple: true },
      "no-verify": { type: "boolean" },
      attr: { type: "string", short: "A" },
      store: { type: "string" },
      json: { type: "boolean" },
    },
  });
  if ((values.to === undefined) === (values.from === undefined) || positionals.length === 0) throw new UsageError(`usage:\n${usage}`);
  const cache = await import("../cache/index.js");
  const store = openStore(values.store);
  try {
    if (values.to !== undefined) {
      if (values["trusted-keys"] || values["no-verify"]) throw new UsageError("--trusted-keys and --no-verify are for --from");
      const signKey = values["sign-key"] ? cache.readSecretKey(values["sign-key"]) : undefined;
      const backend = await cache.openCache(values.to);
      const bases = await pathsOf(store, positionals, values.attr, true);
      const report = await cache.upload(store, backend, bases, {
        ...(signKey ? { signKey } : {}),
        onEvent: (e) => {
          if (values.json) process.stderr.write(`${JSON.stringify(e)}\n`);
          else if (e.status === "uploaded") process.stderr.write(`uploaded ${store.realPath(e.base)} (${e.blobs} blobs, ${megabytes(e.bytes)}; ${e.present} blobs already there)\n`);
          else if (e.status === "differs") process.stderr.write(`ukb: warning: ${backend.url} already holds ${e.base} with other content (blake3:${e.theirs}): left as it is\n`);
        },
      });
      const summary = `${report.uploaded.length} paths uploaded to ${backend.url} (${report.blobsUploaded} blobs, ${megabytes(report.bytesUploaded)}; ${report.blobsPresent} blobs already there), ${report.present.length} already there${signKey ? `, signed by ${signKey.name}` : ", unsigned (--sign-key FILE signs them)"}`;
      if (values.json) writeStdout(`${JSON.stringify(report)}\n`);
      else writeStdout(`${summary}\n`);
      return ExitCode.ok;
    }
    const settings = cache.cacheSettings({ substituters: [values.from!], trustedKeys: values["trusted-keys"], noVerify: values["no-verify"] });
    const set = await cache.openSubstituters(settings, { onWarning: (_c, m) => process.stderr.write(`ukb: warning: ${m}\n`) });
    const bases = await pathsOf(store, positionals, values.attr, false);
    const { hits, missing } = await set.closure(bases, (b) => {
      // Kept from here on if valid now: what is fetched will refer to it.
      store.protect([b]);
      return store.isValid(b);
    });
    if (missing.length > 0) {
      throw new UkbError("cache", `${cache.withoutCredentials(values.from!)} cannot provide ${missing.length === 1 ? missing[0] : `${missing.length} paths (${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ", …" : ""})`}`);
    }
    // Four paths at a time, each once what it refers to is in.
    let bytes = 0;
    const inRun = new Set(hits.map((h) => h.base));
    const done = new Map<string, Promise<void>>();
    const slots = { free: 4, queue: [] as (() => void)[] };
    const fetchOne = async (h: (typeof hits)[number]): Promise<void> => {
      await Promise.all(h.entry.references.filter((r) => r !== h.base && inRun.has(r)).map((r) => done.get(r)));
      if (slots.free === 0) await new Promise<void>((r) => slots.queue.push(r));
      slots.free--;
      try {
        const progress = { bytes: 0 };
        const fetched = await cache.substitute(store, set, [h], { ...set.options, progress });
        bytes += progress.bytes;
        if (fetched.length > 0 && !values.json) process.stderr.write(`fetched ${store.realPath(h.base)} (${megabytes(progress.bytes)})\n`);
      } finally {
        slots.free++;
        slots.queue.shift()?.();
      }
    };
    for (const h of hits) {
      const p = fetchOne(h);
      p.catch(() => undefined);
      done.set(h.base, p);
    }
    const results = await Promise.allSettled(done.values());
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure) throw explainNoSpace(failure.reason, store.root, `fetching from ${cache.withoutCredentials(values.from!)}`);
    if (values.json) writeStdout(`${JSON.stringify({ fetched: hits.map((h) => h.base), bytes })}\n`);
    else writeStdout(`${hits.length} paths fetched from ${cache.withoutCredentials(values.from!)} (${megabytes(bytes)}), ${bases.length - bases.filter((b) => hits.some((h) => h.base === b)).length} already valid\n`);
    return ExitCode.ok;
  } finally {
    store.close();
  }
}
