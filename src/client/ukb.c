/*
 * ukb's native launcher (dist/bin/ukb, compiled by `npm run build` when a C
 * compiler is there; bin/ukb runs it).
 *
 * Starting Node takes over 100 ms on the machines ukb targets, more than a
 * whole no-op realise should. So, as Bazel's client does for its server,
 * this launcher asks the store's `ukb server` (if one runs) to answer a
 * `realise` or `build`; the server answers only a no-op (everything valid,
 * the recipe unchanged since it was evaluated) and says "fallback" to
 * anything else. On "fallback", on any other command, and whenever the
 * server cannot be reached or answers nothing sensible, the launcher runs
 * the Node CLI (node bin/ukb.cjs) with the same arguments, so a server can
 * only make a command faster, never different. The one thing it writes, the
 * out-link, this launcher makes itself: with its own rights, in its own view.
 *
 * When the server cannot answer itself (a changed recipe, something to
 * build), its started CLI may run the command in our place (answer `run`):
 * this launcher then writes that run's output as it comes, forwards its
 * signals to it, and exits with its code. The run has our arguments,
 * environment, folder, umask and terminal, and the server's rights, which
 * it checked are ours (src/server/warm.ts).
 *
 * Protocol: src/server/protocol.ts. It talks only to a server of its own
 * user (SO_PEERCRED), and sends it the environment: a cached evaluation
 * names the variables its recipe read, and the server compares their values
 * with this process's (a server of the same user could read them in /proc
 * anyway; it keeps nothing of them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAGIC "ukb-server-4"
/* Tells the Node CLI that no server listens for the store (src/cli/launcher-note.ts takes it). */
#define NO_SERVER_YET "UKB_LAUNCHER_NO_SERVER"
/* The server reads no more than this (src/server/protocol.ts): a bigger request is the CLI's. */
#define MAX_REQUEST (1 << 20)
/* A server answers in milliseconds; one that hangs must not hang the user. */
#define ANSWER_TIMEOUT_SECONDS 10
/* Output paths and a link: kilobytes. Anything near this is not a ukb server. */
#define MAX_ANSWER (4 << 20)

/* ukb's package folder: this program lives in <root>/dist/bin/. */
static char package_root[PATH_MAX];

/* From the path bin/ukb ran us by (no /proc needed), else from /proc/self/exe. */
static void find_package_root(const char *argv0) {
  if (!(strchr(argv0, '/') && realpath(argv0, package_root))) {
    ssize_t n = readlink("/proc/self/exe", package_root, sizeof package_root - 1);
    if (n <= 0) {
      fprintf(stderr, "ukb: error: cannot find my own file (%s): %s\n", argv0, strerror(errno));
      exit(70);
    }
    package_root[n] = '\0';
  }
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(package_root, '/');
    if (!slash) break;
    *slash = '\0';
  }
}

/* Runs the Node CLI with our arguments; does not return. */
static void run_node(int argc, char **argv) __attribute__((noreturn));
static void run_node(int argc, char **argv) {
  static char entry[PATH_MAX + 16];
  snprintf(entry, sizeof entry, "%s/bin/ukb.cjs", package_root);
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (!args) exit(70);
  args[0] = "node";
  args[1] = entry;
  for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
  execvp("node", args);
  fprintf(stderr, "ukb: error: cannot run node: %s\n", strerror(errno));
  exit(127);
}

/* A growable byte buffer. */
struct buf {
  char *data;
  size_t len, cap;
};

static int buf_add(struct buf *b, const char *bytes, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return -1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, bytes, n);
  b->len += n;
  return 0;
}

/* A NUL-terminated field. */
static int buf_field(struct buf *b, const char *s) { return buf_add(b, s, strlen(s) + 1); }

static int buf_count(struct buf *b, long n) {
  char text[32];
  snprintf(text, sizeof text, "%ld", n);
  return buf_field(b, text);
}

/* The store the command names, as the CLI finds it: --store, else $UKB_STORE, else ./cache. */
static const char *store_of(int argc, char **argv) {
  const char *store = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--store") == 0 && i + 1 < argc) store = argv[++i];
    else if (strncmp(argv[i], "--store=", 8) == 0) store = argv[i] + 8;
  }
  if (!store) store = getenv("UKB_STORE");
  return store && *store ? store : "cache";
}

