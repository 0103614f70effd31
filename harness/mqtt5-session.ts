import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from "mqtt";
import { withDeadline } from "./deadline.js";
import { Inbox } from "./mqtt-client.js";

/** An MQTT 5 connection with what its CONNACK said. */
export interface V5Session {
  client: MqttClient;
  inbox: Inbox;
  connack: IConnackPacket;
}

export interface V5SessionOptions {
  /** Clean Start; false unless asked. */
  cleanStart?: boolean;
  /** Session Expiry Interval (s); absent sends none (0). */
  expiry?: number;
  will?: IClientOptions["will"];
}

/** Opens an MQTT 5 connection; the inbox is attached before the CONNACK (queued messages). */
export async function openV5(
  url: string,
  clientId: string,
  options: V5SessionOptions = {},
): Promise<V5Session> {
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    reconnectPeriod: 0,
    clientId,
    clean: options.cleanStart ?? false,
    ...(options.expiry === undefined
      ? {}
      : { properties: { sessionExpiryInterval: options.expiry } }),
    ...(options.will ? { will: options.will } : {}),
  });
  client.on("error", () => {});
  const inbox = new Inbox(client);
  const connack = await withDeadline(
    new Promise<IConnackPacket>((resolve, reject) => {
      client.once("connect", resolve);
      client.once("close", () => reject(new Error(`${clientId}: closed before CONNACK`)));
    }),
    10_000,
    `CONNACK for ${clientId}`,
  );
  return { client, inbox, connack };
}

/** Whether a fresh MQTT 5 connection (Clean Start 0) finds the session; it then ends at once. */
export async function sessionPresent(url: string, clientId: string): Promise<boolean> {
  const { client, connack } = await openV5(url, clientId);
  await client.endAsync(true, { properties: { sessionExpiryInterval: 0 } });
  return connack.sessionPresent;
}

/** Drops the connection as a network failure would: no DISCONNECT, so the will applies. */
export async function dropConnection(client: MqttClient): Promise<void> {
  const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
  client.stream.destroy();
  await closed;
  client.end(true);
}

/** Waits `ms` of wall time: what is under test is a timer measured in seconds. */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
