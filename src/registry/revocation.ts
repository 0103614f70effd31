import type { DeviceCertificateAuthority } from "./device-certificate-authority.js";
import type { DeviceRegistry } from "./device-registry.js";

/**
 * Adds serials to the CA's revocation list, signs a new CRL, stores it where every node reads
 * it, and tells the nodes: their TLS listeners load it and connections that presented one of
 * the serials are closed.
 */
export async function revokeCertificates(
  registry: DeviceRegistry,
  ca: DeviceCertificateAuthority,
  serials: readonly string[],
  now: Date = new Date(),
): Promise<void> {
  if (serials.length === 0) return;
  for (const serial of serials) {
    await registry.store.addRevoked({ serial, revokedAt: now.toISOString() });
  }
  const crl = await ca.buildCrl(await registry.store.revoked());
  await registry.store.saveCrl(crl);
  registry.crlChanged();
}

/** A stored CRL older than this is signed again, long before it expires (30 days). */
export const CRL_REFRESH_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * Signs the CRL again when the stored one is older than `maxAgeMs` (OpenSSL refuses every
 * client certificate once the CRL is past its next update). Run on a timer by each node that
 * holds the CA; nodes doing it at once produce equally valid CRLs. Returns whether it signed.
 */
export async function refreshCrl(
  registry: DeviceRegistry,
  ca: DeviceCertificateAuthority,
  signedAt: (pem: string) => Date | undefined,
  maxAgeMs = CRL_REFRESH_AFTER_MS,
  now: Date = new Date(),
): Promise<boolean> {
  const current = await registry.store.crl();
  if (current === undefined) return false;
  const at = signedAt(current);
  if (at !== undefined && now.getTime() - at.getTime() < maxAgeMs) return false;
  await registry.store.saveCrl(await ca.buildCrl(await registry.store.revoked()));
  registry.crlChanged();
  return true;
}
