/**
 * Reproducible artifact writers: newc cpio archives, rootfs trees, OCI image
 * layouts (the shape urunc runs), OCI archives, and a registry push.
 *
 * These are the engines behind the recipe-level `cpio()`, `rootfs()` and
 * `ociImage()` derivations and the `ukb push` command: plain functions from
 * files on disk to files on disk, same inputs giving the same bytes.
 */
export { writeCpio, type WriteCpioOptions, type ArtifactDigest } from "./cpio.js";
export { writeRootfsTree, type WriteRootfsTreeOptions, type RootfsEntry, type RootfsModes, type RootfsResult } from "./rootfs.js";
export {
  writeOciLayout,
  MEDIA_TYPES,
  type WriteOciLayoutOptions,
  type OciLayoutResult,
  type KraftkitOptions,
  type Architecture,
  type Descriptor,
} from "./oci-layout.js";
export { writeOciArchive, type WriteOciArchiveOptions } from "./oci-archive.js";
export { checkTag, parseReference, type Reference } from "./reference.js";
export {
  SUPPORTED_HYPERVISORS,
  MAX_BOOT_ARGS_BYTES,
  KERNEL_PATH,
  INITRD_PATH,
  URUNC_JSON_PATH,
  type UnikernelType,
  type Hypervisor,
} from "./urunc.js";
export { pushLayout, type PushOptions, type PushResult, type PushEvent, type BlobStatus } from "./push.js";
export { resolveCredentials, type RegistryCredentials, type CredentialSources } from "./credentials.js";
