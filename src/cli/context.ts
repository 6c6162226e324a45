/**
 * What every command shares: the store, recipe loading with the eval cache,
 * and the selection of an export.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "../errors/index.js";
import type { DrvRecord } from "../graph/index.js";
import { Store } from "../store/index.js";
import { loadRecipe, selectExport, type LoadedRecipe } from "../recipe/load.js";

export function openStore(flag: string | undefined): Store {
  return Store.open(flag ?? process.env.UKB_STORE ?? path.resolve("cache"));
}

/** Changes to ukb itself or to the host PATH invalidate cached evaluations. */
function evalSalt(): string {
  const own = path.dirname(fileURLToPath(import.meta.url));
  const stamps = ["../graph/derivation", "../recipe/derivation", "../recipe/host-tools"].map((f) => {
    for (const ext of [".js", ".ts"]) {
      try {
        const st = fs.statSync(path.join(own, f + ext));
        return `${st.mtimeMs}:${st.size}`;
      } catch {
        // try the other extension
      }
    }
    return "?";
  });
  return `${stamps.join(",")}\0${process.env.PATH ?? ""}`;
}

export async function loadWithCache(store: Store, recipe: string, useCache = true): Promise<LoadedRecipe> {
  return loadRecipe(recipe, useCache ? store.evalCache() : undefined, evalSalt());
}

export function pick(recipe: LoadedRecipe, attr: string | undefined): DrvRecord {
  return selectExport(recipe, attr);
}

export function parseCount(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} needs a positive whole number, not '${value}'`);
  return n;
}

export const defaultJobs = () => Math.max(1, os.availableParallelism());
