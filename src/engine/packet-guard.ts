import { isUtf8 } from "node:buffer";
import { createRequire } from "node:module";
import { ProtocolError, ReasonCode } from "../errors.js";
import { fixedHeaderBytes } from "./mqtt-lengths.js";
import { type PropertyPlace, propertiesProblem } from "./property-rules.js";
import { readPublishProperties } from "./publish-properties.js";
import { type ReadableParser, readPublishesFirst } from "./publish-reader.js";

/**
 * The parts of an aedes client's mqtt-packet parser that the guard wraps. aedes gives us no
 * way to configure its parser, so the guard sets wrapping methods on each client's own parser
 * instance (never the shared prototype, which MQTT.js clients in the same process also use).
 */
/** mqtt-packet's packet class: the parser's next packet is one of these. */
const Packet = createRequire(import.meta.url)(
  "mqtt-packet/packet.js",
) as new () => MqttPacketParser["packet"];

interface MqttPacketParser {
  packet: {
    length: number;
    cmd?: string;
    protocolVersion?: number;
    topic?: string | null;
    clientId?: string;
    qos?: number;
    dup?: boolean;
    username?: string;
    password?: Buffer;
  };
  /** Set by aedes on each client's parser. */
  client?: {
    conn?: { destroyed: boolean; end(chunk: Buffer, done: () => void): unknown };
    version?: number | null;
    connected?: boolean;
  };
  error: Error | null;
  _pos: number;
  _parseLength(): boolean;
  _parseString(): string | null;
  _parseNum(): number;
  _parseMessageId(): boolean;
  _parseProperties(): unknown;
  _emitError(error: Error): void;
  _newPacket(): boolean;
  emit(event: "packet", packet: MqttPacketParser["packet"]): boolean;
  parse(buffer: Buffer): number;
  _list: {
    length: number;
    slice(start: number, end: number): Buffer;
    getBuffers(): Buffer[];
    consume(bytes: number): unknown;
  };
}

export interface PacketGuardLimits {
  /** Largest whole packet (fixed header included) the broker accepts. */
  maxPacketBytes: number;
  /** Longest topic of a PUBLISH or filter of an UNSUBSCRIBE, in bytes. */
  maxTopicBytes: number;
}

export type PacketViolation =
  | "packet_too_large"
  | "invalid_utf8"
  | "null_character"
  | "packet_id_zero"
  | "topic_too_long"
  | "unsupported_protocol_level"
  /** A field or property list cut short, bytes after a CONNECT's last field, DUP on QoS 0. */
  | "malformed"
  /** A property where it is not allowed, repeated, or out of range; an MQTT 3.1.1 password
   * without a user name. */
  | "protocol_error";

export class PacketViolationError extends ProtocolError {
  constructor(
    readonly violation: PacketViolation,
    message: string,
  ) {
    super(message);
  }
}

function isParser(value: unknown): value is MqttPacketParser {
  const p = value as Partial<MqttPacketParser> | null;
  return (
    typeof p?._parseLength === "function" &&
    typeof p._parseString === "function" &&
    typeof p._parseNum === "function" &&
    typeof p._parseMessageId === "function" &&
    typeof p._parseProperties === "function" &&
    typeof p._emitError === "function" &&
    typeof p._newPacket === "function" &&
    typeof p.parse === "function"
  );
}

/** CONNACK, return code 0x01: unacceptable protocol version. */
const CONNACK_UNACCEPTABLE_PROTOCOL = Buffer.from([0x20, 0x02, 0x00, 0x01]);
/** MQTT 5 CONNACK 0x95 (packet too large), no properties. */
const CONNACK_V5_PACKET_TOO_LARGE = Buffer.from([
  0x20,
  0x03,
  0x00,
  ReasonCode.PacketTooLarge,
  0x00,
]);
const SUPPORTED_LEVELS: ReadonlySet<number> = new Set([3, 4, 5]);
/** The start of an MQTT 5 CONNECT's variable header: protocol name "MQTT", level 5. */
const MQTT5_CONNECT_HEADER = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x05]);

/** The DISCONNECT reason code an MQTT 5 client is told for each violation [MQTT-4.13.1-1]. */
const DISCONNECT_REASON: Record<PacketViolation, number> = {
  packet_too_large: ReasonCode.PacketTooLarge,
  invalid_utf8: ReasonCode.MalformedPacket,
  null_character: ReasonCode.MalformedPacket,
  packet_id_zero: ReasonCode.ProtocolError,
  topic_too_long: ReasonCode.TopicNameInvalid,
  unsupported_protocol_level: ReasonCode.ProtocolError,
  malformed: ReasonCode.MalformedPacket,
  protocol_error: ReasonCode.ProtocolError,
};

