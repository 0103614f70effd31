import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";

/** MQTT control packet types (the high nibble of the first byte) a test may want to stop. */
export const PacketType = {
  publish: 3,
  puback: 4,
  pubrec: 5,
  pubrel: 6,
  pubcomp: 7,
} as const;

/** One control packet as a client framed it on the wire. */
export interface Frame {
  type: number;
  /** The low nibble of the first byte (DUP, QoS, RETAIN for PUBLISH). */
  flags: number;
  /** The packet identifier of a QoS > 0 PUBLISH or of an acknowledgement; undefined otherwise. */
  messageId: number | undefined;
}

interface Cut {
  match: (frame: Frame) => boolean;
  resolve: (frame: Frame) => void;
}

/**
 * A TCP proxy between MQTT clients and a broker node chosen per connection. It reads the MQTT
 * framing of what clients send (bytes are forwarded unchanged) and can cut a connection at a
 * chosen packet: that packet and everything after it from the client never reach the broker.
 * A test can so stop a flow at an exact step (the node never sees the PUBREL) before killing
 * the node, and a client reconnecting through the proxy goes to whichever node `target` names
 * then, as behind a load balancer.
 */
export class MqttProxy {
  private cuts: Cut[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private target: number,
  ) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(targetPort: number): Promise<MqttProxy> {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    const proxy = new MqttProxy(server, port, targetPort);
    server.on("connection", (client) => proxy.accept(client));
    return proxy;
  }

  /** Where connections made from now on go. */
  routeTo(port: number): void {
    this.target = port;
  }

  /**
   * Cuts the next client connection that sends a packet matching `match`, at that packet.
   * Resolves with the packet once it has been withheld.
   */
  cutAt(match: (frame: Frame) => boolean): Promise<Frame> {
    return new Promise((resolve) => this.cuts.push({ match, resolve }));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    const upstream = connect({ port: this.target, host: "127.0.0.1" });
    this.sockets.add(client).add(upstream);
    const closeBoth = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("error", closeBoth).on("close", closeBoth);
    upstream.on("error", closeBoth).on("close", closeBoth);
    upstream.pipe(client);

    let pending = Buffer.alloc(0);
    let cut = false;
    client.on("data", (chunk: Buffer) => {
      if (cut) return;
      pending = Buffer.concat([pending, chunk]);
      for (let length = frameLength(pending); length !== 0; length = frameLength(pending)) {
        if (length < 0) return closeBoth();
        const bytes = pending.subarray(0, length);
        pending = pending.subarray(length);
        const frame = frameOf(bytes);
        const index = this.cuts.findIndex((c) => c.match(frame));
        if (index >= 0) {
          const [hit] = this.cuts.splice(index, 1);
          cut = true;
          hit?.resolve(frame);
          return;
        }
        upstream.write(bytes);
      }
    });
  }
}

/**
 * The length of the first complete packet in `buffer`: 0 if it is not all there yet, -1 if its
 * remaining length is malformed.
 */
function frameLength(buffer: Buffer): number {
  let remaining = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    const byte = buffer[i];
    if (byte === undefined) return 0;
    remaining += (byte & 0x7f) * multiplier;
    multiplier *= 128;
    if ((byte & 0x80) === 0) {
      const total = 1 + i + remaining;
      return buffer.length >= total ? total : 0;
    }
  }
  return -1;
}

function frameOf(bytes: Buffer): Frame {
  const first = bytes[0] ?? 0;
  const type = first >> 4;
  const flags = first & 0x0f;
  let headerLength = 2;
  while (((bytes[headerLength - 1] ?? 0) & 0x80) !== 0) headerLength++;
  let messageId: number | undefined;
  if (type === PacketType.publish) {
    const qos = (flags >> 1) & 0x03;
    const topicLength = bytes.readUInt16BE(headerLength);
    if (qos > 0) messageId = bytes.readUInt16BE(headerLength + 2 + topicLength);
  } else if (type >= PacketType.puback && type <= PacketType.pubcomp) {
    messageId = bytes.readUInt16BE(headerLength);
  }
  return { type, flags, messageId };
}
