/**
 * What the native launcher (src/client/ukb.c) and `ukb server` say to each
 * other over the store's socket: one request, one answer, then the
 * connection closes.
 *
 * A request is NUL-terminated fields, ended by the client shutting down its
 * side: a magic, then `launch` fields or one `control` field (`status`,
 * `stop`). Launch fields: who the launcher is (uid, gid, supplementary
 * groups), what it sees (its mount namespace), its PID namespace and PID
 * (the server keeps the paths it answers with from gc while that process
 * lives), dev:ino of `/` and of its working folder, its ukb folder, its working folder,
 * its umask (octal), its terminal (`O,E,COLUMNS`: whether stdout and stderr
 * are terminals, and the width), its process context (the `Cap*`,
 * `NoNewPrivs` and `Seccomp` lines of /proc/self/status, joined by `;`), the
 * number of environment entries and the entries (all of them: the server
 * compares the variables a cached evaluation read with them), the number of
 * arguments and the arguments.
 *
 * An answer is one of:
 * - `ok\n`, the out-link to make (empty for none), NUL, the path it points
 *   at, NUL, and what to print on stdout (exit 0): a no-op;
 * - `run PID\n`, then frames `1 N\n` or `2 N\n` followed by N bytes for the
 *   launcher's stdout or stderr, and last `x CODE\n`: the server's started
 *   CLI (process PID, to which the launcher forwards its signals) runs the
 *   command as the launcher's own Node CLI would, with its environment,
 *   folder, umask and terminal;
 * - `fallback\n`: the launcher runs the Node CLI with the same arguments.
 */

import fs from "node:fs";

export const SOCKET_NAME = "server.sock";
export const MAGIC = "ukb-server-4";
/** Requests are a few kilobytes; anything past this is not a launcher. */
export const MAX_REQUEST = 1 << 20;

export type Request =
  | {
      kind: "launch";
      uid: number;
      gid: number;
      groups: number[];
      mountNamespace: string;
      pidNamespace: string;
      pid: number;
      rootIdentity: string;
      cwdIdentity: string;
      packageRoot: string;
      cwd: string;
      umask: number;
      terminal: Terminal;
      /** Capabilities, no_new_privs and seccomp, as /proc/self/status says them: a run needs the server's own. */
      processContext: string;
      env: Record<string, string>;
      argv: string[];
    }
  | { kind: "control"; command: string };

/** What the launcher's stdout and stderr are: a run shows the live status line only where the launcher's stderr is a terminal. */
export interface Terminal {
  stdout: boolean;
  stderr: boolean;
  columns: number;
}