/**
 * What an MQTT 5 client is sent before its connection closes for a violation: DISCONNECT with
 * the reason once connected; CONNACK 0x95 for a CONNECT too large, when the bytes read so far
 * show that it is MQTT 5 (its body waits unread: the size is known from the fixed header).
 * Nothing for MQTT 3.1.1, which has no such packets.
 */
function answerForV5(parser: MqttPacketParser, violation: PacketViolation): Buffer | undefined {
  const client = parser.client;
  if (client?.version === 5 && client.connected === true) {
    const unsubscribe = violation === "topic_too_long" && parser.packet.cmd === "unsubscribe";
    const code = unsubscribe ? ReasonCode.TopicFilterInvalid : DISCONNECT_REASON[violation];
    return Buffer.from([0xe0, 0x02, code, 0x00]);
  }
  if (
    (violation === "malformed" || violation === "protocol_error") &&
    parser.packet.cmd === "connect" &&
    parser.packet.protocolVersion === 5
  ) {
    return Buffer.from([0x20, 0x03, 0x00, DISCONNECT_REASON[violation], 0x00]);
  }
  if (
    violation === "packet_too_large" &&
    parser.packet.cmd === "connect" &&
    parser._list.length >= MQTT5_CONNECT_HEADER.length &&
    parser._list.slice(0, MQTT5_CONNECT_HEADER.length).equals(MQTT5_CONNECT_HEADER)
  ) {
    return CONNACK_V5_PACKET_TOO_LARGE;
  }
  return undefined;
}

/** mqtt-packet reads the level (bridge bit removed) before it refuses a level it lacks. */
function hasUnsupportedLevel(packet: MqttPacketParser["packet"]): boolean {
  return (
    packet.cmd === "connect" &&
    packet.protocolVersion !== undefined &&
    !SUPPORTED_LEVELS.has(packet.protocolVersion)
  );
}

/**
 * [MQTT-3.1.2-2] An unsupported level gets CONNACK 0x01, then the connection is closed. The
 * parser's error (on which aedes destroys the stream at once) waits until the CONNACK is
 * flushed; meanwhile the error field stops the parse loop.
 */
function refuseProtocolLevel(
  parser: MqttPacketParser,
  emitError: MqttPacketParser["_emitError"],
): void {
  const violation = new PacketViolationError(
    "unsupported_protocol_level",
    `protocol level ${parser.packet.protocolVersion} is not supported`,
  );
  answerThenFail(parser, CONNACK_UNACCEPTABLE_PROTOCOL, violation, emitError);
}

/**
 * Sends `answer`, then fails the parse (aedes then destroys the stream): the error field stops
 * the parse loop meanwhile.
 */
function answerThenFail(
  parser: MqttPacketParser,
  answer: Buffer,
  error: Error,
  emitError: MqttPacketParser["_emitError"],
): void {
  parser.error = error;
  const conn = parser.client?.conn;
  if (conn === undefined || conn.destroyed) {
    emitError.call(parser, error);
    return;
  }
  conn.end(answer, () => emitError.call(parser, error));
}

/**
 * Makes aedes clients' parsers enforce what aedes does not:
 * - the packet size limit, checked from the fixed header before the body is buffered;
 * - well-formed UTF-8 in every string field [MQTT-1.5.3-1], without U+0000 [MQTT-1.5.3-2];
 * - non-zero packet identifiers [MQTT-2.3.1-1];
 * - the topic length limit on PUBLISH and UNSUBSCRIBE, from the string's length prefix before
 *   its bytes are decoded (like aedes' topic level limit, it closes the connection);
 * - CONNACK 0x01 before closing a CONNECT of an unsupported protocol level [MQTT-3.1.2-2];
 * - MQTT 5 properties only where allowed, once each, in range (property-rules.ts), which also
 *   refuses a client's Subscription Identifier in a PUBLISH [MQTT-3.3.4-6];
 * - a packet identifier within its packet, no DUP on QoS 0 [MQTT-3.3.1-2], no MQTT 3.1.1
 *   password without a user name [MQTT-3.1.2-22], nothing after a CONNECT's last field.
 * A violation becomes a parser error, on which aedes closes the connection; an MQTT 5 client is
 * told why first (DISCONNECT or CONNACK with a reason code). A PUBLISH's MQTT 5 properties are
 * read by readPublishProperties, under the same string rules, since their strings would
 * otherwise come through the guard one by one at several times the cost.
 *
 * The wrapping methods are made once per parser prototype (per node, for its limits) and
 * shared by every parser: closures made per instance cost every idle connection four closures
 * and their context (about 0.3 KB of heap). Not a prototype of our own between a parser and
 * its class's (Object.setPrototypeOf): V8 then gave each parser shapes of its own, 0.45 KB.
 */
