/**
 * What the native launcher (src/client/ukb.c) tells the Node CLI it hands a
 * command to: that no server listened for the store. Taken out of the
 * environment as the command starts, so that neither a recipe's evaluation
 * (whose output could embed it) nor anything the command starts (a nested
 * ukb) sees it.
 */
const NO_SERVER_YET = "UKB_LAUNCHER_NO_SERVER";

let foundNoServer = false;

/** Called once, first thing: reads the launcher's word and removes it from the environment. */
export function takeLauncherNote(): void {
  foundNoServer = process.env[NO_SERVER_YET] === "1";
  delete process.env[NO_SERVER_YET];
}

/** Whether the launcher found no server listening for the store this command names. */
export function launcherFoundNoServer(): boolean {
  return foundNoServer;
}
