/**
 * Just enough of an ELF (and Linux bzImage) header to refuse a wrong kernel
 * file before packaging it: a text file, a cpio, or a kernel for the other
 * architecture would otherwise only fail when urunc boots the image.
 */
import { open } from "node:fs/promises";

export interface KernelHeader {
  format: "elf" | "bzImage" | "other";
  /** ELF e_machine (3 i386, 62 x86-64, 183 aarch64), when format is elf and the header is whole. */
  machine?: number;
  /** 32 or 64, when format is elf. */
  bits?: 32 | 64;
}

export const EM_386 = 3;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

/** Which ELF machines boot on each OCI architecture. x86 Unikraft kernels are 32-bit multiboot ELFs. */
export const MACHINES_FOR_ARCH: Record<string, readonly number[]> = {
  amd64: [EM_386, EM_X86_64],
  arm64: [EM_AARCH64],
};

export function machineName(machine: number): string {
  switch (machine) {
    case EM_386:
      return "i386";
    case EM_X86_64:
      return "x86-64";
    case EM_AARCH64:
      return "aarch64";
    default:
      return `machine ${machine}`;
  }
}

/** Read the first bytes of a kernel file and say what it is. */
export async function readKernelHeader(file: string): Promise<KernelHeader> {
  const handle = await open(file, "r");
  try {
    const buf = Buffer.alloc(0x208);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    const head = buf.subarray(0, bytesRead);
    if (head.length >= 4 && head[0] === 0x7f && head.toString("latin1", 1, 4) === "ELF") {
      if (head.length < 20) return { format: "elf" };
      const bits = head[4] === 2 ? 64 : 32;
      const machine = head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
      return { format: "elf", machine, bits };
    }
    // Linux boot protocol: "HdrS" at 0x202 marks a bzImage, which QEMU boots with -kernel.
    if (head.length >= 0x206 && head.toString("latin1", 0x202, 0x206) === "HdrS") return { format: "bzImage" };
    return { format: "other" };
  } finally {
    await handle.close();
  }
}
