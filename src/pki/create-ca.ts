import {
  DEFAULT_KEY_ALGORITHM,
  generateKeyPair,
  isKeyAlgorithmName,
  type KeyAlgorithmName,
  kindOfAlgorithmName,
  privateKeyToPem,
  signingAlgorithm,
} from "./key-algorithms.js";
import { toPem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { CA_VALIDITY_DAYS, CLOCK_SKEW_MS, validateDays } from "./pki-limits.js";
import { randomSerialNumber } from "./serial-number.js";
import { x509 } from "./x509.js";

export interface CreateCaOptions {
  commonName: string;
  /** Default 3650 (ten years); 1 to 36500. */
  validityDays?: number;
  /** Default P-256. */
  keyAlgorithm?: KeyAlgorithmName;
  now?: Date;
}

export interface CaMaterial {
  certPem: string;
  /** PKCS#8 PEM. The only copy of the CA's key: the caller stores it with mode 0600. */
  keyPem: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Creates a self-signed root CA for device certificates. pathLength 0: it signs end-entity
 * certificates and CRLs only, so a stolen device key can never become another CA.
 */
export async function createCa(options: CreateCaOptions): Promise<CaMaterial> {
  const commonName = validateCommonName(options.commonName);
  const days = validateDays(
    options.validityDays ?? CA_VALIDITY_DAYS.default,
    CA_VALIDITY_DAYS,
    "the CA's validity",
  );
  const algorithmName = options.keyAlgorithm ?? DEFAULT_KEY_ALGORITHM;
  if (!isKeyAlgorithmName(algorithmName)) {
    throw new PkiInputError(`unknown key algorithm ${String(algorithmName)}`);
  }
  const now = options.now ?? new Date();
  const keys = await generateKeyPair(algorithmName);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialNumber(),
    name: [{ CN: [commonName] }],
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    keys,
    signingAlgorithm: signingAlgorithm(kindOfAlgorithmName(algorithmName)),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    certPem: toPem("CERTIFICATE", certificate.rawData),
    keyPem: await privateKeyToPem(keys.privateKey),
  };
}

function validateCommonName(commonName: unknown): string {
  if (typeof commonName !== "string" || commonName.trim() === "") {
    throw new PkiInputError("the CA's common name must be a non-empty string");
  }
  // 64 is X.520's upper bound for a CN (ub-common-name).
  if (commonName.length > 64)
    throw new PkiInputError("the CA's common name is longer than 64 characters");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it rejects
  if (/[\u0000-\u001f\u007f]/.test(commonName)) {
    throw new PkiInputError("the CA's common name must not contain control characters");
  }
  return commonName;
}
