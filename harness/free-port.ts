import { createServer } from "node:net";

/**
 * A loopback port that was free a moment ago, for servers that cannot take port 0 (redis-server,
 * haproxy). Callers retry on the rare collision.
 */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
