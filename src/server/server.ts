/**
 * `ukb server`: a long-lived process per store that answers no-op realises
 * for the native launcher in a few milliseconds, where starting Node alone
 * takes over 100 ms here (Bazel's client/server split, for the same reason).
 *
 * It listens on `<store>/server.sock` (mode 0600: the store's owner only),
 * answers one request at a time, and exits after `idleMs` without requests,
 * on `ukb server stop`, on SIGTERM/SIGINT, when its socket is removed or
 * replaced (a deleted store, a newer server), or when ukb's own code on disk
 * changes under it (an upgrade): stale answers are never given, since any
 * doubt answers "fallback" and the Node CLI runs as if no server were there.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { UkbError } from "../errors/index.js";
import { PACKAGE_ROOT } from "../recipe/location.js";
import { answerLaunch } from "./answer.js";
import { WarmCli } from "./warm.js";
import { FALLBACK, MAX_REQUEST, SOCKET_NAME, fileIdentity, okAnswer, parseRequest, type ServerStatus } from "./protocol.js";
import { serverStatus, socketAddress } from "./control.js";

export interface ServerOptions {
  /** Exit after this long without a request. */
  idleMs: number;
  /** How often to check that the socket and ukb's code are still ours. */
  watchMs?: number;
  /** One line per event (start, stop, refused requests), for the server's log. */
  log?: (line: string) => void;
  /**
   * Serve only a store that exists, and make nothing (what a realise starts
   * in the background: its store may be deleted meanwhile, a temp folder a
   * script removed on exit); and if another server answers already, leave
   * it be and stop. Resolves at once in either case, after a log line.
   */
  onlyExistingStore?: boolean;
}

/** How long a request may wait behind others before the answer is "fallback". */
const MAX_QUEUE_MS = 2000;

