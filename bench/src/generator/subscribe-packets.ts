/**
 * The MQTT 3.1.1 packets of a subscribe storm by hand (see connect-packets.ts for why not
 * mqtt.js): SUBSCRIBE with one filter, DISCONNECT, and a splitter that cuts the bytes a socket
 * receives into whole packets.
 */

function remainingLength(length: number): Buffer {
  const bytes: number[] = [];
  let rest = length;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    bytes.push(byte);
  } while (rest > 0);
  return Buffer.from(bytes);
}

/** SUBSCRIBE (fixed header flags 0b0010 [MQTT-3.8.1-1]) of one filter at `qos`. */
export function subscribePacket(messageId: number, filter: string, qos: 0 | 1 | 2): Buffer {
  const topic = Buffer.from(filter, "utf8");
  const body = Buffer.alloc(2 + 2 + topic.length + 1);
  body.writeUInt16BE(messageId, 0);
  body.writeUInt16BE(topic.length, 2);
  topic.copy(body, 4);
  body[4 + topic.length] = qos;
  return Buffer.concat([Buffer.from([0x82]), remainingLength(body.length), body]);
}

export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** A whole packet: its type (the fixed header's high nibble) and its variable header + payload. */
export interface Frame {
  type: number;
  body: Buffer;
}

/**
 * Cuts a byte stream into MQTT packets: `push` each chunk a socket delivers, get back the
 * packets it completed (a packet split across chunks comes out with the chunk that ends it).
 */
export class FrameSplitter {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: Frame[] = [];
    let offset = 0;
    for (;;) {
      const header = this.pending[offset];
      if (header === undefined) break;
      let length = 0;
      let multiplier = 1;
      let cursor = offset + 1;
      let complete = false;
      while (cursor < this.pending.length && cursor - offset <= 4) {
        const byte = this.pending[cursor++] ?? 0;
        length += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || cursor + length > this.pending.length) break;
      frames.push({ type: header >> 4, body: this.pending.subarray(cursor, cursor + length) });
      offset = cursor + length;
    }
    this.pending = offset === 0 ? this.pending : this.pending.subarray(offset);
    return frames;
  }
}

/** MQTT packet types the storm reads. */
export const CONNACK = 2;
export const SUBACK = 9;