/* "dev:ino" of a path, or "-": the server compares it with its own view of the path. */
static void identity_of(const char *path, char *out, size_t size) {
  struct stat st;
  if (stat(path, &st) == 0) snprintf(out, size, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
  else snprintf(out, size, "-");
}

/* The supplementary groups, comma-separated (the server must have the same to act for us). */
static int groups_field(struct buf *b) {
  int n = getgroups(0, NULL);
  gid_t *groups = n > 0 ? calloc((size_t)n, sizeof *groups) : NULL;
  if (n > 0 && (!groups || getgroups(n, groups) != n)) {
    free(groups);
    return -1;
  }
  struct buf text = {0};
  int bad = 0;
  for (int i = 0; !bad && i < n; i++) {
    char one[24];
    snprintf(one, sizeof one, "%s%lu", i ? "," : "", (unsigned long)groups[i]);
    bad = buf_add(&text, one, strlen(one));
  }
  bad = bad || buf_add(&text, "", 1) || buf_add(b, text.data, text.len);
  free(text.data);
  free(groups);
  return bad ? -1 : 0;
}

/*
 * The environment, every entry in order: PATH for host tools, UKB_STORE, and whatever variables
 * the recipe read (the server takes the first of duplicate entries, as getenv does).
 */
static int env_fields(struct buf *b) {
  long count = 0;
  for (char **e = environ; *e; e++) count++;
  int bad = buf_count(b, count);
  for (char **e = environ; !bad && *e; e++) bad = buf_field(b, *e);
  return bad;
}

/* Our umask, in octal: a run makes its files (out-links, logs) as we would. */
static int umask_field(struct buf *b) {
  mode_t mask = umask(0);
  umask(mask);
  char text[16];
  snprintf(text, sizeof text, "%o", (unsigned)mask);
  return buf_field(b, text);
}

/* Whether stdout and stderr are terminals, and the width: "O,E,COLUMNS" (a run draws its status line as Node would here). */
static int terminal_field(struct buf *b) {
  struct winsize size;
  int columns = 0;
  if (ioctl(2, TIOCGWINSZ, &size) == 0 || ioctl(1, TIOCGWINSZ, &size) == 0) columns = size.ws_col;
  char text[32];
  snprintf(text, sizeof text, "%d,%d,%d", isatty(1) ? 1 : 0, isatty(2) ? 1 : 0, columns > 99999 ? 99999 : columns);
  return buf_field(b, text);
}

/*
 * Our capabilities, no_new_privs and seccomp mode: the lines of /proc/self/status the server
 * compares with its own (src/server/protocol.ts processContextOf), whitespace runs made one
 * space, joined by ';'. "-" when they cannot be read: the server then runs nothing for us.
 */
static int process_context_field(struct buf *b) {
  static const char *wanted[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:"};
  FILE *status = fopen("/proc/self/status", "re");
  if (!status) return buf_field(b, "-");
  struct buf text = {0};
  char line[512];
  int bad = 0;
  while (!bad && fgets(line, sizeof line, status)) {
    int keep = 0;
    for (size_t i = 0; i < sizeof wanted / sizeof *wanted; i++) keep |= strncmp(line, wanted[i], strlen(wanted[i])) == 0;
    if (!keep) continue;
    if (text.len > 0) bad = buf_add(&text, ";", 1);
    int space = 0;
    size_t start = text.len;
    for (char *c = line; !bad && *c; c++) {
      if (*c == ' ' || *c == '\t' || *c == '\n') {
        space = 1;
        continue;
      }
      if (space && text.len > start) bad = buf_add(&text, " ", 1);
      space = 0;
      if (!bad) bad = buf_add(&text, c, 1);
    }
  }
  fclose(status);
  bad = bad || buf_add(&text, "", 1) || buf_add(b, text.data, text.len);
  free(text.data);
  return bad ? -1 : 0;
}

/*
 * Writes all of `n` bytes, or fails. A non-blocking stdout that is full is
 * waited for, as Node does; the socket's EAGAIN is its send timeout expiring.
 */
static int write_all(int fd, const char *data, size_t n, int is_socket) {
  while (n > 0) {
    ssize_t w = is_socket ? send(fd, data, n, MSG_NOSIGNAL) : write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && !is_socket && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd ready = {.fd = fd, .events = POLLOUT};
      if (poll(&ready, 1, -1) < 0 && errno != EINTR) return -1;
      continue;
    }
    if (w <= 0) return -1;
    data += w;
    n -= (size_t)w;
  }
  return 0;
}

/*
 * Asks the server; returns its answer (NUL-terminated, length in *len) or
 * NULL when there is none to use. *absent says whether that is because no
 * server listens for the store (no store yet, no socket, nobody behind it),
 * as opposed to one that cannot serve us. For a `run` answer, the answer
 * holds what came so far and *run_sock the connection, which the run's
 * output follows (else it is -1).
 */
static char *ask_server(int argc, char **argv, size_t *len, int *absent, int *run_sock) {
  char cwd[PATH_MAX];
  *absent = 0;
  *run_sock = -1;
  if (!getcwd(cwd, sizeof cwd)) return NULL; /* a deleted folder: the CLI says so */
  int dir = open(store_of(argc, argv), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    *absent = errno == ENOENT;
    return NULL;
  }
  /* The server registers the out-link's root in the database: only for a client that could itself
     (Landlock, AppArmor, a read-only mount may forbid it what the server may do). */
  int db = openat(dir, "ukb.sqlite", O_RDWR | O_CLOEXEC);
  if (db < 0) {
    *absent = errno == ENOENT;
    close(dir);
    return NULL;
  }
  close(db);
  /* Who we are and what we see: the server answers only if it is the same (see answer.ts). */
  char mount_ns[64] = "-", pid_ns[64] = "-", root_id[48], cwd_id[48];
  ssize_t ns_len = readlink("/proc/self/ns/mnt", mount_ns, sizeof mount_ns - 1);
  mount_ns[ns_len > 0 ? ns_len : 1] = '\0';
  /* Our PID, as the server sees it only in the same PID namespace: it keeps the paths it answers
     with from gc while this process lives (until the out-link is made). */
  ssize_t pid_ns_len = readlink("/proc/self/ns/pid", pid_ns, sizeof pid_ns - 1);
  pid_ns[pid_ns_len > 0 ? pid_ns_len : 1] = '\0';
  identity_of("/", root_id, sizeof root_id);
  identity_of(cwd, cwd_id, sizeof cwd_id);
  struct buf request = {0};
  int bad = buf_field(&request, MAGIC) || buf_field(&request, "launch") || buf_count(&request, (long)geteuid()) ||
            buf_count(&request, (long)getegid()) || groups_field(&request) || buf_field(&request, mount_ns) ||
            buf_field(&request, pid_ns) || buf_count(&request, (long)getpid()) ||
            buf_field(&request, root_id) || buf_field(&request, cwd_id) || buf_field(&request, package_root) ||
            buf_field(&request, cwd) || umask_field(&request) || terminal_field(&request) ||
            process_context_field(&request) || env_fields(&request);
  bad = bad || buf_count(&request, argc - 1);
  for (int i = 1; !bad && i < argc; i++) bad = buf_field(&request, argv[i]);
  /* Past the server's limit (a huge environment), the CLI answers: no connection is made. */
  if (bad || request.len > MAX_REQUEST) {
    free(request.data);
    close(dir);
    return NULL;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  /* Through the folder's descriptor: a socket's path must fit 108 bytes, a store's need not. */
  snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/server.sock", dir);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    free(request.data);
    close(dir);
    return NULL;
  }
  /* Before connecting: connect() to a server whose queue is full waits for the send timeout. */
  struct timeval timeout = {.tv_sec = ANSWER_TIMEOUT_SECONDS};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  int connected = connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0;
  /* (Without /proc the path above does not exist either: that is not "no server".) */
  if (!connected) *absent = (errno == ENOENT || errno == ECONNREFUSED) && access("/proc/self/fd", X_OK) == 0;
  close(dir);
  /* Only a server of our own user: on a shared store another could have put its socket there. */
  struct ucred peer;
  socklen_t peer_len = sizeof peer;
  if (!connected || getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 || peer.uid != geteuid()) {
    free(request.data);
    close(sock);
    return NULL;
  }
  if (write_all(sock, request.data, request.len, 1) != 0 || shutdown(sock, SHUT_WR) != 0) {
    free(request.data);
    close(sock);
    return NULL;
  }
  free(request.data);

  /* One deadline for the whole answer (the socket's timeout holds for each read only), and a size cap. */
  struct timespec now, deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += ANSWER_TIMEOUT_SECONDS;
  struct buf answer = {0};
  char chunk[65536];
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left_ms = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
    struct pollfd readable = {.fd = sock, .events = POLLIN};
    if (left_ms <= 0 || poll(&readable, 1, (int)left_ms) <= 0) {
      free(answer.data);
      close(sock);
      return NULL;
    }
    ssize_t n = read(sock, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || answer.len + (size_t)n > MAX_ANSWER || (n > 0 && buf_add(&answer, chunk, (size_t)n) != 0)) {
      free(answer.data);
      close(sock);
      return NULL;
    }
    if (n == 0) break;
    /* A run: its output comes for as long as it runs, with no deadline (follow_run reads it). */
    if (answer.len > 4 && memcmp(answer.data, "run ", 4) == 0 && memchr(answer.data, '\n', answer.len)) {
      *run_sock = sock;
      break;
    }
  }
  if (*run_sock < 0) close(sock);
  if (buf_add(&answer, "", 1) != 0) {
    free(answer.data);
    return NULL;
  }
  *len = answer.len - 1;
  return answer.data;
}

