import type { QoS } from "./messages.js";

/** What a publisher passes per message: its QoS and, at MQTT 5, a user property or none. */
export interface LoadPublishOptions {
  qos: QoS;
  properties?: { userProperties: Record<string, string> };
}

/**
 * The part of a client the generator's publishers and subscribers use, met by MQTT.js's
 * MqttClient and by RawClient (see ClientKind).
 */
export interface LoadClient {
  publish(
    topic: string,
    payload: Buffer,
    options: LoadPublishOptions,
    callback: (error?: Error) => void,
  ): unknown;
  on(event: "message", listener: (topic: string, payload: Buffer) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  subscribeAsync(filter: string, options: { qos: QoS }): Promise<unknown>;
  end(force?: boolean): unknown;
}

/**
 * Which client the generator runs: MQTT.js (what devices run), or RawClient, whose cost per
 * message is the same at both protocol levels (for comparing the broker's cost of the two).
 */
export type ClientKind = "mqtt.js" | "raw";
