import { execFile } from "node:child_process";
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { connect as tlsConnect } from "node:tls";
import mqtt, { type IClientOptions, type IConnackPacket, type Packet } from "mqtt";
import { createWebSocketStream, WebSocket } from "ws";
import { withDeadline } from "./deadline.js";

/**
 * Clients that a node refuses, as tests of its refusal answers see them: the CONNACK (or a close
 * without one) over each transport, from a chosen loopback address.
 */

/** Where to connect: a listener's URL (mqtt:, mqtts:, ws:, wss:), from which address, trusting which CA. */
export interface Dial {
  url: string;
  fromAddress: string;
  /** The test CA (PEM) for mqtts: and wss:. */
  ca?: Buffer;
}

/** A byte stream to the listener: TCP, TLS (handshake by the client), or a WebSocket's stream. */
export function dialStream(dial: Dial): Duplex {
  const { protocol, hostname, port } = new URL(dial.url);
  const at = { host: hostname, port: Number(port), localAddress: dial.fromAddress };
  const ca = dial.ca === undefined ? {} : { ca: dial.ca };
  switch (protocol) {
    case "mqtt:":
      return netConnect(at);
    case "mqtts:":
      return tlsConnect({ ...at, ...ca, servername: "localhost" });
    default: {
      const ws = new WebSocket(dial.url, "mqtt", { localAddress: dial.fromAddress, ...ca });
      return createWebSocketStream(ws);
    }
  }
}

/**
 * Connects MQTT.js over `dial` and resolves with the CONNACK, or "closed" when the connection
 * closed without one.
 */
export function connackOver(
  dial: Dial,
  options: IClientOptions,
): Promise<IConnackPacket | "closed"> {
  const client = new mqtt.MqttClient(() => dialStream(dial), {
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  });
  client.on("error", () => {});
  const outcome = new Promise<IConnackPacket | "closed">((resolve) => {
    client.on("packetreceive", (received: Packet) => {
      if (received.cmd === "connack") resolve(received as IConnackPacket);
    });
    client.once("close", () => resolve("closed"));
  });
  return withDeadline(outcome, 5_000, "CONNACK or close").finally(() => client.end(true));
}

/**
 * Runs mosquitto_sub once against `port` from `fromAddress` (over TLS with `extra` naming the
 * CA); resolves with its debug output and exit code.
 */
export function mosquittoSub(
  port: number,
  fromAddress: string,
  version: "mqttv5" | "mqttv311",
  extra: string[] = [],
): Promise<{ code: number; output: string }> {
  const args = ["-d", "-V", version, "-h", "127.0.0.1", "-p", String(port)];
  args.push("-A", fromAddress, "-t", "plant/#", "-W", "5", ...extra);
  return new Promise((resolve) => {
    execFile("mosquitto_sub", args, { encoding: "utf8" }, (error, stdout, stderr) => {
      const code = (error as { code?: unknown } | null)?.code;
      resolve({ code: typeof code === "number" ? code : 0, output: `${stdout}${stderr}` });
    });
  });
}

/** A counter's value for one label set (`outcome="answered",transport="tls"`); 0 when absent. */
export async function labelledMetric(
  httpUrl: string,
  name: string,
  labels: string,
): Promise<number> {
  const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
  const line = new RegExp(`^${name}\\{${labels},[^}]*\\} (\\d+)`, "m");
  return Number(line.exec(text)?.[1] ?? 0);
}
