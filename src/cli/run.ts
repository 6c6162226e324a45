/**
 * `ukb run <recipe.ts|oci-dir> [-A attr] [--port P]`: boot an image in QEMU
 * exactly as urunc would, from what the image says (kernel, initrd, Cmd,
 * Env, labels); stream the console; print the URL once it answers.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { boot, freePort, readBootableImage, waitForHttp } from "../run/index.js";
import { imageLayout, parseCount } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      attr: { type: "string", short: "A" },
      port: { type: "string", short: "p" },
      store: { type: "string" },
      tag: { type: "string" },
      memory: { type: "string", short: "m" },
      "until-ready": { type: "boolean" },
      quiet: { type: "boolean", short: "q" },
      timeout: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw new UsageError("usage: ukb run <recipe.ts|oci-dir> [-A attr] [--port 8080] [--until-ready]");
  const layout = await imageLayout(positionals[0]!, values.attr, values.store);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "ukb-run-"));
  const image = await readBootableImage(layout, scratch, values.tag);
  const port = values.port ? parseCount(values.port, "--port", 8080) : await freePort();
  const vm = boot({ image, port, ...(values.memory ? { memory: values.memory } : {}), ...(values.quiet ? {} : { onConsole: (c) => void process.stderr.write(c) }) });
  const stop = async () => {
    await vm.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void stop().then(() => process.exit(130)));
  process.once("SIGTERM", () => void stop().then(() => process.exit(143)));
  try {
    const ready = await waitForHttp(port, vm, parseCount(values.timeout, "--timeout", 120) * 1000);
    writeStdout(`http://127.0.0.1:${port}/ answered 200 ${(ready.ms / 1000).toFixed(2)} s after QEMU started\n`);
    if (values["until-ready"]) return ExitCode.ok;
    const code = await vm.exited;
    return code === 0 ? ExitCode.ok : ExitCode.buildFailed;
  } finally {
    await stop();
  }
}
