/**
 * The load generator's message body. Subscribers learn from it who sent a message, which one
 * it was and when, so latency, losses and duplicates are computed where messages arrive.
 *
 * Layout (big-endian): publisher index u32 | sequence number u32 | send time u64 (ns, the
 * monotonic clock `process.hrtime.bigint()`, which every process on one machine shares) |
 * filler up to the payload size.
 */
export const PAYLOAD_HEADER_BYTES = 16;

export interface PayloadStamp {
  publisherIndex: number;
  sequence: number;
  sentAtNs: bigint;
}

/**
 * Builds one publisher's payloads from a template. Each message gets a buffer of its own:
 * MQTT.js keeps a reference to the payload in the corked socket's queue (and, at QoS 1/2, in
 * its outgoing store for retransmission), so a buffer rewritten in place would corrupt
 * messages not yet flushed.
 */
export class PayloadWriter {
  private readonly template: Buffer;

  constructor(
    private readonly publisherIndex: number,
    payloadBytes: number,
  ) {
    if (payloadBytes < PAYLOAD_HEADER_BYTES)
      throw new RangeError(`payload must be at least ${PAYLOAD_HEADER_BYTES} bytes`);
    this.template = Buffer.alloc(payloadBytes, 0x2e);
    this.template.writeUInt32BE(publisherIndex, 0);
  }

  stamp(sequence: number, sentAtNs: bigint): Buffer {
    // allocUnsafe takes small buffers from Node's shared pool: no per-message allocation call.
    const payload = Buffer.allocUnsafe(this.template.length);
    this.template.copy(payload);
    payload.writeUInt32BE(sequence, 4);
    payload.writeBigUInt64BE(sentAtNs, 8);
    return payload;
  }

  get index(): number {
    return this.publisherIndex;
  }
}

/** Reads a payload's header; undefined for a message that is not the generator's. */
export function readStamp(payload: Buffer): PayloadStamp | undefined {
  if (payload.length < PAYLOAD_HEADER_BYTES) return undefined;
  return {
    publisherIndex: payload.readUInt32BE(0),
    sequence: payload.readUInt32BE(4),
    sentAtNs: payload.readBigUInt64BE(8),
  };
}
