/**
 * Unikraft applications as derivations: `unikraft.app({ release, libs, app,
 * config, rootfs, embedInitrd })` turns a release set (Unikraft core and
 * libraries pinned by their upstream tree hashes, plus the archives the
 * libraries would download at build time) and an application folder into a
 * kernel derivation, its initrd and an OCI image urunc runs.
 *
 * The kernel derivation runs Unikraft's own build (`make defconfig`, then
 * `make -j$UKB_CORES`) in the sandbox, with every input at a fixed path under
 * the build folder (`/build/<name>/workdir/{unikraft,libs,build}`, the layout
 * of Unikraft's catalog), the archives placed where Unikraft's `fetch` rules
 * look for them first (`$(BUILD_DIR)/<libname>/<basename of the URL>`: then
 * nothing is downloaded, and the sandbox has no network anyway), and the
 * build's only clocks and names pinned: Unikraft's `HOSTUTC` (the build date
 * it stamps into the kernel) is derived from SOURCE_DATE_EPOCH, `HOSTNAME` and
 * `HOSTUSER` are constants, and no `git` is visible, so the banner carries no
 * checkout hash. Same inputs, same kernel, bit for bit.
 *
 * Pure like the rest of the recipe API: nothing here builds or fetches.
 */
import fs from "node:fs";
import path from "node:path";
import { RecipeError } from "../errors/index.js";
import { callerLocation } from "./location.js";
import { checkName, derivation, isDerivation, isOutputRef, type Derivation, type OutputRef } from "./derivation.js";
import { fetchzip } from "./fetchers.js";
import { hostTools } from "./host-tools.js";
import { recordDependency } from "./eval-deps.js";
import { cpio, ociImage, rootfs, type OciImageSpec, type RootfsFile } from "./artifacts.js";

type Input = Derivation | OutputRef;

function isInput(v: unknown): v is Input {
  return isDerivation(v) || isOutputRef(v);
}

/** A source tree pinned by the canonical hash of its upstream archive, or a derivation that yields the tree. */
export type UnikraftSource =
  | Input
  | {
      /** The upstream archive (GitHub's tag archive), or several places that serve it. */
      readonly url: string | readonly string[];
      /** Canonical tree hash of the unpacked archive (`blake3:HEX`, as `ukb prefetch --unpack` prints it). */
      readonly hash: string;
      /** The upstream commit the tag names: documentation, not identity (the tree hash is). */
      readonly rev?: string;
      /** Store name; default from the URL. */
      readonly name?: string;
    };

/**
 * An archive a library's `Makefile.uk` downloads at build time. Unikraft looks
 * for it at `$(BUILD_DIR)/<libname>/<file>` first; the kernel derivation puts
 * it there. `from` is either the archive itself (a `fetchurl` file, placed as
 * it is) or its unpacked tree (a `fetchzip`), which the builder packs into
 * `file` (`.tar.gz` or `.zip`, by the name) under the top folder `prefix`:
 * the folder the library's Makefile.uk expects after unpacking.
 */
export interface UnikraftArchive {
  /** The basename of the URL the library downloads: `musl-1.2.3.tar.gz`, `UNIKRAFT-2_1_x.zip`. */
  readonly file: string;
  readonly from: Input;
  /** For a tree: the top folder inside the archive (`nginx-1.15.6`, `fork-lwip-UNIKRAFT-2_1_x`). */
  readonly prefix?: string;
}

/** One Unikraft library of a release. */
export interface UnikraftLibSpec {
  readonly source: UnikraftSource;
  /** Unikraft's name of the library, its folder in the build dir; default `lib<key>` (`musl` → `libmusl`). */
  readonly libname?: string;
  /** What its Makefile.uk would download, pinned where Unikraft pins nothing. */
  readonly archives?: readonly UnikraftArchive[];
}

