import { buildCrl } from "../pki/build-crl.js";
import { issueFromCsr, issueWithNewKey } from "../pki/issue-certificate.js";
import { loadCaFiles } from "../pki/load-ca.js";
import { PkiInputError } from "../pki/pki-error.js";
import {
  CertificateRequestError,
  type DeviceCertificateAuthority,
  type IssuedCertificate,
} from "./device-certificate-authority.js";

/**
 * Loads `admin.ca` (Sluice's own root from `sluice ca init`, or an operator's intermediate)
 * as the CA the admin API issues device certificates with; undefined when not configured.
 */
export async function loadDeviceCa(
  config: { cert: string; key: string; chain?: string | undefined } | undefined,
): Promise<DeviceCertificateAuthority | undefined> {
  if (config === undefined) return undefined;
  const ca = await loadCaFiles({
    certFile: config.cert,
    keyFile: config.key,
    ...(config.chain === undefined ? {} : { chainFile: config.chain }),
  });
  return {
    certificatePem: `${ca.certPem.trimEnd()}\n${ca.chainPem}`,
    async issue(deviceId, request): Promise<IssuedCertificate> {
      try {
        if (request.csrPem !== undefined) {
          const issued = await issueFromCsr(ca, request.csrPem, {
            deviceId,
            validityDays: request.validityDays,
          });
          return {
            certificatePem: issued.certPem,
            serial: issued.serial,
            notAfter: issued.notAfter,
          };
        }
        const issued = await issueWithNewKey(ca, { deviceId, validityDays: request.validityDays });
        return {
          certificatePem: issued.certPem,
          privateKeyPem: issued.keyPem,
          serial: issued.serial,
          notAfter: issued.notAfter,
        };
      } catch (error) {
        if (error instanceof PkiInputError) throw new CertificateRequestError(error.message);
        throw error;
      }
    },
    buildCrl: (revoked) =>
      buildCrl(
        ca,
        revoked.map((r) => ({ serial: r.serial, revokedAt: new Date(r.revokedAt) })),
      ),
  };
}
