import { randomBytes } from "node:crypto";
import { normalizeSerial } from "../security/crl.js";
import { PkiInputError } from "./pki-error.js";

/**
 * A fresh certificate serial: 16 random bytes, the top bit cleared so the DER INTEGER is
 * positive without padding and the next bit set so it has no leading zero byte. The hex form is
 * then the same everywhere: in the certificate, in Node's `peerCertificate.serialNumber`, in
 * `normalizeSerial` and in our CRLs. 126 random bits are far beyond the 64 that make serials
 * unpredictable to someone crafting a colliding certificate.
 */
export function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString("hex").toUpperCase();
}

/**
 * Parses a serial as operators and tools write it (hex, any case, optional colons or a 0x
 * prefix, leading zeros) into the normalized form `normalizeSerial` gives (upper-case hex, no
 * leading zeros). RFC 5280 caps serials at 20 octets.
 */
export function parseSerialNumber(text: unknown): string {
  if (typeof text !== "string") throw new PkiInputError("a serial number must be a hex string");
  const hex = text.trim().replace(/^0x/i, "").replaceAll(":", "");
  if (!/^[0-9A-Fa-f]{1,42}$/.test(hex)) {
    throw new PkiInputError(`"${text.slice(0, 64)}" is not a hex serial number`);
  }
  const normalized = normalizeSerial(hex);
  if (normalized === "0") throw new PkiInputError("a serial number must not be zero");
  if (normalized.length > 40) throw new PkiInputError("a serial number is at most 20 bytes");
  return normalized;
}

/** Even-length hex, as @peculiar/x509 expects for serial numbers. */
export function serialToEvenHex(serial: string): string {
  return serial.length % 2 === 0 ? serial : `0${serial}`;
}
