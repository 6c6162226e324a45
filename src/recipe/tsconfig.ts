/**
 * The files a tsconfig.json's `extends` chain reads. esbuild follows that
 * chain when it compiles a recipe (`paths`, `baseUrl`, `jsx`, decorators,
 * `useDefineForClassFields` may come from any link of it), so the eval cache
 * must stamp every link, and the places where a link could appear.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

type JsoncParser = typeof import("jsonc-parser");

/**
 * Every file whose presence or content decides what `config` extends: the
 * files found, recursively, and the candidates tried before them (stamped by
 * the caller as missing, so that a file appearing there is a change).
 */
export function extendsChain(config: string): string[] {
  const files = new Set<string>();
  const visit = (file: string) => {
    for (const spec of extendsOf(file)) {
      // A package's "exports" may map the name elsewhere (`cfg/base` → ./configs/base.json).
      for (const target of exportsTargets(spec, path.dirname(file), files)) {
        if (files.has(target)) continue;
        files.add(target);
        if (isFile(target)) visit(target);
      }
      for (const candidate of candidatesFor(spec, path.dirname(file))) {
        if (files.has(candidate)) break;
        files.add(candidate);
        if (isFile(candidate)) {
          // A package's manifest says where its config is (or only that the package is there).
          if (path.basename(candidate) !== "package.json") visit(candidate);
          else {
            const pointed = tsconfigField(candidate);
            if (!pointed) continue;
            files.add(pointed);
            if (isFile(pointed)) visit(pointed);
          }
          break;
        }
      }
    }
  };
  visit(config);
  return [...files];
}

/** What a config extends (a string, or since TypeScript 5.0 a list); nothing if it cannot be read. */
function extendsOf(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return [];
  }
  // Required on use: most recipes have no tsconfig.json, and no evaluation needs the parser otherwise.
  const jsonc = createRequire(import.meta.url)("jsonc-parser") as JsoncParser;
  const parsed = jsonc.parse(text, [], { allowTrailingComma: true }) as { extends?: unknown } | undefined;
  const value = parsed?.extends;
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v): v is string => typeof v === "string" && v.length > 0);
}

/**
 * Where TypeScript and esbuild look for `spec`, in order: a path as given
 * and with ".json"; a package name in each node_modules up from `dir`, as a
 * file, with ".json", through its manifest, or as a folder's tsconfig.json.
 */
function candidatesFor(spec: string, dir: string): string[] {
  const asFile = (p: string) => (p.endsWith(".json") ? [p] : [p, `${p}.json`]);
  if (spec.startsWith(".") || path.isAbsolute(spec)) return asFile(path.resolve(dir, spec));
  const found: string[] = [];
  const isPackageOnly = /^(@[^/]+\/)?[^/@]+$/.test(spec);
  for (let d = dir; ; d = path.dirname(d)) {
    const base = path.join(d, "node_modules", spec);
    // A package's manifest first: its "tsconfig" field wins over the folder's tsconfig.json.
    found.push(...asFile(base), ...(isPackageOnly ? [path.join(base, "package.json")] : []), path.join(base, "tsconfig.json"));
    if (path.dirname(d) === d) break;
  }
  return found;
}

/**
 * The files a package's "exports" maps a bare `spec` to, in the first
 * node_modules up from `dir` that has the package (as Node and TypeScript
 * look); every manifest looked at is added to `seen` (stamped). All the
 * conditions' targets count: which one a resolver picks, each may be read.
 */
function exportsTargets(spec: string, dir: string, seen: Set<string>): string[] {
  if (spec.startsWith(".") || path.isAbsolute(spec)) return [];
  const parts = spec.split("/");
  const name = spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
  const subpath = `.${spec.slice(name.length)}`;
  for (let d = dir; ; d = path.dirname(d)) {
    const packageDir = path.join(d, "node_modules", name);
    const manifest = path.join(packageDir, "package.json");
    seen.add(manifest);
    if (isFile(manifest)) {
      let exportsField: unknown;
      try {
        exportsField = (JSON.parse(fs.readFileSync(manifest, "utf8")) as { exports?: unknown }).exports;
      } catch {
        return [];
      }
      if (!exportsField) return [];
      // A string, a list of fallbacks, or an object of conditions ("default", "require"…: keys
      // without a dot) is what the package's own name maps to.
      const sugar = typeof exportsField !== "object" || Array.isArray(exportsField) || Object.keys(exportsField).every((k) => !k.startsWith("."));
      if (sugar) return subpath === "." ? stringsIn(exportsField).map((target) => path.resolve(packageDir, target)) : [];
      const map = exportsField as Record<string, unknown>;
      const targets: string[] = [];
      for (const [key, value] of Object.entries(map)) {
        const star = key.indexOf("*");
        const matched = star < 0 ? (key === subpath || key === `${subpath}.json` ? "" : undefined) : subpath.startsWith(key.slice(0, star)) && subpath.endsWith(key.slice(star + 1)) ? subpath.slice(star, subpath.length - (key.length - star - 1)) : undefined;
        if (matched === undefined) continue;
        for (const target of stringsIn(value)) targets.push(path.resolve(packageDir, target.replaceAll("*", matched)));
      }
      return targets;
    }
    if (path.dirname(d) === d) return [];
  }
}

/** Every string of an exports value (a path, a conditions object, a list of fallbacks). */
function stringsIn(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(stringsIn);
  if (value && typeof value === "object") return Object.values(value).flatMap(stringsIn);
  return [];
}

/** The config a package's manifest names in its "tsconfig" field. */
function tsconfigField(manifest: string): string | undefined {
  try {
    const field = (JSON.parse(fs.readFileSync(manifest, "utf8")) as { tsconfig?: unknown }).tsconfig;
    return typeof field === "string" ? path.resolve(path.dirname(manifest), field) : undefined;
  } catch {
    return undefined;
  }
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}
