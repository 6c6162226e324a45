/**
 * The server's started CLI: a Node process running ukb's CLI, started ahead
 * of time with its code loaded and esbuild's service up, that runs the
 * next launch the server cannot answer itself (a changed recipe, something
 * to build) in the launcher's place. Starting Node and loading ukb is most
 * of an edit-and-rebuild's time; the launcher would otherwise pay it on
 * every edit.
 *
 * Each started CLI runs one command and exits, as the launcher's own Node
 * CLI would (a recipe's code may change anything in its process); the next
 * is started when that run ends, so that it never competes with the run
 * for the cores. A launch that comes while none is ready goes to the
 * launcher's Node CLI, as before.
 *
 * The run adopts the launcher's arguments, environment, working folder,
 * umask and terminal (./warm-child.ts); its output reaches the launcher in
 * frames, and the launcher forwards its signals to it. It has the server's
 * rights, which answer.ts checked are the launcher's: the same user, groups,
 * view of the files, capabilities, no_new_privs and seccomp mode. Not
 * carried over: resource limits, the cgroup and the controlling terminal
 * (docs/architecture.md).
 */
import { spawn, type ChildProcess } from "node:child_process";
import type net from "node:net";
import os from "node:os";
import path from "node:path";
import { PACKAGE_ROOT } from "../recipe/location.js";
import { ownerAlive, processOwner } from "../store/index.js";
import { exitFrame, outputFrame, runAnswer, type Request } from "./protocol.js";
import type { RunEnd, RunOrder, ViewsAhead } from "./warm-child.js";

/** A started CLI that failed this many times in a row before saying "ready" is not started again. */
const MAX_FAILED_STARTS = 3;

export class WarmCli {
  private child: ChildProcess | undefined;
  private ready = false;
  private failedStarts = 0;
  private stopped = false;
  /** A run is under way (there is one started CLI at a time): the next starts when its process ends. */
  private running = false;
  /** The host tool sets the last run's builds asked views for. */
  private toolSets: RunEnd["toolSets"] = [];

  constructor(
    private readonly root: string,
    private readonly log: (line: string) => void,
  ) {}

