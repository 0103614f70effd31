import { createRequire } from "node:module";
import type { Writable } from "node:stream";
import { holdsTurn } from "../transport/write-coalescing.js";
import { variableByteIntegerSize } from "./mqtt-lengths.js";

interface WriteOptions {
  protocolVersion?: number;
}

type WriteToStream = (packet: unknown, stream: Writable, opts?: WriteOptions) => boolean;

interface MqttPacketModule {
  writeToStream: WriteToStream;
}

const require = createRequire(import.meta.url);
/** The module object aedes' writer reads `writeToStream` from at every write. */
const mqttPacket = require("mqtt-packet") as MqttPacketModule;
const { properties: PROPERTY_CODES, propertiesTypes: PROPERTY_TYPES } =
  require("mqtt-packet/constants.js") as {
    properties: Record<string, number>;
    propertiesTypes: Record<string, string>;
  };

const PUBLISH = 0x30;
const VARIABLE_BYTE_INTEGER_MAX = 268_435_455;
/** A payload larger than this is written after the rest, not copied into one buffer with it. */
const COPIED_PAYLOAD_BYTES = 2048;

/** The PUBLISH fields the encoder reads (mqtt-packet's IPublishPacket, loosely typed). */
interface PublishFields {
  cmd?: unknown;
  topic?: unknown;
  payload?: unknown;
  qos?: unknown;
  dup?: unknown;
  retain?: unknown;
  messageId?: unknown;
  properties?: unknown;
}

const streams = new WeakSet<object>();
let original: WriteToStream | undefined;

/**
 * Writes the PUBLISHes aedes sends a registered stream as one buffer each. mqtt-packet writes a
 * PUBLISH as five or more small chunks (a v5 user property alone adds five, each its own
 * `stream.write`, strings among them): every chunk is a queued write request, and the socket's
 * `writev` then gathers them. Here the same bytes are built in one buffer (a large payload
 * follows as a second write, not copied) and written once; so are PUBACK, PUBREC, PUBREL and
 * PUBCOMP without properties (writeAck). Anything the encoder does not take
 * for certain (another packet type, a Buffer topic, an out-of-range or mistyped field or
 * property) goes to mqtt-packet's writer, which also reports the error as it does.
 *
 * mqtt-packet's `writeToStream` is replaced on its module object once per process (aedes reads
 * it from there at every write); streams not registered, MQTT.js clients' among them, keep its
 * own writer.
 */
export function encodePublishesFor(stream: Writable): void {
  if (original === undefined) {
    const own = mqttPacket.writeToStream;
    original = own;
    const writeToStream: WriteToStream = (packet, target, opts) => {
      if (streams.has(target)) {
        const cmd = (packet as PublishFields).cmd;
        const version = opts?.protocolVersion ?? 4;
        const written =
          cmd === "publish"
            ? writePublish(packet as PublishFields, target, version)
            : typeof cmd === "string" && ACK_HEADERS[cmd] !== undefined
              ? writeAck(packet as AckFields, ACK_HEADERS[cmd], target, version)
              : undefined;
        if (written !== undefined) return written;
      }
      return own(packet, target, opts);
    };
    // MQTT.js sets it (writeCache: false) on the function it finds there
    Object.defineProperty(writeToStream, "cacheNumbers", {
      get: () => (own as unknown as { cacheNumbers: boolean }).cacheNumbers,
      set: (value: boolean) => {
        (own as unknown as { cacheNumbers: boolean }).cacheNumbers = value;
      },
    });
    mqttPacket.writeToStream = writeToStream;
  }
  streams.add(stream);
}

function uncork(stream: Writable): void {
  stream.uncork();
}

/**
 * As mqtt-packet: corked until the next tick, so that a packet's writes leave together; a
 * socket whose writes Sluice coalesces is instead held to the turn's end, once per turn, with
 * no tick per packet.
 */
function corkForTick(stream: Writable): void {
  if (holdsTurn(stream) || typeof stream.cork !== "function") return;
  stream.cork();
  process.nextTick(uncork, stream);
}

