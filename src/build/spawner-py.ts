/**
 * The Python 3 co-process: starts commands with os.posix_spawn (glibc uses
 * clone(CLONE_VM|CLONE_VFORK): no page tables copied, which is what makes a
 * fork dear on these machines), waits for each on a thread, and gates a
 * command with a pipe whose read end is its fd 3. Requests are JSON lines.
 * Run with -I -S from the system's own python3: no site packages, no user
 * environment, ~40 ms to start (a pyenv shim would take 300).
 */
import fs from "node:fs";
import type { Dialect } from "./spawner.js";

const SOURCE = String.raw`
import json, os, signal, sys, threading
if not hasattr(os, "posix_spawn"):
    sys.exit(3)
out = threading.Lock()
children = {}
gates = {}
def send(text):
    with out:
        os.write(1, (text + "\n").encode())
def reap(i, pid):
    _, status = os.waitpid(pid, 0)
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    children.pop(i, None)
    w = gates.pop(i, None)
    if w is not None:
        os.close(w)
    send("done %d %d" % (i, code))
def run(i, argv, log, gated):
    try:
        logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        send("done %d 126" % i)
        return
    null = os.open("/dev/null", os.O_RDONLY)
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, logfd, 1), (os.POSIX_SPAWN_DUP2, logfd, 2)]
    r = None
    if gated:
        r, w = os.pipe()
        actions.append((os.POSIX_SPAWN_DUP2, r, 3))
        gates[i] = w
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    except OSError as e:
        os.write(logfd, ("ukb: cannot start %s: %s\n" % (argv[0], e.strerror)).encode())
        w = gates.pop(i, None)
        if w is not None:
            os.close(w)
        send("done %d 127" % i)
        return
    finally:
        os.close(null)
        os.close(logfd)
        if r is not None:
            os.close(r)
    children[i] = pid
    send("pid %d %d" % (i, pid))
    threading.Thread(target=reap, args=(i, pid), daemon=True).start()
send("ready")
for line in sys.stdin.buffer:
    req = json.loads(line)
    op, i = req["op"], req["id"]
    if op == "run":
        run(i, req["argv"], req["log"], req["gated"])
    elif op == "go":
        w = gates.pop(i, None)
        if w is not None:
            os.write(w, b"g")
            os.close(w)
    elif op == "kill":
        pid = children.get(i)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
for pid in list(children.values()):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
`;

/** The system's python3 (not a shim in front of it), if any. */
function findPython(): string | undefined {
  const candidates = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"];
  for (const dir of (process.env.PATH ?? "").split(":")) if (dir && !dir.includes("shims")) candidates.push(`${dir}/python3`);
  return candidates.find((c) => {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export const pythonDialect: Dialect = {
  name: "python",
  announcesReady: true,
  command() {
    const python = findPython();
    return python ? { file: python, args: ["-I", "-S", "-c", SOURCE] } : undefined;
  },
  run: async (id, argv, log, _scratch, gated) => `${JSON.stringify({ op: "run", id, argv, log, gated })}\n`,
  go: (id, write) => write(`${JSON.stringify({ op: "go", id })}\n`),
  kill: (id) => `${JSON.stringify({ op: "kill", id })}\n`,
};
