/**
 * What urunc needs from an image, and what it can carry.
 *
 * The shape is bunny's (nubificus/bunny hops/package.go): the kernel at
 * /.boot/kernel, the initrd at /.boot/rootfs, and /urunc.json, a flat JSON
 * object of full `com.urunc.unikernel.*` keys whose values are base64
 * (standard encoding). The same keys, in plain text, are the image config's
 * Labels and the manifest's annotations. urunc.json exists because docker,
 * nerdctl and ctr build the runtime spec from the image config only, so
 * manifest annotations never reach urunc.
 *
 * The limits on arguments and environment below come from how they travel
 * (urunc pkg/unikontainers/unikernels/unikraft.go, Unikraft
 * lib/ukargparse/argparse.c): urunc joins the arguments with single spaces
 * after `--` on the guest's boot command line, and the environment into
 * `env.vars=[ K=V ... ]`; Unikraft splits that line on space, tab, CR, LF and
 * VT, treats ' and " as quotes that it removes, and has no escape character.
 * So an argument with whitespace is split in two, a quote is eaten (and
 * joins words), an empty argument vanishes, and control or non-ASCII bytes
 * do not survive every monitor's boot-argument path. ukb refuses such values
 * instead of producing an image that boots with different arguments.
 */
import { badInput, show } from "./errors.js";

export const URUNC_PREFIX = "com.urunc.unikernel.";
export const KERNEL_PATH = "/.boot/kernel";
export const INITRD_PATH = "/.boot/rootfs";
export const URUNC_JSON_PATH = "/urunc.json";

export type UnikernelType = "unikraft" | "rumprun" | "mirage" | "mewz" | "hermit" | "linux" | "freebsd";
export type Hypervisor = "qemu" | "firecracker" | "cloud-hypervisor" | "hvt" | "spt" | "hyperlight";

/** urunc's supported (unikernel, monitor) pairs (pkg/unikontainers/annotations.go, 2026). */
export const SUPPORTED_HYPERVISORS: Record<UnikernelType, readonly Hypervisor[]> = {
  unikraft: ["qemu", "firecracker", "hyperlight"],
  linux: ["qemu", "firecracker", "cloud-hypervisor"],
  rumprun: ["hvt", "spt"],
  mirage: ["qemu", "hvt", "spt"],
  mewz: ["qemu"],
  hermit: ["qemu"],
  freebsd: ["qemu", "firecracker"],
};

/**
 * Bytes allowed for the arguments and the environment together. Firecracker
 * and the Linux x86 boot protocol cap the kernel command line at 2048 bytes;
 * urunc adds its own part (console, netdev.ip=..., vfs.fstab=[...], the
 * env.vars brackets, "--"), so we keep 512 bytes for it.
 */
export const MAX_BOOT_ARGS_BYTES = 1536;

/** One printable ASCII character but space, ' and ". */
const ARG_RE = /^[\x21\x23-\x26\x28-\x7e]+$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** As ARG_RE, minus [ and ] which would end Unikraft's env.vars=[ ... ] array early; may be empty. */
const ENV_VALUE_RE = /^[\x21\x23-\x26\x28-\x5a\x5c\x5e-\x7e]*$/;
const VERSION_RE = /^[0-9]+(\.[0-9]+){0,3}([-+][0-9A-Za-z.-]+)?$/;

export interface UruncConfig {
  unikernelType: UnikernelType;
  unikernelVersion?: string;
  hypervisor: Hypervisor;
  /** Whole argv, program name first. */
  cmd: string[];
  env: string[];
  hasInitrd: boolean;
  mountRootfs: boolean;
}

export function checkUnikernel(type: unknown, hypervisor: unknown, version: unknown): void {
  if (typeof type !== "string" || !(type in SUPPORTED_HYPERVISORS)) {
    throw badInput(`unikernelType ${show(String(type))} is not one urunc runs; use one of ${Object.keys(SUPPORTED_HYPERVISORS).join(", ")}`);
  }
  const allowed = SUPPORTED_HYPERVISORS[type as UnikernelType];
  if (typeof hypervisor !== "string" || !allowed.includes(hypervisor as Hypervisor)) {
    throw badInput(`urunc does not run ${type} on hypervisor ${show(String(hypervisor))}; use one of ${allowed.join(", ")}`);
  }
  if (version !== undefined && (typeof version !== "string" || !VERSION_RE.test(version))) {
    throw badInput(`unikernelVersion ${show(String(version))} is not a version urunc can compare (like 0.16.1)`);
  }
}

