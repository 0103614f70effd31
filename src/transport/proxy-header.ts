import { isIPv4, isIPv6 } from "node:net";
import { normalizeAddress } from "./trusted-proxies.js";

/**
 * The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) that a load
 * balancer puts in front of a connection's first byte to say whom it forwards. Parsed strictly:
 * the receiver must not guess, so anything that is not a complete, well-formed header is
 * refused rather than passed on as MQTT.
 */

/** A v1 line, CRLF included, is at most this long ("PROXY TCP6" with two full IPv6 addresses). */
export const V1_MAX_BYTES = 107;
/**
 * The largest v2 header accepted: the 16 fixed bytes plus addresses and TLVs. The field allows
 * 64 KiB; load balancers send tens of bytes, a few hundred with TLS TLVs.
 */
export const V2_MAX_BYTES = 16 + 2048;

const V1_SIGNATURE = Buffer.from("PROXY ", "latin1");
const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V2_FIXED_BYTES = 16;
const V2_COMMAND_LOCAL = 0x0;
const V2_AF_INET = 0x1;
const V2_AF_INET6 = 0x2;
const V2_AF_UNIX = 0x3;
const V2_TRANSPORT_STREAM = 0x1;
/** Address block length by v2 address family. */
const V2_ADDRESS_BYTES: Readonly<Record<number, number>> = {
  [V2_AF_INET]: 12,
  [V2_AF_INET6]: 36,
  [V2_AF_UNIX]: 216,
};

/** The original client as the proxy saw it. */
export interface ProxiedSource {
  address: string;
  port: number;
}

export type ProxyHeaderParse =
  /** More bytes are needed to decide. */
  | { status: "incomplete" }
  | { status: "invalid"; reason: string }
  /**
   * A whole header of `length` bytes. Without `source` the connection is the proxy's own (v2
   * LOCAL, a health check) or of an unknown kind (v1 UNKNOWN, v2 UNSPEC or UNIX): the socket's
   * own address stands.
   */
  | { status: "complete"; version: 1 | 2; length: number; source?: ProxiedSource };

/** Parses the start of a connection's bytes as a PROXY v1 or v2 header. */
export function parseProxyHeader(bytes: Buffer): ProxyHeaderParse {
  if (startsWith(bytes, V2_SIGNATURE)) return parseV2(bytes);
  if (startsWith(bytes, V1_SIGNATURE)) return parseV1(bytes);
  // Too short to tell: incomplete while it could still become either signature.
  if (isPrefixOf(bytes, V2_SIGNATURE) || isPrefixOf(bytes, V1_SIGNATURE)) {
    return { status: "incomplete" };
  }
  return { status: "invalid", reason: "no PROXY protocol signature" };
}

const V1_TCP = /^PROXY (TCP4|TCP6) ([0-9A-Fa-f.:]+) ([0-9A-Fa-f.:]+) (\d{1,5}) (\d{1,5})$/;

function parseV1(bytes: Buffer): ProxyHeaderParse {
  const end = v1LineEnd(bytes);
  if (end === "invalid") return { status: "invalid", reason: "v1 header: not a line of text" };
  if (end === undefined) {
    return bytes.length >= V1_MAX_BYTES
      ? { status: "invalid", reason: `v1 header longer than ${V1_MAX_BYTES} bytes` }
      : { status: "incomplete" };
  }
  const length = end + 2;
  const line = bytes.toString("latin1", 0, end);
  // UNKNOWN: the receiver ignores whatever follows up to the CRLF.
  if (line === "PROXY UNKNOWN" || line.startsWith("PROXY UNKNOWN ")) {
    return { status: "complete", version: 1, length };
  }
  const match = V1_TCP.exec(line);
  if (!match) return { status: "invalid", reason: "malformed v1 header" };
  const [, family, source = "", destination = "", sourcePort, destinationPort] = match;
  const isFamily = family === "TCP4" ? isIPv4 : isIPv6;
  if (!isFamily(source) || !isFamily(destination)) {
    return { status: "invalid", reason: `v1 header: addresses are not ${family}` };
  }
  const port = Number(sourcePort);
  if (port > 65535 || Number(destinationPort) > 65535) {
    return { status: "invalid", reason: "v1 header: port out of range" };
  }
  return {
    status: "complete",
    version: 1,
    length,
    source: { address: normalizeAddress(source), port },
  };
}

