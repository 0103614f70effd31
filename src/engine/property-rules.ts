/**
 * What MQTT 5 allows in the properties a client sends (MQTT 5, 2.2.2.2 and each packet's
 * properties section), checked on the wire bytes, where mqtt-packet keeps none of it: it reads
 * any known property in any packet, turns a repeated one into an array (a repeated falsy one it
 * replaces), and reads a Byte property as a boolean. A repeated Session Expiry Interval became
 * an array in aedes' session timer, which threw and ended the node.
 */

/** Property identifiers. */
const PAYLOAD_FORMAT_INDICATOR = 0x01;
const MESSAGE_EXPIRY_INTERVAL = 0x02;
const CONTENT_TYPE = 0x03;
const RESPONSE_TOPIC = 0x08;
const CORRELATION_DATA = 0x09;
const SUBSCRIPTION_IDENTIFIER = 0x0b;
const SESSION_EXPIRY_INTERVAL = 0x11;
const AUTHENTICATION_METHOD = 0x15;
const AUTHENTICATION_DATA = 0x16;
const REQUEST_PROBLEM_INFORMATION = 0x17;
const WILL_DELAY_INTERVAL = 0x18;
const REQUEST_RESPONSE_INFORMATION = 0x19;
const SERVER_REFERENCE = 0x1c;
const REASON_STRING = 0x1f;
const RECEIVE_MAXIMUM = 0x21;
const TOPIC_ALIAS_MAXIMUM = 0x22;
const TOPIC_ALIAS = 0x23;
const USER_PROPERTY = 0x26;
const MAXIMUM_PACKET_SIZE = 0x27;
/** Sent only by a server. */
const ASSIGNED_CLIENT_IDENTIFIER = 0x12;
const SERVER_KEEP_ALIVE = 0x13;
const RESPONSE_INFORMATION = 0x1a;
const MAXIMUM_QOS = 0x24;
const RETAIN_AVAILABLE = 0x25;
const WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28;
const SUBSCRIPTION_IDENTIFIERS_AVAILABLE = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE = 0x2a;

/** How each property's value is laid out on the wire (LAYOUT). */
const BYTE = 1;
const TWO_BYTES = 2;
const FOUR_BYTES = 3;
const VARIABLE_INTEGER = 4;
/** A 2-byte length, then that many bytes (UTF-8 string or binary data). */
const SIZED = 5;
/** Two SIZED. */
const PAIR = 6;

/** Each identifier's layout; 0 for an identifier MQTT 5 does not define. */
const LAYOUT = new Uint8Array(0x40);
for (const [id, layout] of [
  [PAYLOAD_FORMAT_INDICATOR, BYTE],
  [MESSAGE_EXPIRY_INTERVAL, FOUR_BYTES],
  [CONTENT_TYPE, SIZED],
  [RESPONSE_TOPIC, SIZED],
  [CORRELATION_DATA, SIZED],
  [SUBSCRIPTION_IDENTIFIER, VARIABLE_INTEGER],
  [SESSION_EXPIRY_INTERVAL, FOUR_BYTES],
  [AUTHENTICATION_METHOD, SIZED],
  [AUTHENTICATION_DATA, SIZED],
  [REQUEST_PROBLEM_INFORMATION, BYTE],
  [WILL_DELAY_INTERVAL, FOUR_BYTES],
  [REQUEST_RESPONSE_INFORMATION, BYTE],
  [SERVER_REFERENCE, SIZED],
  [REASON_STRING, SIZED],
  [RECEIVE_MAXIMUM, TWO_BYTES],
  [TOPIC_ALIAS_MAXIMUM, TWO_BYTES],
  [TOPIC_ALIAS, TWO_BYTES],
  [USER_PROPERTY, PAIR],
  [MAXIMUM_PACKET_SIZE, FOUR_BYTES],
  [ASSIGNED_CLIENT_IDENTIFIER, SIZED],
  [SERVER_KEEP_ALIVE, TWO_BYTES],
  [RESPONSE_INFORMATION, SIZED],
  [MAXIMUM_QOS, BYTE],
  [RETAIN_AVAILABLE, BYTE],
  [WILDCARD_SUBSCRIPTION_AVAILABLE, BYTE],
  [SUBSCRIPTION_IDENTIFIERS_AVAILABLE, BYTE],
  [SHARED_SUBSCRIPTION_AVAILABLE, BYTE],
] as const) {
  LAYOUT[id] = layout;
}

/** Where properties stand in what a client sends. */
export type PropertyPlace =
  | "connect"
  | "will"
  | "publish"
  | "acknowledgement"
  | "subscribe"
  | "unsubscribe"
  | "disconnect"
  | "auth";

/**
 * The properties a client may send in each place. Not from a client: a Subscription Identifier
 * in a PUBLISH [MQTT-3.3.4-6], and every property only a server sends.
 */
