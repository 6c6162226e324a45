/** Talking to a store's server from Node: `ukb server status|stop`, and `start` waiting for it to answer. */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { SOCKET_NAME, controlRequest, type ServerStatus } from "./protocol.js";

/**
 * Sends a control command to the server of the store at `root` and returns
 * its answer; rejects when no server answers (no socket, a dead one).
 */
export function askServer(root: string, command: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const address = socketAddress(root);
    const conn = net.createConnection(address.path);
    conn.once("connect", address.release);
    conn.once("error", address.release);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => conn.destroy(new Error("the server did not answer in time")), timeoutMs);
    conn.on("connect", () => conn.end(controlRequest(command)));
    conn.on("data", (c: Buffer) => chunks.push(c));
    conn.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    conn.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("utf8"));
    });
  });
}

/**
 * The store's socket as a path to bind or connect to. A socket's path must
 * fit 108 bytes and a store's may not: a longer one goes through the /proc
 * link of a descriptor of the store's folder (`release` closes it).
 */
export function socketAddress(root: string, name = SOCKET_NAME): { path: string; release: () => void } {
  const full = path.join(root, name);
  if (Buffer.byteLength(full) < 100) return { path: full, release: () => {} };
  const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  let open = true;
  return {
    path: `/proc/self/fd/${fd}/${name}`,
    release: () => {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

/** The status of the store's server, or undefined when none answers (or something else does). */
export async function serverStatus(root: string, timeoutMs?: number): Promise<ServerStatus | undefined> {
  const answer = await askServer(root, "status", timeoutMs).catch(() => undefined);
  try {
    const status = answer ? (JSON.parse(answer) as ServerStatus) : undefined;
    return typeof status?.pid === "number" ? status : undefined;
  } catch {
    return undefined;
  }
}
