/**
 * Starts builders through a small co-process instead of Node's spawn.
 *
 * Node's child_process.spawn forks the whole Node process synchronously on
 * the event loop: about 11 ms a build on these machines (page-table work
 * traps to the hypervisor), during which nothing else runs. A co-process
 * starts the builders instead, on two pipes of lines:
 *   node → co-process: run, go (open a gate), kill
 *   co-process → node: "pid ID PID" when started, "done ID STATUS" when finished
 *
 * Two co-processes speak it, the first that works is used:
 * - Python 3 (spawner-py.ts), which starts commands with posix_spawn — vfork
 *   semantics, no page tables copied: 2.3 ms for /bin/true here;
 * - POSIX sh (spawner-sh.ts), everywhere: a fork of the shell per command,
 *   10 ms for /bin/true here.
 * No library does this for Node.
 *
 * Warm starts (Python only): a command may be given a gate as its fd 3;
 * bubblewrap's --block-fd 3 then sets the whole sandbox up (namespaces,
 * mounts: two thirds of a bwrap start) and waits until `go()` puts a byte
 * into the gate. The scheduler prepares the next sandbox while a job slot is
 * still busy, so a slot only ever waits for the builder itself.
 *
 * The co-process dies with ukb (its stdin closes, even after kill -9) and
 * kills what it started; bwrap's --die-with-parent covers the rest.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { UkbError } from "../errors/index.js";
import { pythonDialect } from "./spawner-py.js";
import { shellDialect } from "./spawner-sh.js";

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A command started behind a gate: set up, waiting for `go()`. */
export interface GatedRun {
  /** Lets the command run (once; nothing once it has ended). */
  go(): void;
  /** How it ended. */
  readonly exited: Promise<Exit>;
}

/** What one co-process needs to be told, in its own words. */
export interface Dialect {
  readonly name: string;
  /** The co-process's command line, or undefined when it cannot run here. */
  command(): { file: string; args: string[] } | undefined;
  /** Whether it prints "ready" once it is up (else it is ready at once). */
  readonly announcesReady: boolean;
  /** Whether it can start a command behind a gate (fd 3) and kill its sandbox safely (fd 4: bwrap --info-fd). */
  readonly gates: boolean;
  /** The line that starts `argv`, output appended to `log`; `gated`: behind a gate. */
  run(id: number, argv: readonly string[], log: string, scratch: string, gated: boolean): Promise<string>;
  /** Opens the gate of the command `id` (dialects that gate); `write` sends a line that gets no answer. */
  go?(id: number, write: (line: string) => void): void;
  /** The line that kills the command `id` (and makes the co-process report it done). */
  kill(id: number, pid: number | undefined): string | undefined;
}

interface Job {
  resolve: (status: number | "killed") => void;
  pid?: number;
  killed?: boolean;
}

interface Running {
  readonly proc: ChildProcess;
  readonly dialect: Dialect;
  /** True once it said "ready" (or needs not), false if it died or hung first. */
  readonly ready: Promise<boolean>;
  /** Its requests not yet done. */
  readonly jobs: Map<number, Job>;
  started: boolean;
  dead: boolean;
}

/** How long a co-process may take to say "ready" before the next one is tried. */
const READY_TIMEOUT_MS = 5000;

class Spawner {
  private current: Promise<Running> | undefined;
  private next = 1;
  /** Set in tests and benchmarks to force one co-process (UKB_SPAWNER=python|sh). */
  private readonly forced = process.env.UKB_SPAWNER;

  private start(dialect: Dialect): Running | undefined {
    const cmd = dialect.command();
    if (!cmd) return undefined;
    const proc = spawn(cmd.file, cmd.args, { stdio: ["pipe", "pipe", "inherit"], detached: true });
    let announce: (ok: boolean) => void = () => undefined;
    const ready = dialect.announcesReady ? new Promise<boolean>((r) => (announce = r)) : Promise.resolve(true);
    const running: Running = { proc, dialect, ready, jobs: new Map(), started: false, dead: false };
    // Held (ref'd) until it is up; after that only while requests are pending.
    void ready.then((ok) => {
      running.started = true;
      if (!ok) proc.kill("SIGKILL");
      this.track(running);
    });
    const hung = setTimeout(() => announce(false), READY_TIMEOUT_MS);
    hung.unref();
    void ready.then(() => clearTimeout(hung));
    // A write after it died fails with EPIPE; its closing stdout says the rest.
    proc.stdin!.on("error", () => undefined);
    proc.once("error", () => announce(false));
    const lines = createInterface({ input: proc.stdout! });
    lines.on("line", (line) => (line === "ready" ? announce(true) : this.onLine(running, line)));
    // Its stdout closing is its death, after every "done" line it wrote has been read.
    lines.once("close", () => {
      running.dead = true;
      announce(false);
      for (const job of [...running.jobs.values()]) job.resolve("killed");
      running.jobs.clear();
      this.track(running);
    });
    return running;
  }