/** The first byte of each acknowledgement (PUBREL's carries QoS 1, as the spec fixes it). */
const ACK_HEADERS: Record<string, number | undefined> = {
  puback: 0x40,
  pubrec: 0x50,
  pubrel: 0x62,
  pubcomp: 0x70,
};

/** The acknowledgement fields the encoder reads. */
interface AckFields {
  cmd?: unknown;
  messageId?: unknown;
  reasonCode?: unknown;
  properties?: unknown;
  dup?: unknown;
}

/**
 * A PUBACK, PUBREC, PUBREL or PUBCOMP without properties, written as mqtt-packet writes it, in
 * one buffer: mqtt-packet writes three to five chunks (at MQTT 5 two of them new one-byte
 * Buffers: aedes' acknowledgements carry no reason code, which mqtt-packet then writes as 0
 * followed by an empty property length). undefined when left to mqtt-packet: properties, a
 * PUBREL marked dup, an id or reason code out of range.
 */
function writeAck(
  packet: AckFields,
  header: number,
  stream: Writable,
  version: number,
): boolean | undefined {
  const { messageId, reasonCode } = packet;
  if (packet.properties !== undefined || !isInteger(messageId, 0xffff)) return undefined;
  if (packet.dup && packet.cmd === "pubrel") return undefined;
  // At MQTT 5 the reason code and property length are left out only for a reason code of 0.
  const long = version === 5 && reasonCode !== 0;
  if (long && reasonCode !== undefined && !isInteger(reasonCode, 0xff)) return undefined;
  const buffer = Buffer.allocUnsafe(long ? 6 : 4);
  buffer[0] = header;
  buffer[1] = long ? 4 : 2;
  buffer.writeUInt16BE(messageId as number, 2);
  if (long) {
    buffer[4] = (reasonCode as number | undefined) ?? 0;
    buffer[5] = 0;
  }
  corkForTick(stream);
  return stream.write(buffer);
}

/** The PUBLISH written as mqtt-packet writes it, or undefined if it is left to mqtt-packet. */
function writePublish(
  packet: PublishFields,
  stream: Writable,
  version: number,
): boolean | undefined {
  const { topic, messageId, properties } = packet;
  const qos = packet.qos || 0;
  const payload = packet.payload || EMPTY;
  if (typeof topic !== "string" || (qos !== 0 && qos !== 1 && qos !== 2)) return undefined;
  const topicBytes = utf8Length(topic);
  if (topicBytes > 0xffff) return undefined;
  let payloadBytes: number;
  if (Buffer.isBuffer(payload)) payloadBytes = payload.length;
  else if (typeof payload === "string") payloadBytes = Buffer.byteLength(payload);
  else return undefined;
  if (qos > 0 && !isInteger(messageId, 0xffff)) return undefined;

  let propertiesBytes = -1;
  let headerBytes = 2 + topicBytes + (qos > 0 ? 2 : 0);
  let encoded: Buffer | undefined;
  if (version === 5) {
    encoded = encodedProperties(properties);
    propertiesBytes = encoded === undefined ? propertiesLength(properties) : encoded.length;
    if (propertiesBytes < 0) return undefined;
    headerBytes += variableByteIntegerSize(propertiesBytes) + propertiesBytes;
  }
  const remaining = headerBytes + payloadBytes;
  if (remaining > VARIABLE_BYTE_INTEGER_MAX) return undefined;

  const copied = payloadBytes <= COPIED_PAYLOAD_BYTES;
  const size = 1 + variableByteIntegerSize(remaining) + headerBytes + (copied ? payloadBytes : 0);
  const buffer = Buffer.allocUnsafe(size);
  buffer[0] = PUBLISH | (packet.dup ? 0x08 : 0) | (qos << 1) | (packet.retain ? 0x01 : 0);
  let at = writeVariableByteInteger(buffer, 1, remaining);
  at = writeString(buffer, at, topic, topicBytes);
  if (qos > 0) at = buffer.writeUInt16BE(messageId as number, at);
  if (propertiesBytes >= 0) {
    at = writeVariableByteInteger(buffer, at, propertiesBytes);
    if (encoded !== undefined) encoded.copy(buffer, at);
    else if (propertiesBytes > 0)
      writeProperties(buffer, at, properties as Record<string, unknown>);
    at += propertiesBytes;
  }
  if (copied && payloadBytes > 0) {
    if (typeof payload === "string") buffer.write(payload, at, payloadBytes, "utf8");
    else (payload as Buffer).copy(buffer, at);
  }

  corkForTick(stream);
  if (copied) return stream.write(buffer);
  stream.write(buffer);
  return stream.write(payload);
}

