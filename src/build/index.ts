export { buildDerivation, buildInto, readySandboxes, buildCleanups, type StagedOutputs, buildEnv, BuildFailedError, BuildCancelledError, type BuildOptions, type BuildResult } from "./build.js";
export { registerBuiltin, type Builtin, type BuiltinContext } from "./builtins.js";
export { findBwrap, sandboxArgs, BUILD_TOP } from "./sandbox.js";
export { fileDigest, checkFixedOutput } from "./fixed.js";
export { checkDerivation, compareTrees, type CheckResult, type Difference } from "./check.js";
