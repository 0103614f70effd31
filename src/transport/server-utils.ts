import type { AddressInfo, Server, Socket } from "node:net";
import { ConnectionQuotas } from "../admission/connection-quotas.js";
import { ListenerError } from "../errors.js";

/**
 * How often a node HTTP server enforces its headersTimeout and requestTimeout. Node checks every
 * 30 s by default, so a client trickling its headers could hold a connection up to 30 s past its
 * timeout; every HTTP server of ours passes this as `connectionsCheckingInterval`.
 */
export const HTTP_TIMEOUT_CHECK_MS = 500;

/** Binds a server and resolves with its address, or rejects with a ListenerError naming it. */
export function listenOn(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(
        new ListenerError(`cannot listen on ${host}:${port}: ${error.code ?? error.message}`, {
          cause: error,
        }),
      );
    };
    server.once("error", onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Stops a server accepting; resolves at once without waiting for open connections. Idempotent. */
export function closeServer(server: Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    // close() waits for open connections before its callback; stopping the accept is what matters.
    setImmediate(resolve);
  });
}

/**
 * Puts `admit` in front of a server's own 'connection' listeners (a TLS server's starts the
 * handshake, an HTTP server's the request parser), so a refused socket is closed before any of
 * that work; the server itself stays bound, with its own timeouts. Call it right after the
 * server is created.
 */
export function gateConnections(server: Server, admit: (socket: Socket) => boolean): void {
  const listeners = server.listeners("connection") as Array<(socket: Socket) => void>;
  server.removeAllListeners("connection");
  server.on("connection", (socket: Socket) => {
    if (!admit(socket)) return;
    for (const listener of listeners) listener.call(server, socket);
  });
}

/**
 * Closes a connection on accept (before a TLS handshake or a byte of HTTP) when its address
 * already holds `perIp` open ones, telling `refused` the address: the few clients of an HTTP
 * port (probes, scrapes, an operator) keep their sockets when one address opens many. Call it
 * right after the server is created (gateConnections).
 */
export function capConnectionsPerAddress(
  server: Server,
  perIp: number,
  refused: (ip: string) => void,
): void {
  const quotas = new ConnectionQuotas({ perNode: Number.POSITIVE_INFINITY, perIp });
  gateConnections(server, (socket) => {
    const ip = socket.remoteAddress ?? "";
    if (quotas.admit(ip) !== undefined) {
      socket.destroy();
      refused(ip);
      return false;
    }
    socket.once("close", () => quotas.release(ip));
    return true;
  });
}
