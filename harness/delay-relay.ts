import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";

/**
 * A TCP relay that holds every chunk for `delayMs` before passing it on, each way, in order:
 * Toxiproxy's latency toxic. It stands in for `tc netem delay`, which this machine's kernel
 * lacks (see harness/fault-network.ts). The delay can change while connections are open (a
 * fault that starts and ends); a chunk keeps the delay of the moment it arrived, and never
 * overtakes an earlier one.
 */
export class DelayRelay {
  private delayMs = 0;
  private cutOff = false;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly host: string,
  ) {}

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Listens on `host` (a port of its own) and relays each connection to `target`. */
  static async start(host: string, target: { host: string; port: number }): Promise<DelayRelay> {
    // Half-open: a client's FIN is passed on after its delayed data, and the answer still flows.
    const server = createServer({ allowHalfOpen: true });
    const relay = new DelayRelay(server, host);
    server.on("connection", (client: Socket) => {
      if (relay.cutOff) {
        client.destroy();
        return;
      }
      const upstream = connect({ ...target, allowHalfOpen: true });
      for (const socket of [client, upstream]) {
        relay.sockets.add(socket);
        socket.setNoDelay(true);
        socket.on("error", () => {});
        // A reset ends both at once; an orderly end is passed on in turn (forward()).
        socket.once("close", (hadError: boolean) => {
          relay.sockets.delete(socket);
          if (!hadError) return;
          client.destroy();
          upstream.destroy();
        });
      }
      relay.forward(client, upstream);
      relay.forward(upstream, client);
    });
    server.listen(0, host);
    await once(server, "listening");
    return relay;
  }

  /** Sets the one-way delay of every chunk from now on (0: pass at once). */
  setDelay(ms: number): void {
    if (!(ms >= 0 && ms <= 60_000)) throw new Error("delay between 0 and 60 s");
    this.delayMs = ms;
  }

  /**
   * Resets every relayed connection, dropping what it held, and resets new ones at once until
   * `heal()`: to the client, a server that died with its answers unsent and stays down.
   */
  cut(): void {
    this.cutOff = true;
    for (const socket of this.sockets) socket.destroy();
  }

  heal(): void {
    this.cutOff = false;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(from: Socket, to: Socket): void {
    const queue: Array<{ at: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const flush = (): void => {
      timer = undefined;
      const now = performance.now();
      while (queue.length > 0 && (queue[0]?.at ?? 0) <= now) {
        const next = queue.shift();
        if (next && !to.destroyed) to.write(next.chunk);
      }
      const head = queue[0];
      if (head) timer = setTimeout(flush, Math.max(0, head.at - now));
      else if (ended) to.end();
    };
    from.on("data", (chunk: Buffer) => {
      const last = queue.at(-1)?.at ?? 0;
      queue.push({ at: Math.max(performance.now() + this.delayMs, last), chunk });
      if (timer === undefined) flush();
    });
    from.once("end", () => {
      ended = true;
      if (timer === undefined) flush();
    });
  }
}
