import { Packr, Unpackr } from "msgpackr";
import { type EchoCheck, sameBytes } from "./echo-filter.js";
import { BufferReader, KnownBytesTable } from "./known-bytes.js";
import { deeplyFrozen } from "./publish-encoder.js";

/** A message on the emitter, as aedes publishes it. */
export interface EmittedMessage {
  topic: string;
}

/**
 * mqemitter-redis' envelope is msgpack, written and read there with msgpack-lite; msgpackr
 * writes and reads the same bytes three times faster (4.0 vs 1.3 us to encode, 5.0 vs 1.4 us to
 * decode an aedes packet here). undefined is written as nil, as msgpack-lite does, and no
 * msgpackr extensions (records) are used, so other nodes' msgpack-lite reads it.
 */
const packr = new Packr({
  useRecords: false,
  encodeUndefinedAsNil: true,
  moreTypes: false,
  variableMapSize: true,
});
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/**
 * How a node writes the messages it sends the others. `msgpack`: mqemitter-redis' envelope
 * `{ id, msg }`, which every Sluice node reads (and so does stock aedes on mqemitter-redis).
 * `compact`: Sluice's own layout of an aedes PUBLISH, fields in a fixed order, no names, read
 * by every version that has `redis.messageFormat`; a message of another shape still goes as
 * msgpack.
 */
export type EnvelopeFormat = "msgpack" | "compact";

/** The envelope `{ id, msg }`: a fixmap of 2, then the key "id". */
export const ENVELOPE_HEAD = Buffer.from([0x82, 0xa2, 0x69, 0x64]);
/**
 * The compact envelope: 0xc1 (a byte msgpack never uses, so that a reader of msgpack alone
 * refuses it whole), "SL", the layout's version. As long as ENVELOPE_HEAD, so that the id (a
 * fixstr in both) starts at the same place.
 */
export const COMPACT_HEAD = Buffer.from([0xc1, 0x53, 0x4c, 0x01]);
/** msgpack's fixstr: strings of up to 31 bytes, their length in the low five bits. */
const FIXSTR = 0xa0;
const FIXSTR_MASK = 0xe0;
/** Envelopes are written into slabs of this size (one of their own when larger). */
const SLAB_BYTES = 64 * 1024;

let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let position = 0;

/**
 * The last frozen property list written, and its bytes. The reader hands a publisher's repeated
 * list on as one frozen object (publish-properties.ts): frozen all through, it cannot change,
 * so its bytes are built once, as the publish encoder does for the PUBLISH.
 */
let keptFor: object | undefined;
let keptBytes: Buffer = Buffer.alloc(0);

/**
 * mqemitter-redis' envelope of a message, as this node writes it: the bytes msgpackr writes
 * (packr above), written here directly for the fields an aedes packet has (strings, 32-bit
 * unsigned integers, booleans, nil, Buffers, and MQTT 5 properties: arrays and plain objects of
 * those) at a quarter of msgpackr's cost (0.3 vs 1.25 µs for a 64-byte payload); anything else
 * goes to msgpackr.
 */
export function encodeEnvelope(
  id: string,
  msg: EmittedMessage,
  format: EnvelopeFormat = "msgpack",
): Buffer {
  return (format === "compact" ? encodeCompact(id, -1, msg) : undefined) ?? encode(id, -1, msg);
}

/**
 * The envelope of a message whose id is `prefix` followed by `sequence` in base 36, the id
 * written without a string made for it (a node numbers its messages so).
 */
export function encodeNumberedEnvelope(
  prefix: string,
  sequence: number,
  msg: EmittedMessage,
  format: EnvelopeFormat = "msgpack",
): Buffer {
  return (
    (format === "compact" ? encodeCompact(prefix, sequence, msg) : undefined) ??
    encode(prefix, sequence, msg)
  );
}

/** The id `prefix` + `sequence` in base 36, or `prefix` alone when `sequence` is negative. */
function idOf(prefix: string, sequence: number): string {
  return sequence < 0 ? prefix : prefix + sequence.toString(36);
}

function encode(prefix: string, sequence: number, msg: EmittedMessage): Buffer {
  const fields = msg as unknown as Record<string, unknown>;
  let start = position;
  reserve(start, 32 + prefix.length * 3);
  start = position;
  slab[position++] = 0x82;
  slab[position++] = 0xa2;
  slab[position++] = 0x69;
  slab[position++] = 0x64;
  if (sequence < 0 || !writeNumberedId(prefix, sequence)) writeString(idOf(prefix, sequence));
  slab[position++] = 0xa3;
  slab[position++] = 0x6d;
  slab[position++] = 0x73;
  slab[position++] = 0x67;
  // The map's head, written once its entries are counted: an aedes packet has fewer than 16.
  const head = position++ - start;
  let count = 0;
  // Own enumerable keys, as Object.keys lists them, with no array made for them.
  for (const key in fields) {
    if (!Object.hasOwn(fields, key)) continue;
    const value = fields[key];
    if (key === "properties") {
      // An MQTT 5 PUBLISH without properties has them undefined (one shape for every PUBLISH,
      // see publish-properties.ts): left out, as when absent, so the envelope carries no nil.
      if (value === undefined) continue;
      if (value === keptFor && keptFor !== undefined) {
        start = reserve(start, 16 + key.length * 3 + keptBytes.length);
        writeString(key);
        position += keptBytes.copy(slab, position);
        count++;
        continue;
      }
    }
    const bytes = valueBytes(value, 0);
    if (bytes < 0 || count === 15) {
      position = start;
      return packr.pack({ id: idOf(prefix, sequence), msg: withoutUndefinedProperties(msg) });
    }
    start = reserve(start, 16 + key.length * 3 + bytes);
    writeString(key);
    const at = position;
    writeValue(value);
    count++;
    if (
      key === "properties" &&
      typeof value === "object" &&
      value !== null &&
      deeplyFrozen(value)
    ) {
      keptFor = value;
      keptBytes = Buffer.from(slab.subarray(at, position));
    }
  }
  slab[start + head] = 0x80 | count;
  return slab.subarray(start, position);
}

