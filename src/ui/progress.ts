/**
 * Listeners that show a run: a live status line on a terminal, plain lines
 * elsewhere, or one JSON event per line. A status line this small is written
 * by hand: a progress-bar library would cost start-up time on every no-op run.
 */
import type { Listener, ScheduleEvent } from "../schedule/index.js";
import { renderFailure } from "./errors.js";

export type ProgressMode = "tty" | "plain" | "json" | "quiet";

export function chooseMode(stream: NodeJS.WriteStream, json: boolean): ProgressMode {
  if (json) return "json";
  return stream.isTTY ? "tty" : "plain";
}

export function makeListener(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): Listener & { close(): void } {
  if (mode === "json") return Object.assign((e: ScheduleEvent) => void out.write(`${JSON.stringify({ ...e, time: Date.now() })}\n`), { close() {} });
  if (mode === "quiet") return Object.assign(() => undefined, { close() {} });
  if (mode === "plain") return plainListener(out);
  return statusLine(out);
}

function plainListener(out: NodeJS.WriteStream): Listener & { close(): void } {
  const listener = (e: ScheduleEvent) => {
    switch (e.type) {
      case "plan":
        if (e.toBuild.length > 0 || e.toSubstitute?.length) out.write(`${e.toBuild.length} to build${e.toSubstitute?.length ? `, ${e.toSubstitute.length} to fetch` : ""}, ${e.valid} valid\n`);
        break;
      case "start":
        out.write(`building ${e.name}\n`);
        break;
      case "substitute-start":
        out.write(`fetching ${e.name} from ${e.cache}\n`);
        break;
      case "substituted":
        out.write(`fetched ${e.name} from ${e.cache} in ${(e.ms / 1000).toFixed(2)} s (${megabytes(e.bytes)})\n`);
        break;
      case "cache-warning":
        out.write(`ukb: warning: ${e.message}\n`);
        break;
      case "waiting":
        out.write(`waiting for ${e.name}: ${e.reason}\n`);
        break;
      case "done":
        out.write(e.builtHere ? `built ${e.name} in ${(e.ms / 1000).toFixed(2)} s\n` : `${e.name} was built by another process\n`);
        break;
      case "failed":
        out.write(`${renderFailure(e.name, e.message, e.logFile, e.logTail, e.hint)}\n`);
        break;
      case "skipped":
        out.write(`skipped ${e.name}: ${e.reason}\n`);
        break;
      case "finish":
        break;
    }
  };
  return Object.assign(listener, { close() {} });
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e6 ? 2 : 1)} MB`;
}

function statusLine(out: NodeJS.WriteStream): Listener & { close(): void } {
  const running = new Map<string, string>();
  /** Builders that have exited, outputs being registered: neither running (a job slot) nor waiting. */
  const registering = new Set<string>();
  const seen = new Set<string>();
  let total = 0;
  let done = 0;
  let fetched = 0;
  let failed = 0;
  /** Not to be built, an input having failed (--keep-going): no longer waiting. */
  let skipped = 0;
  const started = Date.now();
  let drawn = false;
  let timer: NodeJS.Timeout | undefined;
  const clear = () => {
    if (drawn) out.write("\r\x1b[2K");
    drawn = false;
  };
  const draw = () => {
    const names = [...running.values()];
    const waiting = total - done - failed - skipped - running.size - registering.size;
    let line = `[${done}/${total} ${fetched ? `done (${fetched} fetched)` : "built"}, ${running.size} running, ${Math.max(0, waiting)} waiting${failed ? `, ${failed} failed` : ""}${skipped ? `, ${skipped} skipped` : ""}] ${((Date.now() - started) / 1000).toFixed(1)}s ${names.slice(0, 3).join(" ")}${names.length > 3 ? " …" : ""}`;
    const width = out.columns || 80;
    if (line.length > width - 1) line = line.slice(0, width - 2) + "…";
    clear();
    out.write(line);
    drawn = true;
  };
  const listener = (e: ScheduleEvent) => {
    switch (e.type) {
      case "plan":
        total = e.toBuild.length + (e.toSubstitute?.length ?? 0);
        if (total > 0) timer = setInterval(draw, 100).unref();
        break;
      case "start":
      case "substitute-start":
        running.set(e.drv, e.type === "start" ? e.name : `${e.name} (fetch)`);
        seen.add(e.drv);
        total = Math.max(total, seen.size);
        break;
      case "substituted":
        running.delete(e.drv);
        done++;
        fetched++;
        break;
      case "cache-warning":
        if (e.drv) running.delete(e.drv);
        clear();
        out.write(`ukb: warning: ${e.message}\n`);
        break;
      case "registering":
        running.delete(e.drv);
        registering.add(e.drv);
        break;
      case "done":
        running.delete(e.drv);
        registering.delete(e.drv);
        done++;
        break;
      case "failed":
        running.delete(e.drv);
        registering.delete(e.drv);
        failed++;
        clear();
        out.write(`${renderFailure(e.name, e.message, e.logFile, e.logTail, e.hint)}\n`);
        break;
      case "skipped":
        running.delete(e.drv);
        skipped++;
        break;
      case "finish":
        if (timer) clearInterval(timer);
        clear();
        if (e.built + e.failed + (e.substituted ?? 0) > 0) {
          out.write(`built ${e.built}${e.substituted ? `, fetched ${e.substituted}` : ""}${e.failed ? `, ${e.failed} failed` : ""}${e.skipped ? `, ${e.skipped} skipped` : ""} in ${(e.ms / 1000).toFixed(1)}s\n`);
        }
        return;
      default:
        break;
    }
    if (total > 0) draw();
  };
  return Object.assign(listener, {
    close() {
      if (timer) clearInterval(timer);
      clear();
    },
  });
}
