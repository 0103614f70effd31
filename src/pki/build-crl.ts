import type { CertificateAuthority } from "./certificate-authority.js";
import { signingAlgorithm } from "./key-algorithms.js";
import { toPem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { CRL_NEXT_UPDATE_HOURS, validateHours } from "./pki-limits.js";
import { parseSerialNumber, serialToEvenHex } from "./serial-number.js";
import { x509 } from "./x509.js";

export interface RevokedCertificate {
  /** Hex, in any of the forms `parseSerialNumber` reads. */
  serial: string;
  revokedAt: Date;
}

export interface BuildCrlOptions {
  /**
   * When the CRL expires. OpenSSL refuses every client certificate once the configured CRL is
   * past nextUpdate, so the CRL must be rebuilt before then even if nothing new was revoked.
   * Default 720 (30 days); 1 to 8784.
   */
  nextUpdateHours?: number;
  /**
   * Must grow with every CRL of this CA (RFC 5280 5.2.3). Default: the current time in
   * milliseconds, which grows without any shared counter between nodes and the command line.
   */
  crlNumber?: bigint;
  now?: Date;
}

const CRL_NUMBER_OID = "2.5.29.20";
const HOUR_MS = 60 * 60 * 1000;

/**
 * A CRL (PEM) signed by the CA listing `revoked`, with the CRL number and authority key
 * identifier extensions that OpenSSL, and so Node's TLS `crl` option, expect of a v2 CRL.
 */
export async function buildCrl(
  ca: CertificateAuthority,
  revoked: readonly RevokedCertificate[],
  options: BuildCrlOptions = {},
): Promise<string> {
  const hours = validateHours(
    options.nextUpdateHours ?? CRL_NEXT_UPDATE_HOURS.default,
    CRL_NEXT_UPDATE_HOURS,
    "the CRL's next update",
  );
  const now = options.now ?? new Date();
  const crlNumber = options.crlNumber ?? BigInt(now.getTime());
  if (crlNumber < 0n) throw new PkiInputError("a CRL number must not be negative");
  const entries = new Map<string, Date>();
  for (const entry of revoked) {
    const serial = parseSerialNumber(entry.serial);
    if (!(entry.revokedAt instanceof Date) || Number.isNaN(entry.revokedAt.getTime())) {
      throw new PkiInputError(`the revocation date of serial ${serial} is not a valid date`);
    }
    // One entry per serial (the library refuses duplicates): the earliest revocation counts.
    const known = entries.get(serial);
    if (known === undefined || entry.revokedAt < known) entries.set(serial, entry.revokedAt);
  }
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.certificate.subjectName,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + hours * HOUR_MS),
    signingKey: ca.signingKey,
    signingAlgorithm: signingAlgorithm(ca.keyKind),
    entries: [...entries].map(([serial, revocationDate]) => ({
      serialNumber: serialToEvenHex(serial),
      revocationDate,
    })),
    extensions: [
      new x509.AuthorityKeyIdentifierExtension(ca.keyIdentifier, false),
      new x509.Extension(CRL_NUMBER_OID, false, derInteger(crlNumber)),
    ],
  });
  return toPem("X509 CRL", crl.rawData);
}

/** DER INTEGER of a non-negative bigint (the asn1 schema's CRLNumber holds only a JS number). */
function derInteger(value: bigint): Uint8Array {
  let hex = value.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  // A leading byte with the top bit set would read as negative: pad with a zero byte.
  if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
  const content = Buffer.from(hex, "hex");
  // CRL numbers are at most 20 octets (RFC 5280), so the short length form always fits.
  if (content.length > 21) throw new PkiInputError("a CRL number is at most 20 octets");
  return Uint8Array.from([0x02, content.length, ...content]);
}