/** Parses a request, or says in a few words why it is not one. */
export function parseRequest(bytes: Buffer): Request | string {
  const fields = bytes.toString("utf8").split("\0");
  if (fields.pop() !== "") return "not NUL-terminated";
  let at = 0;
  const next = (): string | undefined => fields[at++];
  const count = (): number | undefined => {
    const text = next();
    return text !== undefined && /^\d{1,10}$/.test(text) ? Number(text) : undefined;
  };
  if (next() !== MAGIC) return "wrong magic";
  const kind = next();
  if (kind === "control") {
    const command = next();
    return command !== undefined && at === fields.length ? { kind, command } : "malformed control request";
  }
  if (kind !== "launch") return `unknown request kind '${kind}'`;
  const uid = count();
  const gid = count();
  const groupsText = next();
  const mountNamespace = next();
  const pidNamespace = next();
  const pid = count();
  const rootIdentity = next();
  const cwdIdentity = next();
  const packageRoot = next();
  const cwd = next();
  const umaskText = next();
  const terminalText = next();
  const processContext = next();
  const envCount = count();
  if (uid === undefined || gid === undefined || groupsText === undefined || !/^(\d+(,\d+)*)?$/.test(groupsText)) return "malformed credentials";
  if (mountNamespace === undefined || pidNamespace === undefined || pid === undefined || pid < 1 || rootIdentity === undefined || cwdIdentity === undefined || packageRoot === undefined || cwd === undefined || envCount === undefined) {
    return "malformed launch request";
  }
  const terminal = /^([01]),([01]),(\d{1,5})$/.exec(terminalText ?? "");
  if (umaskText === undefined || !/^[0-7]{1,4}$/.test(umaskText) || !terminal || processContext === undefined) return "malformed launch request";
  const groups = groupsText === "" ? [] : groupsText.split(",").map(Number);
  // As getenv: the first of duplicate entries counts.
  const env: Record<string, string> = Object.create(null) as Record<string, string>;
  for (let i = 0; i < envCount; i++) {
    const entry = next();
    if (entry === undefined) return "truncated environment";
    const eq = entry.indexOf("=");
    if (eq > 0 && !(entry.slice(0, eq) in env)) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  const argc = count();
  if (argc === undefined || at + argc !== fields.length) return "malformed arguments";
  return {
    kind,
    uid,
    gid,
    groups,
    mountNamespace,
    pidNamespace,
    pid,
    rootIdentity,
    cwdIdentity,
    packageRoot,
    cwd,
    umask: parseInt(umaskText, 8),
    terminal: { stdout: terminal[1] === "1", stderr: terminal[2] === "1", columns: Number(terminal[3]) },
    processContext,
    env,
    argv: fields.slice(at),
  };
}

/** A control request, as `ukb server stop|status` sends it. */
export function controlRequest(command: string): Buffer {
  return Buffer.from(`${MAGIC}\0control\0${command}\0`);
}

export const FALLBACK = Buffer.from("fallback\n");

export function okAnswer(result: { link?: string; linkTarget: string; stdout: string }): Buffer {
  return Buffer.from(`ok\n${result.link ?? ""}\0${result.linkTarget}\0${result.stdout}`);
}

/** The start of a run's answer: the launcher forwards its signals to `pid`. */
export const runAnswer = (pid: number): Buffer => Buffer.from(`run ${pid}\n`);

/** A frame of a run's output, for the launcher's stdout (1) or stderr (2). */
export const outputFrame = (fd: 1 | 2, bytes: Buffer): Buffer[] => [Buffer.from(`${fd} ${bytes.length}\n`), bytes];

/** The last frame of a run: the command's exit code (128 + N for a signal N). */
export const exitFrame = (code: number): Buffer => Buffer.from(`x ${code}\n`);

/**
 * This process's capabilities, no_new_privs and seccomp mode, as the
 * launcher sends its own: a run happens with the server's, so only for a
 * launcher that has the same. Undefined without /proc.
 */
export function ownProcessContext(): string | undefined {
  // Read once: ukb never changes its own capabilities, no_new_privs or seccomp mode.
  if (processContext === null) {
    try {
      processContext = processContextOf(fs.readFileSync("/proc/self/status", "utf8"));
    } catch {
      processContext = undefined;
    }
  }
  return processContext;
}
let processContext: string | undefined | null = null;

/** The lines of a /proc/PID/status text that {@link ownProcessContext} compares, joined by `;`. */
function processContextOf(status: string): string {
  return status
    .split("\n")
    .filter((line) => /^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):/.test(line))
    .map((line) => line.replace(/\s+/g, " ").trim())
    .join(";");
}

/** What `status` answers (JSON). */
export interface ServerStatus {
  pid: number;
  store: string;
  packageRoot: string;
  startedAt: string;
  requests: number;
  answered: number;
  /** Launches its started CLI ran (a recipe to evaluate, something to build). */
  ran: number;
  /** Its started CLI: "ready" for the next launch, or why not. */
  startedCli: string;
  /** The last launch its started CLI ran, and why the server could not answer it itself. */
  lastRun?: { at: string; why: string };
  /** The last launch left to the launcher's own CLI, and why. */
  lastFallback?: { at: string; why: string };
}

/**
 * "dev:ino" of a path, as the launcher writes it for `/` and its folder, or
 * undefined when it cannot be read. With `birth`, the birth time too: the
 * server's own socket, whose inode number the next socket may reuse.
 */
export function fileIdentity(file: string, options: { birth?: boolean } = {}): string | undefined {
  try {
    const st = fs.statSync(file, { bigint: true });
    return `${st.dev}:${st.ino}${options.birth ? `:${st.birthtimeNs}` : ""}`;
  } catch {
    return undefined;
  }
}
