import type { webcrypto } from "node:crypto";
import type { KeyKind } from "./key-algorithms.js";
import type { x509 } from "./x509.js";

/** A CA ready to sign: made by `createCa` and read back by `loadCa`, or an operator's intermediate. */
export interface CertificateAuthority {
  readonly certificate: x509.X509Certificate;
  readonly certPem: string;
  /** Non-extractable: it can sign, but no code path can turn it back into PEM. */
  readonly signingKey: webcrypto.CryptoKey;
  readonly keyKind: KeyKind;
  /** The CA's subject key identifier (hex): every certificate and CRL it signs names it. */
  readonly keyIdentifier: string;
  /**
   * PEM appended after each issued certificate so that a device presents its whole path up to
   * the trust anchor the listeners have: "" for a root, the intermediate (and any others above
   * it) for an operator's intermediate.
   */
  readonly chainPem: string;
}
