import type { DeviceCertificateAuthority } from "./certificate-authority.js";
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
