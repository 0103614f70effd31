import type { Duplex } from "node:stream";
import mqttPacket, { type IPublishPacket, type Packet } from "mqtt-packet";
import { withDeadline } from "./deadline.js";

const DEFAULT_DEADLINE_MS = 5_000;

/**
 * The test's end of one MQTT connection, spoken in packets: what it sends goes out in one
 * write (so the broker reads it in one go), and every packet the broker sends is parsed and
 * kept, in order.
 */
export class WireClient {
  readonly packets: Packet[] = [];
  /** Every byte the broker sent, as sent. */
  readonly bytes: Buffer[] = [];
  /** Resolves when the broker has closed the connection. */
  readonly closed: Promise<void>;
  private readonly listeners = new Set<() => void>();

  /** `protocolVersion`: how packets are encoded and parsed (5 once an MQTT 5 CONNECT is sent). */
  constructor(
    readonly stream: Duplex,
    private readonly protocolVersion: 4 | 5 = 4,
  ) {
    const parser = mqttPacket.parser({ protocolVersion });
    parser.on("packet", (packet: Packet) => {
      this.packets.push(packet);
      for (const listener of this.listeners) listener();
    });
    stream.on("data", (chunk: Buffer) => {
      this.bytes.push(chunk);
      parser.parse(chunk);
    });
    stream.on("error", () => {});
    this.closed = new Promise((resolve) => {
      stream.once("end", () => resolve());
      stream.once("close", () => resolve());
    });
  }

  /** Sends packets (objects are encoded by mqtt-packet, Buffers go as they are) in one write. */
  send(...packets: Array<Packet | Buffer>): void {
    const options = { protocolVersion: this.protocolVersion };
    const encoded = packets.map((p) => (Buffer.isBuffer(p) ? p : mqttPacket.generate(p, options)));
    this.stream.write(Buffer.concat(encoded));
  }

  /** The first packet received (already, or later) that matches. */
  waitFor(
    what: string,
    matches: (packet: Packet) => boolean,
    ms = DEFAULT_DEADLINE_MS,
  ): Promise<Packet> {
    const found = this.packets.find(matches);
    if (found) return Promise.resolve(found);
    let listener: () => void = () => {};
    const arrived = new Promise<Packet>((resolve) => {
      listener = () => {
        const packet = this.packets.find(matches);
        if (packet) resolve(packet);
      };
      this.listeners.add(listener);
    });
    return withDeadline(arrived, ms, what).finally(() => this.listeners.delete(listener));
  }

  /** Waits for `count` packets of a kind in all. */
  async waitForCount(cmd: Packet["cmd"], count: number, ms = DEFAULT_DEADLINE_MS): Promise<void> {
    await this.waitFor(
      `${count} ${cmd}`,
      (packet) => packet.cmd === cmd && this.received(cmd).length >= count,
      ms,
    );
  }

  /** Packets of one kind received so far. */
  received(cmd: Packet["cmd"]): Packet[] {
    return this.packets.filter((packet) => packet.cmd === cmd);
  }

  /** The payloads of the PUBLISHes received so far, as text. */
  publishedPayloads(): string[] {
    return this.received("publish").map((p) => (p as IPublishPacket).payload.toString());
  }

  /**
   * A PINGREQ and its PINGRESP: the broker answers after everything it wrote to this
   * connection before, so whatever was on its way has arrived once this resolves.
   */
  async roundTrip(ms = DEFAULT_DEADLINE_MS): Promise<void> {
    const before = this.received("pingresp").length;
    this.send({ cmd: "pingreq" });
    await this.waitForCount("pingresp", before + 1, ms);
  }

  /** Resolves when the broker has closed the connection, or rejects at the deadline. */
  closedWithin(ms = DEFAULT_DEADLINE_MS): Promise<void> {
    return withDeadline(this.closed, ms, "connection closed by the broker");
  }
}

/** A PUBLISH packet. */
export function publish(
  topic: string,
  payload: string | Buffer,
  qos: 0 | 1 | 2 = 0,
  messageId?: number,
): Packet {
  return {
    cmd: "publish",
    topic,
    payload: typeof payload === "string" ? Buffer.from(payload) : payload,
    qos,
    retain: false,
    dup: false,
    ...(messageId === undefined ? {} : { messageId }),
  };
}

/** A SUBSCRIBE of one filter. */
export function subscribe(topic: string, qos: 0 | 1 | 2, messageId: number): Packet {
  return { cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] };
}

/** An UNSUBSCRIBE of one filter. */
export function unsubscribe(topic: string, messageId: number): Packet {
  return { cmd: "unsubscribe", messageId, unsubscriptions: [topic] };
}

/** A PUBACK. */
export function puback(messageId: number): Packet {
  return { cmd: "puback", messageId };
}
