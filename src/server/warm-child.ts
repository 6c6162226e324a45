/**
 * `ukb server warm`: the CLI the server starts ahead of time (./warm.ts).
 * It loads what a realise needs (the commands' modules, the store's
 * database driver, the recipe API, esbuild's service), tells the server it
 * is ready, and waits for one launch. It then becomes that launch's CLI:
 * the launcher's environment, working folder, umask and terminal in place
 * of its own, the launcher's arguments to main(), and exits with its code.
 */
import dns from "node:dns";
import fsPromises from "node:fs/promises";
import perfHooks from "node:perf_hooks";
import { UkbError, UsageError } from "../errors/index.js";
import { forgetViews, hostViewFor, toolSetsAsked, type HostToolSet } from "../build/host-view.js";
import { discardSandboxPools, sandboxPool, sandboxSettings } from "../build/sandbox-pool.js";
import { defaultJobs } from "../cli/context.js";
import type { Terminal } from "./protocol.js";

/** What the server sends the started CLI: the launch to run, as the launcher would have run it. */
export interface RunOrder {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  umask: number;
  terminal: Terminal;
}

/** Waits for a launch and runs it; resolves with its exit code (0 if the server went away first). */
export async function serveOneRun(root: string): Promise<number> {
  if (!process.send) throw new UsageError("'ukb server warm' is started by the store's server, not by hand");
  const release = await prepare(root);
  try {
    const order = await new Promise<RunOrder | undefined>((resolve) => {
      const onMessage = (message: unknown) => {
        // The views the last run's builds asked for: sandboxes showing them are readied for the next.
        if ((message as Partial<ViewsAhead>).type === "views") readyViews(root, (message as ViewsAhead).toolSets);
        else done(message as RunOrder);
      };
      // The server stopped (or was killed) before sending anything.
      const onDisconnect = () => done(undefined);
      // Both listeners go: Node keeps the channel in the event loop while either is there.
      const done = (value: RunOrder | undefined) => {
        process.off("message", onMessage);
        process.off("disconnect", onDisconnect);
        resolve(value);
      };
      process.on("message", onMessage);
      process.on("disconnect", onDisconnect);
      process.send!({ type: "ready" });
    });
    if (!order) return 0;
    const tellServer = hideChannel();
    const { main } = await import("../cli/main.js");
    const startedWith = sandboxSettings();
    adopt(order);
    // Made ahead from the server's environment and folders as they were then: the run makes its own
    // (a sandbox already showing the same view is used).
    forgetViews();
    // Sandboxes started in the server's environment serve only a launch whose settings are the same.
    if (sandboxSettings() !== startedWith) discardSandboxPools();
    const code = await main(order.argv);
    // The run is over: the server tells the launcher its code once this much output has come,
    // without waiting for this process to end (Node's own exit takes ~30 ms more here).
    tellServer({ type: "exit", code, toolSets: toolSetsAsked(MAX_VIEWS_AHEAD), stdout: process.stdout.bytesWritten, stderr: process.stderr.bytesWritten });
    return code;
  } finally {
    release();
  }
}

/** What the started CLI tells the server when its command has returned. */
export interface RunEnd {
  type: "exit";
  code: number;
  /** The host tool sets whose views its builds asked for: the next started CLI readies sandboxes showing them. */
  toolSets: HostToolSet[];
  /** Bytes written to stdout and stderr by then: the launcher has all of the output once they have come. */
  stdout: number;
  stderr: number;
}

/**
 * Takes the channel to the server out of the command's sight (a CLI the
 * launcher starts has none: a recipe must find no `process.send`), and out
 * of the event loop's count; returns what sends the run's end over it.
 */
function hideChannel(): (end: RunEnd) => void {
  const send = process.send!.bind(process);
  (process.channel as { unref?: () => void } | undefined)?.unref?.();
  const hidden = ["send", "disconnect", "connected", "channel"].map((name) => [name, Object.getOwnPropertyDescriptor(process, name)] as const);
  for (const [name, descriptor] of hidden) if (descriptor?.configurable) delete (process as unknown as Record<string, unknown>)[name];
  return (end) => {
    // Node's send checks `connected` on the process.
    for (const [name, descriptor] of hidden) if (descriptor?.configurable) Object.defineProperty(process, name, descriptor);
    try {
      send(end);
    } catch {
      // The server is gone: no one waits for this run's end.
    }
  };
}

/** How many views the next started CLI readies sandboxes for (at most one per job). */
export const MAX_VIEWS_AHEAD = 4;

/** What the server sends a started CLI before a launch: the host tool sets of the last run's builds. */
export interface ViewsAhead {
  type: "views";
  toolSets: HostToolSet[];
}

/** Gives spare sandboxes the views of these tool sets (best effort: a view that cannot be made is the run's to report). */
function readyViews(root: string, toolSets: readonly HostToolSet[]): void {
  try {
    const views = toolSets.flatMap((tools) => hostViewFor(tools).view ?? []);
    sandboxPool(root).showViews(views.slice(0, defaultJobs()));
  } catch {
    // The run meets it again, and says what is wrong.
  }
}

/** Loads, ahead of the launch, what its realise would load on the way; returns what lets esbuild's service stop after. */
async function prepare(root: string): Promise<() => void> {
  // Node makes its standard streams on first use (~5 ms).
  void process.stdout;
  void process.stderr;
  // Node's own modules that a realise loads on the way (process.moduleLoadList after one), compiled now.
  for (const loaded of [fsPromises, dns, perfHooks]) void loaded;
  await import("../cli/main.js");
  const { parseRealiseArgs } = await import("../cli/realise.js");
  // Once through the argument parser and BLAKE3's native binding (the recipe API's copy loads the same module).
  parseRealiseArgs(["warm.ts", "--jobs", "1"]);
  (await import("../graph/hash.js")).blake3Hex("");
  await import("../schedule/execute.js");
  await import("../ui/index.js");
  // The database driver and its native addon (opening a store loads them; this one exists: the server serves it).
  const { Store } = await import("../store/index.js");
  Store.open(root).close();
  // dpkg's index, which hostTools and the sandboxes' views read (kept in memory, keyed by the database's stamp).
  const { dpkgAdmindir, loadIndex } = await import("../host/dpkg.js");
  loadIndex(dpkgAdmindir());
  const { warmEvaluation } = await import("../recipe/load.js");
  const release = await warmEvaluation();
  // Sandboxes for the first builds, as a realise starts them while its recipe evaluates.
  sandboxPool(root).warm(defaultJobs());
  return release;
}

/** Takes the launcher's place: its environment, folder, umask and terminal. */
function adopt(order: RunOrder): void {
  for (const name of Object.keys(process.env)) delete process.env[name];
  Object.assign(process.env, order.env);
  try {
    process.chdir(order.cwd);
  } catch (err) {
    // Removed between the launcher's request and now.
    throw new UkbError("usage", `cannot enter the working folder ${order.cwd}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  process.umask(order.umask);
  // As the launcher's own CLI sees its command line: node, ukb's entry, the arguments.
  process.argv.splice(2, Infinity, ...order.argv);
  // The output goes through pipes to the launcher, which writes it to its terminal: the live status
  // line is drawn where the launcher's own CLI would have drawn it.
  for (const [stream, isTerminal] of [
    [process.stdout, order.terminal.stdout],
    [process.stderr, order.terminal.stderr],
  ] as const) {
    if (!isTerminal) continue;
    Object.defineProperty(stream, "isTTY", { value: true, configurable: true });
    Object.defineProperty(stream, "columns", { value: order.terminal.columns || 80, configurable: true });
  }
}
