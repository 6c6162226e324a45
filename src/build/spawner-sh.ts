/**
 * The POSIX sh co-process: works wherever /bin/sh does. A command is a
 * script file (every argument single-quoted, so an argument may hold
 * newlines) sourced by a background job of the shell, which then reports
 * "done"; an EXIT trap reports even a script that cannot be read. Gates are
 * FIFOs from a small pool (the shell makes them: Node has no mkfifo), held
 * open read-write and non-blocking by Node so that writing never blocks.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Dialect, Send } from "./spawner.js";

const SCRIPT = `
trap 'trap - EXIT; kill -KILL 0 2>/dev/null' EXIT
while IFS= read -r line; do
  case "$line" in
    "kill "*) kill -KILL \${line#kill } 2>/dev/null ;;
    "run "*)
      rest=\${line#run }; id=\${rest%% *}; script=\${rest#* }
      { trap 'echo "done $id 126"' EXIT; . "$script" </dev/null; s=$?; trap - EXIT; echo "done $id $s"; } &
      echo "pid $id $!" ;;
    "fifo "*)
      rest=\${line#fifo }; id=\${rest%% *}; fifo=\${rest#* }
      mkfifo -m 600 "$fifo"; echo "done $id $?" ;;
  esac
done
`;

/** Quotes a word for the POSIX shell. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

interface Gate {
  readonly path: string;
  readonly fd: number;
}

const freeGates: Gate[] = [];
const gatesInUse = new Map<number, Gate>();
let gateDir: string | undefined;
let gateCount = 0;

async function takeGate(send: Send): Promise<Gate> {
  const free = freeGates.pop();
  if (free) return free;
  gateDir ??= makeGateDir();
  const fifo = path.join(gateDir, `gate-${gateCount++}`);
  const status = await send((id) => `fifo ${id} ${fifo}\n`);
  if (status !== 0) throw new Error(`spawner: mkfifo ${fifo} failed`);
  return { path: fifo, fd: fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK) };
}

/** A private folder for the gates, removed when this process exits. */
function makeGateDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ukb-gates-"));
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const shellDialect: Dialect = {
  name: "sh",
  announcesReady: false,
  command: () => ({ file: "/bin/sh", args: ["-c", SCRIPT] }),

  async run(id, argv, log, scratch, gated, send) {
    if (scratch.includes("\n")) throw new Error(`spawner: a script path may not hold a newline: ${JSON.stringify(scratch)}`);
    let redirect = "";
    if (gated) {
      const gate = await takeGate(send);
      gatesInUse.set(id, gate);
      redirect = ` 3<>${shellQuote(gate.path)}`;
    }
    fs.writeFileSync(scratch, `${argv.map(shellQuote).join(" ")} >>${shellQuote(log)} 2>&1${redirect}\n`);
    return `run ${id} ${scratch}\n`;
  },

  go(id) {
    const gate = gatesInUse.get(id);
    if (gate) fs.writeSync(gate.fd, "g");
  },

  kill: (_id, pid) => (pid ? `kill ${pid}\n` : undefined),

  /** Back to the pool, emptied: a command killed before it read its byte must not open the next one's gate. */
  finished(id) {
    const gate = gatesInUse.get(id);
    if (!gate) return;
    gatesInUse.delete(id);
    const scratch = Buffer.alloc(64);
    try {
      while (fs.readSync(gate.fd, scratch, 0, scratch.length, null) > 0);
    } catch {
      // EAGAIN: empty.
    }
    freeGates.push(gate);
  },
};
