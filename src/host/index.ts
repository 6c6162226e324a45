/** What ukb knows of the host it runs on: dpkg's database (which package owns a program, what it needs, what it installed). */
export { dpkgAdmindir, essentialPackages, installed, loadIndex, ownersOf, packageClosure, packageFiles, type Index, type Package } from "./dpkg.js";
export { inSystemDirs, SYSTEM_DIRS, userCacheFile, writeCacheFile } from "./system.js";