/**
 * How a release spells "the root filesystem comes from an initrd" in Kconfig:
 * `vfscore` up to Unikraft 0.19 (`CONFIG_LIBVFSCORE_AUTOMOUNT_CI*`),
 * `posix-vfs` from 0.20 on (`CONFIG_LIBPOSIX_VFS_FSTAB*`).
 */
export type UnikraftInitrdKconfig = "vfscore" | "posix-vfs";

/** A release set as data: one entry per Unikraft release, so a newer set is one more entry. */
export interface UnikraftReleaseSpec {
  /** Unikraft's version (`0.16.3`): the image's `unikernelVersion`, which tells urunc how to talk to it. */
  readonly version: string;
  readonly core: UnikraftSource;
  readonly libs: Readonly<Record<string, UnikraftLibSpec>>;
  readonly initrdKconfig: UnikraftInitrdKconfig;
}

/** A release with its sources made into derivations. */
export interface UnikraftRelease {
  readonly version: string;
  readonly initrdKconfig: UnikraftInitrdKconfig;
  readonly core: Input;
  readonly libs: Readonly<Record<string, { readonly source: Input; readonly libname: string; readonly archives: readonly UnikraftArchive[] }>>;
}

/** A Kconfig value: `true` → `y`, `false` → `is not set`, a number as is, a string quoted. */
export type KconfigValue = boolean | number | string;

/** What {@link app} takes. */
export interface UnikraftAppSpec {
  /** The application's name: Unikraft's `CONFIG_UK_NAME` and the kernel's file name (`<name>_qemu-x86_64`). */
  readonly name: string;
  readonly release: UnikraftReleaseSpec | UnikraftRelease;
  /** The release's libraries this application links, in the order of Unikraft's `L=`. */
  readonly libs: readonly string[];
  /**
   * The application folder (`Config.uk`, `Makefile.uk`, sources; a `Makefile`
   * for people, which the builder does not need: it runs Unikraft's Makefile
   * with `A=` this folder, `L=` the libraries above, `O=` the build folder):
   * a tree derivation, or files as for {@link rootfs}
   * (`{ "Config.uk": local("./app/Config.uk"), "main.c": "…" }`).
   */
  readonly app: Input | Readonly<Record<string, RootfsFile>>;
  /**
   * The defconfig (`UK_DEFCONFIG`): a file (`local("./app/qemu-x86_64.defconfig")`),
   * its text, or symbols and values (`{ PLAT_KVM: true }`). Its initrd options
   * are the helper's business: lines of the release's initrd Kconfig are
   * replaced by those `embedInitrd` calls for.
   */
  readonly config: Input | string | Readonly<Record<string, KconfigValue>>;
  /** The root filesystem (a tree, e.g. from `rootfs()`); its cpio is the initrd. */
  readonly rootfs?: Input;
  /**
   * `true` (default): the initrd is linked into the kernel (an edit of the
   * rootfs rebuilds the kernel). `false`: it travels beside the kernel
   * (`-initrd`, the image's `com.urunc.unikernel.initrd`), and an edit of the
   * rootfs rebuilds only the cpio and the image.
   */
  readonly embedInitrd?: boolean;
  /** The platform and architecture; only QEMU on x86_64 for now. */
  readonly platform?: "qemu";
  readonly arch?: "x86_64";
  /** Host tools for the build, instead of {@link defaultTools} (a `hostTools(...)` derivation). */
  readonly tools?: Input;
  /** Extra `VAR=value` arguments for both make runs. */
  readonly makeFlags?: readonly string[];
}

