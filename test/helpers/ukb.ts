/** Test helpers: run the real `ukb` command in temp folders. */
import { execFile, spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const UKB = path.join(ROOT, "bin/ukb.cjs");
/** The ukb command as users run it: the shell entry, through the native launcher when it was compiled. */
export const UKB_COMMAND = path.join(ROOT, "bin/ukb");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs ukb (Node's CLI, or with `command` another entry such as UKB_COMMAND) to completion. */
export function ukb(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; command?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      options.command ?? process.execPath,
      options.command ? args : [UKB, ...args],
      { cwd: options.cwd, env: { ...process.env, ...options.env }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Starts ukb and returns the process (for concurrency and kill tests); `extraFds` more pipes it inherits, after fd 2. */
export function ukbSpawn(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; extraFds?: number } = {}): ChildProcess {
  const stdio: StdioOptions = ["ignore", "pipe", "pipe", ...Array.from({ length: options.extraFds ?? 0 }, () => "pipe" as const)];
  return spawn(process.execPath, [UKB, ...args], { cwd: options.cwd, env: options.env ?? process.env, stdio });
}

/** What a process started by ukbSpawn printed, and how it ended. */
export function outcome(child: ChildProcess): Promise<RunResult> {
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d));
  child.stderr!.on("data", (d: Buffer) => (stderr += d));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr })));
}

/** Temp folders made by this test process, removed when it exits (one listener for all). */
const tempDirs: string[] = [];
process.once("exit", () => {
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // read-only store paths: best effort
    }
  }
});

/** A fresh temp folder, removed when the process exits. */
export function tempDir(prefix = "ukb-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** Writes a recipe file into `dir` and returns its path. */
export function writeRecipe(dir: string, name: string, source: string): string {
  const file = path.join(dir, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, source);
  return file;
}

/** Parses the JSON event stream ukb writes to stderr with --json. */
export function events(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

export const HELLO = `import { derivation, hostTools } from "ukb";

const tools = hostTools(["sh", "tr"]);
export const greeting = derivation({
  name: "greeting",
  builder: \`\${tools}/bin/sh\`,
  args: ["-c", "echo hello > $out"],
});
export default derivation({
  name: "shout",
  builder: \`\${tools}/bin/sh\`,
  args: ["-c", \`\${tools}/bin/tr a-z A-Z < \${greeting} > $out\`],
});
`;

/** A small image graph: a stand-in kernel, a rootfs, its cpio, an OCI image. */
export const IMAGE = `import { derivation, hostTools, rootfs, cpio, ociImage } from "ukb";
const t = hostTools(["sh", "printf", "head", "cat"]);
// A stand-in kernel: an ELF header and some bytes (the writers check the magic).
export const kernel = derivation({ name: "kernel", builder: \`\${t}/bin/sh\`,
  args: ["-c", \`\${t}/bin/printf '\\\\177ELF\\\\002\\\\001\\\\001' > $out; \${t}/bin/head -c 4096 /dev/zero >> $out\`] });
const site = derivation({ name: "site", builder: \`\${t}/bin/sh\`, args: ["-c", "echo '<h1>hello</h1>' > $out"] });
export const tree = rootfs({ files: {
  "/nginx/conf/nginx.conf": "worker_processes 1;\\n",
  "/nginx/html/index.html": site,
  "/nginx/logs/error.log": "",
  "/bin/tool": { text: "#!/bin/sh\\n", mode: 0o755 },
  "/etc/link": { symlink: "../nginx/conf/nginx.conf" },
} });
export const initrd = cpio({ root: tree });
export default ociImage({
  name: "nginx-image", kernel, initrd,
  cmd: ["nginx", "-c", "/nginx/conf/nginx.conf"],
  env: { LOG: "1" },
  unikernelType: "unikraft", unikernelVersion: "0.16.3", hypervisor: "qemu",
  tag: "latest",
});
`;

/** `app` refers to `lib` by path (found by the reference scan); neither refers to the tools. */
export const REFS = `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh"]);
const lib = derivation({ name: "lib", builder: \`\${t}/bin/sh\`, args: ["-c", "echo lib > $out"] });
export default derivation({ name: "app", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo "uses \${lib}" > $out\`] });
`;
