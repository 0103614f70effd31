import { isUtf8 } from "node:buffer";
import { createRequire } from "node:module";
import { propertiesProblem } from "./property-rules.js";

const { propertiesCodes: PROPERTY_NAMES, propertiesTypes: PROPERTY_TYPES } = createRequire(
  import.meta.url,
)("mqtt-packet/constants.js") as {
  propertiesCodes: Record<number, string>;
  propertiesTypes: Record<string, string>;
};

/** The parts of mqtt-packet's parser read here: the packet's body is its list from 0. */
export interface PropertiesSource {
  packet: { length: number; properties?: unknown };
  _pos: number;
  _list: { getBuffers(): Buffer[] };
}

/**
 * The prototype of the user properties objects: like mqtt-packet's null prototype, nothing is
 * inherited and no name (`__proto__` included) reaches Object.prototype, but V8 keeps an
 * object with this prototype in fast mode, where Object.create(null) makes a dictionary (five
 * times the cost to build and read one here, and again in every writer and size check).
 */
const USER_PROPERTIES_PROTOTYPE: object = Object.freeze(Object.create(null));

/**
 * An empty property list: mqtt-packet sets no `properties` on a packet whose list has no names,
 * so one frozen object serves every such PUBLISH (no allocation per message).
 */
const NO_PROPERTIES: Record<string, unknown> = Object.freeze({});

/**
 * The names a shared (frozen) property list may hold: those nothing changes after the parse.
 * aedes rewrites a packet's Topic Alias and, for a queued message, its Message Expiry Interval.
 */
const SHAREABLE = new Set([
  "userProperties",
  "contentType",
  "payloadFormatIndicator",
  "responseTopic",
]);
/** Longer lists are not compared (a copy of their bytes is kept, and a compare costs). */
const SHARED_MAX_BYTES = 128;

/**
 * The last shareable list read and its bytes: a publisher tags its messages alike (a gateway's
 * site, a content type), so the next PUBLISH with the same bytes gets the same frozen object,
 * with no object or string made per message. Nothing on the delivery path writes into a
 * packet's properties (aedes already shares them between a message's copies).
 */
let lastBytes: Buffer = Buffer.alloc(0);
let lastProperties: Record<string, unknown> | undefined;

/** Where the last string read ended (no object per string). */
let stringEnd = 0;

/**
 * A PUBLISH's MQTT 5 properties, read as mqtt-packet's `_parseProperties` reads them (the same
 * object: names in wire order, a repeated property as an array, user properties in an object
 * inheriting nothing) straight from the packet's buffer. mqtt-packet reads every byte,
 * number and string through its buffer list, each a new Buffer, in functions that log each
 * step; it took most of the parse of a PUBLISH with one user property.
 *
 * Returns undefined, having read nothing, where mqtt-packet's own reading must run: the
 * properties not wholly within the list's first buffer or the packet, a malformed or unknown
 * property, a list against MQTT 5's rules (property-rules.ts), a string that is not
 * well-formed UTF-8 or has U+0000 (the packet guard then reports it as it does everywhere).
 * Otherwise the parser's position moves past the properties.
 */
