/**
 * Where the cache settings come from, for each setting the first that says
 * something: the command line, the environment (UKB_SUBSTITUTERS,
 * UKB_TRUSTED_KEYS: space-separated), then the config file
 * $XDG_CONFIG_HOME/ukb/config.json (default ~/.config/ukb/config.json):
 *   { "substituters": ["oci://…", "https://…"], "trustedKeys": ["name:base64", …] }
 * An empty command-line value (--substituters '') means none.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { UsageError } from "../errors/index.js";
import { openCache } from "./backend.js";
import { parsePublicKey } from "./keys.js";
import { CacheSet, type CacheOptions } from "./substitute.js";

export interface CacheSettings {
  readonly substituters: readonly string[];
  readonly trustedKeys: readonly string[];
  readonly verify: boolean;
}

export interface CacheFlags {
  substituters?: readonly string[] | undefined;
  trustedKeys?: readonly string[] | undefined;
  noVerify?: boolean | undefined;
}

export function configFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(env.HOME ?? os.homedir(), ".config");
  return path.join(base, "ukb", "config.json");
}

function words(values: readonly string[]): string[] {
  return values.flatMap((v) => v.split(/[\s,]+/)).filter((w) => w !== "");
}

function readConfig(file: string): { substituters?: string[]; trustedKeys?: string[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return {};
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`${file} is not valid JSON`);
  }
  const j = json as Record<string, unknown>;
  const list = (key: string): string[] | undefined => {
    const v = j[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new UsageError(`${file}: "${key}" must be a list of strings`);
    return v as string[];
  };
  const out: { substituters?: string[]; trustedKeys?: string[] } = {};
  const s = list("substituters");
  const k = list("trustedKeys");
  if (s) out.substituters = s;
  if (k) out.trustedKeys = k;
  return out;
}

export function cacheSettings(flags: CacheFlags, env: NodeJS.ProcessEnv = process.env): CacheSettings {
  const config = readConfig(configFile(env));
  const pick = (flag: readonly string[] | undefined, envVar: string | undefined, fromConfig: string[] | undefined): string[] =>
    flag !== undefined ? words(flag) : envVar !== undefined ? words([envVar]) : (fromConfig ?? []);
  return {
    substituters: pick(flags.substituters, env.UKB_SUBSTITUTERS, config.substituters),
    trustedKeys: pick(flags.trustedKeys, env.UKB_TRUSTED_KEYS, config.trustedKeys),
    verify: !flags.noVerify,
  };
}

/** The substituters of the settings, opened; checks the trusted keys. */
export async function openSubstituters(settings: CacheSettings, options: Omit<CacheOptions, "trust"> = {}): Promise<CacheSet> {
  const keys = settings.trustedKeys.map(parsePublicKey);
  const backends = [];
  for (const url of settings.substituters) backends.push(await openCache(url));
  return new CacheSet(backends, { ...options, trust: { verify: settings.verify, keys } });
}