const EMPTY = Buffer.alloc(0);

/**
 * The last frozen property list written, and its bytes. The reader hands a publisher's repeated
 * list on as one frozen object (publish-properties.ts), as aedes does a subscription's
 * identifier: frozen all through, it cannot change, so its bytes are built once.
 */
let encodedFor: object | undefined;
let encodedBytes: Buffer = EMPTY;

/** The bytes of a frozen, non-empty property list the encoder takes; undefined otherwise. */
function encodedProperties(properties: unknown): Buffer | undefined {
  if (properties === encodedFor && encodedFor !== undefined) return encodedBytes;
  if (typeof properties !== "object" || properties === null || !deeplyFrozen(properties)) {
    return undefined;
  }
  const length = propertiesLength(properties);
  if (length <= 0) return undefined;
  const bytes = Buffer.allocUnsafe(length);
  writeProperties(bytes, 0, properties as Record<string, unknown>);
  encodedFor = properties;
  encodedBytes = bytes;
  return bytes;
}

/** Frozen, and so is every object and array within (a Buffer, whose bytes may change, is not). */
export function deeplyFrozen(value: object): boolean {
  if (ArrayBuffer.isView(value) || !Object.isFrozen(value)) return false;
  for (const key of Object.keys(value)) {
    const inner = (value as Record<string, unknown>)[key];
    if (typeof inner === "object" && inner !== null && !deeplyFrozen(inner)) return false;
  }
  return true;
}

function isInteger(value: unknown, maximum: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= maximum;
}

/**
 * The encoded length of a PUBLISH's MQTT 5 properties, or -1 where mqtt-packet's writer would
 * refuse them (or where the encoder leaves them to it). Not an object: an empty list, as
 * mqtt-packet; null too (a stored packet's undefined list reads back as null, on which
 * mqtt-packet's writer throws).
 */
export function propertiesLength(properties: unknown): number {
  if (typeof properties !== "object" || properties === null) return 0;
  if ((properties as { length?: unknown }).length != null) return -1;
  const entries = properties as Record<string, unknown>;
  let length = 0;
  for (const name in entries) {
    if (!Object.hasOwn(entries, name)) return -1;
    const value = entries[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      if (PROPERTY_TYPES[name] === "pair" || value.length === 0) return -1;
      for (const item of value) {
        const size = propertyLength(name, item);
        if (size < 0) return -1;
        length += size;
      }
    } else {
      const size = propertyLength(name, value);
      if (size <= 0) return -1;
      length += size;
    }
  }
  return length;
}

function propertyLength(name: string, value: unknown): number {
  switch (PROPERTY_TYPES[name]) {
    case "byte":
      return typeof value === "boolean" ? 2 : -1;
    case "int8":
      return isInteger(value, 0xff) ? 2 : -1;
    case "int16":
      return isInteger(value, 0xffff) ? 3 : -1;
    case "int32":
      return isInteger(value, 0xffffffff) ? 5 : -1;
    case "var":
      return isInteger(value, VARIABLE_BYTE_INTEGER_MAX) ? 1 + variableByteIntegerSize(value) : -1;
    case "string":
      return stringLength(value, 1);
    case "binary":
      if (Buffer.isBuffer(value)) return value.length <= 0xffff ? 3 + value.length : -1;
      return stringLength(value, 1);
    case "pair":
      return pairsLength(value);
    default:
      return -1;
  }
}