export function readPublishProperties(
  parser: PropertiesSource,
): Record<string, unknown> | undefined {
  const bytes = parser._list.getBuffers()[0];
  if (bytes === undefined) return undefined;
  const limit = Math.min(parser.packet.length, bytes.length);
  let at = parser._pos;
  let length = 0;
  let shift = 1;
  for (let i = 0; ; i++) {
    if (i === 4 || at >= limit) return undefined;
    const byte = bytes[at++] as number;
    length += (byte & 0x7f) * shift;
    shift *= 0x80;
    if ((byte & 0x80) === 0) break;
  }
  const end = at + length;
  if (end > limit) return undefined;
  if (length === 0) {
    parser._pos = end;
    // mqtt-packet sets `properties` only on a list with names: an own undefined one gives
    // every MQTT 5 PUBLISH, and aedes' copies of it, one shape, where a mix of lists with and
    // without names made two and slowed each property read and copy on the delivery path.
    parser.packet.properties = undefined;
    return NO_PROPERTIES;
  }
  const start = at;
  if (lastProperties !== undefined && length === lastBytes.length) {
    let same = true;
    for (let i = 0; i < length && same; i++) same = bytes[start + i] === lastBytes[i];
    if (same) {
      parser._pos = end;
      return lastProperties;
    }
  }
  // A list that breaks MQTT 5's rules: mqtt-packet's reading, where the packet guard reports it.
  if (propertiesProblem(bytes, parser._pos, limit, "publish") !== undefined) return undefined;
  const result: Record<string, unknown> = {};
  while (at < end) {
    const name = PROPERTY_NAMES[bytes[at++] as number];
    if (name === undefined) return undefined;
    let value: unknown;
    switch (PROPERTY_TYPES[name]) {
      case "byte":
        if (at + 1 > end) return undefined;
        value = bytes[at++] !== 0;
        break;
      case "int8":
        if (at + 1 > end) return undefined;
        value = bytes[at++];
        break;
      case "int16":
        if (at + 2 > end) return undefined;
        value = bytes.readUInt16BE(at);
        at += 2;
        break;
      case "int32":
        if (at + 4 > end) return undefined;
        value = bytes.readUInt32BE(at);
        at += 4;
        break;
      case "var": {
        let number = 0;
        let multiplier = 1;
        for (let i = 0; ; i++) {
          if (i === 4 || at >= end) return undefined;
          const byte = bytes[at++] as number;
          number += (byte & 0x7f) * multiplier;
          multiplier *= 0x80;
          if ((byte & 0x80) === 0) break;
        }
        value = number;
        break;
      }
      case "string": {
        const text = readString(bytes, at, end);
        if (text === undefined) return undefined;
        value = text;
        at = stringEnd;
        break;
      }
      case "binary": {
        if (at + 2 > end) return undefined;
        const stop = at + 2 + bytes.readUInt16BE(at);
        if (stop > end) return undefined;
        value = bytes.subarray(at + 2, stop);
        at = stop;
        break;
      }
      case "pair": {
        const key = readString(bytes, at, end);
        if (key === undefined) return undefined;
        const pairValue = readString(bytes, stringEnd, end);
        if (pairValue === undefined) return undefined;
        at = stringEnd;
        addUserProperty(result, key, pairValue);
        continue;
      }
      default:
        return undefined;
    }
    // as mqtt-packet: a repeat of a falsy value replaces it
    const known = result[name];
    if (!known) result[name] = value;
    else if (Array.isArray(known)) known.push(value);
    else result[name] = [known, value];
  }
  parser._pos = end;
  if (length <= SHARED_MAX_BYTES && shareable(result)) {
    lastBytes = Buffer.from(bytes.subarray(start, end));
    lastProperties = result;
  }
  return result;
}

/** Freezes a list made only of SHAREABLE names (and its user properties); false otherwise. */
function shareable(result: Record<string, unknown>): boolean {
  for (const name in result) if (!SHAREABLE.has(name)) return false;
  const pairs = result.userProperties as Record<string, unknown> | undefined;
  if (pairs !== undefined) {
    for (const key in pairs) if (Array.isArray(pairs[key])) Object.freeze(pairs[key]);
    Object.freeze(pairs);
  }
  Object.freeze(result);
  return true;
}

function addUserProperty(result: Record<string, unknown>, key: string, value: string): void {
  let pairs = result.userProperties as Record<string, string | string[]> | undefined;
  if (pairs === undefined) {
    pairs = Object.create(USER_PROPERTIES_PROTOTYPE) as Record<string, string | string[]>;
    result.userProperties = pairs;
  }
  // as mqtt-packet: a repeat of an empty value replaces it
  const known = pairs[key];
  if (!known) pairs[key] = value;
  else if (Array.isArray(known)) known.push(value);
  else pairs[key] = [known, value];
}

/**
 * A length-prefixed string ending by `end`, well-formed UTF-8 without U+0000, or undefined.
 * Sets `stringEnd`. ASCII (the usual property) is checked and decoded without a Buffer.
 */
function readString(bytes: Buffer, start: number, end: number): string | undefined {
  if (start + 2 > end) return undefined;
  const from = start + 2;
  const stop = from + bytes.readUInt16BE(start);
  if (stop > end) return undefined;
  let ascii = true;
  for (let i = from; i < stop; i++) {
    const byte = bytes[i] as number;
    if (byte === 0) return undefined;
    if (byte >= 0x80) ascii = false;
  }
  if (!ascii && !isUtf8(bytes.subarray(from, stop))) return undefined;
  stringEnd = stop;
  return bytes.toString(ascii ? "latin1" : "utf8", from, stop);
}
