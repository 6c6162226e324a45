/**
 * Signing keys: ed25519 through node:crypto, in Nix's text forms.
 *
 *   secret key file:  NAME:base64(seed[32] ‖ public[32])   (Nix's layout; a bare 32-byte seed is read too)
 *   public key:       NAME:base64(public[32])
 *   signature:        NAME:base64(ed25519(fingerprint))
 *
 * A store path's fingerprint covers its virtual path, content hash, archive
 * size and references, so a signature vouches for exactly those bytes under
 * exactly that name.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { UkbError } from "../errors/index.js";
import { VIRTUAL_STORE } from "../graph/index.js";

const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export interface SecretKey {
  readonly name: string;
  readonly key: crypto.KeyObject;
  /** `NAME:base64` of the public half. */
  readonly publicKey: string;
}

export interface PublicKey {
  readonly name: string;
  readonly key: crypto.KeyObject;
  readonly text: string;
}

function b64url(b: Buffer): string {
  return b.toString("base64url");
}

function usage(message: string, hint?: string): UkbError {
  return new UkbError("usage", message, hint === undefined ? { exitCode: 2 } : { exitCode: 2, hint });
}

function splitNamed(text: string, what: string, secret: boolean): { name: string; bytes: Buffer } {
  const t = text.trim();
  const colon = t.indexOf(":");
  const name = t.slice(0, colon);
  const data = t.slice(colon + 1);
  if (colon < 1 || !KEY_NAME.test(name) || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) {
    // A secret key's text is never shown (an error in a CI log would publish it); a public one may be.
    const shown = secret ? "" : ` ${JSON.stringify(t.length > 80 ? t.slice(0, 80) + "…" : t)}`;
    throw usage(`${what}${shown} is not NAME:base64${shown ? "" : " (one line, NAME:KEY, as `ukb key generate` writes it)"}`);
  }
  return { name, bytes: Buffer.from(data, "base64") };
}

export function checkKeyName(name: string): string {
  if (!KEY_NAME.test(name)) throw usage(`key name ${JSON.stringify(name)}: use letters, digits and . _ + - (e.g. ci.example.org-1)`);
  return name;
}

const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

function privateOfSeed(seed: Buffer): crypto.KeyObject {
  return crypto.createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
}

function publicOfSeed(seed: Buffer): Buffer {
  const jwk = crypto.createPublicKey(privateOfSeed(seed)).export({ format: "jwk" }) as { x: string };
  return Buffer.from(jwk.x, "base64url");
}

function fromSeed(name: string, seed: Buffer): SecretKey {
  return { name, key: privateOfSeed(seed), publicKey: `${name}:${publicOfSeed(seed).toString("base64")}` };
}

/** A fresh key pair, as the secret key file's text and the public key. */
export function generateKey(name: string): { secretText: string; publicKey: string } {
  checkKeyName(name);
  const seed = crypto.randomBytes(32);
  const pub = publicOfSeed(seed);
  return { secretText: `${name}:${Buffer.concat([seed, pub]).toString("base64")}\n`, publicKey: `${name}:${pub.toString("base64")}` };
}

export function parseSecretKey(text: string, where = "secret key"): SecretKey {
  const { name, bytes } = splitNamed(text, where, true);
  if (bytes.length !== 32 && bytes.length !== 64) throw usage(`${where}: an ed25519 secret key has 32 or 64 bytes, not ${bytes.length}`);
  const seed = bytes.subarray(0, 32);
  const key = fromSeed(name, Buffer.from(seed));
  if (bytes.length === 64 && !bytes.subarray(32).equals(Buffer.from(key.publicKey.slice(name.length + 1), "base64"))) {
    throw usage(`${where}: its public half does not match its seed`);
  }
  return key;
}

export function readSecretKey(file: string): SecretKey {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw usage(`cannot read the secret key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, "make one with `ukb key generate --name NAME --out FILE`");
  }
  return parseSecretKey(text, `secret key file ${file}`);
}

export function parsePublicKey(text: string): PublicKey {
  const { name, bytes } = splitNamed(text, "trusted key", false);
  if (bytes.length !== 32) throw usage(`trusted key ${name}: an ed25519 public key has 32 bytes, not ${bytes.length}`);
  const key = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64url(bytes) }, format: "jwk" });
  return { name, key, text: `${name}:${bytes.toString("base64")}` };
}

/** What a signature covers (Nix's form, with ukb's hash): `1;path;blake3:hash;size;refs`. */
export function fingerprint(base: string, contentHash: string, size: number, references: readonly string[]): string {
  const refs = [...references].sort().map((r) => `${VIRTUAL_STORE}/${r}`);
  return `1;${VIRTUAL_STORE}/${base};blake3:${contentHash};${size};${refs.join(",")}`;
}

export function sign(key: SecretKey, fp: string): string {
  return `${key.name}:${crypto.sign(null, Buffer.from(fp), key.key).toString("base64")}`;
}

export type SignatureCheck =
  | { ok: true; by: string }
  | { ok: false; reason: "unsigned" | "untrusted" | "invalid"; names: string[] };

/** Is one of `signatures` a valid signature of `fp` by one of `trusted`? */
export function checkSignatures(fp: string, signatures: readonly string[], trusted: readonly PublicKey[]): SignatureCheck {
  if (signatures.length === 0) return { ok: false, reason: "unsigned", names: [] };
  const names: string[] = [];
  let sawTrusted = false;
  for (const s of signatures) {
    const colon = s.indexOf(":");
    if (colon < 1) continue;
    const name = s.slice(0, colon);
    names.push(name);
    const sig = Buffer.from(s.slice(colon + 1), "base64");
    for (const k of trusted) {
      if (k.name !== name) continue;
      sawTrusted = true;
      if (sig.length === 64 && crypto.verify(null, Buffer.from(fp), k.key, sig)) return { ok: true, by: name };
    }
  }
  return { ok: false, reason: sawTrusted ? "invalid" : "untrusted", names };
}