/** What {@link app} returns: the derivations of one application, and an image maker. */
export interface UnikraftApp {
  readonly name: string;
  readonly release: UnikraftRelease;
  /** The Unikraft build: `out` is the kernel ELF, `dbg` its unstripped twin, `config` the full `.config`. */
  readonly kernel: Derivation;
  /** The initrd (newc cpio of `rootfs`), embedded or not. */
  readonly initrd?: Derivation;
  readonly embedInitrd: boolean;
  /** The kernel's file name in Unikraft's build folder (`nginx_qemu-x86_64`). */
  readonly kernelName: string;
  /**
   * An OCI image urunc runs: `unikernelType=unikraft`, `unikernelVersion` =
   * the release's, `hypervisor=qemu`, the initrd beside the kernel unless it
   * is embedded. `cmd` is the whole argv, program name first.
   */
  image(spec: Omit<OciImageSpec, "kernel" | "initrd" | "unikernelType" | "hypervisor" | "tag"> & { tag?: string }): Derivation;
}

const where = () => callerLocation();

function sourceOf(src: UnikraftSource, fallbackName: string, what: string): Input {
  if (isInput(src)) return src;
  if (!src || typeof src !== "object" || typeof src.hash !== "string" || (typeof src.url !== "string" && !Array.isArray(src.url))) {
    throw new RecipeError(`${what}: a source is a derivation or { url, hash }`, where());
  }
  const urls = typeof src.url === "string" ? [src.url] : [...src.url];
  return fetchzip({ urls, hash: src.hash, name: src.name ?? fallbackName });
}

function sourceName(src: UnikraftSource, fallback: string): string {
  if (isInput(src) || typeof src.url !== "string") return fallback;
  const m = /github\.com\/[^/]+\/([^/]+)\/archive\/(?:refs\/(?:tags|heads)\/)?([^/]+?)\.(?:tar\.gz|zip)$/.exec(src.url);
  return m ? `${m[1]}-${m[2]}-source` : fallback;
}

const releaseCache = new WeakMap<object, UnikraftRelease>();

function isRelease(r: UnikraftReleaseSpec | UnikraftRelease): r is UnikraftRelease {
  return isInput(r.core) && Object.values(r.libs).every((l) => isInput(l.source) && typeof (l as { libname?: unknown }).libname === "string");
}

/** Makes the derivations of a release set (its sources as `fetchzip`s); the same entry gives the same derivations. */
export function release(spec: UnikraftReleaseSpec | UnikraftRelease): UnikraftRelease {
  if (!spec || typeof spec !== "object") throw new RecipeError("unikraft.release() takes { version, core, libs, initrdKconfig }", where());
  if (isRelease(spec)) return spec;
  const cached = releaseCache.get(spec);
  if (cached) return cached;
  if (typeof spec.version !== "string" || !/^\d+\.\d+(\.\d+)?$/.test(spec.version)) throw new RecipeError(`unikraft.release: version must look like 0.16.3, not '${String(spec.version)}'`, where());
  if (spec.initrdKconfig !== "vfscore" && spec.initrdKconfig !== "posix-vfs") {
    throw new RecipeError(`unikraft.release ${spec.version}: initrdKconfig must be "vfscore" (up to 0.19) or "posix-vfs" (0.20 on)`, where());
  }
  const what = `unikraft.release ${spec.version}`;
  const core = sourceOf(spec.core, sourceName(spec.core, `unikraft-${spec.version}-source`), `${what}: core`);
  const libs: Record<string, UnikraftRelease["libs"][string]> = {};
  for (const [key, lib] of Object.entries(spec.libs ?? {})) {
    checkName(key, `${what}: a library`);
    const libname = lib.libname ?? `lib${key.replace(/[^A-Za-z0-9]/g, "")}`;
    if (!/^[a-z0-9_]+$/.test(libname)) throw new RecipeError(`${what}: libname '${libname}' is not a Unikraft library name`, where());
    const archives = [...(lib.archives ?? [])];
    for (const a of archives) checkArchive(a, `${what}: library ${key}`);
    libs[key] = Object.freeze({ source: sourceOf(lib.source, sourceName(lib.source, `lib-${key}-source`), `${what}: library ${key}`), libname, archives });
  }
  const made: UnikraftRelease = Object.freeze({ version: spec.version, initrdKconfig: spec.initrdKconfig, core, libs: Object.freeze(libs) });
  releaseCache.set(spec, made);
  return made;
}

