/** The ukb server: a warm process per store that answers no-op realises for the native launcher. */
export { runServer, type ServerOptions, type ServerStatus } from "./server.js";
export { askServer, socketAddress } from "./control.js";
export { SOCKET_NAME } from "./protocol.js";
