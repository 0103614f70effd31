import { BlockList, isIP, isIPv4 } from "node:net";
import { parseCidr } from "../config/cidr.js";

/**
 * One spelling per address, so that CIDR checks, per-IP limits and lockouts all key on the
 * same string: IPv4-mapped IPv6 (`::ffff:1.2.3.4`, as a dual-stack socket reports IPv4
 * peers) becomes plain IPv4, IPv6 is lower case and compressed (RFC 5952). Anything that is
 * not an IP address is returned unchanged.
 */
export function normalizeAddress(address: string): string {
  if (isIPv4(address) || isIP(address) !== 6 || address.includes("%")) return address;
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (!mapped) return canonical;
  const high = Number.parseInt(mapped[1] as string, 16);
  const low = Number.parseInt(mapped[2] as string, 16);
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}

/**
 * The load balancers and proxies a listener believes about the client's address
 * (`listeners[].trustedProxies`). Only they may send a PROXY protocol header or an
 * X-Forwarded-For header that counts.
 */
export class TrustedProxies {
  private readonly list = new BlockList();

  /** Throws TypeError on an entry that is not an address or CIDR (the schema refuses those). */
  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const parsed = parseCidr(cidr);
      if (!parsed) throw new TypeError(`not an IP address or CIDR: ${cidr}`);
      this.list.addSubnet(parsed.address, parsed.prefix, parsed.family);
    }
  }

  /** Whether a (normalised) address is a trusted proxy's. */
  has(address: string): boolean {
    const version = isIP(address);
    return version !== 0 && this.list.check(address, version === 4 ? "ipv4" : "ipv6");
  }

  /**
   * The client behind a request's `X-Forwarded-For`, believed only when the TCP peer is a
   * trusted proxy. Each proxy appends the address it received from, so the header is read from
   * the right, past trusted proxies, to the first address that is not one: whatever lies left
   * of it the client could have written itself. If every address is trusted, the left-most
   * is the client. Undefined when the peer's own address stands: an untrusted peer, no header,
   * or an entry that is not an address where the client should be.
   */
  forwardedClient(peer: string, forwardedFor: string | string[] | undefined): string | undefined {
    if (forwardedFor === undefined || !this.has(peer)) return undefined;
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor)
      .split(",")
      .map((hop) => hop.trim())
      .filter((hop) => hop !== "");
    let client: string | undefined;
    for (let i = hops.length - 1; i >= 0; i--) {
      const address = normalizeAddress(withoutPort(hops[i] as string));
      if (isIP(address) === 0) return undefined;
      client = address;
      if (!this.has(address)) break;
    }
    return client;
  }
}

/** `[2001:db8::1]:443` → `2001:db8::1`, `192.0.2.1:8080` → `192.0.2.1`; others unchanged. */
function withoutPort(hop: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (bracketed) return bracketed[1] as string;
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(hop);
  return v4 ? (v4[1] as string) : hop;
}
