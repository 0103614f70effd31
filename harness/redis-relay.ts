import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";

/** A SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE command as RESP frames it (not a word in a script). */
const SUBSCRIBE = /\*\d+\r\n\$(9|10)\r\n[ps]?subscribe\r\n/i;

/**
 * A TCP relay between a node and a real redis-server that can hold back pub/sub: while held,
 * what Redis sends to a connection that subscribed (a message published in the cluster) waits
 * in the relay, in order, while every other connection (commands, scripts) flows.
 */
export class RedisRelay {
  private readonly sockets = new Set<Socket>();
  private readonly subscribers = new Set<{ client: Socket; held: Buffer[] }>();
  private holding = false;
  /** Commands held on their way to Redis: what a connection sent from a chunk holding `marker`. */
  private commandHold: {
    marker: Buffer;
    held: Array<() => void>;
    /** What the held chunks carry, in order (RESP text). */
    text: string[];
    waiters: Array<() => void>;
  } = {
    marker: Buffer.alloc(0),
    held: [],
    text: [],
    waiters: [],
  };
  private holdingCommands = false;

  private constructor(private readonly server: Server) {}

  get url(): string {
    return `redis://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  static async start(targetPort: number): Promise<RedisRelay> {
    const server = createServer();
    const relay = new RedisRelay(server);
    server.on("connection", (client: Socket) => relay.relay(client, targetPort));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return relay;
  }

  /** Holds what Redis sends to subscribed connections from now on. */
  holdPubSub(): void {
    this.holding = true;
  }

  /** Sends on what was held, and everything after it as it comes. */
  release(): void {
    this.holding = false;
    for (const subscriber of this.subscribers) {
      for (const chunk of subscriber.held.splice(0)) subscriber.client.write(chunk);
    }
  }

  /**
   * Holds, from now on, a connection's chunk on its way to Redis that holds `marker` (a
   * channel: the publish's arguments), and everything that connection sends after it: as if
   * its node stopped before sending that command. Other connections flow.
   */
  holdCommandsWith(marker: string): void {
    this.commandHold = { marker: Buffer.from(marker), held: [], text: [], waiters: [] };
    this.holdingCommands = true;
  }

  /** Resolves once a chunk is held (holdCommandsWith). */
  commandHeld(): Promise<void> {
    if (this.commandHold.held.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.commandHold.waiters.push(resolve));
  }

  /** Resolves once the commands held so far carry `text` (e.g. a key), or rejects after `ms`. */
  async heldCarrying(text: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.commandHold.text.some((chunk) => chunk.includes(text))) {
      if (Date.now() > deadline) throw new Error(`no held command carries ${text} within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.commandHold.waiters.push(resolve);
        setTimeout(resolve, deadline - Date.now() + 1).unref();
      });
    }
  }

  /** Sends on the held commands, in order, and everything after them as it comes. */
  releaseCommands(): void {
    this.holdingCommands = false;
    for (const send of this.commandHold.held.splice(0)) send();
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
    await once(this.server, "close");
  }

  private relay(client: Socket, targetPort: number): void {
    const upstream = connect({ port: targetPort, host: "127.0.0.1" });
    this.sockets.add(client).add(upstream);
    let subscriber: { client: Socket; held: Buffer[] } | undefined;
    let holdingThis = false;
    client.on("data", (chunk: Buffer) => {
      if (subscriber === undefined && SUBSCRIBE.test(chunk.toString("latin1"))) {
        subscriber = { client, held: [] };
        this.subscribers.add(subscriber);
      }
      const hold = this.commandHold;
      if (this.holdingCommands && (holdingThis || chunk.includes(hold.marker))) {
        holdingThis = true;
        hold.held.push(() => upstream.write(chunk));
        hold.text.push(chunk.toString("latin1"));
        for (const waiter of hold.waiters.splice(0)) waiter();
        return;
      }
      holdingThis = false;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (subscriber !== undefined && (this.holding || subscriber.held.length > 0)) {
        subscriber.held.push(chunk);
      } else {
        client.write(chunk);
      }
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      if (subscriber !== undefined) this.subscribers.delete(subscriber);
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  }
}
