/** The ukb server: a warm process per store that answers no-op realises for the native launcher. */
export { runServer, type ServerOptions } from "./server.js";
export { askServer, serverStatus, socketAddress } from "./control.js";
export { SOCKET_NAME, type ServerStatus } from "./protocol.js";
