/**
 * nginx as a Linux micro-VM, beside the unikernel: a static nginx built
 * against musl, Debian's cloud kernel and busybox, an initramfs and an OCI
 * image in the same shape urunc runs. Every input comes from upstream
 * tarballs or Debian's archive, so this builds on a machine with no internet
 * (Debian's mirror only) and proves the whole chain in CI:
 *
 *   ukb realise recipes/nginx-microvm.ts && ukb run recipes/nginx-microvm.ts
 */
import { cpio, debianPackage, debianSource, derivation, fetchurl, hostTools, local, ociImage, rootfs } from "ukb";

/** musl 1.2.3: upstream's tarball; Debian ships it unchanged as its .orig.tar.gz. */
export const muslSource = fetchurl({
  urls: ["https://www.musl-libc.org/releases/musl-1.2.3.tar.gz", debianSource({ package: "musl", file: "musl_1.2.3.orig.tar.gz" })],
  sha256: "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4",
});

/** nginx 1.22.1: upstream's tarball, also Debian's .orig.tar.gz. */
export const nginxSource = fetchurl({
  urls: ["https://nginx.org/download/nginx-1.22.1.tar.gz", debianSource({ package: "nginx", file: "nginx_1.22.1.orig.tar.gz" })],
  sha256: "9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31",
});

/** Debian's cloud kernel: virtio drivers as modules, no initramfs of its own needed. */
export const kernelPackage = debianPackage({
  package: "linux-image-6.1.0-56-cloud-amd64",
  version: "6.1.192-2",
  sha256: "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
});

export const busyboxPackage = debianPackage({
  package: "busybox-static",
  version: "1:1.35.0-4+deb12u1+b1",
  sha256: "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744",
});

/** What the compile steps run; their contents are part of every hash downstream. */
const tools = hostTools([
  "sh", "make", "gcc", "cc", "cpp", "as", "ld", "ar", "ranlib", "strip", "nm",
  "sed", "grep", "awk", "tr", "cut", "sort", "uniq", "head", "tail", "wc", "expr", "test",
  "cat", "echo", "printf", "mkdir", "cp", "mv", "rm", "ln", "chmod", "touch", "ls", "find", "xargs",
  "tar", "gzip", "uname", "dirname", "basename", "true", "false", "env", "cmp", "diff",
]);
const unpackTools = hostTools(["sh", "dpkg-deb", "tar", "xz", "cp", "mkdir", "find"], { name: "deb-tools" });
const PATH = `${tools}/bin`;

export const musl = derivation({
  name: "musl-1.2.3",
  builder: `${tools}/bin/sh`,
  args: [local("./nginx-microvm/build-musl.sh")],
  env: { src: muslSource, PATH },
});

export const nginx = derivation({
  name: "nginx-1.22.1-static",
  builder: `${tools}/bin/sh`,
  args: [local("./nginx-microvm/build-nginx.sh")],
  env: { src: nginxSource, musl, PATH },
});

/** The virtio-net driver and what it needs, in load order (the cloud kernel builds them as modules). */
const MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "failover", "net_failover", "virtio_net"];

/** The kernel image (out) and the modules the initramfs loads (modules). */
export const kernel = derivation({
  name: "linux-6.1.0-56-cloud",
  outputs: ["out", "modules"],
  builder: `${unpackTools}/bin/sh`,
  args: [
    "-c",
    `set -eu
     dpkg-deb -x ${kernelPackage} pkg
     cp pkg/boot/vmlinuz-* $out
     mkdir -p $modules
     for m in ${MODULES.join(" ")}; do
       f=$(find pkg/lib/modules -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)
       case "$f" in
         *.xz) xz -dc "$f" > "$modules/$m.ko" ;;
         "") echo "module $m not found in the kernel package" >&2; exit 1 ;;
         *) cp "$f" "$modules/$m.ko" ;;
       esac
     done`,
  ],
  env: { PATH: `${unpackTools}/bin:${tools}/bin` },
});

export const busybox = derivation({
  name: "busybox-static-1.35.0",
  builder: `${unpackTools}/bin/sh`,
  args: ["-c", `set -eu; dpkg-deb -x ${busyboxPackage} pkg; cp pkg/bin/busybox $out`],
  env: { PATH: `${unpackTools}/bin` },
});

/** The initramfs tree: /init (PID 1), busybox, the modules, nginx and its files. */
export const tree = rootfs({
  name: "microvm-rootfs",
  files: {
    "/init": { path: local("./nginx-microvm/init"), mode: 0o755 },
    "/bin/busybox": { path: busybox, mode: 0o755 },
    "/bin/sh": { symlink: "busybox" },
    "/lib/modules": kernel.output("modules"),
    "/nginx/sbin/nginx": { path: `${nginx}/bin/nginx`, mode: 0o755 },
    "/nginx/conf/nginx.conf": local("./nginx-microvm/nginx.conf"),
    "/nginx/conf/mime.types": { path: `${nginx}/conf/mime.types` },
    "/nginx/html/index.html": local("./nginx-microvm/index.html"),
    "/etc/passwd": local("./nginx-microvm/passwd"),
    "/etc/group": local("./nginx-microvm/group"),
    "/tmp": { mkdir: true },
    "/run": { mkdir: true },
    "/proc": { mkdir: true },
    "/sys": { mkdir: true },
    "/dev": { mkdir: true },
  },
});

export const initrd = cpio({ name: "initramfs.cpio.gz", root: tree, gzip: true });

export default ociImage({
  name: "nginx-microvm-image",
  kernel,
  initrd,
  cmd: ["nginx", "-c", "/nginx/conf/nginx.conf"],
  unikernelType: "linux",
  hypervisor: "qemu",
  tag: "nginx-microvm",
});
