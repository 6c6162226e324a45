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
 * lives), dev:ino of `/` and of its working folder, its ukb folder, its working folder, the number of
 * environment entries and the entries (all of them: the server compares the
 * variables a cached evaluation read with them), the number of arguments and
 * the arguments.
 * An answer is `ok\n`, the out-link to make (empty for none), NUL, the path
 * it points at, NUL, and what to print on stdout (exit 0), or `fallback\n`:
 * the launcher then runs the Node CLI with the same arguments, which does
 * everything the server does not (it only answers no-op realises).
 */

import fs from "node:fs";

export const SOCKET_NAME = "server.sock";
export const MAGIC = "ukb-server-3";
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
      env: Record<string, string>;
      argv: string[];
    }
  | { kind: "control"; command: string };

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
  const envCount = count();
  if (uid === undefined || gid === undefined || groupsText === undefined || !/^(\d+(,\d+)*)?$/.test(groupsText)) return "malformed credentials";
  if (mountNamespace === undefined || pidNamespace === undefined || pid === undefined || pid < 1 || rootIdentity === undefined || cwdIdentity === undefined || packageRoot === undefined || cwd === undefined || envCount === undefined) {
    return "malformed launch request";
  }
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
  return { kind, uid, gid, groups, mountNamespace, pidNamespace, pid, rootIdentity, cwdIdentity, packageRoot, cwd, env, argv: fields.slice(at) };
}

/** A control request, as `ukb server stop|status` sends it. */
export function controlRequest(command: string): Buffer {
  return Buffer.from(`${MAGIC}\0control\0${command}\0`);
}

export const FALLBACK = Buffer.from("fallback\n");

export function okAnswer(result: { link?: string; linkTarget: string; stdout: string }): Buffer {
  return Buffer.from(`ok\n${result.link ?? ""}\0${result.linkTarget}\0${result.stdout}`);
}

/** What `status` answers (JSON). */
export interface ServerStatus {
  pid: number;
  store: string;
  packageRoot: string;
  startedAt: string;
  requests: number;
  answered: number;
  /** The last launch left to the CLI, and why. */
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