/**
 * Where the v1 line's CRLF starts, undefined while none has arrived, "invalid" as soon as a
 * byte shows the line is no printable ASCII ending in CRLF.
 */
function v1LineEnd(bytes: Buffer): number | undefined | "invalid" {
  const CR = 0x0d;
  const LF = 0x0a;
  // The CRLF must end by byte 107: its CR is at index 105 at the latest.
  const scanned = Math.min(bytes.length, V1_MAX_BYTES - 1);
  for (let i = 0; i < scanned; i++) {
    const byte = bytes[i] as number;
    if (byte === CR) {
      if (i + 1 >= bytes.length) return undefined;
      return bytes[i + 1] === LF ? i : "invalid";
    }
    if (byte < 0x20 || byte > 0x7e) return "invalid";
  }
  return undefined;
}

function parseV2(bytes: Buffer): ProxyHeaderParse {
  if (bytes.length < V2_FIXED_BYTES) return { status: "incomplete" };
  const versionCommand = bytes.readUInt8(12);
  const familyTransport = bytes.readUInt8(13);
  const length = V2_FIXED_BYTES + bytes.readUInt16BE(14);
  if (versionCommand >> 4 !== 2) return { status: "invalid", reason: "v2 header: not version 2" };
  const command = versionCommand & 0x0f;
  if (command > 1) return { status: "invalid", reason: `v2 header: unknown command ${command}` };
  const family = familyTransport >> 4;
  const transport = familyTransport & 0x0f;
  if (family > 3 || transport > 2) {
    return { status: "invalid", reason: "v2 header: unknown address family or transport" };
  }
  if (length > V2_MAX_BYTES) {
    return { status: "invalid", reason: `v2 header longer than ${V2_MAX_BYTES} bytes` };
  }
  const addressBytes = V2_ADDRESS_BYTES[family] ?? 0;
  if (length - V2_FIXED_BYTES < addressBytes) {
    return { status: "invalid", reason: "v2 header: too short for its address family" };
  }
  if (bytes.length < length) return { status: "incomplete" };
  // LOCAL: the proxy's own connection (a health check); the address block is ignored.
  // PROXY over anything but TCP over IPv4 or IPv6: the socket's own address stands.
  if (
    command === V2_COMMAND_LOCAL ||
    transport !== V2_TRANSPORT_STREAM ||
    (family !== V2_AF_INET && family !== V2_AF_INET6)
  ) {
    return { status: "complete", version: 2, length };
  }
  const at = V2_FIXED_BYTES;
  const source =
    family === V2_AF_INET
      ? { address: ipv4(bytes.subarray(at, at + 4)), port: bytes.readUInt16BE(at + 8) }
      : { address: ipv6(bytes.subarray(at, at + 16)), port: bytes.readUInt16BE(at + 32) };
  // TLVs after the addresses carry nothing Sluice uses; they are skipped with the header.
  return { status: "complete", version: 2, length, source };
}

function ipv4(bytes: Buffer): string {
  return Array.from(bytes).join(".");
}

/** IPv6 text, normalised (an IPv4-mapped address becomes IPv4). */
function ipv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return normalizeAddress(groups.join(":"));
}

function startsWith(bytes: Buffer, prefix: Buffer): boolean {
  return bytes.length >= prefix.length && bytes.subarray(0, prefix.length).equals(prefix);
}

function isPrefixOf(bytes: Buffer, signature: Buffer): boolean {
  return bytes.length < signature.length && signature.subarray(0, bytes.length).equals(bytes);
}