const FILE_NAME = /^[A-Za-z0-9+_.=-][A-Za-z0-9+_.=~-]*$/;

function checkArchive(a: UnikraftArchive, what: string): void {
  if (!a || typeof a !== "object" || typeof a.file !== "string" || !FILE_NAME.test(a.file) || a.file.startsWith(".")) {
    throw new RecipeError(`${what}: an archive needs file: the basename Unikraft downloads (e.g. musl-1.2.3.tar.gz)`, where());
  }
  if (!isInput(a.from)) throw new RecipeError(`${what}: archive ${a.file}: from must be a derivation (fetchurl for the file, fetchzip for its tree)`, where());
  if (a.prefix !== undefined && (typeof a.prefix !== "string" || !FILE_NAME.test(a.prefix) || a.prefix.startsWith("."))) {
    throw new RecipeError(`${what}: archive ${a.file}: prefix must be a plain folder name`, where());
  }
  if (!/\.(tar\.gz|tgz|zip)$/.test(a.file)) throw new RecipeError(`${what}: archive ${a.file}: only .tar.gz/.tgz and .zip are supported`, where());
}

// ---- Kconfig -----------------------------------------------------------------

/** The initrd lines per Kconfig dialect and mode; `strip` matches the lines they replace. */
const INITRD_KCONFIG: Record<UnikraftInitrdKconfig, { strip: RegExp; embedded: (path: string) => string[]; separate: string[] }> = {
  // Unikraft ≤ 0.19: vfscore's compiled-in fstab. Both presets mount a ramfs at /
  // and extract the CPIO into it ("embedded" or "initrd0", the -initrd module).
  vfscore: {
    strip: /^(# )?CONFIG_LIBVFSCORE_AUTOMOUNT_/,
    embedded: (path) => ["CONFIG_LIBVFSCORE_AUTOMOUNT_CI=y", "CONFIG_LIBVFSCORE_AUTOMOUNT_CI_EINITRD=y", `CONFIG_LIBVFSCORE_AUTOMOUNT_EINITRD_PATH="${path}"`],
    separate: ["CONFIG_LIBVFSCORE_AUTOMOUNT_CI=y", "CONFIG_LIBVFSCORE_AUTOMOUNT_CI_INITRD=y"],
  },
  // Unikraft ≥ 0.20: posix-vfs's fstab (the tutorial's defconfig for the embedded case).
  "posix-vfs": {
    strip: /^(# )?CONFIG_LIBPOSIX_VFS_FSTAB/,
    embedded: (path) => ["CONFIG_LIBPOSIX_VFS_FSTAB=y", "CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN=y", "CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN_EINITRD=y", `CONFIG_LIBPOSIX_VFS_FSTAB_EINITRD_PATH="${path}"`],
    separate: ["CONFIG_LIBPOSIX_VFS_FSTAB=y", "CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN=y", "CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN_INITRD=y"],
  },
};

/** Kconfig text from symbols and values; `CONFIG_` is added where missing. */
export function kconfigText(values: Readonly<Record<string, KconfigValue>>): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(values)) {
    const sym = k.startsWith("CONFIG_") ? k : `CONFIG_${k}`;
    if (!/^CONFIG_[A-Za-z0-9_]+$/.test(sym)) throw new RecipeError(`unikraft: '${k}' is not a Kconfig symbol`, where());
    if (v === true) lines.push(`${sym}=y`);
    else if (v === false) lines.push(`# ${sym} is not set`);
    else if (typeof v === "number" && Number.isFinite(v)) lines.push(`${sym}=${v}`);
    else if (typeof v === "string") lines.push(`${sym}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`);
    else throw new RecipeError(`unikraft: ${sym} must be a boolean, a number or a string`, where());
  }
  return lines.join("\n") + (lines.length ? "\n" : "");
}

