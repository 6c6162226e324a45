/**
 * The flagship: nginx as a Unikraft unikernel, built from upstream sources
 * pinned by their hashes, booted by `ukb run`, bit-identical on every rebuild.
 *
 *   ukb realise recipes/nginx.ts            # the OCI image (kernel with the initrd embedded)
 *   ukb run recipes/nginx.ts --port 8080    # boot it as urunc would; prints the URL once nginx answers
 *   ukb check recipes/nginx.ts              # rebuild everything beside the store, compare bit for bit
 *   ukb realise recipes/nginx.ts -A imageSeparate   # the initrd beside the kernel (-initrd)
 *
 * The graph: Unikraft's core and its libraries (musl, lwip, nginx) as GitHub
 * tag archives named by their tree hashes; the archives those libraries would
 * download at build time (musl's release tarball, nginx's and lwIP's sources),
 * pinned here where Unikraft pins nothing; the application folder and its
 * rootfs (./nginx/); then initrd = cpio(rootfs), kernel = Unikraft's build in
 * the sandbox, image = an OCI image urunc runs.
 */
import { debianSource, fetchurl, fetchzip, local, rootfs, unikraft, type UnikraftReleaseSpec } from "ukb";

const github = (repo: string, ref: string) => `https://github.com/${repo}/archive/${ref}.tar.gz`;

/** musl 1.2.3, which lib-musl downloads from musl-libc.org (unverified); Debian ships the same tarball. */
export const muslTarball = fetchurl({
  urls: ["https://www.musl-libc.org/releases/musl-1.2.3.tar.gz", debianSource({ package: "musl", file: "musl_1.2.3.orig.tar.gz" })],
  sha256: "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4",
});

/**
 * nginx 1.15.6, which lib-nginx downloads from nginx.org (unverified). lib-nginx
 * compiles only src/, so the tree of the official git tag release-1.15.6
 * (commit ac071c1490a30d8acff51383c77d9b72966df6d1) serves: the kernel builder
 * packs it as nginx-1.15.6.tar.gz. (The release tarball's sha256 is
 * a3d8c67c2035808c7c0d475fffe263db8c353b11521aa7ade468b780ed826cc6.)
 */
export const nginxSource = fetchzip({
  url: github("nginx/nginx", "refs/tags/release-1.15.6"),
  hash: "blake3:b46b71562d8de3da64491454d4aa16821443c1d8ca295b924a582bf0dec7b822",
  name: "nginx-1.15.6-source",
});

/**
 * lwIP as lib-lwip downloads it: the zip of unikraft/fork-lwip's branch
 * UNIKRAFT-2_1_x, unpinned upstream; pinned here to the commit the branch
 * names (bef26c44236a078d4352e76392ef16f019bea501).
 */
export const lwipSource = fetchzip({
  url: github("unikraft/fork-lwip", "bef26c44236a078d4352e76392ef16f019bea501"),
  hash: "blake3:53b939968e5b4a5b16df7de6697c9e6cfad46d8bc1d6fc79aadb55bbf7dbbf7d",
  name: "fork-lwip-UNIKRAFT-2_1_x-source",
});

/**
 * Release sets known to build and serve nginx together. A newer set (the
 * tutorial's Unikraft 0.20.0, whose initrd Kconfig is posix-vfs's
 * CONFIG_LIBPOSIX_VFS_FSTAB*) is one more entry with initrdKconfig: "posix-vfs".
 */
export const RELEASES = {
  "0.16.3": {
    version: "0.16.3",
    initrdKconfig: "vfscore",
    core: {
      url: github("unikraft/unikraft", "refs/tags/RELEASE-0.16.3"),
      rev: "e453b74a2e78a0de98563d75d8e0a97e668088e6",
      hash: "blake3:c67fac26fc1ead63cdb86a63f08ccf75623902601c0574bf9578cb0a34857cfe",
    },
    libs: {
      musl: {
        source: {
          url: github("unikraft/lib-musl", "refs/tags/RELEASE-0.16.3"),
          rev: "fd1abc9257b40a74c69b3a40467a453bf8892439",
          hash: "blake3:ce49aa4978e2269aacadc15eb02cf2d22ec37897dbf0b1dc44fd4fd1dda84eb5",
        },
        archives: [{ file: "musl-1.2.3.tar.gz", from: muslTarball }],
      },
      lwip: {
        source: {
          url: github("unikraft/lib-lwip", "refs/tags/RELEASE-0.16.2"),
          rev: "7c1859a7069701f992dbf0b9508335377f55d364",
          hash: "blake3:3b8fc192739ad31c91cb4fdf1b1b144d39dfb833ba4dfdfc3ebc3af57dbc3af9",
        },
        archives: [{ file: "UNIKRAFT-2_1_x.zip", from: lwipSource, prefix: "fork-lwip-UNIKRAFT-2_1_x" }],
      },
      nginx: {
        source: {
          url: github("unikraft/lib-nginx", "refs/tags/RELEASE-0.16.0"),
          rev: "36a030031ce705934dd1ed6e69fdcd113a287bfe",
          hash: "blake3:3c55392cdaa0472a6f89c9b55cd601495265106f6154627cf3e5dc4803400d93",
        },
        archives: [{ file: "nginx-1.15.6.tar.gz", from: nginxSource, prefix: "nginx-1.15.6" }],
      },
    },
  },
} satisfies Record<string, UnikraftReleaseSpec>;

/** nginx's files: our configuration and page, mime.types from the nginx source. */
export const tree = rootfs({
  name: "nginx-rootfs",
  files: {
    "/nginx/conf/nginx.conf": local("./nginx/rootfs/nginx/conf/nginx.conf"),
    "/nginx/conf/mime.types": { path: `${nginxSource}/conf/mime.types` },
    "/nginx/html/index.html": local("./nginx/rootfs/nginx/html/index.html"),
    "/nginx/logs/error.log": local("./nginx/rootfs/nginx/logs/error.log"),
  },
});

/** The argv urunc hands the unikernel, program name first (urunc drops Cmd[0]). */
const CMD = ["nginx", "-c", "/nginx/conf/nginx.conf"];

const application = {
  name: "nginx",
  release: RELEASES["0.16.3"],
  libs: ["musl", "lwip", "nginx"],
  app: {
    Makefile: local("./nginx/Makefile"),
    "Makefile.uk": local("./nginx/Makefile.uk"),
    "Config.uk": local("./nginx/Config.uk"),
  },
  config: local("./nginx/qemu-x86_64.defconfig"),
  rootfs: tree,
};

/** The tutorial's way: the initrd linked into the kernel. */
export const nginx = unikraft.app({ ...application, embedInitrd: true });
/** The initrd beside the kernel (-initrd; urunc's com.urunc.unikernel.initrd): an edit of the site rebuilds no kernel. */
export const nginxSeparate = unikraft.app({ ...application, embedInitrd: false });

export const initrd = nginx.initrd!;
export const kernel = nginx.kernel;
export const dbg = kernel.output("dbg");
export const image = nginx.image({ name: "nginx-unikraft-image", cmd: CMD, tag: "nginx" });

export const kernelSeparate = nginxSeparate.kernel;
export const imageSeparate = nginxSeparate.image({ name: "nginx-unikraft-initrd-image", cmd: CMD, tag: "nginx-initrd" });

export default image;
