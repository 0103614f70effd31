import { createPublicKey, type KeyObject, type webcrypto } from "node:crypto";
import { toPem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { subtle } from "./x509.js";

/** Key types the CA generates, for itself or for devices. */
export const KEY_ALGORITHM_NAMES = ["P-256", "P-384", "RSA-2048", "RSA-3072", "RSA-4096"] as const;
export type KeyAlgorithmName = (typeof KEY_ALGORITHM_NAMES)[number];
export const DEFAULT_KEY_ALGORITHM: KeyAlgorithmName = "P-256";

/** A key Sluice can certify or sign with: EC on P-256/P-384, or RSA of 2048 to 8192 bits. */
export type KeyKind = { type: "ec"; curve: "P-256" | "P-384" } | { type: "rsa"; bits: number };

const RSA_MIN_BITS = 2048;
// Larger keys buy nothing for a device and make every verification slow enough to be a lever.
const RSA_MAX_BITS = 8192;
const CURVES: Record<string, "P-256" | "P-384"> = { prime256v1: "P-256", secp384r1: "P-384" };

export function isKeyAlgorithmName(name: unknown): name is KeyAlgorithmName {
  return typeof name === "string" && (KEY_ALGORITHM_NAMES as readonly string[]).includes(name);
}

export function kindOfAlgorithmName(name: KeyAlgorithmName): KeyKind {
  return name.startsWith("RSA-")
    ? { type: "rsa", bits: Number(name.slice(4)) }
    : { type: "ec", curve: name as "P-256" | "P-384" };
}

/** WebCrypto parameters for creating, importing and signing with a key of this kind. */
export function webCryptoAlgorithm(
  kind: KeyKind,
): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  return kind.type === "ec"
    ? { name: "ECDSA", namedCurve: kind.curve }
    : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
}

/** The signature algorithm a CA key of this kind signs with (hash strength matched to the curve). */
export function signingAlgorithm(kind: KeyKind): { name: string; hash: string } {
  if (kind.type === "rsa") return { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  return { name: "ECDSA", hash: kind.curve === "P-384" ? "SHA-384" : "SHA-256" };
}

export async function generateKeyPair(name: KeyAlgorithmName): Promise<webcrypto.CryptoKeyPair> {
  const kind = kindOfAlgorithmName(name);
  const algorithm =
    kind.type === "ec"
      ? { name: "ECDSA", namedCurve: kind.curve }
      : {
          name: "RSASSA-PKCS1-v1_5",
          hash: "SHA-256",
          modulusLength: kind.bits,
          publicExponent: new Uint8Array([1, 0, 1]),
        };
  return subtle.generateKey(algorithm, true, ["sign", "verify"]);
}

/** A private key as PKCS#8 PEM ("PRIVATE KEY"), the form Node, OpenSSL and most devices read. */
export async function privateKeyToPem(key: webcrypto.CryptoKey): Promise<string> {
  return toPem("PRIVATE KEY", await subtle.exportKey("pkcs8", key));
}

/** What kind of key a SubjectPublicKeyInfo holds; refuses kinds and sizes we do not certify. */
export function kindOfPublicKey(spkiDer: Uint8Array, what: string): KeyKind {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spkiDer), format: "der", type: "spki" });
  } catch (error) {
    throw new PkiInputError(`${what}: the public key cannot be read`, { cause: error });
  }
  return kindOfKeyObject(key, what);
}

export function kindOfKeyObject(key: KeyObject, what: string): KeyKind {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec") {
    const curve = CURVES[details.namedCurve ?? ""];
    if (curve === undefined) {
      throw new PkiInputError(
        `${what}: EC curve ${details.namedCurve ?? "unknown"} is not accepted (use P-256 or P-384)`,
      );
    }
    return { type: "ec", curve };
  }
  if (key.asymmetricKeyType === "rsa") {
    const bits = details.modulusLength ?? 0;
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
      throw new PkiInputError(
        `${what}: an RSA key of ${bits} bits is not accepted (${RSA_MIN_BITS} to ${RSA_MAX_BITS})`,
      );
    }
    return { type: "rsa", bits };
  }
  throw new PkiInputError(
    `${what}: ${key.asymmetricKeyType ?? "unknown"} keys are not accepted (use EC P-256, P-384 or RSA)`,
  );
}