export class PacketGuard {
  private readonly guarded = new WeakMap<object, GuardMethods>();

  constructor(private readonly limits: PacketGuardLimits) {}

  /** Throws at once if the engine's parser no longer has the expected shape. */
  install(client: object): void {
    const parser: unknown = (client as { _parser?: unknown })._parser;
    if (!isParser(parser) || WRAPPED.some((name) => Object.hasOwn(parser, name))) {
      throw new TypeError(
        "aedes client parser has an unexpected shape: the packet guard cannot be installed",
      );
    }
    const original = Object.getPrototypeOf(parser) as MqttPacketParser;
    let guarded = this.guarded.get(original);
    if (guarded === undefined) {
      guarded = guardMethods(original, this.limits);
      this.guarded.set(original, guarded);
    }
    Object.assign(parser, guarded);
  }
}

const WRAPPED = [
  "_parseLength",
  "_parseString",
  "_parseMessageId",
  "_parseProperties",
  "_emitError",
  "_newPacket",
  "parse",
] as const;

type GuardMethods = Pick<MqttPacketParser, (typeof WRAPPED)[number]>;

/** The guard's checks around a parser prototype's methods, for every parser of that prototype. */
function guardMethods(original: MqttPacketParser, limits: PacketGuardLimits): GuardMethods {
  const parseLength = original._parseLength;
  const parseMessageId = original._parseMessageId;
  const emitError = original._emitError;
  const parseProperties = original._parseProperties;
  const guarded = {} as GuardMethods;

  // Only the first error of a packet is reported: a failed string read makes the caller
  // report "packet too short" as well, which would double-count the same violation.
  guarded._emitError = function emitFirstError(this: MqttPacketParser, error: Error) {
    if (this.error !== null) return;
    if (hasUnsupportedLevel(this.packet)) return refuseProtocolLevel(this, emitError);
    const answer =
      error instanceof PacketViolationError ? answerForV5(this, error.violation) : undefined;
    if (answer) answerThenFail(this, answer, error, emitError);
    else emitError.call(this, error);
  };

  guarded._parseLength = function parseLengthWithinLimit(this: MqttPacketParser) {
    if (!parseLength.call(this)) return false;
    const total = this.packet.length + fixedHeaderBytes(this.packet.length);
    if (total > limits.maxPacketBytes) {
      this._emitError(
        new PacketViolationError(
          "packet_too_large",
          `packet of ${total} bytes exceeds the limit of ${limits.maxPacketBytes}`,
        ),
      );
      return false;
    }
    return true;
  };

  // [MQTT-2.3.1-1] packet identifiers are non-zero.
  guarded._parseMessageId = function parseNonZeroMessageId(
    this: MqttPacketParser & { packet: { messageId?: number } },
  ) {
    // mqtt-packet reads the two bytes from its list, which may hold the next packet's.
    if (this._pos + 2 > this.packet.length) {
      this._emitError(
        new PacketViolationError(
          "malformed",
          `a ${this.packet.cmd} packet cut within its packet identifier`,
        ),
      );
      return false;
    }
    if (!parseMessageId.call(this)) return false;
    if (this.packet.messageId === 0) {
      this._emitError(
        new PacketViolationError(
          "packet_id_zero",
          `packet identifier 0 in a ${this.packet.cmd} packet`,
        ),
      );
      return false;
    }
    return true;
  };

  // A PUBLISH's MQTT 5 properties read straight from its buffer, their strings under the rules
  // below; anything else, or anything unusual, by mqtt-packet (through parseValidString). Each
  // list first under MQTT 5's rules for where it stands (property-rules.ts).
  guarded._parseProperties = function parsePublishProperties(this: MqttPacketParser) {
    const place = propertyPlace(this.packet);
    // No list within the packet (an MQTT 5 DISCONNECT of no bytes, which mqtt-packet reads
    // one for all the same): mqtt-packet's reading, as before.
    if (place !== undefined && this._pos < this.packet.length) {
      const bytes = propertyBytes(this);
      const problem = propertiesProblem(bytes, 0, bytes.length, place);
      if (problem !== undefined) {
        const violation = problem.malformed ? "malformed" : "protocol_error";
        this._emitError(new PacketViolationError(violation, problem.message));
        // mqtt-packet reads on (the error ends the parse after this packet's state): an
        // object, not null, which it would throw on
        return {};
      }
    }
    if (this.packet.cmd === "publish") {
      const properties = readPublishProperties(this);
      if (properties !== undefined) return properties;
    }
    return parseProperties.call(this);
  };

  guarded._parseString = function parseValidString(this: MqttPacketParser) {
    const length = this._parseNum();
    // A PUBLISH's first string is its topic (MQTT 5 properties follow it); in an UNSUBSCRIBE
    // every string is a filter (MQTT 5: user properties too, which the limit then covers).
    // SUBSCRIBE filters are checked by the broker rules instead: an over-long one gets SUBACK
    // 0x80, like others refused by a limit.
    if (
      length > limits.maxTopicBytes &&
      ((this.packet.cmd === "publish" && this.packet.topic == null) ||
        this.packet.cmd === "unsubscribe")
    ) {
      this._emitError(
        new PacketViolationError(
          "topic_too_long",
          `topic of ${length} bytes in a ${this.packet.cmd} packet exceeds the limit of ${limits.maxTopicBytes}`,
        ),
      );
      return null;
    }
    const end = length + this._pos;
    if (length === -1 || end > this._list.length || end > this.packet.length) return null;
    const bytes = this._list.slice(this._pos, end);
    if (!isUtf8(bytes)) {
      this._emitError(
        new PacketViolationError("invalid_utf8", `malformed UTF-8 in a ${this.packet.cmd} packet`),
      );
      return null;
    }
    if (bytes.includes(0)) {
      this._emitError(
        new PacketViolationError("null_character", `U+0000 in a ${this.packet.cmd} packet`),
      );
      return null;
    }
    this._pos = end;
    return bytes.toString("utf8");
  };

  // mqtt-packet's own, without its three calls of a disabled debug logger: an array of
  // arguments each, per packet.
  guarded._newPacket = function emitPacket(this: MqttPacketParser) {
    const violation = this.packet && layoutViolation(this.packet, this._pos);
    if (violation) {
      this._emitError(violation);
      return false;
    }
    if (this.packet) {
      this._list.consume(this.packet.length);
      this.emit("packet", this.packet);
    }
    this.packet = new Packet();
    this._pos = 0;
    return true;
  };

  // Whole PUBLISHes read straight from the chunk, within the limits and rules above.
  guarded.parse = readPublishesFirst(
    original.parse as unknown as ReadableParser["parse"],
    limits,
  ) as unknown as MqttPacketParser["parse"];
  return guarded;
}

