/**
 * Where in the user's recipe a call came from: the first stack frame outside
 * ukb's own code. Errors about a recipe name its file and line.
 */
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

/**
 * ukb's package folder. Every module sits two levels below it (src/x/, dist/x/
 * or the bundle's dist/bundle/), so this holds wherever this code was built to.
 */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Whether ukb runs from its TypeScript sources (tests) rather than compiled JavaScript. */
export const RUNNING_FROM_SOURCE = import.meta.url.endsWith(".ts");

/** ukb's own source and compiled trees (stack traces of dist/ map back to src/). */
export const OWN_TREES = [path.join(PACKAGE_ROOT, "src") + path.sep, path.join(PACKAGE_ROOT, "dist") + path.sep];

/** Whether `file` is ukb's own source or compiled code. */
export function isOwnCode(file: string): boolean {
  return OWN_TREES.some((t) => file.startsWith(t));
}

export function callerLocation(): { file?: string; line?: number } {
  const stack = new Error().stack?.split("\n").slice(1) ?? [];
  for (const frame of stack) {
    const at = frameLocation(frame);
    if (!at || isOwnCode(at.file) || at.file.includes(`${path.sep}node_modules${path.sep}`)) continue;
    return { file: path.relative(process.cwd(), at.file) || at.file, line: at.line };
  }
  return {};
}

/**
 * The file and line of a formatted stack frame ("    at f (/a/b.ts:3:7)" or
 * "    at /a/b.ts:3:7"). Read from the end: a folder's name may hold "(", ")"
 * or ":". Where the frame's text leaves it open, the file that exists wins.
 */
export function frameLocation(frame: string): { file: string; line: number } | undefined {
  const m = /:(\d+):\d+\)?\s*$/.exec(frame);
  if (!m) return undefined;
  const head = frame.slice(0, m.index);
  // Each place a path may start: after "at " or " (", as a path or a file: URL.
  const starts = [...head.matchAll(/(?:\bat |\()((?:file:\/\/)?\/)/g)].map((s) => s.index! + s[0].length - s[1]!.length);
  const files = starts.map((i) => head.slice(i)).map((p) => (p.startsWith("file://") ? safeFileURLToPath(p) : p)).filter((p): p is string => p !== undefined);
  if (files.length === 0) return undefined;
  const file = files.length === 1 ? files[0]! : (files.find((f) => fs.existsSync(f)) ?? files[files.length - 1]!);
  return { file, line: Number(m[1]) };
}

function safeFileURLToPath(url: string): string | undefined {
  try {
    return fileURLToPath(url);
  } catch {
    return undefined;
  }
}
