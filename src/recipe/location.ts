/**
 * Where in the user's recipe a call came from: the first stack frame outside
 * ukb's own code. Errors about a recipe name its file and line.
 */
import { fileURLToPath } from "node:url";
import path from "node:path";

/** ukb's own source or compiled tree (src/ or dist/). */
const OWN_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export function callerLocation(): { file?: string; line?: number } {
  const stack = new Error().stack?.split("\n").slice(1) ?? [];
  for (const frame of stack) {
    const m = /\(?((?:file:\/\/)?\/[^():]+):(\d+):\d+\)?\s*$/.exec(frame);
    if (!m) continue;
    const file = m[1]!.startsWith("file://") ? fileURLToPath(m[1]!) : m[1]!;
    if (file.startsWith(OWN_ROOT + path.sep) || file.includes(`${path.sep}node_modules${path.sep}`)) continue;
    return { file: path.relative(process.cwd(), file) || file, line: Number(m[2]) };
  }
  return {};
}
