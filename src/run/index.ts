export { readBootableImage, type BootableImage } from "./image.js";
export { boot, commandLine, freePort, qemuArgv, waitForHttp, GUEST_IP, GATEWAY, type BootOptions, type RunningVm } from "./qemu.js";