/** Check the argv; returns it. See the module comment for why each rule exists. */
export function checkCmd(cmd: unknown): string[] {
  if (!Array.isArray(cmd) || cmd.length === 0) {
    throw badInput(`cmd must be the whole argv with the program name first, e.g. ["nginx", "-c", "/nginx/conf/nginx.conf"]`);
  }
  cmd.forEach((arg: unknown, i) => {
    if (typeof arg !== "string") throw badInput(`cmd[${i}] must be a string`);
    if (arg === "") throw badInput(`cmd[${i}] is empty: urunc joins arguments with spaces, so an empty one would vanish`);
    if (!ARG_RE.test(arg)) {
      throw badInput(
        `cmd[${i}] ${show(arg)} cannot reach the unikernel intact: arguments may hold printable ASCII only, without spaces or quotes`,
        "urunc joins arguments with spaces and Unikraft splits on whitespace and strips quotes; split the argument or move the value into a file in the initrd",
      );
    }
  });
  return cmd as string[];
}

/** Normalise env to ["K=V", ...] (given order kept) and check it. */
export function checkEnv(env: unknown): string[] {
  if (env === undefined) return [];
  let pairs: Array<[string, string]>;
  if (Array.isArray(env)) {
    pairs = env.map((item: unknown, i) => {
      if (typeof item !== "string" || !item.includes("=")) throw badInput(`env[${i}] ${show(String(item))} must be "KEY=VALUE"`);
      const at = item.indexOf("=");
      return [item.slice(0, at), item.slice(at + 1)];
    });
  } else if (env !== null && typeof env === "object") {
    pairs = Object.entries(env as Record<string, unknown>).map(([k, v]) => {
      if (typeof v !== "string") throw badInput(`env ${k} must be a string`);
      return [k, v];
    });
  } else {
    throw badInput("env must be a list of KEY=VALUE strings or an object");
  }
  const seen = new Set<string>();
  for (const [key, value] of pairs) {
    if (!ENV_KEY_RE.test(key)) throw badInput(`env name ${show(key)} must be letters, digits and _ and not start with a digit`);
    if (seen.has(key)) throw badInput(`env ${key} is set twice`);
    seen.add(key);
    if (!ENV_VALUE_RE.test(value)) {
      throw badInput(
        `env ${key}=${show(value)} cannot reach the unikernel intact: values may hold printable ASCII only, without spaces, quotes or [ ]`,
        "urunc passes the environment on the boot command line as env.vars=[ K=V ... ]",
      );
    }
  }
  return pairs.map(([k, v]) => `${k}=${v}`);
}

export function checkBootArgsLength(cmd: string[], env: string[]): void {
  const bytes = Buffer.byteLength([...cmd.slice(1), ...env].join(" "), "utf8");
  if (bytes > MAX_BOOT_ARGS_BYTES) {
    throw badInput(
      `arguments and environment take ${bytes} bytes of the boot command line; at most ${MAX_BOOT_ARGS_BYTES} fit beside what urunc adds`,
      "move long values into a file in the initrd",
    );
  }
}

/** The annotation values, in plain text, keyed by full name, sorted by key. */
export function uruncAnnotations(c: UruncConfig): Record<string, string> {
  const values: Record<string, string> = {
    binary: KERNEL_PATH,
    // The arguments without the program name: what urunc used before it read Cmd.
    cmdline: c.cmd.slice(1).join(" "),
    hypervisor: c.hypervisor,
    mountRootfs: c.mountRootfs ? "true" : "false",
    unikernelType: c.unikernelType,
  };
  if (c.hasInitrd) values.initrd = INITRD_PATH;
  if (c.unikernelVersion !== undefined) values.unikernelVersion = c.unikernelVersion;
  const out: Record<string, string> = {};
  for (const key of Object.keys(values).sort()) out[URUNC_PREFIX + key] = values[key]!;
  return out;
}

/** /urunc.json: the same keys, every value base64 (standard encoding). */
export function uruncJson(annotations: Record<string, string>): Buffer {
  const encoded: Record<string, string> = {};
  for (const key of Object.keys(annotations).sort()) encoded[key] = Buffer.from(annotations[key]!, "utf8").toString("base64");
  return Buffer.from(JSON.stringify(encoded), "utf8");
}
