/** `ukb key generate --name NAME --out FILE` and `ukb key public FILE`: signing keys for binary caches. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ExitCode, UsageError } from "../errors/index.js";
import { writeStdout } from "../ui/stdout.js";

export const usage = `ukb key generate --name NAME --out FILE   write an ed25519 secret key (mode 0600), print its public key
ukb key public FILE                        print the public key of a secret key file`;

export async function keyCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { name: { type: "string" }, out: { type: "string", short: "o" } } });
  const { generateKey, readSecretKey } = await import("../cache/keys.js");
  switch (sub) {
    case "generate": {
      if (!values.name || !values.out || positionals.length > 0) throw new UsageError(`usage: ${usage.split("\n")[0]}`);
      const file = path.resolve(values.out);
      const key = generateKey(values.name);
      try {
        fs.writeFileSync(file, key.secretText, { mode: 0o600, flag: "wx" });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new UsageError(code === "EEXIST" ? `${file} exists: not overwriting a key` : `cannot write ${file}: ${code ?? (err as Error).message}`);
      }
      writeStdout(`${key.publicKey}\n`);
      process.stderr.write(`secret key written to ${file}; give the public key above to those who should trust what it signs (--trusted-keys)\n`);
      return ExitCode.ok;
    }
    case "public": {
      if (positionals.length !== 1) throw new UsageError(`usage: ${usage.split("\n")[1]}`);
      writeStdout(`${readSecretKey(positionals[0]!).publicKey}\n`);
      return ExitCode.ok;
    }
    default:
      throw new UsageError(`unknown key command '${sub ?? ""}'\nusage:\n${usage}`);
  }
}
