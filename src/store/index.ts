export { Store, type PathInfo } from "./store.js";
export { dumpTree, hashTree } from "./archive.js";
export { normaliseTree, removeTree, scanReferences } from "./fsutil.js";
export { verifyStore, type VerifyReport, type VerifyProblem } from "./verify.js";
export { collectGarbage, type GcReport } from "./gc.js";
export { SELF, ownerAlive } from "./lock.js";
