import type { AddressInfo, Server } from "node:net";
import { ListenerError } from "../errors.js";

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
