import { createPrivateKey, createPublicKey, type KeyObject, type webcrypto } from "node:crypto";
import { type KeyKind, kindOfKeyObject, webCryptoAlgorithm } from "./key-algorithms.js";
import { readSinglePem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { PEM_MAX_BYTES } from "./pki-limits.js";
import { subtle } from "./x509.js";

export interface LoadedPrivateKey {
  /** Usable for signing only; the key is imported non-extractable. */
  signingKey: webcrypto.CryptoKey;
  kind: KeyKind;
  /** The matching public key as SubjectPublicKeyInfo DER, to compare with a certificate's. */
  publicKeySpki: Buffer;
}

const PRIVATE_KEY_LABELS = [
  "PRIVATE KEY",
  "EC PRIVATE KEY",
  "RSA PRIVATE KEY",
  "ENCRYPTED PRIVATE KEY",
];

/**
 * Reads a private key in the PEM forms operators have (PKCS#8, SEC1 from `openssl ecparam`,
 * PKCS#1 from older tools; encrypted with `passphrase`). Node's parser reads it; WebCrypto
 * signs with it. Errors never quote the key.
 */
export async function importPrivateKeyPem(
  pem: string | Buffer,
  what: string,
  passphrase?: string,
): Promise<LoadedPrivateKey> {
  readSinglePem(pem, what, PEM_MAX_BYTES.privateKey, PRIVATE_KEY_LABELS);
  let key: KeyObject;
  try {
    key = createPrivateKey(passphrase === undefined ? { key: pem } : { key: pem, passphrase });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === "ERR_MISSING_PASSPHRASE"
        ? "it is encrypted and no passphrase was given"
        : "it does not parse (or the passphrase is wrong)";
    // The cause is dropped on purpose: OpenSSL's messages can carry fragments of the input.
    throw new PkiInputError(`${what}: cannot read the private key: ${reason}`);
  }
  const kind = kindOfKeyObject(key, what);
  const pkcs8 = key.export({ type: "pkcs8", format: "der" });
  const signingKey = await subtle.importKey("pkcs8", pkcs8, webCryptoAlgorithm(kind), false, [
    "sign",
  ]);
  const publicKeySpki = createPublicKey(key).export({ type: "spki", format: "der" });
  return { signingKey, kind, publicKeySpki };
}
