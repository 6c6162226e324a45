/**
 * `ukb server start|stop|status|run [--store DIR]`: the store's server, which
 * answers a no-op `ukb realise` run through the native launcher (bin/ukb)
 * in milliseconds instead of a Node start. Optional: without one, every
 * command runs in Node as usual.
 */
import fs from "node:fs";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { parseArgs } from "node:util";
import { ExitCode, UkbError, UsageError } from "../errors/index.js";
import { PACKAGE_ROOT } from "../recipe/location.js";
import { askServer, runServer, serverStatus } from "../server/index.js";
import { storeRoot } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export const usage = `ukb server start [--store DIR] [--idle-timeout SECONDS]   start the store's server in the background
ukb server stop | status [--store DIR]                      stop it; say whether one runs (exit 1 if not)
ukb server run [--store DIR] [--idle-timeout SECONDS]     run it in the foreground (for a service manager)`;

const DEFAULT_IDLE_SECONDS = 3 * 3600;
const MAX_IDLE_SECONDS = 2_147_483;

export async function serverCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { store: { type: "string" }, "idle-timeout": { type: "string" }, json: { type: "boolean" } },
  });
  const root = storeRoot(values.store);
  const idleSeconds = values["idle-timeout"] === undefined ? DEFAULT_IDLE_SECONDS : Number(values["idle-timeout"]);
  // Node's timers hold at most 2^31-1 ms (24.8 days).
  if (!(idleSeconds > 0 && idleSeconds <= MAX_IDLE_SECONDS)) throw new UsageError(`--idle-timeout needs a number of seconds from 1 to ${MAX_IDLE_SECONDS}, not '${values["idle-timeout"]}'`);
  const [action] = positionals;
  switch (positionals.length === 1 ? action : undefined) {
    case "run":
      await runServer(root, { idleMs: idleSeconds * 1000, log: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`) });
      return ExitCode.ok;
    case "start":
      return start(root, idleSeconds);
    case "stop": {
      const answer = await askServer(root, "stop").catch(() => undefined);
      writeStdout(answer ? `stopped the server of ${root}\n` : `no server runs for ${root}\n`);
      return ExitCode.ok;
    }
    case "status": {
      const status = await serverStatus(root);
      if (values.json) writeStdout(`${JSON.stringify(status ?? null)}\n`);
      else writeStdout(status ? `a server runs for ${root}: pid ${status.pid}, since ${status.startedAt}, ${status.answered} of ${status.requests} requests answered\n` : `no server runs for ${root}\n`);
      return status ? ExitCode.ok : ExitCode.buildFailed;
    }
    default:
      throw new UsageError(`server takes one of start, stop, status, run\nusage: ${usage}`);
  }
}

/** Starts `ukb server run` detached, its output in the store's logs, and waits until it answers. */
async function start(root: string, idleSeconds: number): Promise<number> {
  const already = await serverStatus(root);
  if (already) {
    writeStdout(`a server already runs for ${root}: pid ${already.pid}\n`);
    return ExitCode.ok;
  }
  const { child, logFile } = spawnServer(root, idleSeconds);
  let exited: number | null | undefined;
  child.once("exit", (code) => (exited = code));
  for (let waited = 0; waited < 10_000; waited += 50) {
    const status = await serverStatus(root);
    if (status) {
      writeStdout(`started a server for ${root}: pid ${status.pid} (log: ${logFile})\n`);
      return ExitCode.ok;
    }
    if (exited !== undefined) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const tail = fs.readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-3).join("\n  ");
  throw new UkbError("store", `the server for ${root} did not start${exited !== undefined ? ` (exit ${exited})` : ""}; its log says:\n  ${tail}`);
}

/** The variable by which the native launcher (src/client/ukb.c) says that no server listens for the store. */
const NO_SERVER_YET = "UKB_LAUNCHER_NO_SERVER";

/**
 * After a realise that the launcher ran through Node because no server
 * listened for the store: starts one in the background, without waiting
 * for it, so that the next no-op is answered in milliseconds. Bazel's and
 * Gradle's clients start their servers the same way; this one stops after
 * the same idle time as `ukb server start`'s, when its store is deleted,
 * or on `ukb server stop`. UKB_NO_SERVER=1 keeps the launcher from asking,
 * and so from starting one. A server that cannot start says why in the
 * store's logs/server.log; the realise has succeeded either way.
 */
export function startServerForLauncher(root: string): void {
  if (process.env[NO_SERVER_YET] !== "1" || process.env.UKB_NO_SERVER) return;
  // Only once per process, and not for whatever this process runs next.
  delete process.env[NO_SERVER_YET];
  try {
    spawnServer(root, DEFAULT_IDLE_SECONDS);
  } catch {
    // A store whose logs folder cannot be written: the next realise runs through Node, as before.
  }
}

/** `ukb server run` for the store at `root`, detached from this process, its output appended to the store's logs/server.log. */
function spawnServer(root: string, idleSeconds: number): { child: ChildProcess; logFile: string } {
  const logFile = path.join(root, "logs", "server.log");
  let log: number;
  try {
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    log = fs.openSync(logFile, "a");
  } catch (err) {
    throw new UkbError("store", `cannot start a server for the store at ${root}: ${(err as Error).message}`);
  }
  const env = { ...process.env };
  delete env[NO_SERVER_YET];
  const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, "bin/ukb.cjs"), "server", "run", "--store", root, "--idle-timeout", String(idleSeconds)], {
    detached: true,
    stdio: ["ignore", log, log],
    cwd: "/",
    env,
  });
  fs.closeSync(log);
  child.unref();
  return { child, logFile };
}
