/**
 * The Python 3 co-process: starts commands with os.posix_spawn (glibc uses
 * clone(CLONE_VM|CLONE_VFORK): no page tables copied, which is what makes a
 * fork dear on these machines), waits for each on a thread, and gates a
 * command with a pipe whose read end is its fd 3 (bwrap --block-fd 3); its
 * fd 4 takes bwrap's --info-fd, whose child-pid names the sandbox: a sandbox
 * whose gate never opened is killed before the gate closes, since bwrap
 * takes end-of-file on the gate as "go". Requests are JSON lines.
 * Run with -I -S from the system's own python3: no site packages, no user
 * environment, ~40 ms to start (a pyenv shim would take 300).
 */
import fs from "node:fs";
import type { Dialect } from "./spawner.js";

const SOURCE = String.raw`
import json, os, re, signal, sys, threading
if not hasattr(os, "posix_spawn"):
    sys.exit(3)
out = threading.Lock()
children = {}   # request id -> pid of the command (bwrap)
gates = {}      # request id -> write end of its gate, while closed
sandboxes = {}  # request id -> pid of its sandbox (bwrap --info-fd), once known
stopped = set() # request ids killed
reapers = []
def send(text):
    with out:
        os.write(1, (text + "\n").encode())
def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass
def reap(i, pid, info):
    if info is not None:
        data = b""
        while True:
            chunk = os.read(info, 4096)
            if not chunk:
                break
            data += chunk
        os.close(info)
        m = re.search(rb'"child-pid"\s*:\s*(\d+)', data)
        sandboxes[i] = int(m.group(1)) if m else None
        if i in stopped:
            kill(sandboxes[i])
    _, status = os.waitpid(pid, 0)
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    children.pop(i, None)
    w = gates.pop(i, None)
    if w is not None or i in stopped:
        # Never opened, or killed: the sandbox may be waiting on its gate (and would run its builder
        # once the gate closes: bwrap reads EOF as "go"), or may have just passed it, before bwrap
        # binds it to its parent's death. It dies first.
        kill(sandboxes.get(i))
    if w is not None:
        os.close(w)
    sandboxes.pop(i, None)
    stopped.discard(i)
    send("done %d %d" % (i, code))
def run(i, argv, log, gated):
    try:
        logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        send("done %d 126" % i)
        return
    null = os.open("/dev/null", os.O_RDONLY)
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, logfd, 1), (os.POSIX_SPAWN_DUP2, logfd, 2)]
    r = ir = iw = None
    if gated:
        r, w = os.pipe()
        ir, iw = os.pipe()
        actions += [(os.POSIX_SPAWN_DUP2, r, 3), (os.POSIX_SPAWN_DUP2, iw, 4)]
        gates[i] = w
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    except OSError as e:
        os.write(logfd, ("ukb: cannot start %s: %s\n" % (argv[0], e.strerror)).encode())
        w = gates.pop(i, None)
        if w is not None:
            os.close(w)
        if ir is not None:
            os.close(ir)
        send("done %d 127" % i)
        return
    finally:
        for fd in (null, logfd, r, iw):
            if fd is not None:
                os.close(fd)
    children[i] = pid
    send("pid %d %d" % (i, pid))
    t = threading.Thread(target=reap, args=(i, pid, ir), daemon=True)
    reapers.append(t)
    t.start()
def go(i):
    w = gates.pop(i, None)
    if w is not None:
        try:
            os.write(w, b"g")
        except OSError:
            pass
        os.close(w)
def stop(i):
    stopped.add(i)
    kill(sandboxes.get(i))
    kill(children.get(i))
# What ukb's parent left open without close-on-exec (a make jobserver, say) stays out of builds.
os.closerange(3, 65536)
# Every builder starts with one umask, whatever the user's shell has: the modes of the files it
# makes (a tar of them, say) must not differ from one machine to the next.
os.umask(0o022)
send("ready")
for line in sys.stdin.buffer:
    i = None
    try:
        req = json.loads(line)
        op, i = req["op"], req["id"]
        if op == "run":
            run(i, req["argv"], req["log"], req["gated"])
        elif op == "go":
            go(i)
        elif op == "kill":
            stop(i)
    except Exception as e:
        # One bad request fails alone: never the co-process, and with it every build.
        sys.stderr.write("ukb spawner: %r\n" % (e,))
        if i is not None and i not in children:
            w = gates.pop(i, None)
            if w is not None:
                os.close(w)
            send("done %d 127" % i)
# ukb is gone: everything it started goes too, waiting sandboxes before their gates close.
for i in list(children):
    stop(i)
for t in reapers:
    t.join(5)
`;

/** The system's python3 (not a shim in front of it), if any; UKB_PYTHON names another. */
function findPython(): string | undefined {
  const candidates = [process.env.UKB_PYTHON ?? "", "/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"].filter(Boolean);
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
  gates: true,
  command() {
    const python = findPython();
    return python ? { file: python, args: ["-I", "-S", "-c", SOURCE] } : undefined;
  },
  run: async (id, argv, log, _scratch, gated) => `${JSON.stringify({ op: "run", id, argv, log, gated })}\n`,
  go: (id, write) => write(`${JSON.stringify({ op: "go", id })}\n`),
  kill: (id) => `${JSON.stringify({ op: "kill", id })}\n`,
};