/* Node opens /dev/null on a closed 0, 1 or 2 before anything else; so do we (the store's descriptor must not become stdout). */
static void standard_fds(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    int null = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (null >= 0 && null != fd) {
      dup2(null, fd);
      close(null);
    }
  }
}

/*
 * Settings the server cannot honour: Node's own (NODE_OPTIONS, NODE_DEBUG,
 * ...: they change what the Node CLI does or prints; OPENSSL_CONF, which
 * Node reads at start), but for two that change nothing a no-op prints and
 * that many machines set for everything.
 */
static int needs_node(void) {
  if (getenv("UKB_NO_SERVER") || getenv("OPENSSL_CONF")) return 1;
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, "NODE_", 5) != 0 || strncmp(*e, "NODE_ENV=", 9) == 0) continue;
    /* Node warns at start when it cannot read the certificates: then let it. */
    if (strncmp(*e, "NODE_EXTRA_CA_CERTS=", 20) == 0 && access(*e + 20, R_OK) == 0) continue;
    return 1;
  }
  return 0;
}

/*
 * Points `link` at `target` as the CLI does (src/cli/realise.ts makeOutLink):
 * nothing to do if it already does; else a new link renamed over it. Anything
 * else (not a symlink, no permission, a name too long) returns -1, and the
 * CLI then does it or reports it in its own words.
 */
