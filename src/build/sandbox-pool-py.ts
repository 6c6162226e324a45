/**
 * The program that runs as PID 1 of a pooled sandbox (see sandbox-pool.ts).
 *
 * bubblewrap has set the sandbox up once: namespaces, the host's system
 * directories read-only, /proc, /dev, and the store's root folder at
 * /.ukb-host. Per build, this program only mounts: the build's scratch store
 * at /ukb/store with its inputs read-only inside, its build folder at /build,
 * a fresh /tmp and /dev/shm, a fresh IPC namespace, and an empty read-only
 * cover over /.ukb-host. The view of the system directories its builds see
 * (src/build/host-view.ts) is mounted once over them, given with its first
 * build or before it ("view", while ukb still plans); ukb gives a sandbox
 * only builds of that view. On "go" it starts the builder with posix_spawn (no
 * fork: forks are dear here), and when the builder exits it kills whatever
 * the build left running (kill(-1) from PID 1 reaches every process of the
 * sandbox), unmounts all of it and answers "done ID STATUS".
 *
 * It keeps the capabilities it needs to mount, but empties the bounding,
 * ambient and inheritable sets and sets SECBIT_NOROOT first: a builder,
 * though uid 0 in the namespace, starts with no capability at all, so it
 * can neither unmount the cover nor remount an input writable.
 *
 * Requests on stdin are "LENGTH\n" then LENGTH bytes of NUL-separated fields
 * (env values and arguments hold no NUL; they may hold line breaks): view
 * (the view, before any build asks for it), prep, go, kill. No json and no
 * signal module: their imports (enum, re) would
 * double the 25 ms a sandbox takes to start. stdin closing (ukb is gone)
 * kills the build and ends the sandbox.
 */
