/**
 * The packets of a subscribe storm's raw-socket clients, besides CONNECT (connect-packets.ts):
 * SUBSCRIBE to one filter with its own packet id, and DISCONNECT. What the broker sends back
 * is split by raw-packets.ts' PacketReader.
 */
import { mqttString, packet } from "../../../harness/raw-socket.js";

/** SUBSCRIBE (fixed header flags 0b0010 [MQTT-3.8.1-1]) of one filter at `qos`. */
export function subscribePacket(messageId: number, filter: string, qos: 0 | 1 | 2): Buffer {
  const id = Buffer.from([messageId >> 8, messageId & 0xff]);
  return packet(0x82, Buffer.concat([id, mqttString(filter), Buffer.from([qos])]));
}

export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** Packet type (the high nibble of the first byte) of CONNACK. */
export const CONNACK = 2;
