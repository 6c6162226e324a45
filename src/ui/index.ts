export { renderError, renderFailure } from "./errors.js";
export { chooseMode, makeListener, type ProgressMode } from "./progress.js";
export { writeStdout } from "./stdout.js";