static int make_out_link(const char *link, const char *target) {
  struct stat st;
  if (lstat(link, &st) == 0) {
    if (!S_ISLNK(st.st_mode)) return -1;
    char current[PATH_MAX];
    ssize_t n = readlink(link, current, sizeof current - 1);
    if (n >= 0) {
      current[n] = '\0';
      if (strcmp(current, target) == 0) return 0;
    }
  } else if (errno != ENOENT) {
    return -1;
  }
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", link, (long)getpid()) >= sizeof tmp) return -1;
  if (symlink(target, tmp) != 0) return -1;
  if (rename(tmp, link) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

/*
 * Carries out an "ok" answer: `link` NUL `target` NUL `stdout`. Returns the
 * exit code, or -1 when the CLI must do it instead.
 */
static int carry_out(char *answer, size_t len) {
  char *end = answer + len;
  char *link = answer;
  char *link_end = memchr(link, '\0', (size_t)(end - link));
  if (!link_end) return -1;
  char *target = link_end + 1;
  char *target_end = memchr(target, '\0', (size_t)(end - target));
  if (!target_end) return -1;
  if (*link && make_out_link(link, target) != 0) return -1;
  char *out = target_end + 1;
  /* As the Node CLI does: a reader that has gone (`ukb realise x.ts | true`) drops the
     output, the work is done; not a signal to die of, nor an error. */
  signal(SIGPIPE, SIG_IGN);
  if (write_all(1, out, (size_t)(end - out), 0) != 0 && errno != EPIPE) {
    const char *name = strerrorname_np(errno);
    fprintf(stderr, "ukb: error: cannot write to standard output (%s)\n", name ? name : strerror(errno));
    return 1;
  }
  return 0;
}

/* The run's process, which our signals go to (as they would to our own Node CLI). */
static volatile sig_atomic_t run_pid;

static void forward_signal(int signal) {
  if (run_pid > 0) kill((pid_t)run_pid, signal);
}

/*
 * Follows a `run PID` answer (`head`: what came so far) on `sock`: writes
 * the run's output frames to our stdout and stderr as they come, forwards
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT to the run, and returns its exit
 * code; -1 when the stream ended before the run did (the server killed).
 */
static int follow_run(int sock, const char *head, size_t len) {
  const char *eol = memchr(head, '\n', len);
  char *end;
  long pid = strtol(head + 4, &end, 10);
  if (pid <= 0 || end != eol) return -1;
  run_pid = (sig_atomic_t)pid;
  struct sigaction forward = {.sa_handler = forward_signal, .sa_flags = SA_RESTART};
  sigemptyset(&forward.sa_mask);
  int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaction(forwarded[i], &forward, NULL);
  /* A reader that has gone drops the output; the run goes on, as Node's CLI does. */
  signal(SIGPIPE, SIG_IGN);
  struct timeval no_timeout = {0};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &no_timeout, sizeof no_timeout);
  struct buf pending = {0};
  if (buf_add(&pending, eol + 1, len - (size_t)(eol + 1 - head)) != 0) return -1;
  int writable[3] = {0, 1, 1};
  size_t at = 0;
  char chunk[65536];
  for (;;) {
    /* Every whole frame in what came: "1 N\n" or "2 N\n" and N bytes, or "x CODE\n". */
    for (;;) {
      const char *frame = pending.data + at;
      size_t avail = pending.len - at;
      const char *frame_eol = avail ? memchr(frame, '\n', avail) : NULL;
      if (!frame_eol) break;
      if (frame[0] == 'x' && frame[1] == ' ') {
        long code = strtol(frame + 2, NULL, 10);
        free(pending.data);
        return code >= 0 && code <= 255 ? (int)code : 70;
      }
      if ((frame[0] != '1' && frame[0] != '2') || frame[1] != ' ') {
        free(pending.data);
        return -1;
      }
      size_t n = strtoul(frame + 2, NULL, 10);
      size_t header = (size_t)(frame_eol + 1 - frame);
      if (avail < header + n) break;
      int fd = frame[0] - '0';
      if (writable[fd] && write_all(fd, frame_eol + 1, n, 0) != 0) writable[fd] = 0;
      at += header + n;
    }
    if (at > 0) {
      memmove(pending.data, pending.data + at, pending.len - at);
      pending.len -= at;
      at = 0;
    }
    ssize_t n = read(sock, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || buf_add(&pending, chunk, (size_t)n) != 0) {
      free(pending.data);
      return -1;
    }
  }
}

int main(int argc, char **argv) {
  standard_fds();
  find_package_root(argv[0]);
  unsetenv(NO_SERVER_YET); /* ours to say, not inherited */
  if (argc > 1 && (strcmp(argv[1], "realise") == 0 || strcmp(argv[1], "build") == 0) && !needs_node()) {
    size_t len = 0;
    int absent = 0;
    int run_sock = -1;
    char *answer = ask_server(argc, argv, &len, &absent, &run_sock);
    if (run_sock >= 0) {
      int code = follow_run(run_sock, answer, len);
      if (code >= 0) return code;
      /* A realise done twice does nothing twice: what the first built is valid for the second. */
      fprintf(stderr, "ukb: warning: the store's server stopped during the run; running it again without the server\n");
      close(run_sock);
      /* exec puts caught signals back to their default, not ignored ones: Node must get SIGPIPE's. */
      signal(SIGPIPE, SIG_DFL);
      run_node(argc, argv);
    }
    if (answer && len >= 3 && memcmp(answer, "ok\n", 3) == 0) {
      int code = carry_out(answer + 3, len - 3);
      if (code >= 0) return code;
    }
    free(answer);
    /* No server for this store: the CLI starts one when its realise succeeds (src/cli/server.ts),
       so the next no-op is answered in milliseconds, as Bazel's and Gradle's clients start theirs. */
    if (absent) setenv(NO_SERVER_YET, "1", 1);
  }
  run_node(argc, argv);
}