/** The files whose change means this process runs old code: the bundles it was loaded from. */
function ownCodeStamp(): string {
  return ["dist/bundle/ukb.cjs", "dist/bundle/api.cjs"]
    .map((f) => {
      try {
        const st = fs.statSync(path.join(PACKAGE_ROOT, f));
        return `${f}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      } catch {
        return `${f}:-`;
      }
    })
    .join(",");
}

/** Runs a server for the store at `root` until it has a reason to stop; resolves then. */
export async function runServer(root: string, options: ServerOptions): Promise<void> {
  const log = options.log ?? (() => {});
  if (options.onlyExistingStore) {
    if (!fs.existsSync(path.join(root, "ukb.sqlite"))) {
      log(`not started: there is no store at ${root} (any more)`);
      return;
    }
  } else {
    try {
      fs.mkdirSync(root, { recursive: true });
    } catch (err) {
      throw new UkbError("store", `cannot serve the store at ${root}: ${(err as Error).message}`);
    }
  }
  const socketPath = path.join(root, SOCKET_NAME);
  if (fs.existsSync(socketPath)) {
    const other = await serverStatus(root);
    if (other && options.onlyExistingStore) {
      log(`not started: pid ${other.pid} serves ${root} already`);
      return;
    }
    if (other) throw new UkbError("usage", `a ukb server already serves ${root} (pid ${other.pid}); stop it with 'ukb server stop'`);
    // Else left by a server that was killed: binding below replaces it.
  }

  const codeStamp = ownCodeStamp();
  // (Its started CLI's state is asked of it when a status is.)
  const status: Omit<ServerStatus, "startedCli"> = { pid: process.pid, store: root, packageRoot: PACKAGE_ROOT, startedAt: new Date().toISOString(), requests: 0, answered: 0, ran: 0 };
  let queue = Promise.resolve();
  let stopRequested = false;
  let stopping: ((reason: string) => void) | undefined;
  const stopped = new Promise<string>((resolve) => (stopping = resolve));
  const stop = (reason: string) => {
    stopRequested = true;
    stopping?.(reason);
  };

  const connections = new Set<net.Socket>();
  /** Connections of runs under way: a stopping server lets them end (its process lives on until they do). */
  const runs = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (conn) => {
    const chunks: Buffer[] = [];
    let size = 0;
    connections.add(conn);
    conn.on("close", () => connections.delete(conn));
    // A launcher sends its request at once; one that holds a connection open must not hold the server.
    conn.setTimeout(5000, () => conn.destroy());
    conn.on("error", () => conn.destroy());
    conn.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REQUEST) conn.destroy();
      else chunks.push(chunk);
    });
    conn.on("end", () => {
      const queuedAt = performance.now();
      // One request at a time: each takes about a millisecond, and the store's answers must not interleave.
      queue = queue.then(async () => {
        resetIdle();
        status.requests++;
        // A launcher gone, or one kept waiting (it gives up at 10 s): the CLI is faster now.
        if (conn.destroyed) return;
        if (performance.now() - queuedAt > MAX_QUEUE_MS) {
          conn.end(FALLBACK);
          return;
        }
        const request = parseRequest(Buffer.concat(chunks));
        if (typeof request === "string") {
          log(`refused a request: ${request}`);
          conn.end(FALLBACK);
          return;
        }
        if (request.kind === "control") {
          if (request.command === "status") conn.end(`${JSON.stringify({ ...status, startedCli: warm.whyNotReady() ?? "ready" } satisfies ServerStatus)}\n`);
          else if (request.command === "stop") {
            conn.end("stopping\n");
            stop("asked to stop");
          } else conn.end(FALLBACK);
          return;
        }
        if (ownCodeStamp() !== codeStamp) {
          conn.end(FALLBACK);
          stop("ukb's code changed on disk");
          return;
        }
        const outcome = await answerLaunch(request, root, PACKAGE_ROOT).catch((err: unknown) => ({ fallback: `internal error: ${(err as Error)?.message ?? String(err)}`, runnable: false }));
        if ("fallback" in outcome) {
          const notReady = outcome.runnable ? warm.whyNotReady() : undefined;
          if (outcome.runnable && notReady === undefined) {
            // Not awaited: the run takes as long as its builds, and the queue serves others meanwhile.
            status.ran++;
            status.lastRun = { at: new Date().toISOString(), why: outcome.fallback };
            log(`run: ${outcome.fallback}`);
            runs.add(conn);
            void warm.run(request, conn).then((code) => {
              runs.delete(conn);
              log(`run ended: exit ${code}`);
            });
            return;
          }
          const why = notReady ? `${outcome.fallback}; ${notReady}` : outcome.fallback;
          // Why a no-op the user expected to be quick was not: `ukb server status` and the log say.
          status.lastFallback = { at: new Date().toISOString(), why };
          log(`fallback: ${why}`);
          conn.end(FALLBACK);
        }
        // Counted once the launcher has it (the tests read this count).
        else conn.end(okAnswer(outcome.answer), () => status.answered++);
      }).catch((err: unknown) => {
        // A bug here must not stop the queue: this client falls back, the next is served.
        log(`internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        conn.destroy();
      });
    });
  });

  // Bound under a name of its own, then renamed over server.sock: a client never meets a socket
  // that does not answer yet, and Node's unlink of the bound name when the server closes cannot
  // remove a newer server's socket. Created 0600: only the store's owner (and root) may connect.
  const ownName = `${SOCKET_NAME}.${process.pid}`;
  fs.rmSync(path.join(root, ownName), { force: true }); // a killed server's, with our pid
  const oldMask = process.umask(0o177);
  const address = socketAddress(root, ownName);
  let socketIdentity: string | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(address.path, () => resolve());
    });
    // Taken from our own name, before the rename: another server may rename over server.sock meanwhile.
    socketIdentity = fileIdentity(path.join(root, ownName), { birth: true });
    fs.renameSync(path.join(root, ownName), socketPath);
  } catch (err) {
    server.close();
    fs.rmSync(path.join(root, ownName), { force: true });
    throw new UkbError("store", `cannot serve the store at ${root}: ${(err as Error).message}`);
  } finally {
    process.umask(oldMask);
    address.release();
  }
  log(`serving ${root} on ${socketPath} (pid ${process.pid})`);
  const warm = new WarmCli(root, log);
  warm.start();

  // Timers never keep the process alive: the listening socket does, until it closes.
  let idle: NodeJS.Timeout | undefined;
  function resetIdle() {
    clearTimeout(idle);
    if (!stopRequested) idle = setTimeout(() => stop(`idle for ${Math.round(options.idleMs / 1000)} s`), options.idleMs).unref();
  }
  resetIdle();
  const runningNode = fileIdentity("/proc/self/exe");
  const watch = setInterval(() => {
    if (fileIdentity(socketPath, { birth: true }) !== socketIdentity) stop("its socket was removed or replaced");
    else if (ownCodeStamp() !== codeStamp) stop("ukb's code changed on disk");
    // Node upgraded in place: the CLI now runs another version, which evaluations (and their cache key) may depend on.
    else if (runningNode !== undefined && fileIdentity(process.execPath) !== runningNode) stop("Node was replaced on disk");
  }, options.watchMs ?? 2000).unref();
  const onSignal = (signal: string) => stop(`got ${signal}`);
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);

  const reason = await stopped;
  warm.stop();
  clearTimeout(idle);
  clearInterval(watch);
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  await queue;
  // Answered ones are ending; any other (a client still sending) is cut.
  for (const conn of connections) if (!conn.writableEnded && !runs.has(conn)) conn.destroy();
  await closed;
  // Only our own socket: a newer server may have taken the name.
  if (fileIdentity(socketPath, { birth: true }) === socketIdentity) fs.rmSync(socketPath, { force: true });
  log(`stopped: ${reason}`);
}