/** A length-prefixed UTF-8 string after `before` bytes; -1 if not a string of up to 65,535. */
function stringLength(value: unknown, before: number): number {
  if (typeof value !== "string") return -1;
  const bytes = utf8Length(value);
  return bytes <= 0xffff ? before + 2 + bytes : -1;
}

/** User properties: one property (code, name, value) per value, string values only. */
function pairsLength(value: unknown): number {
  if (typeof value !== "object" || value === null) return -1;
  const pairs = value as Record<string, unknown>;
  let length = 0;
  for (const key of Object.getOwnPropertyNames(pairs)) {
    const keyLength = stringLength(key, 1);
    if (keyLength < 0) return -1;
    const values = pairs[key];
    if (Array.isArray(values)) {
      for (const item of values) {
        const itemLength = stringLength(item, keyLength);
        if (itemLength < 0) return -1;
        length += itemLength;
      }
    } else {
      const itemLength = stringLength(values, keyLength);
      if (itemLength < 0) return -1;
      length += itemLength;
    }
  }
  return length;
}

/** Writes properties whose length `propertiesLength` accepted, in mqtt-packet's order. */
function writeProperties(buffer: Buffer, start: number, properties: Record<string, unknown>): void {
  let at = start;
  for (const name in properties) {
    const value = properties[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const item of value) at = writeProperty(buffer, at, name, item);
    else at = writeProperty(buffer, at, name, value);
  }
}

function writeProperty(buffer: Buffer, start: number, name: string, value: unknown): number {
  const code = PROPERTY_CODES[name] as number;
  let at = start;
  switch (PROPERTY_TYPES[name]) {
    case "pair": {
      const pairs = value as Record<string, string | string[]>;
      for (const key of Object.getOwnPropertyNames(pairs)) {
        const values = pairs[key] as string | string[];
        if (Array.isArray(values))
          for (const item of values) at = writePair(buffer, at, code, key, item);
        else at = writePair(buffer, at, code, key, values);
      }
      return at;
    }
    case "byte":
      buffer[at++] = code;
      buffer[at++] = value ? 1 : 0;
      return at;
    case "int8":
      buffer[at++] = code;
      buffer[at++] = value as number;
      return at;
    case "int16":
      buffer[at++] = code;
      return buffer.writeUInt16BE(value as number, at);
    case "int32":
      buffer[at++] = code;
      return buffer.writeUInt32BE(value as number, at);
    case "var":
      buffer[at++] = code;
      return writeVariableByteInteger(buffer, at, value as number);
    default: {
      // string, or binary as a string or a Buffer
      buffer[at++] = code;
      if (Buffer.isBuffer(value)) {
        at = buffer.writeUInt16BE(value.length, at);
        return at + value.copy(buffer, at);
      }
      const text = value as string;
      return writeString(buffer, at, text, utf8Length(text));
    }
  }
}

/** One user property: its code, name and value. */
function writePair(
  buffer: Buffer,
  start: number,
  code: number,
  key: string,
  value: string,
): number {
  buffer[start] = code;
  const at = writeString(buffer, start + 1, key, utf8Length(key));
  return writeString(buffer, at, value, utf8Length(value));
}

/** UTF-8 length; an ASCII string (the usual topic, property) is measured without a call out. */
function utf8Length(value: string): number {
  const length = value.length;
  if (length > 64) return Buffer.byteLength(value);
  for (let i = 0; i < length; i++) {
    if (value.charCodeAt(i) >= 0x80) return Buffer.byteLength(value);
  }
  return length;
}

/** A 2-byte length, then the string's `bytes` UTF-8 bytes. */
function writeString(buffer: Buffer, start: number, value: string, bytes: number): number {
  let at = buffer.writeUInt16BE(bytes, start);
  if (bytes === value.length && bytes <= 64) {
    for (let i = 0; i < bytes; i++) buffer[at++] = value.charCodeAt(i);
    return at;
  }
  return at + buffer.write(value, at, bytes, "utf8");
}

function writeVariableByteInteger(buffer: Buffer, start: number, value: number): number {
  let at = start;
  let rest = value;
  do {
    let digit = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) digit |= 0x80;
    buffer[at++] = digit;
  } while (rest > 0);
  return at;
}