const ALLOWED_IDS: Record<PropertyPlace, readonly number[]> = {
  connect: [
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    REQUEST_PROBLEM_INFORMATION,
    USER_PROPERTY,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
  ],
  will: [
    WILL_DELAY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
  ],
  publish: [
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    TOPIC_ALIAS,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    CONTENT_TYPE,
  ],
  acknowledgement: [REASON_STRING, USER_PROPERTY],
  subscribe: [SUBSCRIPTION_IDENTIFIER, USER_PROPERTY],
  unsubscribe: [USER_PROPERTY],
  disconnect: [SESSION_EXPIRY_INTERVAL, REASON_STRING, USER_PROPERTY, SERVER_REFERENCE],
  auth: [AUTHENTICATION_METHOD, AUTHENTICATION_DATA, REASON_STRING, USER_PROPERTY],
};

/** ALLOWED_IDS as a table per place: 1 where allowed. */
const ALLOWED = Object.fromEntries(
  Object.entries(ALLOWED_IDS).map(([place, ids]) => {
    const table = new Uint8Array(0x40);
    for (const id of ids) table[id] = 1;
    return [place, table];
  }),
) as Record<PropertyPlace, Uint8Array>;

/** What is wrong with a property list: its layout (malformed) or MQTT 5's rules. */
export interface PropertyProblem {
  malformed: boolean;
  message: string;
}

function malformed(message: string): PropertyProblem {
  return { malformed: true, message };
}

function broken(message: string): PropertyProblem {
  return { malformed: false, message };
}

/** Marks seen identifiers; property identifiers are under 0x40. */
const seen = new Uint8Array(0x40);

/**
 * What is wrong with the property list at `start` of `bytes` (its Variable Byte Integer length
 * first, the list ending by `limit`) under MQTT 5's rules for `place`, or undefined:
 * a property not allowed there, one given twice (a User Property may repeat), a Byte property
 * other than 0 or 1, a Maximum Packet Size of 0; or, malformed, a list that runs past `limit`
 * or is cut within a property. Unknown identifiers are left to the parser, which refuses them.
 */
export function propertiesProblem(
  bytes: Uint8Array,
  start: number,
  limit: number,
  place: PropertyPlace,
): PropertyProblem | undefined {
  let at = start;
  let length = 0;
  let multiplier = 1;
  for (let i = 0; ; i++) {
    if (i === 4 || at >= limit) return malformed("the property length is malformed");
    const byte = bytes[at++] as number;
    length += (byte & 0x7f) * multiplier;
    multiplier *= 0x80;
    if ((byte & 0x80) === 0) break;
  }
  const end = at + length;
  if (end > limit) return malformed("the properties run past the packet");
  seen.fill(0);
  const allowed = ALLOWED[place];
  while (at < end) {
    const id = bytes[at++] as number;
    const layout = id < 0x40 ? (LAYOUT[id] as number) : 0;
    if (layout === 0) return undefined;
    if (allowed[id] !== 1) return broken(`property 0x${hex(id)} is not allowed in a ${place}`);
    if (id !== USER_PROPERTY) {
      if (seen[id] === 1) return broken(`property 0x${hex(id)} is given more than once`);
      seen[id] = 1;
    }
    const valueAt = at;
    at = skipValue(bytes, at, end, layout);
    if (at < 0) return malformed(`property 0x${hex(id)} is cut short`);
    // Every Byte property a client may send is 0 or 1.
    if (layout === BYTE && (bytes[valueAt] as number) > 1) {
      return broken(`property 0x${hex(id)} must be 0 or 1`);
    }
    if (id === MAXIMUM_PACKET_SIZE && readFourBytes(bytes, valueAt) === 0) {
      return broken("a Maximum Packet Size of 0");
    }
  }
  return undefined;
}

/** Where the value at `at` ends, or -1 if it runs past `end`. */
function skipValue(bytes: Uint8Array, at: number, end: number, layout: number): number {
  switch (layout) {
    case BYTE:
      return at + 1 <= end ? at + 1 : -1;
    case TWO_BYTES:
      return at + 2 <= end ? at + 2 : -1;
    case FOUR_BYTES:
      return at + 4 <= end ? at + 4 : -1;
    case VARIABLE_INTEGER:
      for (let i = 0; i < 4 && at < end; i++) if (((bytes[at++] as number) & 0x80) === 0) return at;
      return -1;
    case SIZED:
      return sized(bytes, at, end);
    default: {
      const keyEnd = sized(bytes, at, end);
      return keyEnd < 0 ? -1 : sized(bytes, keyEnd, end);
    }
  }
}

function sized(bytes: Uint8Array, at: number, end: number): number {
  if (at + 2 > end) return -1;
  const stop = at + 2 + (((bytes[at] as number) << 8) | (bytes[at + 1] as number));
  return stop <= end ? stop : -1;
}

function readFourBytes(bytes: Uint8Array, at: number): number {
  return (
    (bytes[at] as number) * 0x1000000 +
    (((bytes[at + 1] as number) << 16) |
      ((bytes[at + 2] as number) << 8) |
      (bytes[at + 3] as number))
  );
}

function hex(id: number): string {
  return id.toString(16).padStart(2, "0");
}
