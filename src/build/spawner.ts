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
 * Warm starts: a command may be given a gate as its fd 3; bubblewrap's
 * --block-fd 3 then sets the whole sandbox up (namespaces, mounts: two thirds
 * of a bwrap start) and waits until `go()` puts a byte into the gate. The
 * scheduler prepares the next sandbox while a job slot is still busy, so a
 * slot only ever waits for the builder itself.
 *
 * The co-process dies with ukb (its stdin closes, even after kill -9) and
 * kills what it started; bwrap's --die-with-parent covers the rest.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
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
  /** The line that starts `argv`, output appended to `log`; `gated`: fd 3 is the gate. Async: it may need to prepare files first. */
  run(id: number, argv: readonly string[], log: string, scratch: string, gated: boolean, send: Send): Promise<string>;
  /** Opens the gate of the command `id`; `write` sends a line that gets no answer. */
  go(id: number, write: (line: string) => void): void;
  kill(id: number, pid: number | undefined): string | undefined;
  /** Called when the command `id` is done (gates go back to a pool). */
  finished?(id: number): void;
}

/** Sends a request to the co-process and resolves with its "done" status. */
export type Send = (line: (id: number) => string) => Promise<number>;

interface Job {
  resolve: (status: number | "killed") => void;
  pid?: number;
  killed?: boolean;
}

interface Running {
  readonly proc: ChildProcess;
  readonly dialect: Dialect;
  readonly ready: Promise<boolean>;
}

class Spawner {
  private current: Promise<Running> | undefined;
  private next = 1;
  private readonly jobs = new Map<number, Job>();
  /** Set in tests and benchmarks to force one co-process. */
  private readonly forced = process.env.UKB_SPAWNER;

  private start(dialect: Dialect): Running | undefined {
    const cmd = dialect.command();
    if (!cmd) return undefined;
    const proc = spawn(cmd.file, cmd.args, { stdio: ["pipe", "pipe", "inherit"], detached: true });
    // The co-process must not keep ukb alive when idle: only pending jobs (and its start) hold the event loop.
    proc.unref();
    let announce: (ok: boolean) => void = () => undefined;
    const ready = dialect.announcesReady ? new Promise<boolean>((r) => (announce = r)) : Promise.resolve(true);
    void ready.then(() => this.track(proc));
    createInterface({ input: proc.stdout! }).on("line", (line) => (line === "ready" ? announce(true) : this.onLine(line)));
    proc.once("error", () => announce(false));
    proc.once("exit", () => {
      announce(false);
      for (const job of this.jobs.values()) job.resolve("killed");
      this.jobs.clear();
      this.current = undefined;
    });
    return { proc, dialect, ready };
  }

  /** The running co-process: Python if it comes up, the shell otherwise. */
  private ensure(): Promise<Running> {
    return (this.current ??= (async () => {
      const order = this.forced === "sh" ? [shellDialect] : [pythonDialect, shellDialect];
      for (const dialect of order) {
        const running = this.start(dialect);
        if (running && (await running.ready)) return running;
      }
      throw new Error("spawner: neither python3 nor /bin/sh could be started");
    })());
  }

  private handles(proc: ChildProcess): { ref?: () => void; unref?: () => void }[] {
    return [proc.stdout as unknown as { ref?: () => void; unref?: () => void }, proc.stdin as unknown as { ref?: () => void; unref?: () => void }];
  }

  /** Holds the event loop while jobs run, releases it when none does. */
  private track(proc: ChildProcess): void {
    for (const h of this.handles(proc)) {
      if (this.jobs.size > 0) h.ref?.();
      else h.unref?.();
    }
  }

  private onLine(line: string): void {
    const [kind, idText, value] = line.split(" ");
    const id = Number(idText);
    const job = this.jobs.get(id);
    if (!job) return;
    if (kind === "pid") {
      job.pid = Number(value);
      if (job.killed) void this.kill(id);
    } else if (kind === "done") {
      this.jobs.delete(id);
      job.resolve(Number(value));
    }
  }

  private async kill(id: number): Promise<void> {
    const { proc, dialect } = await this.ensure();
    const line = dialect.kill(id, this.jobs.get(id)?.pid);
    if (line) proc.stdin!.write(line);
  }

  /** Sends the request `text` (numbered `id`); resolves with its status when the co-process reports it done. */
  private submit(running: Running, id: number, text: string, signal?: AbortSignal): Promise<number | "killed"> {
    return new Promise((resolve) => {
      const job: Job = { resolve };
      this.jobs.set(id, job);
      this.track(running.proc);
      const onAbort = () => {
        job.killed = true;
        void this.kill(id);
      };
      job.resolve = (status) => {
        signal?.removeEventListener("abort", onAbort);
        this.jobs.delete(id);
        this.track(running.proc);
        running.dialect.finished?.(id);
        resolve(status);
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
      running.proc.stdin!.write(text);
    });
  }

  private sender(running: Running): Send {
    return async (line) => {
      const id = this.next++;
      const status = await this.submit(running, id, line(id));
      return status === "killed" ? -1 : status;
    };
  }

  /**
   * Runs argv with stdout and stderr appended to `logFile`; resolves with how
   * it ended. `scratch` is a file the co-process may use for the command.
   */
  async run(argv: readonly string[], logFile: string, scratch: string, signal?: AbortSignal): Promise<Exit> {
    const running = await this.ensure();
    const id = this.next++;
    const text = await running.dialect.run(id, argv, logFile, scratch, false, this.sender(running));
    return toExit(await this.submit(running, id, text, signal));
  }

  /**
   * Starts argv — which must wait on fd 3 before doing anything that
   * matters (bwrap --block-fd 3) — with a gate as its fd 3. Resolves once
   * it is started; `go()` opens the gate.
   */
  async runGated(argv: readonly string[], logFile: string, scratch: string, signal?: AbortSignal): Promise<GatedRun> {
    const running = await this.ensure();
    const id = this.next++;
    const text = await running.dialect.run(id, argv, logFile, scratch, true, this.sender(running));
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
        running.dialect.go(id, (line) => running.proc.stdin!.write(line));
      },
      exited,
    };
  }
}

function toExit(status: number | "killed"): Exit {
  if (status === "killed") return { code: null, signal: "SIGKILL" };
  // Both co-processes report death by signal N as 128+N.
  return status > 128 && status < 160 ? { code: null, signal: signalName(status - 128) } : { code: status, signal: null };
}

const SIGNALS: Record<number, NodeJS.Signals> = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM" };
function signalName(n: number): NodeJS.Signals {
  return SIGNALS[n] ?? (("SIG" + n) as NodeJS.Signals);
}

/** The process-wide spawner. */
export const spawner = new Spawner();