  /** Starts the next CLI unless one is there, one runs, or starting keeps failing. */
  start(): void {
    if (this.stopped || this.child || this.running || this.failedStarts >= MAX_FAILED_STARTS) return;
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [path.join(PACKAGE_ROOT, "bin/ukb.cjs"), "server", "warm", "--store", this.root], {
        stdio: ["ignore", "pipe", "pipe", "ipc"],
        cwd: this.root,
      });
    } catch (err) {
      // Out of processes or descriptors for a moment: tried again as a start that failed.
      this.failedStarts++;
      this.log(`the started CLI could not start: ${(err as Error).message}`);
      setTimeout(() => this.start(), 1000).unref();
      return;
    }
    this.child = child;
    this.ready = false;
    // Until it runs a command, what it says is the server's log.
    const early: Buffer[] = [];
    const keep = (chunk: Buffer) => void early.push(chunk);
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    child.on("message", (message: { type?: string }) => {
      if (message?.type !== "ready" || this.child !== child) return;
      // Sandboxes showing the views the last run's builds asked for: the next edit's builds likely ask the same.
      if (this.toolSets.length > 0) child.send({ type: "views", toolSets: this.toolSets } satisfies ViewsAhead);
      this.ready = true;
      this.failedStarts = 0;
      child.stdout!.off("data", keep);
      child.stderr!.off("data", keep);
    });
    // Gone before it was taken for a run (killed, short of memory, or failing to start): started
    // again a second later; after a few failures to start, launches go to the launchers' own CLIs.
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (!this.ready) this.failedStarts++;
      this.log(`the started CLI ${why}${this.ready ? " while waiting" : ` before it was ready: ${Buffer.concat(early).toString("utf8").trim().slice(-500) || "(it said nothing)"}`}`);
      this.ready = false;
      setTimeout(() => this.start(), 1000).unref();
    };
    child.once("error", (err) => gone(`could not start (${err.message})`));
    child.once("exit", (code, signal) => gone(`exited (${signal ?? code})`));
    // An idle CLI must not keep the server alive when it stops.
    child.unref();
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
  }

  /** Why no run can start now, or undefined when one can. */
  whyNotReady(): string | undefined {
    if (this.ready && this.child) return undefined;
    if (this.running) return "the started CLI is running another command";
    if (this.failedStarts >= MAX_FAILED_STARTS) return "the started CLI failed to start (see the server's log)";
    return "the started CLI is not ready yet";
  }

  /**
   * Runs the launch in the ready CLI: answers `run PID`, then streams its
   * output and exit code to the launcher. The launcher has its code as soon
   * as the command has returned and all of its output has come; the next
   * CLI starts once this one's process has ended. Resolves with the exit
   * code when the launcher has it.
   */
  run(request: Extract<Request, { kind: "launch" }>, conn: net.Socket): Promise<number> {
    const child = this.child!;
    this.child = undefined;
    this.ready = false;
    this.running = true;
    const order: RunOrder = { argv: request.argv, env: request.env, cwd: request.cwd, umask: request.umask, terminal: request.terminal };
    child.send(order);
    conn.setTimeout(0);
    conn.write(runAnswer(child.pid!));
    const streams = [
      { fd: 1 as const, stream: child.stdout!, received: 0, closed: false },
      { fd: 2 as const, stream: child.stderr!, received: 0, closed: false },
    ];
    let end: RunEnd | undefined;
    let exitCode: number | undefined;
    let told: (code: number) => void = () => undefined;
    const toldLauncher = new Promise<number>((resolve) => (told = resolve));
    let over = false;
    // The end of the run, once known: the command's own word with all its output come, or the process gone with its pipes closed.
    const settle = () => {
      if (over) return;
      const outputCome = streams.every((s) => s.closed || (end !== undefined && s.received >= (s.fd === 1 ? end.stdout : end.stderr)));
      const code = end !== undefined && outputCome ? end.code : exitCode !== undefined && streams.every((s) => s.closed) ? exitCode : undefined;
      if (code === undefined) return;
      over = true;
      if (!conn.destroyed) conn.end(exitFrame(code));
      told(code);
    };
    // The launcher reads as fast as its own stdout takes it: a slow reader slows the run's output, as a pipe would.
    conn.on("drain", () => streams.forEach(({ stream }) => stream.resume()));
    for (const s of streams) {
      s.stream.on("data", (chunk: Buffer) => {
        s.received += chunk.length;
        // After the end (a sandbox's last words on the inherited stderr): the launcher has gone.
        if (conn.destroyed || over) return;
        let flowing = true;
        for (const part of outputFrame(s.fd, chunk)) flowing = conn.write(part) && flowing;
        if (!flowing) s.stream.pause();
        settle();
      });
      s.stream.once("close", () => {
        s.closed = true;
        settle();
      });
    }
    child.on("message", (message: RunEnd) => {
      if (message?.type !== "exit" || end) return;
      end = message;
      if (Array.isArray(message.toolSets) && message.toolSets.length > 0) this.toolSets = message.toolSets;
      // A turn later: output written before the message (by a program the recipe ran, which the
      // counts do not cover) and readable in the same poll is read first.
      setImmediate(settle);
    });
    // A launcher gone (killed, its terminal closed) is a run to stop, as its own Node CLI would have
    // been. Its socket says so only when written to, and a build may be silent for minutes: its PID
    // (with its start time: the same process, not a reused number) is looked at every half second.
    const stopRun = () => {
      if (exitCode === undefined && !over) child.kill("SIGTERM");
    };
    conn.on("close", stopRun);
    const launcher = processOwner(request.pid);
    const watch = setInterval(() => {
      if (!ownerAlive(launcher)) stopRun();
    }, 500).unref();
    child.once("exit", (code, signal) => {
      clearInterval(watch);
      exitCode = code ?? 128 + signalNumber(signal);
      settle();
      this.running = false;
      this.start();
    });
    return toldLauncher;
  }

  /** Stops the idle CLI (runs under way go on to their end). */
  stop(): void {
    this.stopped = true;
    this.child?.kill("SIGTERM");
    this.child = undefined;
  }
}

/** A signal's number (128 + it is the exit code a shell reports), 1 when unknown. */
function signalNumber(signal: NodeJS.Signals | null): number {
  return (signal && os.constants.signals[signal]) || 1;
}
