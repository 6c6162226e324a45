/** How an error reaches the user: one or two lines, a hint, and for a failed build the end of its log. */
import { isUkbError } from "../errors/index.js";

export function renderError(err: unknown): string {
  if (isUkbError(err)) {
    let text = `ukb: error: ${err.message}`;
    if (err.hint) text += `\n  hint: ${err.hint}`;
    return text;
  }
  const e = err as Error;
  return `ukb: internal error: ${e?.stack ?? String(err)}`;
}

export function renderFailure(name: string, message: string, logFile?: string, logTail?: readonly string[], hint?: string): string {
  let text = `ukb: error: ${message}`;
  if (hint) text += `\n  hint: ${hint}`;
  if (logTail && logTail.length > 0) {
    text += `\n  last ${logTail.length} log lines (${logFile}):\n${logTail.map((l) => `    ${l}`).join("\n")}`;
  } else if (logFile) {
    text += `\n  the log (${logFile}) is empty`;
  }
  return text;
}
