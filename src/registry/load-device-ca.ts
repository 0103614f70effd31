import type { DeviceCertificateAuthority } from "./certificate-authority.js";

/** Loads `admin.ca` into the CA that signs device certificates; undefined when not configured. */
export async function loadDeviceCa(
  config: { cert: string; key: string; chain?: string | undefined } | undefined,
): Promise<DeviceCertificateAuthority | undefined> {
  if (config === undefined) return undefined;
  throw new Error("admin.ca: waiting for the PKI module");
}