// ---- the builder -------------------------------------------------------------

/** Quotes a string for sh. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The host programs Unikraft's build runs: the compiler and binutils, make,
 * Kconfig's lex/flex and yacc/bison (its sub-make uses make's default names),
 * python3 (Unikraft's section-strip and bootinfo scripts), patch, the
 * unpackers, and the shell utilities its Makefiles call.
 */
export const DEFAULT_TOOLS: readonly string[] = [
  "sh", "bash", "make", "gcc", "cc", "cpp", "as", "ld", "ar", "ranlib", "nm", "objcopy", "objdump", "strip", "readelf",
  "flex", "lex", "bison", "yacc", "python3", "patch", "tar", "gzip", "unzip", "zip",
  "sed", "grep", "awk", "find", "sort", "tr", "cut", "head", "tail", "wc", "cat", "echo", "printf", "mkdir", "cp", "mv",
  "rm", "ln", "chmod", "touch", "ls", "xargs", "basename", "dirname", "readlink", "realpath", "date", "which", "env",
  "cmp", "diff", "uname", "expr", "test", "true", "false", "sha256sum", "tee", "stat",
];

const VISIBLE = ["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/"];

/**
 * `name=/real/path` for a program: the first one on PATH (then /usr/bin,
 * /bin) whose real file lies where builds can see it. The link hostTools
 * makes must name the real file: Debian reaches awk, cc, which, lex and yacc
 * through /etc/alternatives, which the sandbox does not show; and a PATH may
 * start with a shim outside the system directories (pyenv's python3).
 */
function resolveTool(program: string, searchPath: string): string {
  for (const dir of [...searchPath.split(":"), "/usr/bin", "/bin"]) {
    if (!dir.startsWith("/")) continue;
    const candidate = path.join(dir, program);
    // Each place looked at is the evaluation's: a program put earlier on PATH, or a link retargeted
    // (update-alternatives, a /bin/sh switched to bash), changes what is resolved.
    recordDependency(candidate);
    try {
      const st = fs.statSync(candidate);
      if (!st.isFile() || (st.mode & 0o111) === 0) continue;
      const real = fs.realpathSync(candidate);
      if (VISIBLE.some((d) => real.startsWith(d))) return `${program}=${real}`;
    } catch {
      // not here
    }
  }
  return program; // hostTools names the missing program
}

/** The host tools of a Unikraft build (one derivation, shared by every app of the recipe); `extra` adds programs. */
export function defaultTools(extra: readonly string[] = []): Derivation {
  // (hostTools records PATH, which it searches too.)
  const searchPath = process.env.PATH ?? "/usr/bin:/bin";
  return hostTools([...DEFAULT_TOOLS, ...extra].map((p) => (p.includes("=") ? p : resolveTool(p, searchPath))), { name: "unikraft-build-tools" });
}

/** Everything the builder script needs, resolved to store paths and names. */
export interface KernelBuildPlan {
  readonly name: string;
  readonly core: string;
  readonly libs: readonly { key: string; source: string; libname: string; archives: readonly { file: string; from: string; prefix?: string }[] }[];
  readonly app: string;
  readonly defconfig: { file: string } | { text: string };
  readonly strip?: string;
  readonly initrdLines: readonly string[];
  readonly initrd?: string;
  readonly kernelName: string;
  readonly makeFlags: readonly string[];
}

/**
 * The kernel builder, as one sh script (it is part of the derivation's
 * identity). Layout, all under the build folder (`/build` in the sandbox):
 *
 *   <name>/                      the application (writable copy), its .config
 *   <name>/initrd.cpio           the embedded initrd, when there is one
 *   <name>/workdir/unikraft      Unikraft's core
 *   <name>/workdir/libs/<key>    each library
 *   <name>/workdir/build         Unikraft's BUILD_DIR (O=), with the archives
 *                                placed at <libname>/<file> before make runs
 */
