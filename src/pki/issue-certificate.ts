import type { CertificateAuthority } from "./certificate-authority.js";
import { readDeviceCsr } from "./device-csr.js";
import { validateDeviceId } from "./device-id.js";
import {
  DEFAULT_KEY_ALGORITHM,
  generateKeyPair,
  isKeyAlgorithmName,
  type KeyAlgorithmName,
  type KeyKind,
  kindOfAlgorithmName,
  privateKeyToPem,
  signingAlgorithm,
} from "./key-algorithms.js";
import { toPem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { CLOCK_SKEW_MS, DEVICE_VALIDITY_DAYS, validateDays } from "./pki-limits.js";
import { randomSerialNumber } from "./serial-number.js";
import { subtle, x509 } from "./x509.js";

export interface IssueOptions {
  deviceId: string;
  /** Default 90; from one hour (1/24) to 825 days. Never beyond the CA's own expiry. */
  validityDays?: number;
  now?: Date;
}

export interface IssueWithNewKeyOptions extends IssueOptions {
  /** Default P-256. */
  keyAlgorithm?: KeyAlgorithmName;
}

export interface IssuedCertificate {
  deviceId: string;
  /** The device certificate, followed by the CA's chain (if it is an intermediate). */
  certPem: string;
  /** As Node's `peerCertificate.serialNumber` and `normalizeSerial` write it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export interface IssuedCertificateWithKey extends IssuedCertificate {
  /** PKCS#8 PEM. Hand it to the device once; never log or store it. */
  keyPem: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** Issues a client certificate for `deviceId` to the key in a CSR (see `readDeviceCsr`). */
export async function issueFromCsr(
  ca: CertificateAuthority,
  csrPem: string | Buffer,
  options: IssueOptions,
): Promise<IssuedCertificate> {
  const deviceId = validateDeviceId(options.deviceId);
  const days = validityOf(options);
  const csr = await readDeviceCsr(csrPem, deviceId);
  return signDeviceCertificate(ca, csr.publicKeySpki, csr.keyKind, deviceId, days, options.now);
}

/** Generates a key pair for a device that cannot make its own, and certifies it. */
export async function issueWithNewKey(
  ca: CertificateAuthority,
  options: IssueWithNewKeyOptions,
): Promise<IssuedCertificateWithKey> {
  const deviceId = validateDeviceId(options.deviceId);
  const days = validityOf(options);
  const algorithmName = options.keyAlgorithm ?? DEFAULT_KEY_ALGORITHM;
  if (!isKeyAlgorithmName(algorithmName)) {
    throw new PkiInputError(`unknown key algorithm ${String(algorithmName)}`);
  }
  const keys = await generateKeyPair(algorithmName);
  const spki = new Uint8Array(await subtle.exportKey("spki", keys.publicKey));
  const kind = kindOfAlgorithmName(algorithmName);
  const issued = await signDeviceCertificate(ca, spki, kind, deviceId, days, options.now);
  return { ...issued, keyPem: await privateKeyToPem(keys.privateKey) };
}

function validityOf(options: IssueOptions): number {
  return validateDays(
    options.validityDays ?? DEVICE_VALIDITY_DAYS.default,
    DEVICE_VALIDITY_DAYS,
    "the device certificate's validity",
  );
}

async function signDeviceCertificate(
  ca: CertificateAuthority,
  publicKeySpki: Uint8Array,
  keyKind: KeyKind,
  deviceId: string,
  days: number,
  now = new Date(),
): Promise<IssuedCertificate> {
  if (now > ca.certificate.notAfter) {
    throw new PkiInputError(
      `the CA certificate expired on ${ca.certificate.notAfter.toISOString()}`,
    );
  }
  const notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  // A certificate outliving its CA would fail verification from that day on anyway; capping it
  // makes the date on the certificate the true one.
  const notAfter = new Date(
    Math.min(now.getTime() + days * DAY_MS, ca.certificate.notAfter.getTime()),
  );
  const serial = randomSerialNumber();
  // keyEncipherment only for RSA: TLS 1.2 RSA key exchange needs it; EC keys never encipher.
  const usages =
    keyKind.type === "rsa"
      ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
      : x509.KeyUsageFlags.digitalSignature;
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    // Our own name, never one from the request: the CN is what cn-is-clientid binds to.
    subject: [{ CN: [deviceId] }],
    // The CA's subject as encoded in its certificate, so issuer matching is byte for byte.
    issuer: ca.certificate.subjectName,
    notBefore,
    notAfter,
    publicKey: publicKeySpki,
    signingKey: ca.signingKey,
    signingAlgorithm: signingAlgorithm(ca.keyKind),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(usages, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
      new x509.AuthorityKeyIdentifierExtension(ca.keyIdentifier, false),
      await x509.SubjectKeyIdentifierExtension.create(publicKeySpki),
    ],
  });
  return {
    deviceId,
    certPem: toPem("CERTIFICATE", certificate.rawData) + ca.chainPem,
    serial,
    // Read back from the certificate: its encoding keeps whole seconds only.
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
  };
}
