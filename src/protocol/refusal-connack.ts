import { type ReasonCode, reasonStringFor } from "../errors.js";

/** What a refused connection's CONNECT says that its CONNACK depends on. */
export interface ConnectHead {
  /** The protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5. */
  level: 3 | 4 | 5;
  /** MQTT 5 Request Problem Information: false when the client asked for no Reason String. */
  problemInformation: boolean;
  /** MQTT 5 Maximum Packet Size: the largest packet the client takes, when it set one. */
  maximumPacketSize: number | undefined;
}

export type ConnectRead =
  | { status: "incomplete" }
  /** Not a CONNECT, malformed, longer than allowed, or of a protocol level Sluice does not speak. */
  | { status: "invalid" }
  | { status: "complete"; head: ConnectHead };

const CONNECT = 0x10;
const PROPERTY = {
  sessionExpiryInterval: 0x11,
  authenticationMethod: 0x15,
  authenticationData: 0x16,
  requestProblemInformation: 0x17,
  requestResponseInformation: 0x19,
  receiveMaximum: 0x21,
  topicAliasMaximum: 0x22,
  userProperty: 0x26,
  maximumPacketSize: 0x27,
} as const;

/**
 * Reads the CONNECT at the front of `bytes` far enough to answer it, without the engine's
 * parser (a refused connection never reaches the engine): the fixed header, the protocol name
 * and level, and an MQTT 5 CONNECT's properties. The rest of the packet (client id, will,
 * credentials) is only counted, never looked at. A packet whose remaining length makes it
 * longer than `maxBytes` is invalid as soon as its fixed header is in.
 */
export function readConnectHead(bytes: Buffer, maxBytes: number): ConnectRead {
  if (bytes.length === 0) return INCOMPLETE;
  if (bytes[0] !== CONNECT) return INVALID;
  const length = variableByteInteger(bytes, 1);
  if (length === undefined) return bytes.length < 5 ? INCOMPLETE : INVALID;
  const end = length.next + length.value;
  if (end > maxBytes) return INVALID;
  if (bytes.length < end) return INCOMPLETE;
  const head = parseVariableHeader(bytes, length.next, end);
  return head === undefined ? INVALID : { status: "complete", head };
}

const INCOMPLETE: ConnectRead = { status: "incomplete" };
const INVALID: ConnectRead = { status: "invalid" };

const MQTT = Buffer.from("MQTT", "latin1");
const MQISDP = Buffer.from("MQIsdp", "latin1");

/** The variable header of the CONNECT in `bytes` between `from` and `end`. */
function parseVariableHeader(bytes: Buffer, from: number, end: number): ConnectHead | undefined {
  if (end - from < 2) return undefined;
  const nameEnd = from + 2 + bytes.readUInt16BE(from);
  // level, connect flags, keep-alive
  if (end < nameEnd + 4) return undefined;
  const level = bytes[nameEnd] as number;
  const flags = bytes[nameEnd + 1] as number;
  // [MQTT-3.1.2-3] the reserved flag is 0
  if ((flags & 0x01) !== 0) return undefined;
  if (level === 3) return isName(bytes, from + 2, nameEnd, MQISDP) ? V3_HEAD : undefined;
  if (!isName(bytes, from + 2, nameEnd, MQTT)) return undefined;
  if (level === 4) return V4_HEAD;
  return level === 5 ? parseProperties(bytes, nameEnd + 4, end) : undefined;
}

function isName(bytes: Buffer, from: number, end: number, name: Buffer): boolean {
  return end - from === name.length && bytes.compare(name, 0, name.length, from, end) === 0;
}

const V3_HEAD: ConnectHead = { level: 3, problemInformation: true, maximumPacketSize: undefined };
const V4_HEAD: ConnectHead = { level: 4, problemInformation: true, maximumPacketSize: undefined };