/** The compact envelope's flags byte (after the id): QoS in the low two bits, then these. */
const RETAIN = 0x04;
const DUP = 0x08;
/** messageId as a key: absent (0), nil, or a 16-bit number. */
const MESSAGE_ID_NIL = 0x10;
const MESSAGE_ID_NUMBER = 0x20;
const CLIENT_ID = 0x40;
const PROPERTIES = 0x80;
/** The second flags byte: a message expiry (aedes' absolute time, ms); no other bit is used. */
const MESSAGE_EXPIRY = 0x01;
/** brokerCounter and messageExpiry are written in 6 bytes. */
const COUNTER_LIMIT = 2 ** 48;

/**
 * The compact envelope (COMPACT_HEAD, the id as a fixstr, then an aedes PUBLISH's fields in
 * a fixed order, lengths before strings and the payload, MQTT 5 properties last in msgpack);
 * undefined, having written nothing, for a message of another shape or an id that is not a
 * fixstr. The fields: two flags bytes (see RETAIN, MESSAGE_EXPIRY), brokerId (1-byte length),
 * brokerCounter (6 bytes), topic (2-byte length), payload (4-byte length), messageId (2 bytes,
 * when a number), clientId (2-byte length, when there is one), messageExpiry (6 bytes, when
 * there is one), properties (when there are some).
 */
function encodeCompact(prefix: string, sequence: number, msg: EmittedMessage): Buffer | undefined {
  const fields = msg as unknown as PublishFields;
  const { brokerId, brokerCounter, topic, payload, qos, clientId, messageId } = fields;
  if (
    fields.cmd !== "publish" ||
    typeof brokerId !== "string" ||
    typeof topic !== "string" ||
    !Buffer.isBuffer(payload) ||
    (qos !== 0 && qos !== 1 && qos !== 2) ||
    typeof fields.retain !== "boolean" ||
    typeof fields.dup !== "boolean" ||
    !isSixBytes(brokerCounter)
  ) {
    return undefined;
  }
  let keys = 8;
  let flags = qos | (fields.retain ? RETAIN : 0) | (fields.dup ? DUP : 0);
  // `in`, not Object.hasOwn (a sixth of its cost): an inherited one is not counted by
  // Object.keys below, and the message then goes as msgpack
  if ("messageId" in fields) {
    keys++;
    if (messageId === undefined || messageId === null) flags |= MESSAGE_ID_NIL;
    else if (typeof messageId === "number" && messageId >>> 0 === messageId && messageId < 0x10000)
      flags |= MESSAGE_ID_NUMBER;
    else return undefined;
  }
  if ("clientId" in fields) {
    keys++;
    if (typeof clientId !== "string") return undefined;
    flags |= CLIENT_ID;
  }
  const properties = fields.properties;
  let propertyBytes = 0;
  if ("properties" in fields) {
    keys++;
    // undefined: an MQTT 5 PUBLISH without properties, left out as the msgpack envelope does
    if (properties !== undefined) {
      propertyBytes = properties === keptFor ? keptBytes.length : valueBytes(properties, 0);
      if (propertyBytes < 0) return undefined;
      flags |= PROPERTIES;
    }
  }
  const messageExpiry = fields.messageExpiry;
  let more = 0;
  if ("messageExpiry" in fields) {
    keys++;
    if (!isSixBytes(messageExpiry)) return undefined;
    more |= MESSAGE_EXPIRY;
  }
  // nothing else: any other field (nl) is msgpack's to carry. Object.keys: a for-in loop asking
  // hasOwn of each key cost five times as much.
  if (Object.keys(fields).length !== keys) return undefined;

  const clientIdBytes = flags & CLIENT_ID ? (clientId as string).length * 3 : 0;
  reserve(
    position,
    // the head, an id written as a string, the fields' heads and lengths
    96 +
      prefix.length * 3 +
      brokerId.length * 3 +
      topic.length * 3 +
      payload.length +
      clientIdBytes +
      propertyBytes,
  );
  const start = position;
  slab[position++] = 0xc1;
  slab[position++] = 0x53;
  slab[position++] = 0x4c;
  slab[position++] = 0x01;
  if (sequence < 0 || !writeNumberedId(prefix, sequence)) {
    writeString(idOf(prefix, sequence));
    if (((slab[start + COMPACT_HEAD.length] as number) & FIXSTR_MASK) !== FIXSTR) {
      position = start;
      return undefined;
    }
  }
  slab[position++] = flags;
  slab[position++] = more;
  if (!writeSizedString(brokerId, 1)) {
    position = start;
    return undefined;
  }
  position = slab.writeUIntBE(brokerCounter, position, 6);
  if (!writeSizedString(topic, 2)) {
    position = start;
    return undefined;
  }
  position = slab.writeUInt32BE(payload.length, position);
  position += payload.copy(slab, position);
  if (flags & MESSAGE_ID_NUMBER) position = slab.writeUInt16BE(messageId as number, position);
  if (flags & CLIENT_ID && !writeSizedString(clientId as string, 2)) {
    position = start;
    return undefined;
  }
  if (more & MESSAGE_EXPIRY) position = slab.writeUIntBE(messageExpiry as number, position, 6);
  if (flags & PROPERTIES) {
    if (properties === keptFor) position += keptBytes.copy(slab, position);
    else {
      const at = position;
      writeValue(properties);
      if (typeof properties === "object" && properties !== null && deeplyFrozen(properties)) {
        keptFor = properties;
        keptBytes = Buffer.from(slab.subarray(at, position));
      }
    }
  }
  return slab.subarray(start, position);
}

