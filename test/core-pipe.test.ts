/** A reader of stdout that goes early (`ukb … | head -1`) cuts the output short, not the work. */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import test from "ava";
import { HELLO, UKB, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

/** Runs `ukb args | true` (the reader has exited before ukb writes): ukb's exit status and stderr. */
function intoClosedPipe(args: string[], cwd: string): Promise<{ code: number; stderr: string }> {
  const quoted = [process.execPath, UKB, ...args].map((a) => `'${a}'`).join(" ");
  return new Promise((resolve) => {
    execFile("/bin/bash", ["-c", `${quoted} 2> err | true; echo "\${PIPESTATUS[0]}"`], { cwd }, (_err, stdout) => {
      resolve({ code: Number(stdout.trim()), stderr: fs.readFileSync(path.join(cwd, "err"), "utf8") });
    });
  });
}

test("gc, show and realise into a closed pipe finish their work, exit 0 and print no error", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const realise = await intoClosedPipe(["realise", "hello.ts", "--no-out-link"], dir);
  t.is(realise.code, 0, realise.stderr);
  t.notRegex(realise.stderr, /error|EPIPE/i);
  const show = await intoClosedPipe(["show", "hello.ts"], dir);
  t.deepEqual(show, { code: 0, stderr: "" });
  const valid = fs.readdirSync(path.join(dir, "cache/store"));
  t.true(valid.length >= 3);
  const gc = await intoClosedPipe(["store", "gc"], dir);
  t.deepEqual(gc, { code: 0, stderr: "" });
  // Every path went, none is left half deleted.
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
  const verify = await ukb(["store", "verify"], { cwd: dir });
  t.is(verify.code, 0, verify.stdout);
  t.regex(verify.stdout, /checked 0 paths: all valid\n$/);
});
