/**
 * Writes a command's result to stdout. Through fs.writeSync on fd 1, not
 * process.stdout: creating process.stdout loads Node's stream machinery,
 * 5 ms of a 150 ms no-op realise here. A pipe that is full (EAGAIN) gets
 * the rest through process.stdout, which waits for it.
 */
import fs from "node:fs";
import { UkbError } from "../errors/index.js";

export function writeStdout(text: string): void {
  const bytes = Buffer.from(text);
  let offset = 0;
  try {
    while (offset < bytes.length) offset += fs.writeSync(1, bytes, offset);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // The same words as the native launcher's (src/client/ukb.c).
    if (code !== "EAGAIN") throw new UkbError("internal", `cannot write to standard output (${code ?? (err as Error).message})`, { cause: err });
    process.stdout.write(bytes.subarray(offset));
  }
}