/** An aedes PUBLISH's fields, as the compact envelope reads them. */
interface PublishFields {
  cmd?: unknown;
  brokerId?: unknown;
  brokerCounter?: unknown;
  topic?: unknown;
  payload?: unknown;
  qos?: unknown;
  retain?: unknown;
  dup?: unknown;
  messageId?: unknown;
  clientId?: unknown;
  properties?: unknown;
  messageExpiry?: unknown;
}

/** Whether `value` is an integer that 6 bytes hold. */
function isSixBytes(value: unknown): value is number {
  return (
    typeof value === "number" && value >= 0 && value < COUNTER_LIMIT && Number.isInteger(value)
  );
}

/**
 * A string's UTF-8 bytes after their length in `lengthBytes` bytes (1 or 2); false when it is
 * longer than that can say (the position then is wherever the caller goes back from).
 */
function writeSizedString(value: string, lengthBytes: 1 | 2): boolean {
  const length = value.length;
  const max = lengthBytes === 1 ? 0xff : 0xffff;
  const head = position;
  // ASCII, the usual case, copied here; anything else by Buffer#write
  let bytes = length <= max ? copyAscii(value, head + lengthBytes) : 0;
  if (bytes !== length) {
    bytes = Buffer.byteLength(value);
    if (bytes > max) return false;
    slab.write(value, head + lengthBytes, bytes, "utf8");
  }
  if (lengthBytes === 1) slab[head] = bytes;
  else slab.writeUInt16BE(bytes, head);
  position = head + lengthBytes + bytes;
  return true;
}

/**
 * The message without its `properties` when they are undefined, and without their undefined
 * members, as this writer leaves them out (msgpackr would write them as nil, read back as null).
 */
function withoutUndefinedProperties(msg: EmittedMessage): EmittedMessage {
  if (!Object.hasOwn(msg, "properties")) return msg;
  const { properties, ...rest } = msg as EmittedMessage & { properties?: unknown };
  if (properties === undefined) return rest;
  if (typeof properties !== "object" || properties === null || Array.isArray(properties)) {
    return msg;
  }
  const members = properties as Record<string, unknown>;
  const keys = Object.keys(members);
  if (keys.every((key) => members[key] !== undefined)) return msg;
  const defined: Record<string, unknown> = {};
  for (const key of keys) if (members[key] !== undefined) defined[key] = members[key];
  return { ...rest, properties: defined } as EmittedMessage;
}

/** ASCII digits of base 36, as Number#toString(36) writes them. */
const BASE36 = Buffer.from("0123456789abcdefghijklmnopqrstuvwxyz");

/**
 * Writes `prefix` and `sequence` in base 36 as one fixstr; false, having written nothing, when
 * that is not an ASCII string of under 32 bytes.
 */
function writeNumberedId(prefix: string, sequence: number): boolean {
  let digits = 1;
  for (let rest = sequence; rest >= 36; rest = Math.floor(rest / 36)) digits++;
  const length = prefix.length + digits;
  if (length >= 32 || !Number.isSafeInteger(sequence)) return false;
  for (let i = 0; i < prefix.length; i++) {
    const code = prefix.charCodeAt(i);
    if (code >= 0x80) return false;
    slab[position + 1 + i] = code;
  }
  slab[position] = FIXSTR | length;
  let at = position + length;
  let rest = sequence;
  for (let i = 0; i < digits; i++) {
    slab[at--] = BASE36[rest % 36] as number;
    rest = Math.floor(rest / 36);
  }
  position += 1 + length;
  return true;
}

/** How deep MQTT 5 properties nest: properties, user properties, a name's values. */
const MAX_DEPTH = 3;

/**
 * At most the bytes a value takes, or -1 for what is left to msgpackr: numbers other than
 * 32-bit unsigned integers, objects other than arrays and plain objects, deeper nesting.
 */
function valueBytes(value: unknown, depth: number): number {
  if (typeof value === "string") return 5 + value.length * 3;
  if (typeof value === "number") return value >>> 0 === value ? 5 : -1;
  if (value === undefined || value === null || typeof value === "boolean") return 1;
  if (Buffer.isBuffer(value)) return 5 + value.length;
  if (typeof value !== "object" || depth === MAX_DEPTH) return -1;
  let bytes = 5;
  if (Array.isArray(value)) {
    if (value.constructor !== Array) return -1;
    for (const item of value) {
      const size = valueBytes(item, depth + 1);
      if (size < 0) return -1;
      bytes += size;
    }
    return bytes;
  }
  // Object's prototype, none, or one inheriting nothing itself (the reader's user properties):
  // a user property named toJSON or constructor is a name like any other here.
  const prototype = Object.getPrototypeOf(value) as object | null;
  if (prototype !== null && Object.getPrototypeOf(prototype) !== null) return -1;
  const entries = value as Record<string, unknown>;
  for (const key of Object.keys(entries)) {
    // a user property may be named so: msgpackr's to write, and the reader leaves it to
    // msgpackr (which has its own rule for it), so the compact layout must not carry it
    if (key === "__proto__") return -1;
    const size = valueBytes(entries[key], depth + 1);
    if (size < 0) return -1;
    bytes += 5 + key.length * 3 + size;
  }
  return bytes;
}

