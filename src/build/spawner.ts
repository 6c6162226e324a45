/**
 * Starts builders through a small shell co-process instead of Node's spawn.
 *
 * Node's child_process.spawn forks the whole Node process synchronously on
 * the event loop: 10–25 ms a build on these machines, during which nothing
 * else runs, which serialised a graph of small builds. A POSIX shell of ~1 MB
 * forks in a fraction of a millisecond. No library does this; the protocol
 * is three line types on two pipes:
 *   node → sh:  "run ID SCRIPT" | "kill PID"
 *   sh → node:  "pid ID PID" when started, "done ID STATUS" when finished
 * SCRIPT is a file that redirects output to the log and holds the command,
 * every argument single-quoted (so an argument may hold newlines); it is
 * sourced in a subshell, so even a broken script ends with a "done" line.
 * The shell runs in its own process group; when Node goes away (even with
 * kill -9) its stdin closes and it kills the group, builds included.
 */
import fs from "node:fs";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

const SCRIPT = `
trap 'trap - EXIT; kill -KILL 0 2>/dev/null' EXIT
while IFS= read -r line; do
  case "$line" in
    "kill "*) kill -KILL \${line#kill } 2>/dev/null ;;
    "run "*)
      rest=\${line#run }; id=\${rest%% *}; script=\${rest#* }
      { ( . "$script" ) </dev/null; echo "done $id $?"; } &
      echo "pid $id $!" ;;
  esac
done
`;

/** Quotes a word for the POSIX shell. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

interface Job {
  resolve: (r: { code: number | null; signal: NodeJS.Signals | null }) => void;
  pid?: number;
  killed?: boolean;
}

class Spawner {
  private proc: ChildProcess | undefined;
  private next = 1;
  private readonly jobs = new Map<number, Job>();

  private ensure(): ChildProcess {
    if (this.proc && this.proc.exitCode === null) return this.proc;
    const proc = spawn("/bin/sh", ["-c", SCRIPT], { stdio: ["pipe", "pipe", "inherit"], detached: true });
    // The co-process must not keep ukb alive when idle: only pending jobs hold the event loop.
    proc.unref();
    this.handles(proc).forEach((h) => h.unref?.());
    createInterface({ input: proc.stdout! }).on("line", (line) => this.onLine(line));
    proc.once("exit", () => {
      for (const job of this.jobs.values()) job.resolve({ code: null, signal: "SIGKILL" });
      this.jobs.clear();
    });
    this.proc = proc;
    return proc;
  }

  private handles(proc: ChildProcess): { ref?: () => void; unref?: () => void }[] {
    return [proc.stdout as unknown as { ref?: () => void; unref?: () => void }, proc.stdin as unknown as { ref?: () => void; unref?: () => void }];
  }

  /** Holds the event loop while jobs run, releases it when none does. */
  private track(): void {
    if (!this.proc) return;
    for (const h of this.handles(this.proc)) {
      if (this.jobs.size > 0) h.ref?.();
      else h.unref?.();
    }
  }

  private onLine(line: string): void {
    const [kind, idText, value] = line.split(" ");
    const job = this.jobs.get(Number(idText));
    if (!job) return;
    if (kind === "pid") {
      job.pid = Number(value);
      if (job.killed) this.proc?.stdin?.write(`kill ${job.pid}\n`);
    } else if (kind === "done") {
      this.jobs.delete(Number(idText));
      this.track();
      const status = Number(value);
      // The shell reports death by signal N as 128+N.
      job.resolve(status > 128 && status < 160 ? { code: null, signal: signalName(status - 128) } : { code: status, signal: null });
    }
  }

  /**
   * Runs argv with stdout and stderr appended to `logFile`; resolves with how
   * it ended. `scriptFile` is a scratch file for the command (no newline in its path).
   */
  run(argv: readonly string[], logFile: string, scriptFile: string, signal?: AbortSignal): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (scriptFile.includes("\n")) throw new Error(`spawner: a script path may not hold a newline: ${JSON.stringify(scriptFile)}`);
    fs.writeFileSync(scriptFile, `exec >>${shellQuote(logFile)} 2>&1\n${argv.map(shellQuote).join(" ")}\n`);
    const proc = this.ensure();
    const id = this.next++;
    return new Promise((resolve) => {
      const job: Job = { resolve };
      this.jobs.set(id, job);
      this.track();
      const onAbort = () => {
        job.killed = true;
        if (job.pid) proc.stdin!.write(`kill ${job.pid}\n`);
        this.jobs.delete(id);
        this.track();
        resolve({ code: null, signal: "SIGKILL" });
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      const original = job.resolve;
      job.resolve = (r) => {
        signal?.removeEventListener("abort", onAbort);
        original(r);
      };
      proc.stdin!.write(`run ${id} ${scriptFile}\n`);
    });
  }
}

const SIGNALS: Record<number, NodeJS.Signals> = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM" };
function signalName(n: number): NodeJS.Signals {
  return SIGNALS[n] ?? ("SIG" + n) as NodeJS.Signals;
}

/** The process-wide spawner. */
export const spawner = new Spawner();
