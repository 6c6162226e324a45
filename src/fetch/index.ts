/**
 * The fetch engine: downloads (with mirrors, retries, timeouts and a shared
 * concurrency limit), Debian sources through apt, content digests, and safe
 * unpacking of source archives. It knows nothing of the store: callers give
 * a destination path and get back the content's digests; the store decides
 * where that path is and what to register.
 */
export { download, DOWNLOAD_DEFAULTS, tempPathBeside, type DownloadOptions, type DownloadProgress, type DownloadResult } from "./download.js";
export { Limiter, downloadLimiter, DEFAULT_MAX_DOWNLOADS } from "./limiter.js";
export { loadMirrors, parseMirrorsEnv, parseMirrorsJson, mirrorsConfigPath, expandUrl, resolveUrls, HASHED_MIRROR, type MirrorMap } from "./mirrors.js";
export {
  hashFile,
  normaliseDigest,
  normaliseExpected,
  checkDigests,
  DigestSink,
  HASH_CHUNK,
  type ExpectedHashes,
  type FileDigests,
  type HashAlgo,
} from "./digest.js";
export { fetchDebianSource, fetchDebianPackage, ENABLE_DEB_SRC, type DebianSourceOptions, type DebianPackageOptions, type DebianFetchResult } from "./debian.js";
export { fetchSource, describeSource, parseSource, type SourceDescriptor, type FetchSourceOptions, type FetchSourceResult } from "./source.js";
export { unpackArchive, UNPACK_DEFAULTS, type UnpackOptions, type UnpackResult } from "./unpack.js";
export { detectArchiveFormat, sniffFormat, type ArchiveFormat } from "./archive-format.js";