/**
 * Room for `bytes` more after `position`: a new slab when needed, the envelope begun at
 * `start` copied over. Returns where that envelope now starts.
 */
function reserve(start: number, bytes: number): number {
  if (position + bytes <= slab.length) return start;
  const begun = position - start;
  const next = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, begun + bytes));
  slab.copy(next, 0, start, position);
  slab = next;
  position = begun;
  return 0;
}

/** Writes a value `valueBytes` accepted. */
function writeValue(value: unknown): void {
  if (typeof value === "string") writeString(value);
  else if (typeof value === "number") writeUnsigned(value);
  else if (typeof value === "boolean") slab[position++] = value ? 0xc3 : 0xc2;
  else if (value === undefined || value === null) slab[position++] = 0xc0;
  else if (Buffer.isBuffer(value)) writeBytes(value);
  else if (Array.isArray(value)) {
    writeHead(0x90, 0xdc, value.length);
    for (const item of value) writeValue(item);
  } else {
    // An undefined member is left out, as msgpackr leaves out an undefined field of the
    // envelope: aedes sets a resolved Topic Alias to undefined, which read back as null and
    // then went out to a subscriber as an alias.
    const entries = value as Record<string, unknown>;
    const keys = Object.keys(entries);
    let defined = 0;
    for (const key of keys) if (entries[key] !== undefined) defined++;
    writeHead(0x80, 0xde, defined);
    for (const key of keys) {
      const member = entries[key];
      if (member === undefined) continue;
      writeString(key);
      writeValue(member);
    }
  }
}

/** An array's or a map's head: fix (up to 15 entries), 16 or 32 bits of length. */
function writeHead(fix: number, sixteen: number, length: number): void {
  if (length < 16) slab[position++] = fix | length;
  else if (length < 0x10000) {
    slab[position++] = sixteen;
    position = slab.writeUInt16BE(length, position);
  } else {
    slab[position++] = sixteen + 1;
    position = slab.writeUInt32BE(length, position);
  }
}

/**
 * Copies `value`'s characters to the slab from `at` while they are ASCII (a byte each); how many
 * it copied (a call into C++ per string cost more than these few bytes).
 */
function copyAscii(value: string, at: number): number {
  const length = value.length;
  let i = 0;
  for (; i < length; i++) {
    const code = value.charCodeAt(i);
    if (code >= 0x80) break;
    slab[at + i] = code;
  }
  return i;
}

function writeString(value: string): void {
  const length = value.length;
  if (length < 0x100) {
    // ASCII, the usual case: its bytes straight after a fixstr or str8 head.
    const head = length < 32 ? 1 : 2;
    if (copyAscii(value, position + head) === length) {
      if (head === 1) slab[position] = FIXSTR | length;
      else {
        slab[position] = 0xd9;
        slab[position + 1] = length;
      }
      position += head + length;
      return;
    }
  }
  const bytes = Buffer.byteLength(value);
  if (bytes < 32) slab[position++] = FIXSTR | bytes;
  else if (bytes < 0x100) {
    slab[position++] = 0xd9;
    slab[position++] = bytes;
  } else if (bytes < 0x10000) {
    slab[position++] = 0xda;
    position = slab.writeUInt16BE(bytes, position);
  } else {
    slab[position++] = 0xdb;
    position = slab.writeUInt32BE(bytes, position);
  }
  position += slab.write(value, position, bytes, "utf8");
}

function writeUnsigned(value: number): void {
  if (value < 0x80) slab[position++] = value;
  else if (value < 0x100) {
    slab[position++] = 0xcc;
    slab[position++] = value;
  } else if (value < 0x10000) {
    slab[position++] = 0xcd;
    position = slab.writeUInt16BE(value, position);
  } else {
    slab[position++] = 0xce;
    position = slab.writeUInt32BE(value, position);
  }
}

function writeBytes(value: Buffer): void {
  const length = value.length;
  if (length < 0x100) {
    slab[position++] = 0xc4;
    slab[position++] = length;
  } else if (length < 0x10000) {
    slab[position++] = 0xc5;
    position = slab.writeUInt16BE(length, position);
  } else {
    slab[position++] = 0xc6;
    position = slab.writeUInt32BE(length, position);
  }
  position += value.copy(slab, position);
}

/**
 * Reads an envelope: the shape this node writes (and msgpack-lite, the same bytes for these
 * values) directly, at a third of msgpackr's cost (B's busiest function after GC with two
 * nodes at QoS 1: 10 % of its CPU); anything else (floats, negative numbers, extensions, an
 * envelope of another shape) is msgpackr's. Values read as msgpackr reads them: nil as null,
 * binary as a view of `payload`, maps as plain objects.
 */
export function decodeEnvelope(payload: Buffer): { id: string; msg: EmittedMessage } {
  if (payload[0] === COMPACT_MARK) {
    const msg = readCompact(payload, 0, payload.length);
    return { id: payload.toString("utf8", ENVELOPE_ID_START, envelopeIdEnd(payload)), msg };
  }
  const envelope = readEnvelope(payload, 0, payload.length);
  if (envelope !== undefined) return envelope;
  return unpackr.unpack(payload) as { id: string; msg: EmittedMessage };
}

