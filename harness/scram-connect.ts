import type { IConnackPacket, MqttClient, Packet } from "mqtt";
import mqtt from "mqtt";
import type { IAuthPacket } from "mqtt-packet";
import { withDeadline } from "./deadline.js";
import { ScramClient } from "./scram-client.js";

const METHOD = "SCRAM-SHA-256";

export interface ScramOutcome {
  connack: IConnackPacket;
  client: MqttClient;
  scram: ScramClient;
  /** AUTH packets the server sent before its CONNACK. */
  challenges: IAuthPacket[];
}

/** An MQTT.js v5 client authenticating with SCRAM; resolves at the CONNACK, accepted or not. */
export function scramConnect(
  url: string,
  username: string,
  password: string,
  clientId = `${username}-1`,
): Promise<ScramOutcome> {
  const scram = new ScramClient(username, password);
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    clientId,
    reconnectPeriod: 0,
    properties: { authenticationMethod: METHOD, authenticationData: scram.clientFirst },
  });
  const challenges: IAuthPacket[] = [];
  client.handleAuth = (packet, callback) => {
    challenges.push(packet as IAuthPacket);
    const serverFirst = packet.properties?.authenticationData ?? Buffer.alloc(0);
    callback(undefined, {
      cmd: "auth",
      reasonCode: 0x18,
      properties: { authenticationMethod: METHOD, authenticationData: scram.final(serverFirst) },
    });
  };
  client.on("error", () => {});
  const connack = new Promise<IConnackPacket>((resolve) => {
    client.on("packetreceive", (received: Packet) => {
      if (received.cmd === "connack") resolve(received as IConnackPacket);
    });
  });
  return withDeadline(connack, 5_000, "CONNACK").then((c) => ({
    connack: c,
    client,
    scram,
    challenges,
  }));
}
