/**
 * Booting an image under QEMU as urunc would (its qemu.go and unikraft.go):
 * `-kernel`, `-initrd`, a command line built from the image's Cmd and Env,
 * virtio-net, with a user-mode network and a host port forwarded to the
 * guest's port 80. KVM when it works, plain emulation otherwise.
 */
import fs from "node:fs";
import net from "node:net";
import { spawn, type ChildProcess } from "node:child_process";
import { UkbError } from "../errors/index.js";
import type { BootableImage } from "./image.js";

export const GUEST_IP = "10.0.2.15";
export const GATEWAY = "10.0.2.2";

function kvmUsable(): boolean {
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function versionAtLeast(v: string | undefined, min: [number, number, number]): boolean {
  if (!v) return true; // urunc: a missing version means a current Unikraft
  const parts = v.replace(/^v/, "").split(".").map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < 3; i++) {
    if ((parts[i] ?? 0) !== min[i]) return (parts[i] ?? 0) > min[i]!;
  }
  return true;
}

/** The kernel command line urunc would pass. */
export function commandLine(image: BootableImage): string {
  const args = image.cmd.slice(1); // urunc drops Cmd[0], the program's name
  if (image.unikernelType === "unikraft") {
    const parts: string[] = [];
    if (versionAtLeast(image.unikernelVersion, [0, 16, 1]) && image.env.length > 0) parts.push(`env.vars=[ ${image.env.join(" ")} ]`);
    parts.push(`netdev.ip=${GUEST_IP}/24:${GATEWAY}:8.8.8.8`);
    return `${parts.join(" ")} -- ${args.join(" ")}`.trim();
  }
  if (image.unikernelType === "linux") {
    const extra = args.length > 0 ? ` -- ${args.join(" ")}` : "";
    return `console=ttyS0 panic=-1 quiet${extra}`;
  }
  return args.join(" ");
}

export interface BootOptions {
  image: BootableImage;
  /** Host port forwarded to the guest's port 80. */
  port: number;
  memory?: string;
  onConsole?: (chunk: Buffer) => void;
}

export interface RunningVm {
  readonly child: ChildProcess;
  readonly startedAt: number;
  readonly argv: readonly string[];
  /** Resolves when QEMU exits. */
  readonly exited: Promise<number | null>;
  stop(): Promise<void>;
}

export function qemuArgv(o: BootOptions): string[] {
  if (o.image.hypervisor !== "qemu") throw new UkbError("usage", `ukb run boots qemu images; this one is for ${o.image.hypervisor}`, { exitCode: 2 });
  const kvm = kvmUsable();
  return [
    "qemu-system-x86_64",
    "-m", o.memory ?? "256M",
    ...(kvm ? ["-enable-kvm", "-cpu", "host"] : ["-cpu", "max"]),
    "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults", "-no-reboot",
    "-kernel", o.image.kernel,
    ...(o.image.initrd ? ["-initrd", o.image.initrd] : []),
    "-append", commandLine(o.image),
    "-netdev", `user,id=n0,hostfwd=tcp:127.0.0.1:${o.port}-:80`,
    // romfile= skips the NIC's iPXE option ROM: ~0.1 s of every boot, and nothing here boots from the network.
    "-device", "virtio-net-pci,netdev=n0,romfile=",
  ];
}

export function boot(o: BootOptions): RunningVm {
  const argv = qemuArgv(o);
  const startedAt = performance.now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", (err) => reject(new UkbError("build", `cannot start ${argv[0]}: ${err.message}`, { hint: "apt-get install qemu-system-x86" })));
    child.once("exit", (code) => resolve(code));
  });
  exited.catch(() => undefined);
  child.stdout!.on("data", (c: Buffer) => o.onConsole?.(c));
  child.stderr!.on("data", (c: Buffer) => o.onConsole?.(c));
  return {
    child,
    startedAt,
    argv,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited.catch(() => undefined);
      }
    },
  };
}

/**
 * Polls http://127.0.0.1:port/ until an HTTP 200 (QEMU's forward accepts
 * connections before the guest's network is up: short timeouts, retry).
 */
export async function waitForHttp(port: number, vm: RunningVm, timeoutMs: number): Promise<{ ms: number; body: string }> {
  const deadline = performance.now() + timeoutMs;
  let exited = false;
  vm.exited.then(() => (exited = true), () => (exited = true));
  while (performance.now() < deadline) {
    if (exited) throw new UkbError("build", `the VM exited before answering on port ${port}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(300) });
      const body = await res.text();
      if (res.status === 200) return { ms: performance.now() - vm.startedAt, body };
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new UkbError("build", `no HTTP 200 on 127.0.0.1:${port} within ${(timeoutMs / 1000).toFixed(0)} s`);
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      server.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}