/** The message of an envelope, as decodeEnvelope reads it (see decodeMessageAt). */
export function decodeMessage(payload: Buffer): EmittedMessage {
  return decodeMessageAt(payload, 0, payload.length);
}

/**
 * The message of the envelope at `data[start, end)`, as decodeEnvelope reads it, its id
 * skipped unread when it is a fixstr (no string made for it: see envelopeIdOf), and no view
 * made of the envelope itself (a view cost 60-100 ns here; a subscription's messages are read
 * out of a socket read).
 */
export function decodeMessageAt(data: Buffer, start: number, end: number): EmittedMessage {
  if (data[start] === COMPACT_MARK) return readCompact(data, start, end);
  const idEnd = envelopeIdEndAt(data, start, end);
  const msg = idEnd < 0 ? readEnvelope(data, start, end)?.msg : readMessageAfter(data, idEnd, end);
  return msg ?? (unpackr.unpack(data.subarray(start, end)) as { msg: EmittedMessage }).msg;
}

/** The first byte of a compact envelope. */
const COMPACT_MARK = 0xc1;

/** A compact envelope that is cut short, or not one this node can read: it is dropped. */
export class MalformedEnvelopeError extends Error {
  constructor(what: string) {
    super(`malformed compact envelope: ${what}`);
    this.name = "MalformedEnvelopeError";
  }
}

/**
 * The message of the compact envelope at `data[start, end)` (see encodeCompact), made by an
 * object literal, one per shape: clientId first when there is one; properties and a message
 * expiry (MQTT 5 only) set after it.
 * Strings are read as the msgpack reader reads a message's (readKeptString). Throws a
 * MalformedEnvelopeError for anything but a whole, well-formed envelope of this version.
 */
function readCompact(data: Buffer, start: number, end: number): EmittedMessage {
  const idEnd = envelopeIdEndAt(data, start, end);
  // with the first byte COMPACT_MARK, the whole head was compared there
  if (idEnd < 0) throw new MalformedEnvelopeError("unknown version or no id");
  reader.use(data);
  at = idEnd;
  limit = end;
  if (at + 2 > limit) throw new MalformedEnvelopeError("cut short");
  const flags = data[at++] as number;
  const more = data[at++] as number;
  const qos = flags & 0x03;
  if (qos === 3 || (flags & MESSAGE_ID_NIL && flags & MESSAGE_ID_NUMBER) || more > MESSAGE_EXPIRY) {
    throw new MalformedEnvelopeError("bad flags");
  }
  const brokerId = readSizedString(data, 1);
  const brokerCounter = readSixBytes(data);
  const topic = readSizedString(data, 2);
  const payloadLength = readLength(data, 4);
  const payload = payloadLength < 0 ? UNREAD : readBinary(data, payloadLength);
  if (payload === UNREAD) throw new MalformedEnvelopeError("cut short");
  let messageId: number | null = null;
  if (flags & MESSAGE_ID_NUMBER) {
    messageId = readLength(data, 2);
    if (messageId < 0) throw new MalformedEnvelopeError("cut short");
  }
  const clientId = flags & CLIENT_ID ? readSizedString(data, 2) : undefined;
  const messageExpiry = more & MESSAGE_EXPIRY ? readSixBytes(data) : undefined;
  let properties: unknown;
  if (flags & PROPERTIES) {
    properties = readValue(data, 1);
    if (properties === UNREAD) throw new MalformedEnvelopeError("unreadable properties");
  }
  if (at !== limit) throw new MalformedEnvelopeError("bytes after the message");
  const retain = (flags & RETAIN) !== 0;
  const dup = (flags & DUP) !== 0;
  const withId = (flags & (MESSAGE_ID_NIL | MESSAGE_ID_NUMBER)) !== 0;
  const message: Record<string, unknown> =
    clientId === undefined
      ? withId
        ? { cmd: "publish", brokerId, brokerCounter, topic, payload, qos, retain, dup, messageId }
        : { cmd: "publish", brokerId, brokerCounter, topic, payload, qos, retain, dup }
      : withId
        ? {
            clientId,
            cmd: "publish",
            brokerId,
            brokerCounter,
            topic,
            payload,
            qos,
            retain,
            dup,
            messageId,
          }
        : { clientId, cmd: "publish", brokerId, brokerCounter, topic, payload, qos, retain, dup };
  if (flags & PROPERTIES) message.properties = properties;
  if (messageExpiry !== undefined) message.messageExpiry = messageExpiry;
  return message as unknown as EmittedMessage;
}

/** A 6-byte unsigned integer at `at`, `at` moved past it. */
function readSixBytes(data: Buffer): number {
  if (at + 6 > limit) throw new MalformedEnvelopeError("cut short");
  const value = data.readUIntBE(at, 6);
  at += 6;
  return value;
}

/** A string after its length in `lengthBytes` bytes, as readKeptString reads it. */
function readSizedString(data: Buffer, lengthBytes: 1 | 2): string {
  const length =
    lengthBytes === 1 ? (at < limit ? (data[at++] as number) : -1) : readLength(data, 2);
  const text = length < 0 ? UNREAD : readKeptString(data, length);
  if (text === UNREAD) throw new MalformedEnvelopeError("cut short");
  return text;
}

/** The id of an envelope. */
export function envelopeIdOf(payload: Buffer): string {
  const idEnd = envelopeIdEnd(payload);
  if (idEnd < 0) return decodeEnvelope(payload).id;
  return payload.toString("utf8", ENVELOPE_ID_START, idEnd);
}

