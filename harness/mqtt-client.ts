import { createConnection } from "node:net";
import { connect as connectTls } from "node:tls";
import mqtt, {
  type IClientOptions,
  type IConnackPacket,
  type IPublishPacket,
  type MqttClient,
  type Packet,
} from "mqtt";
import { withDeadline } from "./deadline.js";

export type { MqttClient } from "mqtt";

/**
 * Connects an MQTT.js client and resolves once CONNACK arrived; rejects on error or refusal.
 * `fromAddress` binds the client's end of a TCP connection to another loopback address, so a
 * test can come from several "hosts" (e.g. 127.0.0.9).
 */
export async function connect(
  url: string,
  options: IClientOptions & { fromAddress?: string } = {},
): Promise<MqttClient> {
  const { fromAddress, ...rest } = options;
  const settings: IClientOptions = {
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    protocolVersion: 4,
    ...rest,
  };
  let client: MqttClient;
  if (fromAddress === undefined) {
    client = mqtt.connect(url, settings);
  } else {
    const { protocol, hostname, port } = new URL(url);
    const at = { host: hostname, port: Number(port), localAddress: fromAddress };
    const { ca, cert, key, rejectUnauthorized } = rest;
    client = new mqtt.MqttClient(
      () =>
        protocol === "mqtts:"
          ? connectTls({ ...at, ca, cert, key, rejectUnauthorized, servername: "localhost" })
          : createConnection(at),
      settings,
    );
  }
  try {
    await new Promise<void>((resolve, reject) => {
      client.once("connect", () => resolve());
      client.once("error", reject);
      client.once("close", () => reject(new Error("connection closed before CONNACK")));
    });
  } catch (error) {
    client.end(true);
    throw error;
  }
  return client;
}

export interface Received {
  topic: string;
  payload: Buffer;
  packet: IPublishPacket;
}

/** Collects every message a client receives, and lets a test wait for the next N. */
export class Inbox {
  private readonly items: Received[] = [];
  private waiters: Array<{ count: number; resolve: (items: Received[]) => void }> = [];

  constructor(client: MqttClient) {
    client.on("message", (topic, payload, packet) => {
      this.items.push({ topic, payload, packet });
      this.waiters = this.waiters.filter((w) => {
        if (this.items.length < w.count) return true;
        w.resolve(this.items.slice(0, w.count));
        return false;
      });
    });
  }

  get received(): readonly Received[] {
    return this.items;
  }

  /** Resolves with the first `count` messages once that many have arrived. */
  waitFor(count: number): Promise<Received[]> {
    if (this.items.length >= count) return Promise.resolve(this.items.slice(0, count));
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }
}

/**
 * Connects and reports the CONNACK's session-present flag. The inbox is attached before the
 * connection opens: queued messages may arrive in the same read as the CONNACK.
 */
export async function connectWithConnack(
  url: string,
  options: IClientOptions,
): Promise<{ client: MqttClient; inbox: Inbox; sessionPresent: boolean }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, protocolVersion: 4, ...options });
  const inbox = new Inbox(client);
  const sessionPresent = await new Promise<boolean>((resolve, reject) => {
    client.once("connect", (connack) => resolve(connack.sessionPresent));
    client.once("error", reject);
  });
  return { client, inbox, sessionPresent };
}

export async function subscribe(
  client: MqttClient,
  topic: string,
  qos: 0 | 1 | 2 = 0,
): Promise<number> {
  const granted = await client.subscribeAsync(topic, { qos });
  return granted[0]?.qos ?? -1;
}

/**
 * Subscribes and resolves with the SUBACK's return codes as sent (0x80 = refused), in the
 * order of the filters; MQTT.js would turn any 0x80 into an error and hide the others.
 */
export function subscribeGranted(
  client: MqttClient,
  filters: Record<string, { qos: 0 | 1 | 2 }>,
): Promise<number[]> {
  return new Promise((resolve) => {
    const onPacket = (packet: Packet): void => {
      if (packet.cmd !== "suback") return;
      client.off("packetreceive", onPacket);
      resolve(packet.granted.map(Number));
    };
    client.on("packetreceive", onPacket);
    client.subscribe(filters, () => {});
  });
}

export async function end(...clients: Array<MqttClient | undefined>): Promise<void> {
  await Promise.all(clients.map((c) => c?.endAsync(true)));
}

/** Resolves with how many ms after `since` the client's connection closed (at once if it has). */
export function closedAfter(client: MqttClient, since: number): Promise<number> {
  if (!client.connected) return Promise.resolve(Date.now() - since);
  return new Promise((resolve) => client.once("close", () => resolve(Date.now() - since)));
}

/** Connects and resolves with the CONNACK, whether it accepts or refuses; the client then ends. */
export function connackOf(url: string, options: IClientOptions): Promise<IConnackPacket> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, protocolVersion: 4, ...options });
  client.on("error", () => {});
  const connack = new Promise<IConnackPacket>((resolve) => {
    client.on("packetreceive", (received: Packet) => {
      if (received.cmd === "connack") resolve(received as IConnackPacket);
    });
  });
  return withDeadline(connack, 5_000, "CONNACK").finally(() => client.end(true));
}

/** The next packet of a kind an MQTT.js client receives. */
export function nextPacket<T extends Packet>(client: MqttClient, cmd: Packet["cmd"]): Promise<T> {
  const received = new Promise<T>((resolve) => {
    const onPacket = (p: Packet): void => {
      if (p.cmd !== cmd) return;
      client.off("packetreceive", onPacket);
      resolve(p as T);
    };
    client.on("packetreceive", onPacket);
  });
  return withDeadline(received, 5_000, cmd);
}
