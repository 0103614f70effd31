import { type KeyKind, kindOfPublicKey } from "./key-algorithms.js";
import { readSinglePem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { PEM_MAX_BYTES } from "./pki-limits.js";
import { x509 } from "./x509.js";

export interface DeviceCsr {
  /** The requested public key (SubjectPublicKeyInfo DER): the only thing taken from the CSR. */
  publicKeySpki: Uint8Array;
  keyKind: KeyKind;
}

const COMMON_NAME_OID = "2.5.4.3";

/**
 * Reads a PKCS#10 request for `deviceId` and keeps only its public key, once the request's
 * signature proves the requester holds the private key. A CSR may name no CN (the CA names the
 * device), but one naming another device is refused outright: it is either a mistake or an
 * attempt to get a certificate for someone else. Requested extensions are never honoured.
 */
export async function readDeviceCsr(csrPem: unknown, deviceId: string): Promise<DeviceCsr> {
  const block = readSinglePem(csrPem, "the CSR", PEM_MAX_BYTES.csr, [
    "CERTIFICATE REQUEST",
    "NEW CERTIFICATE REQUEST",
  ]);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(new Uint8Array(block.der));
  } catch (error) {
    throw new PkiInputError("the CSR is not a valid PKCS#10 certificate request", { cause: error });
  }
  // The key is checked before the signature so unsupported keys get a precise message and we
  // never hand WebCrypto a key type it cannot import.
  const publicKeySpki = new Uint8Array(csr.publicKey.rawData);
  const keyKind = kindOfPublicKey(publicKeySpki, "the CSR");
  let signatureValid: boolean;
  try {
    signatureValid = await csr.verify();
  } catch (error) {
    throw new PkiInputError("the CSR's signature cannot be checked (unsupported algorithm?)", {
      cause: error,
    });
  }
  if (!signatureValid) {
    throw new PkiInputError("the CSR's signature does not verify: it was not signed by its key");
  }
  let commonNames: string[];
  try {
    commonNames = csr.subjectName.getField(COMMON_NAME_OID);
  } catch (error) {
    throw new PkiInputError("the CSR's subject cannot be read", { cause: error });
  }
  const foreign = commonNames.find((name) => name !== deviceId);
  if (foreign !== undefined) {
    throw new PkiInputError(
      `the CSR asks for CN "${foreign.slice(0, 128)}" but the device id is "${deviceId}"`,
    );
  }
  return { publicKeySpki, keyKind };
}
