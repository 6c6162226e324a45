/**
 * Writes a command's result to stdout. Through fs.writeSync on fd 1, not
 * process.stdout: creating process.stdout loads Node's stream machinery,
 * 5 ms of a 150 ms no-op realise here. A pipe that is full (EAGAIN) gets
 * the rest through process.stdout, which waits for it.
 */
import fs from "node:fs";
import { UkbError } from "../errors/index.js";

/** Set once the reader of stdout has gone (`ukb store gc | head -1`). */
let readerGone = false;

/**
 * Writes `text` to stdout. When the reader has gone (EPIPE), the rest of the
 * output is dropped and the command goes on to its end: a gc or a realise cut
 * short by a closed pipe would leave its work half done for nothing.
 */
export function writeStdout(text: string | Uint8Array): void {
  if (readerGone) return;
  const bytes = typeof text === "string" ? Buffer.from(text) : text;
  let offset = 0;
  try {
    while (offset < bytes.length) offset += fs.writeSync(1, bytes, offset);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EPIPE") {
      readerGone = true;
      return;
    }
    // The same words as the native launcher's (src/client/ukb.c).
    if (code !== "EAGAIN") throw new UkbError("internal", `cannot write to standard output (${code ?? (err as Error).message})`, { cause: err });
    // A stream error (the reader going while the rest waits) is the same EPIPE, reported late.
    process.stdout.once("error", () => (readerGone = true));
    process.stdout.write(bytes.subarray(offset));
  }
}