/** What the reader could not read (left to msgpackr). */
const UNREAD = Symbol("unread");
/** Where the reader is in the envelope being read, and where that envelope ends. */
let at = 0;
let limit = 0;

function readEnvelope(
  payload: Buffer,
  start: number,
  end: number,
): { id: string; msg: EmittedMessage } | undefined {
  if (end - start < 9 || !sameBytes(payload, start, ENVELOPE_HEAD)) return undefined;
  at = start + ENVELOPE_HEAD.length;
  limit = end;
  const id = readValue(payload, 0);
  if (typeof id !== "string") return undefined;
  const msg = readMessageAfter(payload, at, end);
  return msg === undefined ? undefined : { id, msg };
}

/**
 * The message after the id, which ends at `idEnd`, the envelope at `end`; undefined if
 * msgpackr is to read it.
 */
function readMessageAfter(payload: Buffer, idEnd: number, end: number): EmittedMessage | undefined {
  reader.use(payload);
  at = idEnd;
  limit = end;
  if (
    at + 4 > limit ||
    payload[at] !== 0xa3 ||
    payload[at + 1] !== 0x6d ||
    payload[at + 2] !== 0x73 ||
    payload[at + 3] !== 0x67
  ) {
    return undefined;
  }
  at += 4;
  const msg = readValue(payload, 0);
  if (msg === UNREAD || typeof msg !== "object" || msg === null || Array.isArray(msg)) {
    return undefined;
  }
  if (at !== limit) return undefined;
  return msg as EmittedMessage;
}

/** One value at `at`, `at` moved past it; UNREAD for what msgpackr must read. */
function readValue(payload: Buffer, depth: number): unknown {
  if (at >= limit) return UNREAD;
  const head = payload[at++] as number;
  if (head < 0x80) return head;
  if ((head & 0xe0) === FIXSTR) {
    return depth > 0 ? readKeptString(payload, head & 0x1f) : readString(payload, head & 0x1f);
  }
  if ((head & 0xf0) === 0x80) return readMap(payload, head & 0x0f, depth);
  if ((head & 0xf0) === 0x90) return readArray(payload, head & 0x0f, depth);
  switch (head) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xcc:
      return at < limit ? payload[at++] : UNREAD;
    case 0xcd:
      return orUnread(readLength(payload, 2));
    case 0xce:
      return orUnread(readLength(payload, 4));
    case 0xd9:
      if (at >= limit) return UNREAD;
      return depth > 0
        ? readKeptString(payload, payload[at++] as number)
        : readSized(payload, head, payload[at++] as number, depth);
    case 0xc4:
      return readSized(payload, head, at < limit ? (payload[at++] as number) : -1, depth);
    case 0xda:
    case 0xc5:
    case 0xde:
    case 0xdc:
      return readSized(payload, head, readLength(payload, 2), depth);
    case 0xdb:
    case 0xc6:
    case 0xdf:
    case 0xdd:
      return readSized(payload, head, readLength(payload, 4), depth);
    default:
      return UNREAD;
  }
}

/** A string, binary, map or array whose length is given (-1: past the end). */
function readSized(payload: Buffer, head: number, length: number, depth: number): unknown {
  if (length < 0) return UNREAD;
  switch (head) {
    case 0xd9:
    case 0xda:
    case 0xdb:
      return readString(payload, length);
    case 0xc4:
    case 0xc5:
    case 0xc6:
      return readBinary(payload, length);
    case 0xde:
    case 0xdf:
      return readMap(payload, length, depth);
    default:
      return readArray(payload, length, depth);
  }
}

/** A big-endian unsigned length of 2 or 4 bytes; -1 past the end. */
function readLength(payload: Buffer, bytes: 2 | 4): number {
  if (at + bytes > limit) return -1;
  const value = bytes === 2 ? payload.readUInt16BE(at) : payload.readUInt32BE(at);
  at += bytes;
  return value;
}

function readString(payload: Buffer, length: number): string | typeof UNREAD {
  const end = at + length;
  if (end > limit) return UNREAD;
  const start = at;
  at = end;
  if (length > 12) return payload.toString("utf8", start, end);
  // Short ASCII in JavaScript: a call into C++ per value cost more than these few bytes
  let text = "";
  for (let i = start; i < end; i++) {
    const code = payload[i] as number;
    if (code >= 0x80) return payload.toString("utf8", start, end);
    text += String.fromCharCode(code);
  }
  return text;
}

/** String values of up to this many bytes are kept (topics, client and broker ids, names). */
const KEPT_VALUE_BYTES = 64;
const VALUE_SLOTS = 1024;
/**
 * String values read before (ASCII only), each in one of two slots its hash names, so that two
 * values that share one slot do not put each other out at every message: in a bench whose
 * broker id and one topic shared their slot, each was read afresh every time, 8 % of the
 * subscribers' node's CPU.
 */
const keptValues = new KnownBytesTable<string>(VALUE_SLOTS, KEPT_VALUE_BYTES);
/**
 * The envelope being read, for the tables' comparisons (it keeps the memory of the last read
 * alive until the next one: one socket read).
 */
const reader = new BufferReader();

/**
 * A string value of the message: the string read before when its bytes are the same. A
 * message's topic, client id and broker id repeat from message to message: a kept string is
 * no new string to collect, and its hash and its internalized twin (aedes looks subscriptions
 * up by topic) are made once. Other values only cost the hash and take a slot.
 */
