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
 * only make a command faster, never different.
 *
 * Protocol: src/server/protocol.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

#define MAGIC "ukb-server-1"
/* A server answers in milliseconds; one that hangs must not hang the user. */
#define ANSWER_TIMEOUT_SECONDS 10

/* ukb's package folder: this program lives in <root>/dist/bin/. */
static char package_root[PATH_MAX];

static void find_package_root(void) {
  ssize_t n = readlink("/proc/self/exe", package_root, sizeof package_root - 1);
  if (n <= 0) {
    fprintf(stderr, "ukb: error: cannot find my own file: %s\n", strerror(errno));
    exit(70);
  }
  package_root[n] = '\0';
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

/* Writes all of `n` bytes, or fails. */
static int write_all(int fd, const char *data, size_t n, int is_socket) {
  while (n > 0) {
    ssize_t w = is_socket ? send(fd, data, n, MSG_NOSIGNAL) : write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    data += w;
    n -= (size_t)w;
  }
  return 0;
}

/*
 * Asks the server; returns its answer (NUL-terminated, length in *len) or
 * NULL when there is none to use.
 */
static char *ask_server(int argc, char **argv, size_t *len) {
  int dir = open(store_of(argc, argv), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return NULL;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  /* Through the folder's descriptor: a socket's path must fit 108 bytes, a store's need not. */
  snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/server.sock", dir);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    close(dir);
    return NULL;
  }
  int connected = connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0;
  close(dir);
  if (!connected) {
    close(sock);
    return NULL;
  }
  struct timeval timeout = {.tv_sec = ANSWER_TIMEOUT_SECONDS};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);

  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) {
    close(sock);
    return NULL;
  }
  struct buf request = {0};
  long env_count = 0;
  while (environ[env_count]) env_count++;
  int bad = buf_field(&request, MAGIC) || buf_field(&request, "launch") || buf_count(&request, (long)getuid()) ||
            buf_field(&request, package_root) || buf_field(&request, cwd) || buf_count(&request, env_count);
  for (long i = 0; !bad && i < env_count; i++) bad = buf_field(&request, environ[i]);
  bad = bad || buf_count(&request, argc - 1);
  for (int i = 1; !bad && i < argc; i++) bad = buf_field(&request, argv[i]);
  if (bad || write_all(sock, request.data, request.len, 1) != 0 || shutdown(sock, SHUT_WR) != 0) {
    free(request.data);
    close(sock);
    return NULL;
  }
  free(request.data);

  struct buf answer = {0};
  char chunk[65536];
  for (;;) {
    ssize_t n = read(sock, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (n > 0 && buf_add(&answer, chunk, (size_t)n) != 0)) {
      free(answer.data);
      close(sock);
      return NULL;
    }
    if (n == 0) break;
  }
  close(sock);
  if (buf_add(&answer, "", 1) != 0) {
    free(answer.data);
    return NULL;
  }
  *len = answer.len - 1;
  return answer.data;
}

int main(int argc, char **argv) {
  find_package_root();
  if (argc > 1 && (strcmp(argv[1], "realise") == 0 || strcmp(argv[1], "build") == 0) && !getenv("UKB_NO_SERVER")) {
    size_t len = 0;
    char *answer = ask_server(argc, argv, &len);
    if (answer && len >= 3 && memcmp(answer, "ok\n", 3) == 0) {
      if (write_all(1, answer + 3, len - 3, 0) != 0) {
        fprintf(stderr, "ukb: error: cannot write to standard output: %s\n", strerror(errno));
        return 1;
      }
      return 0;
    }
    free(answer);
  }
  run_node(argc, argv);
}
