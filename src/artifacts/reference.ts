/**
 * OCI tags and registry references ("host:port/repo/name:tag"), with the
 * grammar of distribution/reference, so that what ukb accepts a registry and
 * containerd accept too.
 */
import { badInput, show } from "./errors.js";

const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = "(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])";
const HOST_RE = new RegExp(`^${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]{1,5})?$`);
const MAX_NAME = 255;

export function checkTag(tag: unknown): string {
  if (typeof tag !== "string" || !TAG_RE.test(tag)) {
    throw badInput(`tag ${show(String(tag))} is not a valid OCI tag: letters, digits, _ . - (not first), at most 128 characters`);
  }
  return tag;
}

export interface Reference {
  /** host[:port], as written. */
  host: string;
  /** Repository path below the host, e.g. "unikernels/nginx". */
  repository: string;
  tag: string;
}

/** Parse "host[:port]/repo[/more]:tag". The host is required: ukb never guesses Docker Hub. */
export function parseReference(reference: unknown): Reference {
  if (typeof reference !== "string") throw badInput("registry reference must be a string like 127.0.0.1:5000/repo:tag");
  const bad = (why: string) => badInput(`registry reference ${show(reference)} ${why}`, "write it as host[:port]/repository:tag, e.g. 127.0.0.1:5000/unikernels/nginx:1.0");
  if (reference.includes("@")) throw bad("has a digest; push takes a tag");
  const slash = reference.indexOf("/");
  if (slash === -1) throw bad("has no registry host");
  const host = reference.slice(0, slash);
  if (!HOST_RE.test(host) || !(host.includes(".") || host.includes(":") || host === "localhost")) {
    throw bad(`does not start with a registry host (${show(host)}: a name with a dot or a port, or localhost)`);
  }
  const rest = reference.slice(slash + 1);
  const colon = rest.lastIndexOf(":");
  if (colon === -1) throw bad("has no tag");
  const repository = rest.slice(0, colon);
  const tag = rest.slice(colon + 1);
  checkTag(tag);
  if (repository === "" || !repository.split("/").every((c) => PATH_COMPONENT_RE.test(c))) {
    throw bad(`has an invalid repository ${show(repository)}: lower-case letters, digits and . _ - separators`);
  }
  if (host.length + 1 + repository.length > MAX_NAME) throw bad(`is longer than ${MAX_NAME} characters`);
  return { host, repository, tag };
}

export function checkRepository(repository: string, what: string): string {
  if (repository === "" || !repository.split("/").every((c) => PATH_COMPONENT_RE.test(c))) {
    throw badInput(`${what} ${show(repository)} is not a repository name: lower-case letters, digits and . _ - separators`);
  }
  return repository;
}