function readKeptString(payload: Buffer, length: number): string | typeof UNREAD {
  const start = at;
  const end = start + length;
  if (end > limit) return UNREAD;
  if (length === 0 || length > KEPT_VALUE_BYTES) return readString(payload, length);
  const hash = hashOf(payload, start, length);
  const first = hash & (VALUE_SLOTS - 1);
  const second = (hash >>> 16) & (VALUE_SLOTS - 1);
  const kept = keptValues.findEither(first, second, reader, start, length);
  if (kept !== undefined) {
    at = end;
    return kept;
  }
  for (let i = start; i < end; i++) {
    if ((payload[i] as number) >= 0x80) return readString(payload, length);
  }
  at = end;
  const text = payload.toString("latin1", start, end);
  keptValues.keepEither(first, second, payload, start, length, text);
  return text;
}

/**
 * A hash of every byte of the `length` bytes at `start` (topics of one plant differ anywhere:
 * `site/pump/1/temp`, `site/pump/2/temp`), read four at a time.
 */
function hashOf(payload: Buffer, start: number, length: number): number {
  const view = reader.view;
  const base = reader.base + start;
  let hash = Math.imul(length, 0x9e3779b1);
  const words = length >>> 2;
  for (let i = 0; i < words; i++) hash = Math.imul(hash ^ view.getInt32(base + i * 4), 0x01000193);
  for (let i = start + words * 4; i < start + length; i++) {
    hash = Math.imul(hash ^ (payload[i] as number), 0x01000193);
  }
  return hash ^ (hash >>> 15);
}

function readBinary(payload: Buffer, length: number): Buffer | typeof UNREAD {
  const end = at + length;
  if (end > limit) return UNREAD;
  const start = at;
  at = end;
  return payload.subarray(start, end);
}

/** Map keys read before (up to 16 bytes: field names), two slots each, as values are kept. */
const keptKeys = new KnownBytesTable<string>(256, 16);

/**
 * A map key's fixstr, the string read before when its bytes are the same. Values are not kept
 * here: ids and topics differ from message to message, and would put the names out.
 */
function readShortString(payload: Buffer, length: number): string | typeof UNREAD {
  const start = at;
  const end = start + length;
  if (end > limit) return UNREAD;
  at = end;
  if (length === 0) return "";
  if (length > keptKeys.maxBytes) return payload.toString("utf8", start, end);
  const hash = hashOf(payload, start, length);
  const first = hash & 255;
  const second = (hash >>> 8) & 255;
  const kept = keptKeys.findEither(first, second, reader, start, length);
  if (kept !== undefined) return kept;
  const text = payload.toString("utf8", start, end);
  const key = FIELD_NAMES.get(text) ?? text;
  keptKeys.keepEither(first, second, payload, start, length, key);
  return key;
}

/** The names read at each position of a message, up to this many: the next one's, most likely. */
const NAMED_POSITIONS = 16;
const lastNames = new KnownBytesTable<string>(NAMED_POSITIONS, 16);

/**
 * The fixstr field name at position `index` of the message: the one read there before when its
 * bytes are the same (one comparison, no hash), else as any short key.
 */
function readFieldName(payload: Buffer, length: number, index: number): string | typeof UNREAD {
  const start = at;
  const expected =
    index < NAMED_POSITIONS && start + length <= limit
      ? lastNames.find(index, reader, start, length)
      : undefined;
  if (expected !== undefined) {
    at = start + length;
    return expected;
  }
  const key = readShortString(payload, length);
  if (typeof key === "string" && length <= lastNames.maxBytes && index < NAMED_POSITIONS) {
    lastNames.keep(index, payload, start, length, key);
  }
  return key;
}

function orUnread(value: number): number | typeof UNREAD {
  return value < 0 ? UNREAD : value;
}

/** An aedes PUBLISH's fields: a key read with these bytes is this very string. */
const FIELD_NAMES = new Map(
  [
    "clientId",
    "properties",
    "cmd",
    "brokerId",
    "brokerCounter",
    "topic",
    "payload",
    "qos",
    "retain",
    "dup",
    "messageId",
  ].map((name) => [name, name]),
);
/** The message's keys and values as read, before its object is made (readMessage). */
const names: unknown[] = [];
const values: unknown[] = [];

/**
 * The message (the envelope's `msg`): its fields read first, then made into an object, by an
 * object literal when they are an aedes PUBLISH's in aedes-packet's order. Setting ten keys
 * one by one on `{}` cost 150 ns per message (a keyed store each), the literal 3.
 */
function readMessage(payload: Buffer, length: number): unknown {
  for (let i = 0; i < length; i++) {
    const head = payload[at] as number;
    let key: unknown;
    if ((head & 0xe0) === FIXSTR) {
      at++;
      key = readFieldName(payload, head & 0x1f, i);
    } else {
      key = readValue(payload, 1);
    }
    if (typeof key !== "string") return UNREAD;
    const value = readValue(payload, 1);
    if (value === UNREAD || key === "__proto__") return UNREAD;
    names[i] = key;
    values[i] = value;
  }
  const message = publishOf(length) ?? plainObject(length);
  // the payload (a view of the whole read) is not kept alive from here
  values.fill(undefined, 0, length);
  return message;
}

/**
 * The fields read as an aedes PUBLISH's (cmd, brokerId, brokerCounter, topic, payload, qos,
 * retain, dup, then messageId when QoS > 0; clientId first when the packet came with one, last
 * when aedes set it on emitting, as it does for a client's PUBLISH) by a literal of the same
 * keys in the same order; undefined for anything else.
 */
