/**
 * The public recipe API: what `import { … } from "ukb"` gives a recipe.
 * Everything here is pure (builds nothing, fetches nothing) except
 * `hostTools`, which looks the named programs up on the host.
 */
export { derivation, Derivation, OutputRef, isDerivation, type DerivationSpec, type StringLike } from "./derivation.js";
export { hostTools, type HostToolsOptions } from "./host-tools.js";
export { fetchurl, fetchzip, debianSource, debianPackage, local, type FetchurlSpec, type FetchzipSpec, type Source, type SourceLike } from "./fetchers.js";
export { rootfs, cpio, ociImage, type RootfsFile, type OciImageSpec } from "./artifacts.js";
export { unikraft, type UnikraftApp, type UnikraftAppSpec, type UnikraftArchive, type UnikraftLibSpec, type UnikraftRelease, type UnikraftReleaseSpec, type UnikraftSource, type KconfigValue } from "./unikraft.js";
