/** `ukb push <recipe.ts|oci-dir> <registry/repo:tag | oci-archive:FILE>`: publish an image. */
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { pushLayout, writeOciArchive } from "../artifacts/index.js";
import { imageLayout } from "./context.js";
import { writeStdout } from "../ui/stdout.js";

export const usage = "ukb push <recipe.ts [-A attr] | oci-dir> <host[:port]/repo:tag | oci-archive:FILE> [--insecure] [--from REPO]";

export async function pushCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { attr: { type: "string", short: "A" }, insecure: { type: "boolean" }, from: { type: "string" }, store: { type: "string" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 2) throw new UsageError(`usage: ${usage}`);
  const [source, destination] = positionals as [string, string];
  const layout = await imageLayout(source, values.attr, values.store);
  if (destination.startsWith("oci-archive:")) {
    const file = path.resolve(destination.slice("oci-archive:".length));
    const r = await writeOciArchive(layout, file);
    writeStdout(`${file}\n  sha256 ${r.sha256} (${r.size} bytes)\n`);
    return ExitCode.ok;
  }
  const result = await pushLayout({
    layout,
    reference: destination,
    ...(values.insecure ? { insecure: true } : {}),
    ...(values.from ? { from: values.from } : {}),
    onEvent: (e) => {
      if (values.json) process.stderr.write(`${JSON.stringify(e)}\n`);
      else if (e.type === "blob") process.stderr.write(`${e.status.padEnd(8)} ${e.digest} (${e.size} bytes)\n`);
    },
  });
  writeStdout(`${result.url}\n  ${result.manifestDigest} (uploaded ${result.uploaded.length} blobs, ${result.mounted.length} mounted, ${result.present.length} already there)\n`);
  return ExitCode.ok;
}
