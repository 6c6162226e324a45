/** What ukb knows of the host it runs on: dpkg's database (which package owns a program, what it needs, what it installed). */
export { dpkgAdmindir, essentialPackages, loadIndex, mergedUsrAliases, ownersOf, packageClosure, packageFiles, placed, type Index, type Package } from "./dpkg.js";