export function kernelBuilderScript(p: KernelBuildPlan): string {
  const L: string[] = [];
  L.push("set -eu");
  L.push('top=$(pwd)');
  L.push(`app="$top"/${shq(p.name)}`);
  L.push('wd="$app/workdir"');
  L.push('echo "ukb: unikraft build of $app"');
  L.push('mkdir -p "$wd/libs" "$wd/build"');
  // Writable copies at fixed paths: Unikraft writes into the app folder, and
  // paths in the kernel must not name the store.
  L.push(`cp -R ${shq(p.core)} "$wd/unikraft"`);
  for (const lib of p.libs) L.push(`cp -R ${shq(lib.source)} "$wd/libs/"${shq(lib.key)}`);
  L.push(`cp -R ${shq(p.app)}/. "$app/"`);
  L.push('chmod -R u+w "$wd" "$app"');
  // The archives, where Unikraft's fetch rule looks before it downloads.
  L.push("pack() { # pack TREE PREFIX DEST: the tree as DEST (.tar.gz or .zip) under the folder PREFIX");
  L.push('  rm -rf "$top/.pack" && mkdir -p "$top/.pack" && cp -R "$1" "$top/.pack/$2" && chmod -R u+w "$top/.pack/$2"');
  L.push('  case "$3" in');
  L.push('    *.zip) (cd "$top/.pack" && find "$2" -exec touch -h -d @"$SOURCE_DATE_EPOCH" {} + && find "$2" | LC_ALL=C sort | zip -q -X -@ "$3") ;;');
  L.push('    *) tar --sort=name --mtime=@"$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -C "$top/.pack" -czf "$3" "$2" ;;');
  L.push("  esac");
  L.push('  rm -rf "$top/.pack"');
  L.push("}");
  for (const lib of p.libs) {
    for (const a of lib.archives) {
      const dest = `"$wd/build/"${shq(lib.libname)}/${shq(a.file)}`;
      L.push(`mkdir -p "$wd/build/"${shq(lib.libname)}`);
      L.push(`if [ -d ${shq(a.from)} ]; then pack ${shq(a.from)} ${shq(a.prefix ?? a.file.replace(/\.(tar\.gz|tgz|zip)$/, ""))} ${dest}; else cp ${shq(a.from)} ${dest}; fi`);
      L.push(`chmod u+w ${dest}`);
    }
  }
  if (p.initrd) L.push(`cp ${shq(p.initrd)} "$app/initrd.cpio" && chmod u+w "$app/initrd.cpio"`);
  // The defconfig: the app's, its initrd lines replaced by the helper's.
  const source = "file" in p.defconfig ? `cat ${shq(p.defconfig.file)}` : `printf '%s\\n' ${shq(p.defconfig.text)}`;
  L.push(p.strip ? `${source} | { grep -v -E ${shq(p.strip)} || true; } > "$app/.ukb.defconfig"` : `${source} > "$app/.ukb.defconfig"`);
  if (p.initrdLines.length > 0) L.push(`printf '%s\\n' ${p.initrdLines.map(shq).join(" ")} | sed "s|@APP@|$app|g" >> "$app/.ukb.defconfig"`);
  L.push('echo "ukb: defconfig:"; sed "s/^/  /" "$app/.ukb.defconfig"');
  // Unikraft stamps the build date (HOSTUTC) and user@host into the kernel: pin them.
  L.push('hostutc=$(date -u -d @"$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%S+00:00)');
  L.push("libs=");
  for (const lib of p.libs) L.push(`libs="\${libs:+$libs:}$wd/libs/"${shq(lib.key)}`);
  const flags = p.makeFlags.map(shq).join(" ");
  // Unikraft's own Makefile, as the application's Makefile would call it (A= L= O=),
  // so that the recipe's library list is the only one. Variables go on make's
  // command line; none may be one of Unikraft's own lists (UK_LIBS is).
  L.push(`set -- A="$app" L="$libs" O="$wd/build" HOSTUTC="$hostutc" HOSTNAME=ukb HOSTUSER=ukb ${flags}`.trimEnd());
  L.push('cd "$wd/unikraft"');
  L.push('UK_DEFCONFIG="$app/.ukb.defconfig" make "$@" defconfig');
  L.push('make -j"${UKB_CORES:-1}" "$@"');
  L.push(`k="$wd/build/"${shq(p.kernelName)}`);
  L.push('[ -f "$k" ] || { echo "ukb: the build made no $k" >&2; ls "$wd/build" >&2; exit 1; }');
  L.push('cp "$k" "$out"');
  L.push('cp "$k.dbg" "$dbg"');
  L.push('cp "$app/.config" "$config"');
  L.push('echo "ukb: kernel $(wc -c < "$out") bytes"');
  return L.join("\n") + "\n";
}

