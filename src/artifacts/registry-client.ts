/**
 * A minimal client for the OCI distribution API over Node's fetch: requests
 * against one registry, with the two auth schemes registries use.
 *
 * On a 401 the WWW-Authenticate challenge decides: `Basic` → resend with
 * user:password; `Bearer realm=...,service=...,scope=...` → ask the realm
 * for a token (with user:password when we have them, anonymously otherwise),
 * for the challenge's scope plus the scopes this push needs, then resend.
 * Request bodies are factories, so a streamed upload can be sent again.
 */
import { failure } from "./errors.js";
import type { RegistryCredentials } from "./credentials.js";

export type Body = Buffer | AsyncIterable<Uint8Array>;

export interface RegistryRequest {
  method: "GET" | "HEAD" | "POST" | "PUT";
  /** Path below the registry ("/v2/...") or an absolute URL (an upload Location). */
  url: string;
  headers?: Record<string, string>;
  body?: () => Body;
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse `Bearer realm="https://auth",service="reg",scope="repository:x:pull"`. */
export function parseChallenge(header: string): Challenge | undefined {
  const match = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let m = re.exec(match[2]!); m !== null; m = re.exec(match[2]!)) {
    params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : (m[3] ?? "");
  }
  return { scheme: match[1]!.toLowerCase(), params };
}

/** First `errors[].code: message` of a registry error body, if there is one. */
async function errorDetail(res: Response): Promise<string> {
  try {
    const text = await res.text();
    const parsed = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const first = parsed.errors?.[0];
    if (first) return `: ${first.code ?? ""}${first.message ? ` ${first.message}` : ""}`;
    return text.trim() === "" ? "" : `: ${text.trim().slice(0, 200)}`;
  } catch {
    return "";
  }
}

export class RegistryClient {
  readonly base: string;
  private authorization: string | undefined;

  constructor(
    readonly host: string,
    insecure: boolean,
    private readonly credentials: RegistryCredentials | undefined,
    /** Scopes to ask a token for, e.g. "repository:ukb/nginx:pull,push". */
    private readonly scopes: string[],
    private readonly fetchImpl: typeof fetch = fetch,
  ) {
    // Plain http only when the caller said so: credentials never go out in clear otherwise.
    this.base = `${insecure ? "http" : "https"}://${host}`;
  }

  private basic(): string | undefined {
    if (!this.credentials) return undefined;
    return "Basic " + Buffer.from(`${this.credentials.username}:${this.credentials.password}`, "utf8").toString("base64");
  }

  private async send(req: RegistryRequest): Promise<Response> {
    const url = new URL(req.url, this.base).toString();
    const headers: Record<string, string> = { ...req.headers };
    if (this.authorization) headers.authorization = this.authorization;
    const init: RequestInit & { duplex?: "half" } = { method: req.method, headers, redirect: "follow" };
    if (req.body) {
      init.body = req.body() as unknown as BodyInit;
      init.duplex = "half";
    }
    try {
      return await this.fetchImpl(url, init);
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const detail = cause?.code ?? cause?.message ?? (err as Error).message;
      throw failure(
        `cannot reach registry ${this.base} (${req.method} ${new URL(url).pathname}): ${detail}`,
        err,
        this.base.startsWith("https:") ? "for a registry that speaks plain http (e.g. a local one), push with insecure" : undefined,
      );
    }
  }

  private async authenticate(res: Response): Promise<void> {
    const header = res.headers.get("www-authenticate");
    const challenge = header ? parseChallenge(header) : undefined;
    await res.body?.cancel();
    if (challenge?.scheme === "basic") {
      const basic = this.basic();
      if (!basic) throw failure(`registry ${this.host} asks for a user and password`, undefined, "set UKB_REGISTRY_USER and UKB_REGISTRY_PASSWORD, or docker login");
      this.authorization = basic;
      return;
    }
    if (challenge?.scheme === "bearer" && challenge.params.realm) {
      const realm = new URL(challenge.params.realm);
      if (challenge.params.service) realm.searchParams.set("service", challenge.params.service);
      const scopes = new Set([...(challenge.params.scope ? [challenge.params.scope] : []), ...this.scopes]);
      for (const scope of scopes) realm.searchParams.append("scope", scope);
      const headers: Record<string, string> = {};
      const basic = this.basic();
      if (basic) headers.authorization = basic;
      let tokenRes: Response;
      try {
        tokenRes = await this.fetchImpl(realm.toString(), { headers });
      } catch (err) {
        throw failure(`cannot reach the token service ${realm.origin} of registry ${this.host}: ${(err as Error).message}`, err);
      }
      if (!tokenRes.ok) {
        throw failure(`token service ${realm.origin} refused a token for ${this.host}: HTTP ${tokenRes.status}${await errorDetail(tokenRes)}`, undefined, basic ? "check the registry credentials" : "log in: set UKB_REGISTRY_USER and UKB_REGISTRY_PASSWORD, or docker login");
      }
      const body = (await tokenRes.json()) as { token?: string; access_token?: string };
      const token = body.token ?? body.access_token;
      if (!token) throw failure(`token service ${realm.origin} answered without a token`);
      this.authorization = `Bearer ${token}`;
      return;
    }
    throw failure(`registry ${this.host} answered 401 with an auth scheme ukb does not speak: ${header ?? "(no WWW-Authenticate)"}`);
  }

  /** Send a request, authenticating once if the registry asks to. */
  async request(req: RegistryRequest): Promise<Response> {
    const res = await this.send(req);
    if (res.status !== 401) return res;
    const had = this.authorization;
    await this.authenticate(res);
    const again = await this.send(req);
    if (again.status === 401) {
      await again.body?.cancel();
      throw failure(`registry ${this.host} refused ${had === undefined && this.credentials === undefined ? "anonymous access" : "the credentials"} for ${req.method} ${new URL(req.url, this.base).pathname}`, undefined, "check the registry credentials (UKB_REGISTRY_USER / UKB_REGISTRY_PASSWORD or docker login)");
    }
    return again;
  }

  /** A failure for an unexpected answer, with the registry's own error code and message. */
  async unexpected(res: Response, what: string): Promise<Error> {
    return failure(`registry ${this.host}: ${what} failed: HTTP ${res.status}${await errorDetail(res)}`);
  }
}
