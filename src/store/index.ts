export { Store, type PathInfo, type ContentKind } from "./store.js";
export { dumpTree, hashTree } from "./archive.js";
export { importTree, isSymlink, normaliseTree, removeTree, scanReferences } from "./fsutil.js";
export { verifyStore, type VerifyReport, type VerifyProblem } from "./verify.js";
export { collectGarbage, type GcReport } from "./gc.js";
export { SELF, ownerAlive } from "./lock.js";
export { fileDigest, contentKeys } from "./digest.js";
export { addToStore, type AddedPath } from "./add.js";
export { explainNoSpace, formatBytes, freeBytes, isNoSpace, nearlyFull, NoSpaceError, NO_SPACE_HINT } from "./space.js";