// ---- app ---------------------------------------------------------------------

function appTree(name: string, app: UnikraftAppSpec["app"]): Input {
  if (isInput(app)) return app;
  if (!app || typeof app !== "object") throw new RecipeError(`unikraft.app '${name}': app must be a tree derivation or { "Config.uk": …, … }`, where());
  const files: Record<string, RootfsFile> = {};
  for (const [p, v] of Object.entries(app)) files[p.startsWith("/") ? p : `/${p}`] = v;
  return rootfs({ name: `${name}-app`, files });
}

/**
 * A Unikraft application: the kernel (Unikraft's build in the sandbox), the
 * initrd from `rootfs` (embedded in the kernel, or beside it), and
 * `.image({ cmd })` for an OCI image urunc runs.
 *
 * @example
 * // A hello world on the release set of recipes/nginx.ts (no libraries, nolibc): 16 lines, a 224 KB kernel.
 * import { unikraft } from "ukb";
 * import { RELEASES } from "./nginx.ts";
 * const hello = unikraft.app({
 *   name: "helloworld",
 *   release: RELEASES["0.16.3"],
 *   libs: [],
 *   app: {
 *     "Config.uk": 'config APPHELLOWORLD\n\tbool "hello world"\n\tdefault y\n',
 *     "Makefile.uk": "$(eval $(call addlib,apphelloworld))\nAPPHELLOWORLD_SRCS-y += $(APPHELLOWORLD_BASE)/main.c\n",
 *     "main.c": '#include <stdio.h>\nint main(void) { printf("Hello from Unikraft\\n"); return 0; }\n',
 *   },
 *   config: { PLAT_KVM: true, KVM_VMM_QEMU: true, ARCH_X86_64: true },
 * });
 * export const kernel = hello.kernel;
 * export default hello.image({ cmd: ["helloworld"] });
 */
