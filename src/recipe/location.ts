/**
 * Where in the user's recipe a call came from: the first stack frame outside
 * ukb's own code. Errors about a recipe name its file and line.
 */
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
    const m = /(?:\(|at )((?:file:\/\/)?\/[^():]+):(\d+):\d+\)?\s*$/.exec(frame);
    if (!m) continue;
    const file = m[1]!.startsWith("file://") ? fileURLToPath(m[1]!) : m[1]!;
    if (isOwnCode(file) || file.includes(`${path.sep}node_modules${path.sep}`)) continue;
    return { file: path.relative(process.cwd(), file) || file, line: Number(m[2]) };
  }
  return {};
}
