/**
 * `ukb server start|stop|status|run [--store DIR]`: the store's server, which
 * answers a no-op `ukb realise` run through the native launcher (bin/ukb)
 * in milliseconds instead of a Node start. Optional: without one, every
 * command runs in Node as usual.
 */
import fs from "node:fs";
import path from "node:path";
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { parseArgs } from "node:util";
import { ExitCode, UkbError, UsageError } from "../errors/index.js";
import { PACKAGE_ROOT } from "../recipe/location.js";
import { askServer, runServer, serverStatus } from "../server/index.js";
import { storeRoot } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export const usage = `ukb server start [--store DIR] [--idle-timeout SECONDS]   start the store's server in the background
ukb server stop | status [--store DIR]                      stop it; say whether one runs (exit 1 if not)
ukb server run [--store DIR] [--idle-timeout SECONDS] [--if-store-exists]
                                                            run it in the foreground (for a service manager);
                                                            --if-store-exists: not for a store that is not there
                                                            (made by no one), nor beside another server`;

const DEFAULT_IDLE_SECONDS = 3 * 3600;
const MAX_IDLE_SECONDS = 2_147_483;

export async function serverCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { store: { type: "string" }, "idle-timeout": { type: "string" }, json: { type: "boolean" }, "if-store-exists": { type: "boolean" } },
  });
  const root = storeRoot(values.store);
  const idleSeconds = values["idle-timeout"] === undefined ? DEFAULT_IDLE_SECONDS : Number(values["idle-timeout"]);
  // Node's timers hold at most 2^31-1 ms (24.8 days).
  if (!(idleSeconds > 0 && idleSeconds <= MAX_IDLE_SECONDS)) throw new UsageError(`--idle-timeout needs a number of seconds from 1 to ${MAX_IDLE_SECONDS}, not '${values["idle-timeout"]}'`);
  const [action] = positionals;
  switch (positionals.length === 1 ? action : undefined) {
    case "run":
      await runServer(root, {
        idleMs: idleSeconds * 1000,
        log: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
        ...(values["if-store-exists"] ? { onlyExistingStore: true } : {}),
      });
      return ExitCode.ok;
    case "warm":
      // Started by the server itself (src/server/warm.ts): not in the usage.
      return (await import("../server/warm-child.js")).serveOneRun(root);
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
      else if (!status) writeStdout(`no server runs for ${root}\n`);
      else {
        writeStdout(`a server runs for ${root}: pid ${status.pid}, since ${status.startedAt}, ${status.answered} of ${status.requests} requests answered, ${status.ran} run by its started CLI\n`);
        writeStdout(`its started CLI: ${status.startedCli}\n`);
        if (status.lastRun) writeStdout(`the last one it ran (${status.lastRun.at}): ${status.lastRun.why}\n`);
        if (status.lastFallback) writeStdout(`the last one it left to the CLI (${status.lastFallback.at}): ${status.lastFallback.why}\n`);
      }
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
  child.once("error", () => (exited = 127));
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

/**
 * After a realise that the launcher ran through Node because no server
 * listened for the store: starts one in the background, without waiting
 * for it to answer, so that the next no-op is answered in milliseconds.
 * Bazel's and Gradle's clients start their servers the same way; this one
 * stops after the same idle time as `ukb server start`'s, when its store
 * is deleted, or on `ukb server stop`. It serves only a store that still
 * exists and makes nothing (`--if-store-exists`). UKB_NO_SERVER=1 keeps the
 * launcher from asking, and so from starting one. Whatever goes wrong is
 * said in the store's logs/server.log, never to the user: the realise has
 * succeeded either way.
 */
export async function startServerForLauncher(root: string): Promise<void> {
  // The launcher may not have reached a server that runs (it names the store as this process does,
  // but a connect can fail for other reasons): one is enough.
  if (await serverStatus(root, 1000)) return;
  try {
    spawnServer(root, DEFAULT_IDLE_SECONDS, { onlyExistingStore: true });
  } catch {
    // The store's logs folder cannot be written: the next realise runs through Node, as before.
  }
}

/** The server's log grows by a few lines per start; past this it starts again (the previous one kept as server.log.1). */
const MAX_LOG_BYTES = 1 << 20;

/** `ukb server run` for the store at `root`, detached from this process, its output appended to the store's logs/server.log. */
function spawnServer(root: string, idleSeconds: number, options: { onlyExistingStore?: boolean } = {}): { child: ChildProcess; logFile: string } {
  const logFile = path.join(root, "logs", "server.log");
  let log: number;
  try {
    // A server started by a realise makes nothing: the store and its logs folder exist, or it does not start.
    if (!options.onlyExistingStore) fs.mkdirSync(path.dirname(logFile), { recursive: true });
    if ((fs.statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > MAX_LOG_BYTES) fs.renameSync(logFile, `${logFile}.1`);
    log = fs.openSync(logFile, "a");
  } catch (err) {
    throw new UkbError("store", `cannot start a server for the store at ${root}: ${(err as Error).message}`);
  }
  const args = [path.join(PACKAGE_ROOT, "bin/ukb.cjs"), "server", "run", "--store", root, "--idle-timeout", String(idleSeconds)];
  if (options.onlyExistingStore) args.push("--if-store-exists");
  const { stdio, devNull } = stdioClosingInherited(log);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, args, { detached: true, stdio, cwd: "/" });
  } finally {
    fs.closeSync(log);
    if (devNull !== undefined) fs.closeSync(devNull);
  }
  // Node gone from its path, no process left to start (ENOENT, EAGAIN): said here, never thrown.
  child.on("error", (err) => fs.appendFileSync(logFile, `${new Date().toISOString()} cannot start: ${err.message}\n`));
  child.unref();
  return { child, logFile };
}

/**
 * The child's stdio: nothing in, `log` out, and over every descriptor this
 * process was given without close-on-exec (a caller's pipe: a make
 * jobserver's, a CI runner's, `out=$(ukb ...)`'s is fd 1 and already
 * replaced), /dev/null. The server lives for hours: a pipe it held would
 * keep its caller waiting for an EOF. Node's own descriptors are all
 * close-on-exec (libuv opens them so).
 */
function stdioClosingInherited(log: number): { stdio: StdioOptions; devNull?: number } {
  const stdio: (number | "ignore")[] = ["ignore", log, log];
  let names: string[] = [];
  try {
    names = fs.readdirSync("/proc/self/fd");
  } catch {
    return { stdio }; // no /proc: nothing to find them by
  }
  let devNull: number | undefined;
  for (const name of names) {
    const fd = Number(name);
    if (!(fd > 2) || fd === log) continue;
    let flags: number;
    try {
      flags = parseInt(/^flags:\s*([0-7]+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))?.[1] ?? "2000000", 8);
    } catch {
      continue; // the readdir's own descriptor, closed since
    }
    if (flags & O_CLOEXEC) continue;
    devNull ??= fs.openSync("/dev/null", "r");
    while (stdio.length < fd) stdio.push("ignore");
    stdio[fd] = devNull;
  }
  return devNull === undefined ? { stdio } : { stdio, devNull };
}

/** O_CLOEXEC as /proc/PID/fdinfo shows the flags (octal). */
const O_CLOEXEC = 0o2000000;