function publishOf(length: number): object | undefined {
  const lead = names[0] === "clientId" ? 1 : 0;
  if (
    names[lead] !== "cmd" ||
    names[lead + 1] !== "brokerId" ||
    names[lead + 2] !== "brokerCounter" ||
    names[lead + 3] !== "topic" ||
    names[lead + 4] !== "payload" ||
    names[lead + 5] !== "qos" ||
    names[lead + 6] !== "retain" ||
    names[lead + 7] !== "dup"
  ) {
    return undefined;
  }
  let next = lead + 8;
  const withId = names[next] === "messageId";
  if (withId) next++;
  const trail = lead === 0 && names[next] === "clientId";
  if (trail) next++;
  if (next !== length) return undefined;
  const v = values;
  if (lead === 1) {
    return withId
      ? {
          clientId: v[0],
          cmd: v[1],
          brokerId: v[2],
          brokerCounter: v[3],
          topic: v[4],
          payload: v[5],
          qos: v[6],
          retain: v[7],
          dup: v[8],
          messageId: v[9],
        }
      : {
          clientId: v[0],
          cmd: v[1],
          brokerId: v[2],
          brokerCounter: v[3],
          topic: v[4],
          payload: v[5],
          qos: v[6],
          retain: v[7],
          dup: v[8],
        };
  }
  if (trail) {
    return withId
      ? {
          cmd: v[0],
          brokerId: v[1],
          brokerCounter: v[2],
          topic: v[3],
          payload: v[4],
          qos: v[5],
          retain: v[6],
          dup: v[7],
          messageId: v[8],
          clientId: v[9],
        }
      : {
          cmd: v[0],
          brokerId: v[1],
          brokerCounter: v[2],
          topic: v[3],
          payload: v[4],
          qos: v[5],
          retain: v[6],
          dup: v[7],
          clientId: v[8],
        };
  }
  return withId
    ? {
        cmd: v[0],
        brokerId: v[1],
        brokerCounter: v[2],
        topic: v[3],
        payload: v[4],
        qos: v[5],
        retain: v[6],
        dup: v[7],
        messageId: v[8],
      }
    : {
        cmd: v[0],
        brokerId: v[1],
        brokerCounter: v[2],
        topic: v[3],
        payload: v[4],
        qos: v[5],
        retain: v[6],
        dup: v[7],
      };
}

function plainObject(length: number): Record<string, unknown> {
  const map: Record<string, unknown> = {};
  for (let i = 0; i < length; i++) map[names[i] as string] = values[i];
  return map;
}

function readMap(payload: Buffer, length: number, depth: number): unknown {
  if (depth === 0) return readMessage(payload, length);
  if (depth > MAX_DEPTH) return UNREAD;
  const map: Record<string, unknown> = {};
  for (let i = 0; i < length; i++) {
    const head = payload[at] as number;
    let key: unknown;
    if ((head & 0xe0) === FIXSTR) {
      at++;
      key = readShortString(payload, head & 0x1f);
    } else {
      key = readValue(payload, depth + 1);
    }
    // msgpackr turns other keys into strings; such maps are its to read
    if (typeof key !== "string") return UNREAD;
    const value = readValue(payload, depth + 1);
    if (value === UNREAD) return UNREAD;
    // a key such as __proto__ is left to msgpackr, which has its own rule for it
    if (key === "__proto__") return UNREAD;
    map[key] = value;
  }
  return map;
}

function readArray(payload: Buffer, length: number, depth: number): unknown {
  if (depth > MAX_DEPTH) return UNREAD;
  const items: unknown[] = new Array(length);
  for (let i = 0; i < length; i++) {
    const item = readValue(payload, depth + 1);
    if (item === UNREAD) return UNREAD;
    items[i] = item;
  }
  return items;
}

/** Where an envelope's id starts, when it is a fixstr (ids of up to 31 bytes). */
export const ENVELOPE_ID_START = ENVELOPE_HEAD.length + 1;

/** Where the envelope's id ends when it is a fixstr right after the head; -1 otherwise. */
export function envelopeIdEnd(payload: Buffer): number {
  return envelopeIdEndAt(payload, 0, payload.length);
}

/**
 * Where the id of the envelope at `data[start, end)` ends (in `data`), when it is a fixstr
 * right after the head; -1 otherwise.
 */
export function envelopeIdEndAt(data: Buffer, start: number, end: number): number {
  if (end - start < ENVELOPE_ID_START || !isEnvelopeHead(data, start)) return -1;
  const head = data[start + ENVELOPE_HEAD.length] as number;
  if ((head & FIXSTR_MASK) !== FIXSTR) return -1;
  const idEnd = start + ENVELOPE_ID_START + (head & 0x1f);
  return idEnd <= end ? idEnd : -1;
}

/** An envelope whose id starts with `origin` (fixstr id: ids of up to 31 bytes). */
export function echoCheck(origin: Buffer): EchoCheck {
  const start = ENVELOPE_ID_START;
  const prefixBytes = start + origin.length;
  return {
    prefixBytes,
    isEcho(buffer, offset, length) {
      if (length < prefixBytes) return false;
      if (!isEnvelopeHead(buffer, offset)) return false;
      if (((buffer[offset + start - 1] as number) & FIXSTR_MASK) !== FIXSTR) return false;
      return sameBytes(buffer, offset + start, origin);
    },
  };
}

/** Whether `data` (holding at least ENVELOPE_HEAD's length) has either envelope's head at `start`. */
function isEnvelopeHead(data: Buffer, start: number): boolean {
  return data[start] === COMPACT_MARK
    ? sameBytes(data, start, COMPACT_HEAD)
    : sameBytes(data, start, ENVELOPE_HEAD);
}
