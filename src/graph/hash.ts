/**
 * Hashing primitives: BLAKE3 (native binding) and Nix's base32 alphabet.
 *
 * The native binding is loaded once; `assertNativeBlake3` lets callers that
 * care about throughput (the store) check that the silent wasm fallback of the
 * `blake3` package did not happen.
 */
import { createRequire } from "node:module";

type Blake3 = typeof import("blake3");
const require = createRequire(import.meta.url);
let blake3Module: Blake3 | undefined;
/**
 * The `blake3` package, loaded on first use: the no-op path of `ukb realise`
 * never hashes, and loading the native binding costs ~20 ms of start-up.
 */
function blake3(): Blake3 {
  return (blake3Module ??= require("blake3") as Blake3);
}

/** Nix's base32 alphabet: no e, o, u, t, so hashes spell no words. */
const BASE32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

/** Encodes bytes with Nix's base32 (least significant bits first, as Nix does). */
export function toBase32(bytes: Uint8Array): string {
  const length = Math.ceil((bytes.length * 8) / 5);
  let out = "";
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = Math.floor(bit / 8);
    const j = bit % 8;
    const c = ((bytes[i]! >> j) | (i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0)) & 0x1f;
    out += BASE32_ALPHABET[c];
  }
  return out;
}

export function isBase32(text: string): boolean {
  for (const ch of text) if (!BASE32_ALPHABET.includes(ch)) return false;
  return true;
}

/** BLAKE3 of a string or bytes, as lowercase hex (64 chars). */
export function blake3Hex(data: string | Uint8Array): string {
  return (blake3().hash(data) as Buffer).toString("hex");
}

/** BLAKE3 of a string or bytes, raw. */
export function blake3Bytes(data: string | Uint8Array): Buffer {
  return blake3().hash(data) as Buffer;
}

/** A streaming BLAKE3 hasher. */
export function blake3Stream(): { update(chunk: Uint8Array): void; digestHex(): string } {
  const h = blake3().createHash();
  return {
    update: (chunk) => void h.update(chunk),
    digestHex: () => (h.digest() as Buffer).toString("hex"),
  };
}

/** How many characters a store hash has (160 bits in base32). */
export const STORE_HASH_CHARS = 32;

/** The 32-character base32 store hash of a fingerprint: BLAKE3, first 160 bits. */
export function storeHash(fingerprint: string): string {
  return toBase32(blake3Bytes(fingerprint).subarray(0, 20));
}