export const AGENT_SOURCE = String.raw`
import os
# What ukb's parent left open without close-on-exec (a make jobserver, a log pipe) never reaches a build.
os.closerange(3, 65536)
# One umask for every builder, whatever the user's shell has: the modes of the files a build makes
# (a tar of them, say) must not differ from one machine to the next.
os.umask(0o022)
import ctypes, resource, select, stat, sys
import _signal as signal
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND = 1, 2, 4, 8, 32, 4096
NOATIME, NODIRATIME, RELATIME = 1024, 2048, 1 << 21
MOVE = 8192
DETACH = 2
CLONE_NEWIPC = 0x08000000
HOST = "/.ukb-host"
VIEW = "/.ukb-view"
STORE = "/ukb/store"
BUILD = "/build"

def fail(what):
    e = ctypes.get_errno()
    raise OSError(e, "%s: %s" % (what, os.strerror(e)))

def b(s):
    return None if s is None else s.encode()

def mount(src, dst, fstype, flags, data=None):
    if libc.mount(b(src), b(dst), b(fstype), flags, b(data)) != 0:
        fail("mount %s" % dst)

def kept_flags(path):
    # A remount inside a user namespace must keep the flags the host locked (nosuid, noexec, atime...).
    f = os.statvfs(path).f_flag
    out = f & (NOSUID | NODEV | NOEXEC)
    if f & 1024: out |= NOATIME
    if f & 2048: out |= NODIRATIME
    if f & 4096: out |= RELATIME
    return out

def bind(src, dst, ro):
    # Not recursive: nothing mounted below src comes along.
    mount(src, dst, None, BIND)
    if ro:
        mount(None, dst, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV | kept_flags(dst))

def describe(e):
    # What failed, and on which file where Python knows it (a view's file gone since ukb listed it).
    what = e.strerror or str(e)
    return "%s: %s" % (e.filename, what) if getattr(e, "filename", None) else what

def umount(path):
    libc.umount2(b(path), DETACH)

def drop_capabilities():
    # Securebits first (needs CAP_SETPCAP): uid 0 gains nothing on exec, and can never be given ambient caps.
    if libc.prctl(28, 1 | 2 | 64 | 128, 0, 0, 0) != 0:
        fail("PR_SET_SECUREBITS")
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            fail("PR_CAPBSET_DROP")
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        fail("capget")
    data[0].inheritable = data[1].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        fail("capset")

# SYS_keyctl, where its number is known.
KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
# Since Linux 5.3 the user keyring belongs to the user namespace (before, to the uid everywhere:
# clearing it would clear the host's).
KEYRINGS_NAMESPACED = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit()) >= (5, 3)
# Opened once: a build may leave PID 1 too few descriptors to open anything.
STATE_FILES = [os.open(f, os.O_RDONLY) for f in ("/proc/self/oom_score_adj", "/proc/self/coredump_filter") if os.path.exists(f)]

def process_state():
    # What a builder can change in PID 1 because they share a uid, which later builders would
    # inherit and which this program cannot always set back (a lowered hard limit).
    limits = [resource.getrlimit(getattr(resource, n)) for n in sorted(dir(resource)) if n.startswith("RLIMIT_")]
    files = [os.pread(fd, 64, 0) for fd in STATE_FILES]
    return (limits, os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), files)

def state_changed():
    try:
        return process_state() != START_STATE
    except Exception:
        return True

START_STATE = process_state()

def fresh_keyrings():
    # A new session keyring for each build, and the namespace's user keyrings emptied.
    if KEYCTL is not None:
        libc.syscall(KEYCTL, 1, None)  # KEYCTL_JOIN_SESSION_KEYRING, anonymous
        if KEYRINGS_NAMESPACED:
            libc.syscall(KEYCTL, 7, -4)  # KEYCTL_CLEAR of KEY_SPEC_USER_KEYRING
            libc.syscall(KEYCTL, 7, -5)  # and of KEY_SPEC_USER_SESSION_KEYRING
        # The persistent keyring (of this uid in the sandbox's user namespace, never the host's):
        # linked into the new session keyring to get its id, then emptied. -1 where the kernel has none.
        persistent = libc.syscall(KEYCTL, 22, -1, -3)  # KEYCTL_GET_PERSISTENT, into KEY_SPEC_SESSION_KEYRING
        if persistent > 0:
            libc.syscall(KEYCTL, 7, persistent)

def send(text):
    os.write(1, (text + "\n").encode())

cur = None  # the build under way: {"id", "log", "pid", "mounts"}
viewed = False  # whether the system directories show a view (once, for the sandbox's life)
retiring = False  # a view half made: this sandbox ends after the build it was for
view_failed = None  # why a view given ahead of its build could not be made: that build fails with it

def apply_view(fields):
    # Per system directory: ROOT, N, then N entries "d" PATH | "b" PATH | "l" PATH TARGET. Built
    # in a tmpfs at VIEW from the host's files still visible at ROOT, made read-only, then moved
    # over ROOT. This program has imported all it needs; it reads nothing there again.
    global viewed, retiring
    i = 0
    while i < len(fields):
        root, n = fields[i], int(fields[i + 1])
        i += 2
        mount("tmpfs", VIEW, "tmpfs", NOSUID | NODEV, "mode=755")
        for _ in range(n):
            kind, p = fields[i], fields[i + 1]
            i += 2
            dst = VIEW + p[len(root):]
            if kind == "d":
                os.mkdir(dst, 0o755)
            elif kind == "l":
                os.symlink(fields[i], dst)
                i += 1
            else:
                if stat.S_ISDIR(os.stat(p).st_mode):
                    os.mkdir(dst, 0o755)
                else:
                    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o444))
                bind(p, dst, True)
        mount(None, VIEW, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV | kept_flags(VIEW))
        mount(VIEW, root, None, MOVE)
    viewed, retiring = True, False

def early_view(fields):
    # ukb counts this sandbox as showing the view from now on: if it is not made, the build
    # that comes for it fails with the reason, and the sandbox ends after it.
    global retiring, view_failed
    if viewed or view_failed is not None:
        return
    retiring = True
    try:
        apply_view(fields)
    except OSError as e:
        view_failed = describe(e)

def prep(i, fields):
    # store, build, log, argc, argv..., envc, (key, value)..., viewc, view fields..., then (base, rel) pairs of inputs
    global cur
    store, build, log, argc = fields[0], fields[1], fields[2], int(fields[3])
    argv = fields[4:4 + argc]
    envc = int(fields[4 + argc])
    kv = fields[5 + argc:5 + argc + 2 * envc]
    env = dict(zip(kv[0::2], kv[1::2]))
    at = 5 + argc + 2 * envc
    viewc = int(fields[at])
    view = fields[at + 1:at + 1 + viewc]
    rest = fields[at + 1 + viewc:]
    inputs = list(zip(rest[0::2], rest[1::2]))
    cur = {"id": i, "log": None, "pid": None, "mounts": [], "argv": argv, "env": env}
    global retiring
    if view and not viewed:
        # ukb counts this sandbox as showing the view from now on: if it is not made, for
        # whatever reason, the sandbox must not take another build.
        retiring = True
    try:
        cur["log"] = os.open(HOST + "/" + log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if view_failed is not None:
            raise OSError(0, view_failed)
        if view and not viewed:
            apply_view(view)
        if libc.unshare(CLONE_NEWIPC) != 0:
            fail("unshare(CLONE_NEWIPC)")
        fresh_keyrings()
        bind(HOST + "/" + store, STORE, False)
        cur["mounts"].append(STORE)
        for base, rel in inputs:
            src, dst = HOST + "/" + rel, STORE + "/" + base
            mode = os.lstat(src).st_mode
            if stat.S_ISLNK(mode):
                # A symlink stays one: binding it would bind what it points at, resolved here
                # (a link to / would bring this sandbox's own root, the store's root with it).
                os.symlink(os.readlink(src), dst)
                continue
            if stat.S_ISDIR(mode):
                os.mkdir(dst)
            else:
                os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o444))
            bind(src, dst, True)
        bind(HOST + "/" + build, BUILD, False)
        cur["mounts"].append(BUILD)
        for path, mode in (("/tmp", "1777"), ("/dev/shm", "1777")):
            if os.path.isdir(path):
                mount("tmpfs", path, "tmpfs", NOSUID | NODEV, "mode=" + mode)
                cur["mounts"].append(path)
        mount("tmpfs", HOST, "tmpfs", RDONLY | NOSUID | NODEV | NOEXEC, "mode=000")
        cur["mounts"].append(HOST)
        os.chdir(BUILD)
    except OSError as e:
        finish(127, "ukb: cannot set the sandbox up: %s" % (describe(e),))

def go(i):
    if cur is None or cur["id"] != i or cur["pid"] is not None:
        return
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        cur["pid"] = os.posix_spawn(cur["argv"][0], cur["argv"], cur["env"], setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT),
            file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, cur["log"], 1), (os.POSIX_SPAWN_DUP2, cur["log"], 2)])
    except OSError as e:
        finish(127, "ukb: cannot start %s: %s" % (cur["argv"][0], e.strerror))
    finally:
        os.close(null)

def kill_all():
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass

def reap(block):
    while True:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if cur is not None and pid == cur["pid"]:
            cur["pid"] = -1
            finish(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))

def finish(code, message=None):
    global cur
    build, cur = cur, None
    # Nothing of this build outlives it: every process of the sandbox but this one dies.
    kill_all()
    reap(True)
    if build["log"] is not None:
        if message is not None:
            os.write(build["log"], (message + "\n").encode())
        os.close(build["log"])
    if retiring or state_changed():
        # The build changed this program's own limits, priority or affinity, which every later
        # builder would inherit: this sandbox is done, ukb starts another.
        send("done %d %d retire" % (build["id"], code))
        sys.exit(0)
    # Said before the unmounting (each lazy unmount waits for an RCU grace period): ukb's next
    # builder starts meanwhile in another sandbox, and this one takes no request before it is done.
    send("done %d %d" % (build["id"], code))
    os.chdir("/")
    for path in reversed(build["mounts"]):
        umount(path)

def stop(i):
    if cur is None or cur["id"] != i:
        return
    if cur["pid"]:
        kill_all()  # the builder's death reports it
    else:
        finish(137)

try:
    drop_capabilities()
    # /dev is bubblewrap's tmpfs: read-only, so no build leaves a file there for the next.
    mount(None, "/dev", None, REMOUNT | BIND | RDONLY | kept_flags("/dev"))
    # /proc/sys read-only: no build changes a sysctl (the network namespace's, which the next
    # build would see, or, when ukb runs as root, the host's own).
    bind("/proc/sys", "/proc/sys", True)
except OSError as e:
    sys.stderr.write("ukb sandbox: %s\n" % (e.strerror or e,))
    sys.exit(3)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
# PID 1 gets only the signals it handles: a builder's kill(1, SIGINT) must not reach Python's handler.
signal.signal(signal.SIGINT, signal.SIG_DFL)
send("ready")
pending = b""
while True:
    try:
        ready, _, _ = select.select([0, wake_r], [], [])
    except InterruptedError:
        continue
    if wake_r in ready:
        try:
            os.read(wake_r, 512)
        except BlockingIOError:
            pass
        reap(False)
    if 0 in ready:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            head, _, body = pending.partition(b"\n")
            size = int(head)
            if len(body) < size:
                break
            payload, pending = body[:size], body[size:]
            fields = [os.fsdecode(f) for f in payload.split(b"\0")]
            try:
                op, i = fields[0], int(fields[1])
                if op == "view":
                    early_view(fields[2:])
                elif op == "prep":
                    prep(i, fields[2:])
                elif op == "go":
                    go(i)
                elif op == "kill":
                    stop(i)
            except Exception as e:
                # A bad request fails its build alone, never the sandbox.
                sys.stderr.write("ukb sandbox: %r\n" % (e,))
                if cur is not None and cur["pid"] is None:
                    finish(127, "ukb: %r" % (e,))
# ukb is gone: so is every build of this sandbox (and the sandbox, with its PID 1).
kill_all()
`;
