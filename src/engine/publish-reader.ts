import { type PropertiesSource, readPublishProperties } from "./publish-properties.js";

/** The parts of mqtt-packet's parser the reader works on. */
export interface ReadableParser {
  packet: {
    cmd: string | null;
    retain: boolean;
    qos: number;
    dup: boolean;
    length: number;
    topic: string | null;
    messageId?: number;
    properties?: unknown;
    payload: Buffer | null;
  };
  error: Error | null;
  settings: { protocolVersion?: number };
  _stateCounter: number;
  _list: {
    length: number;
    append(buffer: Buffer): unknown;
    consume(bytes: number): unknown;
    getBuffers(): Buffer[];
  };
  _newPacket(): boolean;
  parse(buffer: Buffer): number;
}

/** What the reader checks itself; anything past these goes to the parser, which reports it. */
export interface PublishReaderLimits {
  maxPacketBytes: number;
  maxTopicBytes: number;
}

/** The parser's state while a packet's body arrives (`_parsePayload`). */
const PAYLOAD_STATE = 2;
const NEW_PACKET_STATE = 3;
const PUBLISH = 0x30;

/** readPublishProperties reads a parser's list: one object, pointed at each chunk in turn. */
const chunkOnly: Buffer[] = [Buffer.alloc(0)];
const propertiesSource: PropertiesSource = {
  packet: { length: 0 },
  _pos: 0,
  _list: { getBuffers: () => chunkOnly },
};

/**
 * A parser's `parse` that reads the PUBLISHes a socket chunk holds straight from the chunk,
 * with `parse` (mqtt-packet's own, through the packet guard's checks) for everything else.
 *
 * mqtt-packet reads a packet in four states through its buffer list: every byte, number and
 * slice read there is a new Buffer (and an array for its position), and every step calls a
 * disabled debug logger with rest arguments, an array each; on the publishers' node of two at
 * QoS 0 the parser made most of the garbage and its collection was a third of the node's CPU.
 *
 * A PUBLISH is read here when all of it is in the chunk, its topic is ASCII without U+0000 and
 * non-empty (no Topic Alias), its packet identifier is not 0, it is within the packet guard's
 * size and topic limits, and its MQTT 5 properties are empty or read by readPublishProperties:
 * the same packet object, fields set in the same order, as the parser's, emitted through the
 * parser's own `_newPacket` (so the read gates, the pacer and aedes see it as before); so is an
 * acknowledgement of a packet identifier alone (readAcknowledgement). Any other
 * whole packet goes to `parse` alone, from a clean state, as if the parser had read up to
 * there; a packet the chunk cuts, and what follows, too. A PUBLISH the read gate holds leaves
 * the parser as its own loop would: waiting to emit it, the bytes after it in its list.
 */
