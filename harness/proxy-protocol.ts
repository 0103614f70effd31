import { isIPv4 } from "node:net";

/** A PROXY protocol v1 line for a TCP connection from `source`. */
export function proxyV1(
  source: string,
  sourcePort = 40000,
  destination = isIPv4(source) ? "127.0.0.1" : "::1",
  destinationPort = 1883,
): Buffer {
  const family = isIPv4(source) ? "TCP4" : "TCP6";
  return Buffer.from(
    `PROXY ${family} ${source} ${destination} ${sourcePort} ${destinationPort}\r\n`,
    "latin1",
  );
}

export const V2_SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

/**
 * A PROXY protocol v2 header. By default a PROXY command for TCP from `source`; `local` makes
 * it a LOCAL command (a health check), `tlvs` are appended after the addresses.
 */
export function proxyV2(
  options: {
    source?: string;
    sourcePort?: number;
    destination?: string;
    local?: boolean;
    tlvs?: Buffer;
  } = {},
): Buffer {
  const { source = "198.51.100.7", sourcePort = 40000, local = false } = options;
  const v4 = isIPv4(source);
  const destination = options.destination ?? (v4 ? "127.0.0.1" : "::1");
  const addresses = v4
    ? Buffer.concat([ipv4Bytes(source), ipv4Bytes(destination), ports(sourcePort, 1883)])
    : Buffer.concat([ipv6Bytes(source), ipv6Bytes(destination), ports(sourcePort, 1883)]);
  const body = Buffer.concat([addresses, options.tlvs ?? Buffer.alloc(0)]);
  const fixed = Buffer.alloc(4);
  fixed.writeUInt8(local ? 0x20 : 0x21, 0);
  fixed.writeUInt8(v4 ? 0x11 : 0x21, 1); // TCP over IPv4 or IPv6
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, body]);
}

/** A v2 header with the given version/command and family/transport bytes and body. */
export function rawV2(versionCommand: number, familyTransport: number, body: Buffer): Buffer {
  const fixed = Buffer.alloc(4);
  fixed.writeUInt8(versionCommand, 0);
  fixed.writeUInt8(familyTransport, 1);
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, body]);
}

function ports(source: number, destination: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt16BE(source, 0);
  bytes.writeUInt16BE(destination, 2);
  return bytes;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split(".").map(Number));
}

/** Test addresses only: hex groups with at most one "::", no embedded IPv4. */
function ipv6Bytes(address: string): Buffer {
  const [head = "", tail] = address.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => {
    bytes.writeUInt16BE(Number.parseInt(group, 16), i * 2);
  });
  return bytes;
}