  /** The running co-process: Python if it comes up, the shell otherwise; a new one if it died. */
  private ensure(): Promise<Running> {
    const attempt = (this.current ??= (async () => {
      // UKB_SPAWNER=python|sh: that one or nothing (tests and benchmarks must know which one ran).
      const order = this.forced === "sh" ? [shellDialect] : this.forced === "python" ? [pythonDialect] : [pythonDialect, shellDialect];
      for (const dialect of order) {
        const running = this.start(dialect);
        if (running && (await running.ready)) return running;
      }
      throw new UkbError("build", `cannot start builders: ${order.map((d) => d.name).join(" and ")} would not start`);
    })());
    return attempt.then(
      (running) => {
        if (!running.dead) return running;
        if (this.current === attempt) this.current = undefined;
        return this.ensure();
      },
      (err: unknown) => {
        if (this.current === attempt) this.current = undefined;
        throw err;
      },
    );
  }

  /** Holds the event loop while it starts or has requests pending, releases it otherwise. */
  private track(running: Running): void {
    holdEventLoop(running.proc, !running.dead && (!running.started || running.jobs.size > 0));
  }

  private onLine(running: Running, line: string): void {
    const [kind, idText, value] = line.split(" ");
    const id = Number(idText);
    const job = running.jobs.get(id);
    if (!job) return;
    if (kind === "pid") {
      job.pid = Number(value);
      if (job.killed) this.kill(running, id);
    } else if (kind === "done") {
      job.resolve(Number(value));
    }
  }

  private kill(running: Running, id: number): void {
    const line = running.dialect.kill(id, running.jobs.get(id)?.pid);
    if (line && !running.dead) running.proc.stdin!.write(line);
  }

  /** Sends the request `text` (numbered `id`); resolves with its status when the co-process reports it done. */
  private submit(running: Running, id: number, text: string, signal?: AbortSignal): Promise<number | "killed"> {
    return new Promise((resolve) => {
      if (running.dead) return resolve("killed");
      const job: Job = { resolve };
      running.jobs.set(id, job);
      this.track(running);
      const onAbort = () => {
        job.killed = true;
        this.kill(running, id);
      };
      job.resolve = (status) => {
        if (!running.jobs.has(id)) return;
        signal?.removeEventListener("abort", onAbort);
        running.jobs.delete(id);
        this.track(running);
        resolve(status);
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
      running.proc.stdin!.write(text);
    });
  }

  /**
   * Runs argv with stdout and stderr appended to `logFile`; resolves with how
   * it ended. `scratch` is a file the co-process may use for the command.
   */
  async run(argv: readonly string[], logFile: string, scratch: string, signal?: AbortSignal): Promise<Exit> {
    const running = await this.ensure();
    const id = this.next++;
    const text = await running.dialect.run(id, argv, logFile, scratch, false);
    return toExit(await this.submit(running, id, text, signal));
  }

  /**
   * Prepares argv to start on `go()`. With a co-process that gates, argv is
   * started at once with `gateArgs` after its program (bwrap: --block-fd 3
   * --info-fd 4), so that it sets up and waits; otherwise `go()` starts it.
   */
  async runGated(argv: readonly string[], gateArgs: readonly string[], logFile: string, scratch: string, signal?: AbortSignal): Promise<GatedRun> {
    const running = await this.ensure();
    if (!running.dialect.gates) {
      let start: () => void = () => undefined;
      const exited = new Promise<Exit>((resolve) => {
        start = () => resolve(this.run(argv, logFile, scratch, signal));
      });
      return { go: () => start(), exited: Promise.race([exited, aborted(signal)]) };
    }
    const id = this.next++;
    const text = await running.dialect.run(id, [argv[0]!, ...gateArgs, ...argv.slice(1)], logFile, scratch, true);
    let opened = false;
    let ended = false;
    const exited = this.submit(running, id, text, signal).then((status) => {
      ended = true;
      return toExit(status);
    });
    return {
      go: () => {
        if (opened || ended) return;
        opened = true;
        if (!running.dead) running.dialect.go?.(id, (line) => running.proc.stdin!.write(line));
      },
      exited,
    };
  }
}

/** Whether a helper process (and its pipes) keeps ukb's event loop alive: while it works for ukb, not while it idles. */
export function holdEventLoop(proc: ChildProcess, hold: boolean): void {
  for (const h of [proc, proc.stdout, proc.stdin] as unknown as { ref?: () => void; unref?: () => void }[]) {
    if (hold) h?.ref?.();
    else h?.unref?.();
  }
}

/** Resolves as a kill when `signal` aborts (never without one). */
function aborted(signal: AbortSignal | undefined): Promise<Exit> {
  return new Promise((resolve) => {
    if (!signal) return;
    if (signal.aborted) return resolve({ code: null, signal: "SIGKILL" });
    signal.addEventListener("abort", () => resolve({ code: null, signal: "SIGKILL" }), { once: true });
  });
}

/** How a command ended, from the status a co-process or pooled sandbox reports (death by signal N is 128+N). */
export function toExit(status: number | "killed"): Exit {
  if (status === "killed") return { code: null, signal: "SIGKILL" };
  return status > 128 && status < 160 ? { code: null, signal: signalName(status - 128) } : { code: status, signal: null };
}

const SIGNALS: Record<number, NodeJS.Signals> = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM" };
function signalName(n: number): NodeJS.Signals {
  return SIGNALS[n] ?? (("SIG" + n) as NodeJS.Signals);
}

/** The process-wide spawner. */
export const spawner = new Spawner();
