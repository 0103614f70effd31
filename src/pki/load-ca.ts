import { readFile } from "node:fs/promises";
import type { CertificateAuthority } from "./certificate-authority.js";
import { kindOfPublicKey } from "./key-algorithms.js";
import { readPemBlocks, readSinglePem, toPem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { PEM_MAX_BYTES } from "./pki-limits.js";
import { importPrivateKeyPem } from "./private-key.js";
import { x509 } from "./x509.js";

export interface CaPem {
  certPem: string | Buffer;
  keyPem: string | Buffer;
  /** Certificates appended to issued ones (for an intermediate: itself and those above it). */
  chainPem?: string | Buffer;
  /** For an encrypted key. */
  passphrase?: string;
  now?: Date;
}

export interface CaFiles {
  certFile: string;
  keyFile: string;
  chainFile?: string;
  passphrase?: string;
}

/**
 * Reads a CA from PEM and proves it can do the job before anything is signed with it: a CA
 * certificate (basicConstraints CA:TRUE) allowed to sign certificates and CRLs, valid now,
 * whose key is the one given. Works for our own root as for an operator's intermediate.
 */
export async function loadCa(pem: CaPem): Promise<CertificateAuthority> {
  const now = pem.now ?? new Date();
  const certificate = parseCertificate(
    readSinglePem(pem.certPem, "the CA certificate", PEM_MAX_BYTES.certificate, ["CERTIFICATE"])
      .der,
    "the CA certificate",
  );
  checkCanSign(certificate, "the CA certificate", now);
  const keyKind = kindOfPublicKey(
    new Uint8Array(certificate.publicKey.rawData),
    "the CA certificate",
  );
  const key = await importPrivateKeyPem(pem.keyPem, "the CA key", pem.passphrase);
  if (!key.publicKeySpki.equals(Buffer.from(certificate.publicKey.rawData))) {
    throw new PkiInputError("the CA key does not belong to the CA certificate");
  }
  const chainPem = pem.chainPem === undefined ? "" : readChain(pem.chainPem, certificate, now);
  return {
    certificate,
    certPem: toPem("CERTIFICATE", certificate.rawData),
    signingKey: key.signingKey,
    keyKind,
    keyIdentifier: await keyIdentifierOf(certificate),
    chainPem,
  };
}

/** `loadCa` from files; an unreadable file is a PkiInputError naming it. */
export async function loadCaFiles(files: CaFiles): Promise<CertificateAuthority> {
  const read = async (path: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (error) {
      throw new PkiInputError(
        `cannot read ${what} ${path} (${(error as NodeJS.ErrnoException).code ?? error})`,
      );
    }
  };
  return loadCa({
    certPem: await read(files.certFile, "the CA certificate"),
    keyPem: await read(files.keyFile, "the CA key"),
    ...(files.chainFile === undefined
      ? {}
      : { chainPem: await read(files.chainFile, "the CA chain") }),
    ...(files.passphrase === undefined ? {} : { passphrase: files.passphrase }),
  });
}

function parseCertificate(der: Buffer, what: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(new Uint8Array(der));
  } catch (error) {
    throw new PkiInputError(`${what} is not a valid X.509 certificate`, { cause: error });
  }
}

function checkCanSign(certificate: x509.X509Certificate, what: string, now: Date): void {
  const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
  if (constraints === null || !constraints.ca) {
    throw new PkiInputError(
      `${what} (${certificate.subject}) is not a CA certificate (no basicConstraints CA:TRUE)`,
    );
  }
  const usage = certificate.getExtension(x509.KeyUsagesExtension);
  if (usage === null) {
    throw new PkiInputError(
      `${what} (${certificate.subject}) has no keyUsage extension; a CA needs keyCertSign and cRLSign`,
    );
  }
  // cRLSign too: OpenSSL refuses a CRL whose issuer's keyUsage lacks it, so every listener
  // would fail every handshake once our CRL is configured.
  for (const [flag, name] of [
    [x509.KeyUsageFlags.keyCertSign, "keyCertSign"],
    [x509.KeyUsageFlags.cRLSign, "cRLSign"],
  ] as const) {
    if ((usage.usages & flag) === 0) {
      throw new PkiInputError(
        `${what} (${certificate.subject}) is not allowed to sign: keyUsage lacks ${name}`,
      );
    }
  }
  if (now < certificate.notBefore) {
    throw new PkiInputError(`${what} is not valid before ${certificate.notBefore.toISOString()}`);
  }
  if (now > certificate.notAfter) {
    throw new PkiInputError(`${what} expired on ${certificate.notAfter.toISOString()}`);
  }
}

/**
 * The chain appended to issued certificates. Each block must be a CA certificate valid now, and
 * it must start at the signing CA itself or at its issuer, so a device is never handed an
 * unrelated path.
 */
function readChain(chainPem: string | Buffer, ca: x509.X509Certificate, now: Date): string {
  const blocks = readPemBlocks(chainPem, "the CA chain", PEM_MAX_BYTES.chain);
  const certificates = blocks.map((block, index) => {
    if (block.label !== "CERTIFICATE") {
      throw new PkiInputError(
        `the CA chain holds a "${block.label}" block; only certificates belong there`,
      );
    }
    const certificate = parseCertificate(block.der, `certificate ${index + 1} of the CA chain`);
    checkCanSign(certificate, `certificate ${index + 1} of the CA chain`, now);
    return certificate;
  });
  const first = certificates[0] as x509.X509Certificate;
  const startsAtCa = Buffer.from(first.rawData).equals(Buffer.from(ca.rawData));
  if (!startsAtCa && first.subject !== ca.issuer) {
    throw new PkiInputError(
      `the CA chain must start with the CA certificate or its issuer (${ca.issuer}), not ${first.subject}`,
    );
  }
  return certificates.map((c) => toPem("CERTIFICATE", c.rawData)).join("");
}

async function keyIdentifierOf(certificate: x509.X509Certificate): Promise<string> {
  const subjectKeyId = certificate.getExtension(x509.SubjectKeyIdentifierExtension);
  if (subjectKeyId !== null) return subjectKeyId.keyId;
  // RFC 5280 4.2.1.2 method 1, which is what OpenSSL would compute for the same key.
  return Buffer.from(await certificate.publicKey.getKeyIdentifier()).toString("hex");
}
