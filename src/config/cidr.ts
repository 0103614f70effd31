import { isIP } from "node:net";

export interface Cidr {
  address: string;
  prefix: number;
  family: "ipv4" | "ipv6";
}

/** An IP address or CIDR (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`); undefined if it is neither. */
export function parseCidr(text: string): Cidr | undefined {
  const [address = "", prefixText, extra] = text.split("/");
  const version = isIP(address);
  if (version === 0 || extra !== undefined || address.includes("%")) return undefined;
  const bits = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  if (prefix > bits) return undefined;
  return { address, prefix, family: version === 4 ? "ipv4" : "ipv6" };
}
