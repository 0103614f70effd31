import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt";

export type { MqttClient } from "mqtt";

/** Connects an MQTT.js client and resolves once CONNACK arrived; rejects on error or refusal. */
export async function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(url, {
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    protocolVersion: 4,
    ...options,
  });
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

export async function subscribe(
  client: MqttClient,
  topic: string,
  qos: 0 | 1 | 2 = 0,
): Promise<number> {
  const granted = await client.subscribeAsync(topic, { qos });
  return granted[0]?.qos ?? -1;
}

export async function end(...clients: Array<MqttClient | undefined>): Promise<void> {
  await Promise.all(clients.map((c) => c?.endAsync(true)));
}