/** The CONNECT properties that shape the answer; undefined when they are malformed. */
function parseProperties(body: Buffer, from: number, packetEnd: number): ConnectHead | undefined {
  const length = variableByteInteger(body, from);
  if (length === undefined) return undefined;
  const end = length.next + length.value;
  if (end > packetEnd) return undefined;
  const head: ConnectHead = { level: 5, problemInformation: true, maximumPacketSize: undefined };
  let at = length.next;
  while (at < end) {
    const id = body[at++];
    switch (id) {
      case PROPERTY.requestProblemInformation:
        head.problemInformation = body[at] !== 0;
        at += 1;
        break;
      case PROPERTY.requestResponseInformation:
        at += 1;
        break;
      case PROPERTY.receiveMaximum:
      case PROPERTY.topicAliasMaximum:
        at += 2;
        break;
      case PROPERTY.maximumPacketSize:
        if (at + 4 > end) return undefined;
        head.maximumPacketSize = body.readUInt32BE(at);
        at += 4;
        break;
      case PROPERTY.sessionExpiryInterval:
        at += 4;
        break;
      case PROPERTY.authenticationMethod:
      case PROPERTY.authenticationData:
        at = skipBinary(body, at, end);
        break;
      case PROPERTY.userProperty:
        at = skipBinary(body, skipBinary(body, at, end), end);
        break;
      default:
        return undefined;
    }
  }
  return at === end ? head : undefined;
}

/** The offset after a two-byte-length string or binary at `at`; past `end` when it overruns. */
function skipBinary(body: Buffer, at: number, end: number): number {
  if (at + 2 > end) return end + 1;
  return at + 2 + body.readUInt16BE(at);
}

/** An MQTT Variable Byte Integer at `at`: its value and the offset after it. */
function variableByteInteger(
  bytes: Buffer,
  at: number,
): { value: number; next: number } | undefined {
  let value = 0;
  for (let i = 0; i < 4; i++) {
    const byte = bytes[at + i];
    if (byte === undefined) return undefined;
    value += (byte & 0x7f) * 128 ** i;
    if ((byte & 0x80) === 0) return { value, next: at + i + 1 };
  }
  return undefined;
}

/** MQTT 3.1 and 3.1.1: CONNACK, no session present, return code 3 (server unavailable). */
const SERVER_UNAVAILABLE_V3 = Buffer.from([0x20, 0x02, 0x00, 0x03]);

/**
 * The CONNACK that refuses a connection whose CONNECT said `head`: for MQTT 5, `code` with its
 * short Reason String unless the client asked for none (or its Maximum Packet Size leaves no
 * room for one); for 3.1 and 3.1.1, return code 3. Undefined when the client's Maximum Packet
 * Size is too small for any CONNACK [MQTT-3.1.2-25]. The few distinct packets are built once.
 */
export function refusalConnack(head: ConnectHead, code: ReasonCode): Buffer | undefined {
  if (head.level !== 5) return SERVER_UNAVAILABLE_V3;
  const limit = head.maximumPacketSize ?? Number.POSITIVE_INFINITY;
  const withString = head.problemInformation ? v5Connack(code, true) : undefined;
  if (withString !== undefined && withString.length <= limit) return withString;
  const bare = v5Connack(code, false);
  return bare.length <= limit ? bare : undefined;
}

const built = new Map<number, Buffer>();

function v5Connack(code: ReasonCode, withString: boolean): Buffer {
  const key = withString ? code | 0x100 : code;
  let connack = built.get(key);
  if (connack === undefined) {
    const text = withString ? reasonStringFor(code) : undefined;
    const reason = text === undefined ? Buffer.alloc(0) : Buffer.from(text, "utf8");
    // Reason String property: identifier, two length bytes, the string (< 128 bytes of properties)
    const properties =
      text === undefined
        ? Buffer.from([0x00])
        : Buffer.concat([Buffer.from([3 + reason.length, 0x1f, 0x00, reason.length]), reason]);
    // acknowledge flags (no session present), reason code, properties
    const body = Buffer.concat([Buffer.from([0x00, code]), properties]);
    connack = Buffer.concat([Buffer.from([0x20, body.length]), body]);
    built.set(key, connack);
  }
  return connack;
}
