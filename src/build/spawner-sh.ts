/**
 * The POSIX sh co-process: works wherever /bin/sh does. A command is a
 * script file (every argument single-quoted, so an argument may hold
 * newlines) sourced by a background job of the shell, which then reports
 * "done"; an EXIT trap reports even a script that cannot be read. Killing a
 * command kills its background job and reports it done at once; the command
 * must die with its parent (bwrap does: --die-with-parent).
 *
 * No gates: a sandbox waiting on a gate whose parent is killed runs its
 * builder once the gate closes (bwrap reads end-of-file as "go"), and the
 * shell cannot learn the sandbox's pid to kill it first. Commands start when
 * their slot is free.
 */
import fs from "node:fs";
import type { Dialect } from "./spawner.js";

const SCRIPT = `
umask 022
trap 'trap - EXIT; kill -KILL 0 2>/dev/null' EXIT
while IFS= read -r line; do
  case "$line" in
    "kill "*)
      rest=\${line#kill }; id=\${rest%% *}; pid=\${rest#* }
      kill -KILL "$pid" 2>/dev/null; echo "done $id 137" ;;
    "run "*)
      rest=\${line#run }; id=\${rest%% *}; script=\${rest#* }
      { trap 'echo "done $id 126"' EXIT; . "$script" </dev/null; s=$?; trap - EXIT; echo "done $id $s"; } &
      echo "pid $id $!" ;;
  esac
done
`;

/** Quotes a word for the POSIX shell. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

export const shellDialect: Dialect = {
  name: "sh",
  announcesReady: false,
  gates: false,
  command: () => ({ file: "/bin/sh", args: ["-c", SCRIPT] }),

  async run(id, argv, log, scratch) {
    if (scratch.includes("\n")) throw new Error(`spawner: a script path may not hold a newline: ${JSON.stringify(scratch)}`);
    fs.writeFileSync(scratch, `${argv.map(shellQuote).join(" ")} >>${shellQuote(log)} 2>&1\n`);
    return `run ${id} ${scratch}\n`;
  },

  // Kills the background job; the command (bwrap, --die-with-parent) dies with it.
  kill: (id, pid) => (pid ? `kill ${id} ${pid}\n` : undefined),
};
