/**
 * Where registry credentials come from, first match wins:
 *   1. the `credentials` the caller passes,
 *   2. UKB_REGISTRY_USER and UKB_REGISTRY_PASSWORD (both set),
 *   3. `auths.<host>.auth` (base64 "user:pass") in the Docker config:
 *      $DOCKER_CONFIG/config.json, else ~/.docker/config.json, the file
 *      `docker login` / `podman login --authfile` write.
 * Credential helpers (credsStore, credHelpers) are not run: ukb never
 * executes a program it was not asked to.
 */
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { badInput } from "./errors.js";

export interface RegistryCredentials {
  username: string;
  password: string;
}

export interface CredentialSources {
  credentials?: RegistryCredentials;
  /** Path of a Docker config.json to read instead of the default. */
  dockerConfig?: string;
  /** Environment to read (default process.env). */
  env?: Record<string, string | undefined>;
}

function defaultDockerConfig(env: Record<string, string | undefined>): string {
  const dir = env.DOCKER_CONFIG ?? path.join(env.HOME ?? os.homedir(), ".docker");
  return path.join(dir, "config.json");
}

/** "https://host:5000/v1/" or "host:5000" → "host:5000". */
function hostOf(key: string): string {
  return key.replace(/^[a-z]+:\/\//, "").replace(/\/.*$/, "");
}

async function fromDockerConfig(file: string, host: string): Promise<RegistryCredentials | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(text) as typeof config;
  } catch {
    throw badInput(`Docker config ${file} is not valid JSON`);
  }
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (hostOf(key) !== host || entry === null || typeof entry !== "object") continue;
    if (typeof entry.auth === "string" && entry.auth !== "") {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon === -1) throw badInput(`Docker config ${file}: auths.${key}.auth is not base64 of "user:password"`);
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (typeof entry.username === "string" && typeof entry.password === "string") return { username: entry.username, password: entry.password };
  }
  return undefined;
}

/** The credentials to use for `host`, or undefined to go anonymous. */
export async function resolveCredentials(host: string, sources: CredentialSources = {}): Promise<RegistryCredentials | undefined> {
  if (sources.credentials !== undefined) {
    const { username, password } = sources.credentials;
    if (typeof username !== "string" || typeof password !== "string") throw badInput("registry credentials need a username and a password");
    return sources.credentials;
  }
  const env = sources.env ?? process.env;
  const user = env.UKB_REGISTRY_USER;
  const password = env.UKB_REGISTRY_PASSWORD;
  if (user !== undefined && user !== "" && password !== undefined) return { username: user, password };
  return fromDockerConfig(sources.dockerConfig ?? defaultDockerConfig(env), host);
}
