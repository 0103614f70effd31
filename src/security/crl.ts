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
  const serials = new Set<string>();
  for (const crl of parseCrls(await readFile(path, "utf8"))) {
    for (const entry of crl.tbsCertList.revokedCertificates ?? []) {
      serials.add(normalizeSerial(Buffer.from(entry.userCertificate).toString("hex")));
    }
  }
  return serials;
}

/** When the first CRL in a PEM text was signed (its thisUpdate); undefined if none parses. */
export function crlSignedAt(pem: string): Date | undefined {
  try {
    return parseCrls(pem).next().value?.tbsCertList.thisUpdate.getTime();
  } catch {
    return undefined;
  }
}

/** The `X509 CRL` blocks of a PEM text, parsed one by one as they are asked for. */
function* parseCrls(pem: string): Generator<CertificateList> {
  for (const block of pem.matchAll(/-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----/g)) {
    const der = Buffer.from((block[1] ?? "").replace(/\s+/g, ""), "base64");
    yield AsnConvert.parse(der, CertificateList);
  }
}
