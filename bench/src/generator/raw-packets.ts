/**
 * MQTT packets for raw sockets (the flood attacker's, the raw load clients'): pre-encoded
 * PUBLISH packets (no client library between the generator and the wire) and a reader that
 * splits what the broker sends back into packets.
 */
import { mqttString, packet } from "../../../harness/raw-socket.js";

/** Splits a byte stream into MQTT packets: calls `onPacket(firstByte, body)` for each. */
export class PacketReader {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly onPacket: (firstByte: number, body: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    for (;;) {
      const header = readFixedHeader(this.buffered);
      if (header === undefined) return;
      const end = header.headerBytes + header.remainingLength;
      if (this.buffered.length < end) return;
      const first = this.buffered[0] ?? 0;
      this.onPacket(first, this.buffered.subarray(header.headerBytes, end));
      this.buffered = this.buffered.subarray(end);
    }
  }
}

function readFixedHeader(
  data: Buffer,
): { headerBytes: number; remainingLength: number } | undefined {
  let length = 0;
  for (let i = 1; i <= 4; i++) {
    const byte = data[i];
    if (byte === undefined) return undefined;
    length += (byte & 0x7f) * 128 ** (i - 1);
    if ((byte & 0x80) === 0) return { headerBytes: i + 1, remainingLength: length };
  }
  throw new Error("malformed remaining length");
}

/** Packet types (the high nibble of the first byte). */
export const CONNACK = 2;
export const PUBLISH = 3;
export const PUBACK = 4;
export const SUBACK = 9;

/** A PUBLISH as on the wire, and where its packet id sits (QoS 1). */
export function publishTemplate(
  topic: string,
  qos: 0 | 1,
  payloadBytes: number,
): { bytes: Buffer; packetIdOffset: number } {
  const topicField = mqttString(topic);
  const body = Buffer.concat([
    topicField,
    qos === 1 ? Buffer.from([0, 1]) : Buffer.alloc(0),
    Buffer.alloc(payloadBytes, 0x66),
  ]);
  const bytes = packet(0x30 | (qos << 1), body);
  return { bytes, packetIdOffset: bytes.length - body.length + topicField.length };
}

/** SUBSCRIBE to one filter at QoS 0, packet id 1. */
export function subscribePacket(filter: string): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString(filter), Buffer.from([0])]));
}
