import { connect } from "node:net";

/** Polls a loopback TCP port until it accepts a connection (bounded); for servers that log nothing. */
export async function waitForPort(
  port: number,
  isDead: () => string | undefined,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const dead = isDead();
    if (dead !== undefined) throw new Error(dead);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ port, host: "127.0.0.1" });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
}
