import { readFile } from "node:fs/promises";
import { AsnConvert } from "@peculiar/asn1-schema";
import { CertificateList } from "@peculiar/asn1-x509";

/** A certificate serial as Node's TLS reports it: upper-case hex, no leading zeros. */
export function normalizeSerial(serial: string): string {
  return serial.toUpperCase().replace(/^0+(?=.)/, "");
}

/**
 * The serial numbers revoked by the CRLs in a PEM file (one or more `X509 CRL` blocks). The
 * TLS layer enforces the CRL at handshakes; this list lets a reload close connections whose
 * certificate was revoked after they were established.
 */
export async function readRevokedSerials(path: string): Promise<Set<string>> {
  const pem = await readFile(path, "utf8");
  const serials = new Set<string>();
  for (const block of pem.matchAll(/-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----/g)) {
    const der = Buffer.from((block[1] ?? "").replace(/\s+/g, ""), "base64");
    const crl = AsnConvert.parse(der, CertificateList);
    for (const entry of crl.tbsCertList.revokedCertificates ?? []) {
      serials.add(normalizeSerial(Buffer.from(entry.userCertificate).toString("hex")));
    }
  }
  return serials;
}

/** When the first CRL in a PEM text was signed (its thisUpdate); undefined if none parses. */
export function crlSignedAt(pem: string): Date | undefined {
  const block = /-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----/.exec(pem);
  if (!block) return undefined;
  try {
    const der = Buffer.from((block[1] ?? "").replace(/\s+/g, ""), "base64");
    return AsnConvert.parse(der, CertificateList).tbsCertList.thisUpdate.getTime();
  } catch {
    return undefined;
  }
}
