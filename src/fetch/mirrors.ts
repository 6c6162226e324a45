/**
 * Mirrors: `mirror://NAME/path` in a recipe stands for `BASE/path` for each
 * base URL of mirror NAME, tried in order. Recipes stay portable (they name
 * the mirror, not a host) and each machine says where its copies live — a
 * company proxy, a local folder (`file:///srv/mirror`), an internal server.
 *
 * The special mirror `hashed` is content-addressed: for a download pinned by
 * sha256 its bases are tried first as `BASE/sha256/HEX`, the way Nix's
 * hashed mirrors work, so one folder of files named by hash serves every
 * recipe offline.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { UkbError } from "../errors/index.js";

/** Mirror name → base URLs, tried in order. */
export type MirrorMap = Record<string, readonly string[]>;

export const HASHED_MIRROR = "hashed";
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const SCHEMES = new Set(["http:", "https:", "file:"]);

function badConfig(where: string, message: string): UkbError {
  return new UkbError("usage", `${where}: ${message}`, {
    hint: "mirrors are NAME=URL[,URL…] separated by ';' in UKB_MIRRORS, or {\"NAME\": [\"URL\", …]} in mirrors.json",
  });
}

function checkBase(where: string, name: string, base: string): string {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw badConfig(where, `mirror '${name}' has an invalid URL '${base}'`);
  }
  if (!SCHEMES.has(url.protocol)) throw badConfig(where, `mirror '${name}' URL '${base}' must be http, https or file`);
  return base;
}

function checkName(where: string, name: string): string {
  if (!NAME_RE.test(name)) throw badConfig(where, `invalid mirror name '${name}'`);
  return name;
}

/** Parses `UKB_MIRRORS`: `name=url1,url2;name2=url3` (whitespace around items ignored). */
export function parseMirrorsEnv(text: string, where = "UKB_MIRRORS"): MirrorMap {
  const out: Record<string, string[]> = {};
  for (const item of text.split(";")) {
    const entry = item.trim();
    if (entry === "") continue;
    const eq = entry.indexOf("=");
    if (eq <= 0) throw badConfig(where, `entry '${entry}' is not NAME=URL[,URL…]`);
    const name = checkName(where, entry.slice(0, eq).trim());
    const bases = entry
      .slice(eq + 1)
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "")
      .map((b) => checkBase(where, name, b));
    if (bases.length === 0) throw badConfig(where, `mirror '${name}' lists no URL`);
    out[name] = bases;
  }
  return out;
}

/** Parses mirrors.json: `{ "name": ["url", …] | "url", … }`. */
export function parseMirrorsJson(text: string, where: string): MirrorMap {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw badConfig(where, `invalid JSON (${(e as Error).message})`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) throw badConfig(where, "expected an object of mirror names");
  const out: Record<string, string[]> = {};
  for (const [rawName, value] of Object.entries(data)) {
    const name = checkName(where, rawName);
    const list = typeof value === "string" ? [value] : value;
    if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === "string")) {
      throw badConfig(where, `mirror '${name}' must be a URL or a non-empty list of URLs`);
    }
    out[name] = list.map((b: string) => checkBase(where, name, b));
  }
  return out;
}

/** `$XDG_CONFIG_HOME/ukb/mirrors.json`, else `~/.config/ukb/mirrors.json`. */
export function mirrorsConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env["XDG_CONFIG_HOME"] || join(env["HOME"] || homedir(), ".config");
  return join(base, "ukb", "mirrors.json");
}

/**
 * The mirrors this machine knows: the config file, then `UKB_MIRRORS`, whose
 * entries replace the file's for the same name (the environment is the
 * narrower, more deliberate setting). A missing file is no error.
 */
export function loadMirrors(options: { env?: NodeJS.ProcessEnv; configFile?: string } = {}): MirrorMap {
  const env = options.env ?? process.env;
  const file = options.configFile ?? mirrorsConfigPath(env);
  let fromFile: MirrorMap = {};
  let text: string | undefined;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw badConfig(file, `cannot read (${(e as Error).message})`);
  }
  if (text !== undefined) fromFile = parseMirrorsJson(text, file);
  const envText = env["UKB_MIRRORS"];
  const fromEnv = envText ? parseMirrorsEnv(envText) : {};
  return { ...fromFile, ...fromEnv };
}

/**
 * Expands one recipe URL into the concrete URLs to try: itself, or for
 * `mirror://NAME/path` each base of NAME joined with path.
 */
export function expandUrl(url: string, mirrors: MirrorMap = {}): string[] {
  const m = /^mirror:\/\/([^/]+)\/(.*)$/.exec(url);
  if (!m) {
    if (url.startsWith("mirror:")) throw new UkbError("recipe", `malformed mirror URL '${url}': expected mirror://NAME/PATH`);
    return [url];
  }
  const [, name, path] = m as unknown as [string, string, string];
  const bases = mirrors[name];
  if (!bases || bases.length === 0) {
    const known = Object.keys(mirrors).filter((n) => n !== HASHED_MIRROR);
    throw new UkbError("fetch", `${url}: unknown mirror '${name}'${known.length ? ` (known: ${known.join(", ")})` : " (no mirrors configured)"}`, {
      hint: `export UKB_MIRRORS='${name}=https://…' or add "${name}" to ${mirrorsConfigPath()}`,
    });
  }
  return bases.map((base) => `${base.replace(/\/+$/, "")}/${path}`);
}

/**
 * The concrete URLs for a download, in the order to try them: hashed mirrors
 * first when the content is pinned by sha256, then each URL expanded.
 */
export function resolveUrls(urls: readonly string[], mirrors: MirrorMap = {}, sha256?: string): string[] {
  const out: string[] = [];
  if (sha256 !== undefined) for (const base of mirrors[HASHED_MIRROR] ?? []) out.push(`${base.replace(/\/+$/, "")}/sha256/${sha256}`);
  for (const url of urls) out.push(...expandUrl(url, mirrors));
  return [...new Set(out)];
}
