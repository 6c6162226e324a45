export * from "./canonical.js";
export * from "./derivation.js";
export * from "./hash.js";
export * from "./walk.js";