export function readPublishesFirst(
  parse: (this: ReadableParser, buffer: Buffer) => number,
  limits: PublishReaderLimits,
): (this: ReadableParser, buffer: Buffer) => number {
  return function readPublishes(this: ReadableParser, buffer: Buffer): number {
    let chunk = buffer;
    // A PUBLISH a read gate held, offered again (ReadGate.resume): emitted as the parser's loop
    // would, then what its list holds after it is read here with the chunk.
    if (this.error === null && this._stateCounter === NEW_PACKET_STATE) {
      if (!this._newPacket()) {
        this._list.append(chunk);
        return this._list.length;
      }
      this._stateCounter = 0;
      if (this.error !== null) {
        this._list.append(chunk);
        return this._list.length;
      }
      // bl's own array, which consume() empties: a copy.
      const rest = this._list.getBuffers().slice();
      if (rest.length > 0) {
        this._list.consume(this._list.length);
        chunk =
          rest.length === 1 && chunk.length === 0
            ? (rest[0] as Buffer)
            : Buffer.concat([...rest, chunk]);
      }
    }
    // The end of a PUBLISH that the last chunk cut: the parser finishes it, then reading resumes.
    if (
      this.error === null &&
      this._stateCounter === PAYLOAD_STATE &&
      this.packet.length > this._list.length
    ) {
      const missing = this.packet.length - this._list.length;
      if (chunk.length <= missing) return parse.call(this, chunk);
      parse.call(this, chunk.subarray(0, missing));
      chunk = chunk.subarray(missing);
      if (!between(this)) {
        this._list.append(chunk);
        return this._list.length;
      }
    }
    if (!between(this)) return parse.call(this, chunk);
    const v5 = this.settings.protocolVersion === 5;
    let at = 0;
    while (at < chunk.length) {
      // Remaining length: at most four bytes.
      let length = 0;
      let multiplier = 1;
      let bodyStart = at + 1;
      let complete = false;
      for (let i = 0; i < 4 && bodyStart < chunk.length; i++) {
        const byte = chunk[bodyStart++] as number;
        length += (byte & 0x7f) * multiplier;
        multiplier *= 0x80;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      const bodyEnd = bodyStart + length;
      if (!complete || bodyEnd > chunk.length || bodyEnd - at > limits.maxPacketBytes) break;
      const read =
        bodyEnd - bodyStart === 2 && ACKNOWLEDGEMENTS[chunk[at] as number] !== undefined
          ? readAcknowledgement(this, chunk, at, bodyStart, v5)
          : readPublish(this, chunk, at, bodyStart, bodyEnd, v5, limits);
      if (read === HELD) {
        // As the parser's loop leaves it: `_newPacket` to run again and take this packet's
        // body off its list.
        this._stateCounter = NEW_PACKET_STATE;
        this._list.append(chunk.subarray(bodyStart));
        return this._list.length;
      }
      // Any other packet, whole in the chunk: the parser reads it alone.
      if (read === UNREAD) parse.call(this, chunk.subarray(at, bodyEnd));
      at = bodyEnd;
      if (!between(this)) {
        this._list.append(chunk.subarray(at));
        return this._list.length;
      }
    }
    if (at === chunk.length) return 0;
    return parse.call(this, at === 0 ? chunk : chunk.subarray(at));
  };
}

/**
 * The first byte of each acknowledgement the reader takes (its required flags: PUBREL's are
 * 0x2), and its name.
 */
const ACKNOWLEDGEMENTS: Record<number, string | undefined> = {
  64: "puback",
  80: "pubrec",
  98: "pubrel",
  112: "pubcomp",
};

const UNREAD = 0;
const EMITTED = 1;
const HELD = 2;

/**
 * Reads the packet whose body is `bodyStart` to `bodyEnd` of the chunk (its fixed header from
 * `at`) if it is a PUBLISH the reader takes, and emits it: UNREAD (nothing done), EMITTED, or
 * HELD by a read gate.
 */
function readPublish(
  parser: ReadableParser,
  chunk: Buffer,
  at: number,
  bodyStart: number,
  bodyEnd: number,
  v5: boolean,
  limits: PublishReaderLimits,
): number {
  const first = chunk[at] as number;
  const qos = (first >> 1) & 0x03;
  // DUP on QoS 0 [MQTT-3.3.1-2]: the guard reports it
  const dupAtQos0 = qos === 0 && (first & 0x08) !== 0;
  if ((first & 0xf0) !== PUBLISH || qos === 3 || dupAtQos0 || bodyEnd - bodyStart < 2) {
    return UNREAD;
  }
  const topicBytes = ((chunk[bodyStart] as number) << 8) | (chunk[bodyStart + 1] as number);
  const topicStart = bodyStart + 2;
  let position = topicStart + topicBytes;
  if (topicBytes === 0 || topicBytes > limits.maxTopicBytes || position > bodyEnd) return UNREAD;
  if (!plainAscii(chunk, topicStart, position)) return UNREAD;
  let messageId = 0;
  if (qos > 0) {
    if (position + 2 > bodyEnd) return UNREAD;
    messageId = ((chunk[position] as number) << 8) | (chunk[position + 1] as number);
    if (messageId === 0) return UNREAD;
    position += 2;
  }
  let properties: unknown;
  if (v5) {
    if (position >= bodyEnd) return UNREAD;
    if (chunk[position] === 0) position++;
    else {
      chunkOnly[0] = chunk;
      propertiesSource._pos = position;
      propertiesSource.packet.length = bodyEnd;
      propertiesSource.packet.properties = null;
      properties = readPublishProperties(propertiesSource);
      chunkOnly[0] = EMPTY;
      if (properties === undefined) return UNREAD;
      position = propertiesSource._pos;
      // An empty list written in more than one byte: undefined, as the reader sets it.
      if (propertiesSource.packet.properties === undefined) properties = undefined;
    }
  }
  const packet = parser.packet;
  packet.cmd = "publish";
  packet.retain = (first & 0x01) !== 0;
  packet.qos = qos;
  packet.dup = (first & 0x08) !== 0;
  packet.length = bodyEnd - bodyStart;
  packet.topic = chunk.toString("latin1", topicStart, topicStart + topicBytes);
  if (qos > 0) packet.messageId = messageId;
  // As mqtt-packet with the guard's property reader: an own `properties` on every MQTT 5
  // PUBLISH, undefined when the list is empty.
  if (v5) packet.properties = properties;
  packet.payload = chunk.subarray(position, bodyEnd);
  return parser._newPacket() ? EMITTED : HELD;
}

/**
 * A PUBACK, PUBREC, PUBREL or PUBCOMP of a packet identifier alone (remaining length 2: at
 * MQTT 5, reason code 0 and no properties), read as mqtt-packet reads it, and emitted: a QoS 1
 * subscriber answers each message with one. UNREAD for identifier 0 (the guard reports it).
 */
function readAcknowledgement(
  parser: ReadableParser,
  chunk: Buffer,
  at: number,
  bodyStart: number,
  v5: boolean,
): number {
  const first = chunk[at] as number;
  const messageId = ((chunk[bodyStart] as number) << 8) | (chunk[bodyStart + 1] as number);
  if (messageId === 0) return UNREAD;
  const packet = parser.packet as ReadableParser["packet"] & { reasonCode?: number };
  packet.cmd = ACKNOWLEDGEMENTS[first] as string;
  packet.retain = (first & 0x01) !== 0;
  packet.qos = (first >> 1) & 0x03;
  packet.dup = (first & 0x08) !== 0;
  packet.length = 2;
  packet.messageId = messageId;
  if (v5) packet.reasonCode = 0;
  return parser._newPacket() ? EMITTED : HELD;
}

const EMPTY = Buffer.alloc(0);

/** Whether the parser is between packets: no error, no packet begun, nothing buffered. */
function between(parser: ReadableParser): boolean {
  return parser.error === null && parser._stateCounter === 0 && parser._list.length === 0;
}

/** Bytes 0x01-0x7f only: a topic whose string is the same in Latin-1 and UTF-8, no U+0000. */
function plainAscii(bytes: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const byte = bytes[i] as number;
    if (byte === 0 || byte >= 0x80) return false;
  }
  return true;
}