/** Where a list of properties the parser is about to read stands. */
function propertyPlace(packet: MqttPacketParser["packet"]): PropertyPlace | undefined {
  switch (packet.cmd) {
    case "connect":
      // the CONNECT's own list comes before the client id, the will's after it
      return packet.clientId === undefined ? "connect" : "will";
    case "publish":
      return "publish";
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      return "acknowledgement";
    case "subscribe":
    case "unsubscribe":
    case "disconnect":
    case "auth":
      return packet.cmd;
    default:
      return undefined;
  }
}

/**
 * The property list at the parser's position, cut at its packet's end: its length first, then
 * at most that many bytes (propertiesProblem reports a list that the packet cuts).
 */
function propertyBytes(parser: MqttPacketParser): Buffer {
  const end = parser.packet.length;
  const head = parser._list.slice(parser._pos, Math.min(end, parser._pos + 4));
  let length = 0;
  let multiplier = 1;
  let headBytes = 0;
  while (headBytes < head.length) {
    const byte = head[headBytes++] as number;
    length += (byte & 0x7f) * multiplier;
    multiplier *= 0x80;
    if ((byte & 0x80) === 0) break;
  }
  return parser._list.slice(parser._pos, Math.min(end, parser._pos + headBytes + length));
}

/**
 * What mqtt-packet lets through in a whole packet: DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2],
 * an MQTT 3.1.1 CONNECT with a password and no user name [MQTT-3.1.2-22], and bytes after a
 * CONNECT's last field (mqtt-packet reads the fields and ignores the rest).
 */
function layoutViolation(
  packet: MqttPacketParser["packet"],
  position: number,
): PacketViolationError | undefined {
  if (packet.cmd === "publish") {
    return packet.qos === 0 && packet.dup === true
      ? new PacketViolationError("malformed", "DUP set on a QoS 0 PUBLISH")
      : undefined;
  }
  if (packet.cmd !== "connect") return undefined;
  if (
    packet.protocolVersion !== 5 &&
    packet.password !== undefined &&
    packet.username === undefined
  ) {
    return new PacketViolationError("protocol_error", "a password without a user name");
  }
  if (position < packet.length) {
    return new PacketViolationError(
      "malformed",
      `${packet.length - position} bytes after the CONNECT's last field`,
    );
  }
  return undefined;
}
