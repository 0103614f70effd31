import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";

/**
 * A minimal load balancer for tests: accepts on a loopback port and relays each connection to
 * `targetPort`, opening it with a PROXY header. The header goes out in the same write as the
 * client's first bytes (as a CONNECT or a TLS ClientHello), so the broker must pass on whatever
 * followed the header in one read. `localAddress` picks the loopback address the relay
 * connects from, to play a trusted or an untrusted proxy.
 */
export class ProxyRelay {
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  static async start(options: {
    targetPort: number;
    header: Buffer;
    localAddress?: string;
  }): Promise<ProxyRelay> {
    const server = createServer();
    const relay = new ProxyRelay(server);
    server.on("connection", (client: Socket) => {
      const upstream = connect({
        port: options.targetPort,
        host: "127.0.0.1",
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      });
      for (const socket of [client, upstream]) {
        relay.sockets.add(socket);
        socket.on("error", () => {});
        socket.once("close", () => {
          relay.sockets.delete(socket);
          client.destroy();
          upstream.destroy();
        });
      }
      client.once("data", (first: Buffer) => {
        upstream.write(Buffer.concat([options.header, first]));
        client.pipe(upstream);
        upstream.pipe(client);
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return relay;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
