export { openCache, withoutCredentials, type CacheBackend } from "./backend.js";
export { cacheSettings, openSubstituters, configFile, type CacheSettings, type CacheFlags } from "./config.js";
export { generateKey, readSecretKey, parsePublicKey, parseSecretKey, fingerprint, type SecretKey, type PublicKey } from "./keys.js";
export { decodeEntry, encodeEntry, checkEntry, signEntry, EXTERNAL_MIN, type CacheEntry, type BlobRef, type Trust } from "./info.js";
export { CacheSet, fetchTree, substitute, type CacheHit, type CacheOptions, type SubstituteOptions } from "./substitute.js";
export { upload, closureInOrder, type UploadEvent, type UploadReport } from "./upload.js";
export { packTree } from "./pack.js";