export function app(spec: UnikraftAppSpec): UnikraftApp {
  if (!spec || typeof spec !== "object") throw new RecipeError("unikraft.app() takes { name, release, libs, app, config, rootfs?, embedInitrd? }", where());
  const name = checkName(spec.name, "unikraft.app");
  if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new RecipeError(`unikraft.app '${name}': the name becomes CONFIG_UK_NAME and a folder name: letters, digits, _ and - only`, where());
  const what = `unikraft.app '${name}'`;
  if (!spec.release) throw new RecipeError(`${what}: release is missing`, where());
  const rel = release(spec.release);
  const platform = spec.platform ?? "qemu";
  const arch = spec.arch ?? "x86_64";
  if (platform !== "qemu" || arch !== "x86_64") throw new RecipeError(`${what}: only platform "qemu" on arch "x86_64" is supported`, where());
  if (!Array.isArray(spec.libs)) throw new RecipeError(`${what}: libs must be a list of the release's library names`, where());
  const libs = spec.libs.map((key) => {
    const lib = rel.libs[key];
    if (!lib) throw new RecipeError(`${what}: release ${rel.version} has no library '${key}' (it has ${Object.keys(rel.libs).join(", ") || "none"})`, where());
    return { key, ...lib };
  });
  if (new Set(spec.libs).size !== spec.libs.length) throw new RecipeError(`${what}: a library is listed twice`, where());
  if (spec.rootfs !== undefined && !isInput(spec.rootfs)) throw new RecipeError(`${what}: rootfs must be a tree derivation (e.g. rootfs({ files }))`, where());
  if (spec.embedInitrd !== undefined && typeof spec.embedInitrd !== "boolean") throw new RecipeError(`${what}: embedInitrd must be true or false`, where());
  const embedInitrd = spec.rootfs !== undefined && (spec.embedInitrd ?? true);
  if (spec.tools !== undefined && !isInput(spec.tools)) throw new RecipeError(`${what}: tools must be a hostTools(...) derivation`, where());
  for (const f of spec.makeFlags ?? []) {
    if (typeof f !== "string" || !/^[A-Za-z_][A-Za-z0-9_]*=/.test(f)) throw new RecipeError(`${what}: makeFlags are VAR=value, not '${String(f)}'`, where());
  }

  const appDir = appTree(name, spec.app);
  let defconfig: KernelBuildPlan["defconfig"];
  if (isInput(spec.config)) defconfig = { file: spec.config.toString() };
  else if (typeof spec.config === "string") defconfig = { text: spec.config };
  else if (spec.config && typeof spec.config === "object") defconfig = { text: kconfigText(spec.config as Record<string, KconfigValue>) };
  else throw new RecipeError(`${what}: config must be a defconfig file (local(...)), its text, or { SYMBOL: value }`, where());

  const initrd = spec.rootfs ? cpio({ name: `${name}-initrd.cpio`, root: spec.rootfs }) : undefined;
  const dialect = INITRD_KCONFIG[rel.initrdKconfig];
  const initrdLines = spec.rootfs ? (embedInitrd ? dialect.embedded("@APP@/initrd.cpio") : dialect.separate) : [];
  const kernelName = `${name}_${platform}-${arch}`;
  const tools = spec.tools ?? defaultTools();
  const script = kernelBuilderScript({
    name,
    core: rel.core.toString(),
    libs: libs.map((l) => ({ key: l.key, source: l.source.toString(), libname: l.libname, archives: l.archives.map((a) => ({ file: a.file, from: a.from.toString(), ...(a.prefix ? { prefix: a.prefix } : {}) })) })),
    app: appDir.toString(),
    defconfig,
    ...(spec.rootfs ? { strip: dialect.strip.source } : {}),
    initrdLines,
    ...(embedInitrd && initrd ? { initrd: initrd.toString() } : {}),
    kernelName,
    makeFlags: [...(spec.makeFlags ?? [])],
  });
  const kernel = derivation({
    name: `${name}-unikraft-${rel.version}${spec.rootfs ? (embedInitrd ? "-einitrd" : "-initrd") : ""}`,
    builder: `${tools}/bin/sh`,
    args: ["-c", script],
    env: { PATH: `${tools}/bin` },
    outputs: ["out", "dbg", "config"],
  });
  const made: UnikraftApp = {
    name,
    release: rel,
    kernel,
    ...(initrd ? { initrd } : {}),
    embedInitrd,
    kernelName,
    image(imageSpec) {
      const { tag, ...rest } = imageSpec;
      return ociImage({
        name: `${name}-image`,
        ...rest,
        kernel,
        ...(initrd && !embedInitrd ? { initrd } : {}),
        unikernelType: "unikraft",
        unikernelVersion: imageSpec.unikernelVersion ?? rel.version,
        hypervisor: "qemu",
        tag: tag ?? name,
      });
    },
  };
  return Object.freeze(made);
}

/** The Unikraft helpers of the recipe API: `unikraft.app(...)`, `unikraft.release(...)`. */
export const unikraft = Object.freeze({ app, release, kconfigText, defaultTools, DEFAULT_TOOLS });
