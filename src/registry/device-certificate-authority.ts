import { SluiceError } from "../errors.js";
import type { RevokedCertificate } from "./device-store.js";

/** A device certificate as issued; the key only when Sluice generated the key pair. */
export interface IssuedCertificate {
  certificatePem: string;
  privateKeyPem?: string;
  /** Upper-case hex without leading zeros, as Node's TLS reports it. */
  serial: string;
  notAfter: Date;
}

/** The CA that signs device certificates and their revocation list. */
export interface DeviceCertificateAuthority {
  /** The CA certificate (and chain) devices and listeners trust, PEM. */
  readonly certificatePem: string;
  /** Signs a CSR (whose subject must name the device) or, without one, a new key pair. */
  issue(
    deviceId: string,
    request: { csrPem?: string; validityDays: number },
  ): Promise<IssuedCertificate>;
  buildCrl(revoked: readonly RevokedCertificate[]): Promise<string>;
}

/** The request cannot be signed (bad CSR, wrong subject, weak key): the caller's fault. */
export class CertificateRequestError extends SluiceError {
  constructor(message: string) {
    super("CERTIFICATE_REQUEST_INVALID", message);
  }
}
